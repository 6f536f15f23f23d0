/* `cairn archive list|show|verify --repo URL` and the point-in-time form of `cairn
 * restore` (--to-index, --to-time, latest): the continuous archive from the command
 * line, on a repository in this process (no server), through src/pitr.h and the
 * segment engine src/backup/arcseg.h. Main thread. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "arcseg.h"
#include "backup.h"
#include "cli.h"
#include "error.h"
#include "export.h"
#include "lib.h"
#include "pitr.h"

#define VALUE(opts, values, name) ((values)[cliOptionIndex((opts), (name))])
#define MAX_OPTIONS 12

static const cliOption archiveOptions[] = {
    {"repo", 0, "DIR|URL", "the repository (a directory, file:///DIR or s3://BUCKET/PREFIX)"},
    {"s3-endpoint", 0, "URL", "s3:// repository: an S3-compatible endpoint (MinIO, R2, ...)"},
    {"s3-region", 0, "REGION", "s3:// repository: its region (default $AWS_REGION)"},
    {"json", 0, NULL, "print the outcome as JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "cairn: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return CLI_EXIT_FAIL;
}

static void isoOf(int64_t ms, char out[LIB_ISO8601_SIZE])
{
    if (ms == 0) {
        snprintf(out, LIB_ISO8601_SIZE, "-");
        return;
    }
    libIso8601(ms, LIB_ISO8601_MS, out);
}

/* Options shared by the subcommands: the repository (with the S3 flags set into the
 * environment, as every S3 tool reads them). -1 to go on, else an exit code. */
static int setupRepo(const cliCommand *cmd, int argc, char **argv, const char **values, int *npos,
                     const char **repo, bool *json)
{
    int code;
    const char *endpoint, *region;
    if (cliParseCommandArgs(cmd, argc, argv, values, npos, &code)) {
        return code;
    }
    *repo = VALUE(cmd->options, values, "repo");
    *json = VALUE(cmd->options, values, "json") != NULL;
    endpoint = VALUE(cmd->options, values, "s3-endpoint");
    region = VALUE(cmd->options, values, "s3-region");
    if (*repo == NULL || (*repo)[0] == '\0') {
        return cliUsageError(cmd, "--repo DIR|URL is required (the archive is read in this "
                                  "process)");
    }
    if ((endpoint != NULL || region != NULL) && strncasecmp(*repo, "s3://", 5) != 0) {
        return cliUsageError(cmd, "--s3-endpoint and --s3-region go with --repo s3://...");
    }
    if (endpoint != NULL) {
        setenv("AWS_ENDPOINT_URL_S3", endpoint, 1);
    }
    if (region != NULL) {
        setenv("AWS_REGION", region, 1);
    }
    if (strstr(*repo, "://") == NULL || strncmp(*repo, "file://", 7) == 0) {
        /* A directory that is not there holds no archive: without this, a mistyped
         * path listed nothing and verified "ok". */
        const char *dir = strncmp(*repo, "file://", 7) == 0 ? *repo + 7 : *repo;
        struct stat st;
        if (stat(dir, &st) != 0) {
            return errno == ENOENT ? fail("repository %s does not exist", *repo)
                                   : fail("repository %s: %s", *repo, strerror(errno));
        }
        if (!S_ISDIR(st.st_mode)) {
            return fail("repository %s is not a directory", *repo);
        }
    }
    return -1;
}

static json_t *windowJson(const struct pitr_window *w)
{
    char a[LIB_ISO8601_SIZE], b[LIB_ISO8601_SIZE];
    isoOf(w->tl.start_ms, a);
    isoOf(w->tl.head_ms, b);
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I}", "timeline", w->tl.name, "start_index",
                  (json_int_t)w->tl.start, "head_index", (json_int_t)w->tl.head, "start_time", a,
                  "head_time", b, "segments", (json_int_t)w->tl.nseg, "good_segments",
                  (json_int_t)w->tl.good, "entries", (json_int_t)w->tl.entries);
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(
        o, "restorable",
        w->usable ? json_pack("{s:I, s:I, s:s, s:I, s:I}", "from_index", (json_int_t)w->from,
                              "to_index", (json_int_t)w->tl.head, "oldest_base", w->from_id,
                              "bases", (json_int_t)w->bases, "from_time_ms", (json_int_t)w->from_ms)
                  : json_null());
    if (w->tl.problem[0] != '\0') {
        json_object_set_new(o, "problem",
                            json_pack("{s:s, s:s, s:I}", "message", w->tl.problem, "object",
                                      w->tl.bad_object, "index", (json_int_t)w->tl.bad_index));
    } else {
        json_object_set_new(o, "problem", json_null());
    }
    return o;
}

static int printJson(json_t *doc)
{
    if (doc == NULL || json_dumpf(doc, stdout, JSON_COMPACT) != 0) {
        json_decref(doc);
        return fail("out of memory");
    }
    putchar('\n');
    json_decref(doc);
    return CLI_EXIT_OK;
}

/* list (full false) and verify (full true). */
static int runWalk(const cliCommand *cmd, int argc, char **argv, bool full)
{
    const char *values[MAX_OPTIONS];
    const char *url;
    bool json;
    int npos, code;
    struct repo *repo = NULL;
    struct arcseg_info *segs = NULL;
    struct pitr_window *w = NULL;
    size_t nsegs = 0, nw = 0;
    char errmsg[CAIRN_ERRMSG_SIZE];
    int problems = 0;

    if ((code = setupRepo(cmd, argc, argv, values, &npos, &url, &json)) >= 0) {
        return code;
    }
    code = CLI_EXIT_OK;
    if (npos > 0) {
        return cliUsageError(cmd, "unexpected argument \"%s\"", argv[1]);
    }
    if (repoOpen(url, &repo, errmsg) != 0 ||
        pitrWindows(repo, full, &segs, &nsegs, &w, &nw, errmsg) != 0) {
        repoClose(repo);
        return fail("%s", errmsg);
    }
    for (size_t i = 0; i < nw; i++) {
        problems += w[i].tl.problem[0] != '\0';
    }
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < nw && arr != NULL; i++) {
            json_array_append_new(arr, windowJson(&w[i]));
        }
        code = printJson(
            json_pack("{s:o, s:b, s:b}", "timelines", arr, "verified", full, "ok", problems == 0));
    } else {
        if (nw == 0) {
            printf("no archive in %s\n", url);
        }
        for (size_t i = 0; i < nw; i++) {
            char a[LIB_ISO8601_SIZE], b[LIB_ISO8601_SIZE];
            isoOf(w[i].tl.start_ms, a);
            isoOf(w[i].tl.head_ms, b);
            printf("timeline %s: %zu segments, %llu entries, indexes %llu-%llu (%s to %s)\n",
                   w[i].tl.name, w[i].tl.nseg, (unsigned long long)w[i].tl.entries,
                   (unsigned long long)w[i].tl.start, (unsigned long long)w[i].tl.head, a, b);
            if (w[i].usable) {
                char c[LIB_ISO8601_SIZE];
                isoOf(w[i].from_ms, c);
                printf("  restorable: indexes %llu-%llu, %s to %s (oldest base backup %s; %llu "
                       "bases)\n",
                       (unsigned long long)w[i].from, (unsigned long long)w[i].tl.head, c, b,
                       w[i].from_id, (unsigned long long)w[i].bases);
            } else {
                printf("  restorable: nothing (no backup at index %llu or later up to its head)\n",
                       (unsigned long long)(w[i].tl.start - 1));
            }
            if (w[i].tl.problem[0] != '\0') {
                printf("  PROBLEM at index %llu, %s: %s\n", (unsigned long long)w[i].tl.bad_index,
                       w[i].tl.bad_object, w[i].tl.problem);
            }
        }
        if (full) {
            printf(problems ? "verify: %d timeline(s) damaged\n"
                            : "verify: every segment and link checked: ok\n",
                   problems);
        }
    }
    free(w);
    free(segs);
    repoClose(repo);
    if (code == CLI_EXIT_OK && full && problems > 0) {
        return CLI_EXIT_FAIL;
    }
    return code;
}

static int runList(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    (void)env;
    return runWalk(cmd, argc, argv, false);
}

static int runVerify(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    (void)env;
    return runWalk(cmd, argc, argv, true);
}

static int runShow(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    const char *values[MAX_OPTIONS];
    const char *url;
    bool json;
    int npos, code;
    struct repo *repo = NULL;
    struct arcseg_info *segs = NULL;
    struct pitr_window *w = NULL;
    size_t nsegs = 0, nw = 0;
    const struct pitr_window *x = NULL;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)env;

    if ((code = setupRepo(cmd, argc, argv, values, &npos, &url, &json)) >= 0) {
        return code;
    }
    code = CLI_EXIT_OK;
    if (npos != 1) {
        return cliUsageError(cmd, "name one timeline (see `cairn archive list`)");
    }
    if (repoOpen(url, &repo, errmsg) != 0 ||
        pitrWindows(repo, false, &segs, &nsegs, &w, &nw, errmsg) != 0) {
        repoClose(repo);
        return fail("%s", errmsg);
    }
    for (size_t i = 0; i < nw; i++) {
        if (strcmp(w[i].tl.name, argv[1]) == 0) {
            x = &w[i];
        }
    }
    if (x == NULL) {
        code = fail("no timeline %s in %s", argv[1], url);
    } else if (json) {
        json_t *doc = windowJson(x);
        json_t *arr = json_array();
        for (size_t k = x->tl.from; k < x->tl.from + x->tl.nseg && arr != NULL; k++) {
            char a[LIB_ISO8601_SIZE], b[LIB_ISO8601_SIZE];
            isoOf(segs[k].first_ms, a);
            isoOf(segs[k].last_ms, b);
            json_array_append_new(
                arr, segs[k].read ? json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:I}", "name",
                                              segs[k].name, "first", (json_int_t)segs[k].first,
                                              "last", (json_int_t)segs[k].last, "count",
                                              (json_int_t)segs[k].count, "first_time", a,
                                              "last_time", b, "size", (json_int_t)segs[k].size)
                                  : json_pack("{s:s, s:I, s:n}", "name", segs[k].name, "first",
                                              (json_int_t)segs[k].first, "last"));
        }
        if (doc != NULL) {
            json_object_set_new(doc, "segment_list", arr);
        }
        code = printJson(doc);
    } else {
        printf("timeline %s: indexes %llu-%llu, %zu segments\n", x->tl.name,
               (unsigned long long)x->tl.start, (unsigned long long)x->tl.head, x->tl.nseg);
        printf("%-70s %10s %10s %7s %-24s %-24s %10s\n", "OBJECT", "FIRST", "LAST", "COUNT",
               "FIRST TIME", "LAST TIME", "BYTES");
        for (size_t k = x->tl.from; k < x->tl.from + x->tl.nseg; k++) {
            char a[LIB_ISO8601_SIZE], b[LIB_ISO8601_SIZE];
            isoOf(segs[k].first_ms, a);
            isoOf(segs[k].last_ms, b);
            if (segs[k].read) {
                printf("%-70s %10llu %10llu %7u %-24s %-24s %10llu\n", segs[k].name,
                       (unsigned long long)segs[k].first, (unsigned long long)segs[k].last,
                       segs[k].count, a, b, (unsigned long long)segs[k].size);
            } else {
                printf("%-70s %10llu %10s (not read: see the problem below)\n", segs[k].name,
                       (unsigned long long)segs[k].first, "?");
            }
        }
        if (x->tl.problem[0] != '\0') {
            printf("PROBLEM at index %llu, %s: %s\n", (unsigned long long)x->tl.bad_index,
                   x->tl.bad_object, x->tl.problem);
        }
    }
    free(w);
    free(segs);
    repoClose(repo);
    return code;
}

static const cliCommand listCommand = {
    .name = "archive list",
    .synopsis = "--repo URL [--json]",
    .summary = "List the archive's timelines and what each can restore.",
    .description =
        "Reads every segment's header and checks each link of the hash chain (not the\n"
        "bodies: see verify). A timeline's restorable window runs from the oldest backup\n"
        "of the repository it continues to its head.\n",
    .options = archiveOptions,
    .run = runList,
};

static const cliCommand showCommand = {
    .name = "archive show",
    .synopsis = "--repo URL [--json] TIMELINE",
    .summary = "List the segments of one timeline.",
    .description = NULL,
    .options = archiveOptions,
    .run = runShow,
};

static const cliCommand verifyCommand = {
    .name = "archive verify",
    .synopsis = "--repo URL [--json]",
    .summary = "Read every segment whole: every checksum, every link.",
    .description = "Exit status: 0 when every timeline is sound, 1 when one is damaged (the\n"
                   "message names the first damaged object and the first index it loses).\n",
    .options = archiveOptions,
    .run = runVerify,
};

static const cliCommand *const archiveSubcommands[] = {
    &listCommand,
    &showCommand,
    &verifyCommand,
    NULL,
};

static int runArchive(const cliCommand *cmd, const cliEnv *env, int argc, char **argv)
{
    return cliRunSubcommand(cmd, env, argc, argv);
}

const cliCommand cliArchiveCommand = {
    .name = "archive",
    .synopsis = "SUBCOMMAND --repo URL [options]",
    .summary = "List, show and verify the continuous archive of a repository.",
    .description = "subcommands:\n"
                   "  list     timelines, their heads and restorable windows\n"
                   "  show     the segments of one timeline\n"
                   "  verify   read every segment: every checksum and link\n"
                   "\n"
                   "cairnd --archive writes the archive; `cairn restore --repo URL --to-time T\n"
                   "--out FILE` (or --to-index N, or latest in place of an ID) restores from it.\n",
    .options = archiveOptions,
    .run = runArchive,
    .subcommands = archiveSubcommands,
};

/* ---- point-in-time restore ----------------------------------------------------------- */

/* "2026-12-02T10:02:00Z", with optional fraction and a Z or ±HH:MM offset, or Unix
 * milliseconds. */
int cliParseTime(const char *s, int64_t *ms)
{
    /* Unix milliseconds: digits only, from 1970 to the end of year 9999 (what an
     * ISO-8601 time can say); a sign, an overflow or a time before 1970 is refused,
     * never clamped into some other moment. */
    const int64_t max = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
    int64_t v = 0;
    const char *p = s;
    while (isdigit((unsigned char)*p) && v <= max) {
        v = v * 10 + (*p++ - '0');
    }
    if (p != s && *p == '\0') {
        if (v > max) {
            return -1;
        }
        *ms = v;
        return 0;
    }
    if (isdigit((unsigned char)*p)) {
        return -1; /* more digits than any time has */
    }
    return libParseIso8601(s, ms);
}

int cliRepoHasArchive(const char *url, char *errmsg)
{
    struct repo *repo = NULL;
    struct arcseg_info *segs = NULL;
    const char *local;
    struct stat st;
    size_t n = 0;
    int has;
    if (repoOpen(url, &repo, errmsg) != 0) {
        return 0;
    }
    local = repoLocalPath(repo);
    if (local != NULL && (stat(local[0] != '\0' ? local : ".", &st) != 0 || !S_ISDIR(st.st_mode))) {
        repoClose(repo);
        return 0;
    }
    /* A listing that failed is no answer: taken for "no archive", "latest" would be the
     * newest backup, an older state than the archive's head, restored without a word. */
    if (arcsegList(repo, &segs, &n, errmsg) != 0) {
        char why[CAIRN_ERRMSG_SIZE];
        snprintf(why, sizeof why, "%s", errmsg);
        errorf(errmsg, "cannot tell whether %s holds an archive (latest is its head then): %s",
               url, why);
        has = -1;
    } else {
        has = n > 0;
    }
    free(segs);
    repoClose(repo);
    return has;
}

static int strip(const char *path, void *arg, char *errmsg)
{
    return exportStripInternal(path, arg, errmsg);
}

int cliPitrRestore(const char *repo, const char *to_index, const char *to_time, bool latest,
                   const char *out, bool force, bool keep, int check, bool json)
{
    struct pitr_options o;
    struct pitr_result res;
    char errmsg[CAIRN_ERRMSG_SIZE];
    char stop[LIB_ISO8601_SIZE];
    bool stripped = false;
    int64_t t0 = libMonoMs();

    memset(&o, 0, sizeof o);
    o.repo = repo;
    o.out = out;
    o.force = force;
    o.check = check;
    if (!keep) {
        o.finish = strip;
        o.finish_arg = &stripped;
    }
    if (to_index != NULL) {
        char *end;
        unsigned long long v;
        errno = 0;
        v = strtoull(to_index, &end, 10);
        /* Digits only, within 64 bits: strtoull takes " 5" and "-5", and makes too many
         * digits 2^64-1, an index the user did not ask for. */
        if (!isdigit((unsigned char)to_index[0]) || *end != '\0' || errno != 0) {
            fprintf(stderr, "cairn restore: --to-index takes an index, not \"%s\"\n", to_index);
            return CLI_EXIT_USAGE;
        }
        o.kind = PITR_INDEX;
        o.index = v;
    } else if (to_time != NULL) {
        if (cliParseTime(to_time, &o.time_ms) != 0) {
            fprintf(stderr,
                    "cairn restore: --to-time takes an ISO-8601 time (2026-12-02T10:02:00Z, "
                    "2026-12-02T11:02:00+01:00) or Unix milliseconds, not \"%s\"\n",
                    to_time);
            return CLI_EXIT_USAGE;
        }
        o.kind = PITR_TIME;
    } else {
        (void)latest;
        o.kind = PITR_LATEST;
    }
    {
        struct dirlock held;
        int rv;
        if (cliClaimOut(out, force, &held, errmsg) != 0) {
            return fail("%s", errmsg);
        }
        rv = pitrRestore(&o, &res, errmsg);
        lockRelease(&held);
        if (rv != 0) {
            return fail("%s", errmsg);
        }
    }
    isoOf(res.stop_ms, stop);
    if (json) {
        char abs[PATH_MAX];
        return printJson(json_pack(
            "{s:s, s:s, s:{s:s, s:I}, s:I, s:I, s:s, s:I, s:I, s:I, s:b}", "out",
            realpath(out, abs) != NULL ? abs : out, "timeline", res.timeline, "base", "id",
            res.base.id, "index", (json_int_t)res.base.raft_index, "target", (json_int_t)res.target,
            "stop_index", (json_int_t)res.stop_index, "stop_time", stop, "stop_time_ms",
            (json_int_t)res.stop_ms, "entries", (json_int_t)res.entries, "restores",
            (json_int_t)res.restores, "internal_left_out", stripped));
    }
    if (res.timeline[0] == '\0') {
        printf("restored %s as of index %llu: backup %s alone, newer than the archive's head, "
               "in %.2f s\n",
               out, (unsigned long long)res.stop_index, res.base.id,
               (double)(libMonoMs() - t0) / 1000.0);
        return CLI_EXIT_OK;
    }
    printf("restored %s as of index %llu (%s) on timeline %s: backup %s (index %llu) + %llu "
           "archived entries%s, in %.2f s\n",
           out, (unsigned long long)res.stop_index, stop, res.timeline, res.base.id,
           (unsigned long long)res.base.raft_index, (unsigned long long)res.entries,
           res.restores ? " (with a restore entry)" : "", (double)(libMonoMs() - t0) / 1000.0);
    return CLI_EXIT_OK;
}
