/* Tests of the Raft log verifier (src/raftlog.h) on a real log: a node is run in-process
 * with the embedded API (three times, so that the log has several closed segments),
 * then a crashed node (a child that exits without closing) leaves an open segment with
 * data. The healthy log must verify; then copies are damaged one way each (a byte of a
 * batch header, of batch data, a truncated segment, a missing middle segment, a torn
 * tail, a huge length field, a directory where a file belongs, metadata) and each must
 * be found, naming the right file and offset. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "buf.h"
#include "cairn.h"
#include "error.h"
#include "raftlog.h"

static char base[64];     /* the node's data directory is base/data */
static char raftDir[128]; /* base/data/raft, never damaged */
static char scratch[128]; /* base/scratch: a copy per test */

/* ---- helpers ------------------------------------------------------------------------- */

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fail_msg("command failed: %s", cmd);
    }
}

static void writeRows(int first, int n, int crash)
{
    struct cairn_config cfg;
    char data[128];
    cairn *db = NULL;
    cairn_result *r = NULL;
    char pad[200];

    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(data, sizeof data, "%s/data", base);
    cairn_config_init(&cfg);
    cfg.data_dir = data;
    if (cairn_open(&cfg, &db) != CAIRN_OK) {
        fail_msg("open %s: %s", data, cairn_errmsg(db));
    }
    if (first == 0) {
        assert_int_equal(cairn_execute(db, "CREATE TABLE t(x INTEGER, y TEXT)", NULL, 0, &r), 0);
        cairn_result_free(r);
    }
    for (int i = first; i < first + n; i++) {
        cairn_value p[] = {cairn_int(i), cairn_text(pad)};
        assert_int_equal(cairn_execute(db, "INSERT INTO t VALUES(?, ?)", p, 2, &r), 0);
        cairn_result_free(r);
    }
    if (crash) {
        _exit(0); /* no close: the open segment stays as a crash leaves it */
    }
    cairn_close(db);
}

/* Copy the healthy raft directory to scratch. */
static void fresh(void)
{
    run("rm -rf '%s' && cp -a '%s' '%s'", scratch, raftDir, scratch);
}

/* Names of the closed segments of dir, sorted; returns how many (at most max). */
static int closedSegments(const char *dir, char names[][64], int max)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort), k = 0;
    assert_true(n >= 0);
    for (int i = 0; i < n; i++) {
        const char *s = list[i]->d_name;
        if (strlen(s) == 33 && s[16] == '-' && k < max) {
            snprintf(names[k++], 64, "%s", s);
        }
        free(list[i]);
    }
    free(list);
    return k;
}

/* The open segment of dir that holds data ("" when none). */
static void openWithData(const char *dir, char *out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    out[0] = '\0';
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[512];
        unsigned char fmt[8] = {0};
        if (strncmp(e->d_name, "open-", 5) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        if (pread(fd, fmt, 8, 0) == 8 && fmt[0] == 1) {
            strcpy(out, e->d_name);
        }
        close(fd);
    }
    closedir(d);
}

static void pathOf(const char *name, char *out)
{
    snprintf(out, 512, "%s/%s", scratch, name);
}

static void readBytes(const char *name, uint64_t off, void *p, size_t n)
{
    char path[512];
    pathOf(name, path);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, p, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void writeBytes(const char *name, uint64_t off, const void *p, size_t n)
{
    char path[512];
    pathOf(name, path);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void flip(const char *name, uint64_t off)
{
    unsigned char b;
    readBytes(name, off, &b, 1);
    b ^= 0x40;
    writeBytes(name, off, &b, 1);
}

static uint64_t u64At(const char *name, uint64_t off)
{
    unsigned char b[8];
    readBytes(name, off, b, 8);
    return getU64(b);
}

/* Offsets of the batches of a segment (format word first), up to max; returns how many.
 * Follows the lengths of a healthy file. */
static int batchOffsets(const char *name, uint64_t *offs, int max)
{
    char path[512];
    struct stat st;
    uint64_t off = 8;
    int k = 0;
    pathOf(name, path);
    assert_int_equal(stat(path, &st), 0);
    while (off + 16 <= (uint64_t)st.st_size && k < max) {
        uint64_t n = u64At(name, off + 8), data = 0;
        if (n == 0) {
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            unsigned char rec[16];
            readBytes(name, off + 16 + i * 16, rec, 16);
            data += getU32(rec + 12);
        }
        offs[k++] = off;
        off += 16 + 16 * n + data;
    }
    offs[k] = off; /* the end of the last batch */
    return k;
}

static int verify(struct raftlog_report *r)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    int rc = raftlogVerify(scratch, NULL, NULL, r, errmsg);
    if (rc != 0 && r->n_problems == 0) {
        print_message("raftlogVerify: %s\n", errmsg);
    }
    return rc;
}

static void expectProblem(const struct raftlog_report *r, const char *file, int64_t offset,
                          int kind, const char *text)
{
    if (r->n_problems == 0) {
        fail_msg("no problem found, expected one in %s", file);
    }
    const struct raftlog_problem *p = &r->problems[0];
    if (strcmp(p->file, file) != 0 || (offset != -2 && p->offset != offset) || p->kind != kind ||
        strstr(p->message, text) == NULL) {
        fail_msg("expected %s @%lld kind %d \"%s\", got %s @%lld kind %d: %s", file,
                 (long long)offset, kind, text, p->file, (long long)p->offset, p->kind, p->message);
    }
}

/* ---- fixture ------------------------------------------------------------------------- */

static int setup(void **state)
{
    pid_t pid;
    int status;

    snprintf(base, sizeof base, "/tmp/cairn-test-raftlog-XXXXXX");
    if (mkdtemp(base) == NULL) {
        return -1;
    }
    snprintf(raftDir, sizeof raftDir, "%s/data/raft", base);
    snprintf(scratch, sizeof scratch, "%s/scratch", base);
    /* Each start closes the open segments of the run before: three runs, three or more
     * closed segments. */
    writeRows(0, 40, 0);
    writeRows(40, 40, 0);
    writeRows(80, 40, 0);
    /* A crash: the child writes and exits without closing. */
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        writeRows(120, 40, 1);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_crc_matches_libraft(void **state)
{
    /* CRC-32/MPEG-2's check value is 0x0376E6E7 with init 0xFFFFFFFF; libraft starts
     * from 0 and has no final xor, which gives 0x89A1897F for "123456789". */
    assert_int_equal(raftlogCrc32("123456789", 9, 0xFFFFFFFFu), 0x0376E6E7u);
    assert_int_equal(raftlogCrc32("123456789", 9, 0), 0x89A1897Fu);
    /* Incremental use gives the same result. */
    assert_int_equal(raftlogCrc32("6789", 4, raftlogCrc32("12345", 5, 0)), 0x89A1897Fu);
}

static void test_healthy(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    char open[64];
    fresh();
    assert_int_equal(verify(&r), 0);
    assert_int_equal(r.n_problems, 0);
    assert_true(closedSegments(scratch, names, 16) >= 3);
    openWithData(scratch, open);
    assert_true(open[0] != '\0');
    assert_int_equal(r.first_index, 1);
    assert_int_equal(r.last_index, r.entries);
    assert_true(r.entries >= 161); /* the rows, the table, configuration and barriers */
    assert_true(r.term >= 1);
    assert_true(r.files_checked >= 5);
    assert_true(r.bytes_checked > 0);
}

static void test_header_flip(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    fresh();
    closedSegments(scratch, names, 16);
    /* The batch header starts at 16 (after the format word and the two CRCs); byte 20
     * is in the entry count, 30 in the first entry's record. */
    flip(names[0], 30);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[0], 8, RAFTLOG_DAMAGED, "header checksum mismatch (stored 0x");
    assert_non_null(strstr(r.problems[0].message, "batch at offset 8:"));
}

static void test_data_flip(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    uint64_t offs[64];
    fresh();
    closedSegments(scratch, names, 16);
    int nb = batchOffsets(names[1], offs, 63);
    assert_true(nb >= 2);
    /* The last byte of the second batch's data. */
    flip(names[1], offs[2] - 1);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], (int64_t)offs[1], RAFTLOG_DAMAGED, "data checksum mismatch");
}

static void test_truncated(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    char path[512];
    struct stat st;
    fresh();
    closedSegments(scratch, names, 16);
    pathOf(names[1], path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 5), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], -2, RAFTLOG_DAMAGED, "runs past the end of the file");

    /* Cut after a whole batch: the batches check out, the count does not. */
    fresh();
    uint64_t offs[64];
    int nb = batchOffsets(names[1], offs, 63);
    assert_true(nb >= 2);
    assert_int_equal(truncate(path, (off_t)offs[nb - 1]), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], -1, RAFTLOG_DAMAGED, "the name says");

    /* Empty. */
    fresh();
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], 0, RAFTLOG_DAMAGED, "file is empty");
}

static void test_middle_segment_deleted(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    char path[512];
    fresh();
    int n = closedSegments(scratch, names, 16);
    assert_true(n >= 3);
    pathOf(names[1], path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[2], -1, RAFTLOG_DAMAGED, "are missing before it");

    /* The first one: the log no longer starts at 1 and there is no snapshot. */
    fresh();
    pathOf(names[0], path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], -1, RAFTLOG_DAMAGED, "there is no snapshot");
}

static void test_torn_tail(void **state)
{
    struct raftlog_report r;
    char open[64];
    uint64_t offs[256];
    fresh();
    openWithData(scratch, open);
    int nb = batchOffsets(open, offs, 255);
    assert_true(nb >= 2);
    /* The last batch lost its last bytes: as if the crash came while it was written. */
    unsigned char zero[8] = {0};
    writeBytes(open, offs[nb] - 8, zero, 8);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, open, (int64_t)offs[nb - 1], RAFTLOG_TORN_TAIL,
                  "tail of the newest open segment");
    /* The entries before it are counted. */
    assert_true(r.entries > 0);

    /* The same damage in the first batch, with good batches after it: not a tail. */
    fresh();
    flip(open, offs[1] - 1);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, open, (int64_t)offs[0], RAFTLOG_DAMAGED, "data follows it");

    /* Garbage after the end of the data of the open segment. */
    fresh();
    flip(open, offs[nb] + 4096);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, open, (int64_t)(offs[nb] + 4096), RAFTLOG_DAMAGED,
                  "after the end of the last batch");
}

static void test_huge_lengths(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    unsigned char hdr[8 + 16];
    fresh();
    closedSegments(scratch, names, 16);

    /* A huge entry count. */
    unsigned char big[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    writeBytes(names[0], 16, big, 8);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[0], 8, RAFTLOG_DAMAGED, "is too high");

    /* An entry length of 4 GiB with a header checksum that matches: the length is
     * checked against the file before anything is read. */
    fresh();
    assert_int_equal(u64At(names[0], 16), 1); /* the first batch has one entry */
    readBytes(names[0], 16, hdr, sizeof hdr);
    hdr[8 + 12] = hdr[8 + 13] = hdr[8 + 14] = 0xff;
    hdr[8 + 15] = 0xff;
    hdr[8 + 12] = 0xf8; /* a multiple of 8 */
    uint32_t crc = raftlogCrc32(hdr, sizeof hdr, 0);
    unsigned char c4[4] = {(unsigned char)crc, (unsigned char)(crc >> 8),
                           (unsigned char)(crc >> 16), (unsigned char)(crc >> 24)};
    writeBytes(names[0], 16, hdr, sizeof hdr);
    writeBytes(names[0], 8, c4, 4);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[0], 8, RAFTLOG_DAMAGED, "runs past the end of the file");
}

static void test_odd_files(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    char path[512];
    char errmsg[CAIRN_ERRMSG_SIZE];

    /* A directory where a segment belongs. */
    fresh();
    closedSegments(scratch, names, 16);
    pathOf(names[1], path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[1], -1, RAFTLOG_DAMAGED, "not a regular file");

    /* Metadata: a bad format, then one too long. */
    fresh();
    flip("metadata1", 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, "metadata1", 0, RAFTLOG_DAMAGED, "bad format version");
    fresh();
    run("printf 'xx' >> '%s/metadata1'", scratch);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, "metadata1", -1, RAFTLOG_DAMAGED, "instead of 32");

    /* A wrong format word in a closed segment. */
    fresh();
    flip(names[0], 0);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    expectProblem(&r, names[0], 0, RAFTLOG_DAMAGED, "unexpected format version");

    /* Not there at all. */
    assert_int_equal(raftlogVerify("/nonexistent/raft", NULL, NULL, &r, errmsg), CAIRN_ENOTFOUND);
    assert_non_null(strstr(errmsg, "/nonexistent/raft"));
}

/* Every problem is reported, in the order libraft loads the files, and the JSON
 * report has its documented shape. */
static void test_json_and_order(void **state)
{
    struct raftlog_report r;
    char names[16][64];
    struct buf b;
    json_error_t jerr;
    fresh();
    closedSegments(scratch, names, 16);
    flip(names[2], 30);
    flip(names[0], 30);
    assert_int_equal(verify(&r), CAIRN_ECORRUPT);
    assert_int_equal(r.n_problems, 2);
    assert_string_equal(r.problems[0].file, names[0]);
    assert_string_equal(r.problems[1].file, names[2]);

    bufInit(&b);
    raftlogReportJson(&r, "raft/", &b);
    assert_false(b.oom);
    json_t *j = json_loadb(b.p, b.len, 0, &jerr);
    if (j == NULL) {
        fail_msg("bad JSON (%s): %.*s", jerr.text, (int)b.len, b.p);
    }
    assert_true(json_is_false(json_object_get(j, "ok")));
    assert_true(json_is_integer(json_object_get(j, "files_checked")));
    assert_true(json_is_integer(json_object_get(j, "entries")));
    assert_int_equal(json_integer_value(json_object_get(j, "first_index")), 1);
    assert_true(json_is_integer(json_object_get(j, "last_index")));
    json_t *p = json_array_get(json_object_get(j, "problems"), 0);
    char want[96];
    snprintf(want, sizeof want, "raft/%s", names[0]);
    assert_string_equal(json_string_value(json_object_get(p, "file")), want);
    assert_int_equal(json_integer_value(json_object_get(p, "offset")), 8);
    assert_string_equal(json_string_value(json_object_get(p, "kind")), "damaged");
    assert_non_null(json_string_value(json_object_get(p, "message")));
    json_decref(j);
    bufFree(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc_matches_libraft), cmocka_unit_test(test_healthy),
        cmocka_unit_test(test_header_flip),         cmocka_unit_test(test_data_flip),
        cmocka_unit_test(test_truncated),           cmocka_unit_test(test_middle_segment_deleted),
        cmocka_unit_test(test_torn_tail),           cmocka_unit_test(test_huge_lengths),
        cmocka_unit_test(test_odd_files),           cmocka_unit_test(test_json_and_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
