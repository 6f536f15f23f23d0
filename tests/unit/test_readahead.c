/* Unit tests of the read-ahead of remote objects (src/backup/readahead.c) over an object
 * in memory, fetched by a fake fetch function that counts what it is asked, can hold
 * fetches until others run alongside, hold them at a gate, and fail given ranges: random
 * small reads fetch little and nothing ahead; a sequential scan has several fetches in
 * flight; the budget bounds the bytes ahead over many readers; a fetch's error surfaces
 * at the read that needs its bytes, and only there; a reader closed with fetches under
 * way lets them end on their own. The S3 driver on it is tested against a server in
 * tests/system/test_s3_repository.py. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "readahead.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
/* The longest a fake fetch waits for company or for its gate: a test that would hang
 * fails instead. */
#define WAIT_MS 10000

struct fake {
    unsigned char *data;
    size_t size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned running, max_running;
    unsigned want_company; /* a fetch waits until this many run at once (0: never) */
    bool gate;             /* while set, fetches wait (unless cancelled) */
    unsigned at_gate;
    uint64_t fail_from, fail_to; /* fetches overlapping [from, to) fail */
    unsigned calls;
    uint64_t largest;
    int released;
    unsigned cancelled_seen;
};

static void fakeInit(struct fake *f, size_t size)
{
    memset(f, 0, sizeof *f);
    f->size = size;
    f->data = malloc(size);
    assert_non_null(f->data);
    for (size_t i = 0; i < size; i++) {
        f->data[i] = (unsigned char)((i * 2654435761u) >> 13);
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

static void fakeFree(struct fake *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f->data);
}

static void deadlineIn(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int fakeFetch(void *obj, uint64_t off, void *buf, size_t n, const int *cancel, char *errmsg)
{
    struct fake *f = obj;
    struct timespec until;
    int rv = 0;
    deadlineIn(&until, WAIT_MS);
    pthread_mutex_lock(&f->mu);
    f->calls++;
    if (n > f->largest) {
        f->largest = n;
    }
    if (++f->running > f->max_running) {
        f->max_running = f->running;
    }
    pthread_cond_broadcast(&f->cv);
    while (f->want_company > 0 && f->running < f->want_company &&
           f->max_running < f->want_company &&
           pthread_cond_timedwait(&f->cv, &f->mu, &until) == 0) {
    }
    if (f->gate) {
        f->at_gate++;
        pthread_cond_broadcast(&f->cv);
        while (f->gate && __atomic_load_n(cancel, __ATOMIC_RELAXED) == 0 &&
               pthread_cond_timedwait(&f->cv, &f->mu, &until) == 0) {
        }
        f->at_gate--;
    }
    if (__atomic_load_n(cancel, __ATOMIC_RELAXED) != 0) {
        f->cancelled_seen++;
    }
    if (off < f->fail_to && off + n > f->fail_from) {
        errorf(errmsg, "fake object: bytes %llu-%llu failed", (unsigned long long)off,
               (unsigned long long)(off + n - 1));
        rv = CAIRN_EIO;
    }
    f->running--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (rv == 0) {
        assert_true(off + n <= f->size);
        memcpy(buf, f->data + off, n);
    }
    return rv;
}

/* The fake object as a stream (the spool's fetch): fakeFetch's bytes, handed on in
 * pieces of 3000 bytes. */
static int fakeStream(void *obj, uint64_t off, size_t n, readahead_sink_fn sink, void *arg,
                      const int *cancel, char *errmsg)
{
    unsigned char *buf = malloc(n ? n : 1);
    int rv;
    assert_non_null(buf);
    rv = fakeFetch(obj, off, buf, n, cancel, errmsg);
    for (size_t at = 0; rv == 0 && at < n; at += 3000) {
        if (sink(arg, buf + at, n - at < 3000 ? n - at : 3000) != 0) {
            errorf(errmsg, "fake object: the sink stopped the fetch");
            rv = CAIRN_EIO;
        }
    }
    free(buf);
    return rv;
}

static void fakeRelease(void *obj)
{
    struct fake *f = obj;
    pthread_mutex_lock(&f->mu);
    f->released++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void fakeSet(struct fake *f, unsigned *field, unsigned v)
{
    pthread_mutex_lock(&f->mu);
    *field = v;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Wait (polling, with a deadline) until every fetch queued ahead has run: `direct`
 * fetches made by reads themselves besides them. */
static void waitIdle(struct readahead_pool *p, struct fake *f, uint64_t direct)
{
    struct timespec until, step;
    struct readahead_stats st;
    deadlineIn(&until, WAIT_MS);
    for (;;) {
        struct timespec now;
        readaheadPoolStats(p, &st);
        if (st.fetches == st.ahead + direct) {
            return;
        }
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > until.tv_sec ||
            (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)) {
            fail_msg("fetches still running: %llu of %llu", (unsigned long long)st.fetches,
                     (unsigned long long)(st.ahead + direct));
        }
        deadlineIn(&step, 10);
        pthread_mutex_lock(&f->mu);
        pthread_cond_timedwait(&f->cv, &f->mu, &step);
        pthread_mutex_unlock(&f->mu);
    }
}

/* Wait (with a deadline) until `*what` reaches at least `want`. */
static void waitFor(struct fake *f, unsigned *what, unsigned want)
{
    struct timespec until;
    deadlineIn(&until, WAIT_MS);
    pthread_mutex_lock(&f->mu);
    while (*what < want && pthread_cond_timedwait(&f->cv, &f->mu, &until) == 0) {
    }
    assert_true(*what >= want);
    pthread_mutex_unlock(&f->mu);
}

static void readOk(struct readahead *r, struct fake *f, uint64_t off, size_t n)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    unsigned char *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    if (readaheadRead(r, off, buf, n, errmsg) != 0) {
        fail_msg("read of %zu at %llu: %s", n, (unsigned long long)off, errmsg);
    }
    assert_memory_equal(buf, f->data + off, n);
    free(buf);
}

static const struct readahead_config smallConfig = {
    .threads = 4,
    .small = 16 * KIB,
    .chunk_min = 64 * KIB,
    .chunk_max = 256 * KIB,
    .ahead_max = 1 * MIB,
    .budget = 4 * MIB,
};

/* A .cbk file's header, footer and manifest head: a small fetch each, nothing ahead. */
static void test_random_small_reads_fetch_little(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    fakeInit(&f, 8 * MIB);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    readOk(r, &f, 0, 512);
    readOk(r, &f, 100, 200); /* in the window already */
    readOk(r, &f, f.size - 96, 96);
    readOk(r, &f, f.size - 4000, 16); /* the window ends at the end: held */
    readOk(r, &f, 3 * MIB, 16);
    readOk(r, &f, 5 * MIB, 64 * KIB); /* as large as the window: straight in */
    readaheadPoolStats(p, &st);
    assert_int_equal(st.ahead, 0);
    assert_int_equal(st.fetches, 4);
    assert_true(f.largest <= 64 * KIB);
    assert_int_equal(st.fetched_bytes, 3 * 16 * KIB + 64 * KIB);
    readaheadClose(r);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* Bytes read by the owner before (the S3 driver's opening GET) serve reads without a
 * fetch; a seed larger than the window is refused. */
static void test_seeded_window_serves_reads(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    fakeInit(&f, 1 * MIB);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    assert_int_equal(readaheadSeed(r, 0, f.data, smallConfig.small + 1, errmsg), CAIRN_EINVAL);
    assert_int_equal(readaheadSeed(r, 0, f.data, smallConfig.small, errmsg), 0);
    readOk(r, &f, 0, 512);
    readOk(r, &f, 512, 1000);
    readaheadPoolStats(p, &st);
    assert_int_equal(st.fetches, 0);
    readOk(r, &f, smallConfig.small - 10, 20); /* past the seed: fetched */
    readaheadPoolStats(p, &st);
    assert_int_equal(st.fetches, 1);
    readaheadClose(r);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* Told that a scan from the start comes next (after reads at the end, as a restore
 * reads a file's manifest first), a reader fetches the first chunks at once, and the
 * scan's first read is part of the run. */
static void test_will_read_starts_a_run(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 32 * KIB;
    (void)state;
    fakeInit(&f, 4 * MIB);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    readOk(r, &f, f.size - 96, 96);
    readaheadWillRead(r, 0);
    readaheadPoolStats(p, &st);
    assert_int_equal(st.ahead, 2); /* two chunks of chunk_max, before any read at 0 */
    for (uint64_t off = 0; off < f.size; off += step) {
        readOk(r, &f, off, step);
    }
    readaheadPoolStats(p, &st);
    /* One fetch for the footer's window; every other byte came ahead, each once. */
    assert_int_equal(st.fetches, st.ahead + 1);
    assert_int_equal(st.fetched_bytes, f.size + smallConfig.small);
    readaheadWillRead(r, f.size); /* nothing after the end */
    readaheadClose(r);
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* A scan in order has several fetches in flight, growing to chunk_max, and reads the
 * object once. */
static void test_sequential_scan_has_several_fetches_in_flight(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 32 * KIB;
    (void)state;
    fakeInit(&f, 8 * MIB + 12345);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    readOk(r, &f, 0, step);
    fakeSet(&f, &f.want_company, 2); /* a fetch waits until another runs beside it */
    for (uint64_t off = step; off < f.size; off += step) {
        readOk(r, &f, off, off + step > f.size ? f.size - off : step);
    }
    readaheadPoolStats(p, &st);
    assert_true(f.max_running >= 2);
    assert_true(st.max_busy >= 2);
    assert_true(st.ahead > 8);
    assert_int_equal(f.largest, smallConfig.chunk_max);
    /* Each byte fetched once (the first read's straight in, the rest ahead). */
    assert_int_equal(st.fetched_bytes, f.size);
    assert_true(st.budget_peak <= smallConfig.ahead_max + 2 * smallConfig.chunk_max);
    readaheadClose(r);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* Many readers scanning at once, interleaved (a chain's files all open): the bytes held
 * ahead never pass the budget, and every read is right. */
static void test_budget_bounds_many_readers(void **state)
{
    enum { READERS = 11 };
    struct readahead_config cfg = smallConfig;
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r[READERS];
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 48 * KIB;
    (void)state;
    cfg.budget = 2 * MIB;
    fakeInit(&f, 6 * MIB);
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r[i], errmsg), 0);
    }
    for (uint64_t off = 0; off < f.size; off += step) {
        for (int i = 0; i < READERS; i++) {
            /* Each reader starts at its own place and wraps round. */
            uint64_t at = (off + (uint64_t)i * 512 * KIB) % f.size;
            size_t n = at + step > f.size ? f.size - at : step;
            readOk(r[i], &f, at, n);
        }
    }
    readaheadPoolStats(p, &st);
    assert_true(st.ahead > 0);
    assert_true(st.budget_peak <= cfg.budget);
    for (int i = 0; i < READERS; i++) {
        readaheadClose(r[i]);
    }
    readaheadPoolClose(p);
    assert_int_equal(f.released, READERS);
    fakeFree(&f);
}

/* Readers that scan at once share the budget fairly: one that started first and ran
 * long (a chain's full backup, merged with its incrementals) does not hold so much of it
 * that the others read without read-ahead, in a request for every read. */
static void test_budget_is_shared_fairly_by_readers(void **state)
{
    enum { READERS = 4 };
    struct readahead_config cfg = smallConfig;
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r[READERS];
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 16 * KIB;
    uint64_t direct;
    (void)state;
    cfg.budget = 1 * MIB;
    cfg.ahead_max = 1 * MIB; /* one reader alone could take the whole budget */
    fakeInit(&f, 4 * MIB);
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r[i], errmsg), 0);
    }
    /* The first reader runs alone first: its read-ahead grows to what it may hold. */
    for (uint64_t off = 0; off < 1 * MIB; off += step) {
        readOk(r[0], &f, off, step);
    }
    for (uint64_t off = 0; off < 3 * MIB; off += step) {
        for (int i = 0; i < READERS; i++) {
            uint64_t at = i == 0 ? 1 * MIB + off : off;
            readOk(r[i], &f, at, step);
        }
    }
    readaheadPoolStats(p, &st);
    direct = st.fetches - st.ahead;
    /* Each reader's first read, and a few where its chunk was not in yet; without the
     * fair share the last three read most of their 192 steps directly. */
    assert_true(st.budget_peak <= cfg.budget);
    if (direct > 8 * READERS) {
        fail_msg("%llu of %llu fetches were made by reads, not ahead",
                 (unsigned long long)direct, (unsigned long long)st.fetches);
    }
    for (int i = 0; i < READERS; i++) {
        readaheadClose(r[i]);
    }
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* A restore holds 16 files' readers open at once, each reading in order (issue 16: the
 * S3 restore of a chain grew with its length). The bytes held for all of them stay
 * within the budget, each reader's share is fetched in chunks of half of it (the pages
 * a reader has read are given back as it reads, so the share need not hold a chunk
 * being read besides the next), and almost no read waits on a fetch of its own. */
static void test_many_readers_share_budget_in_large_chunks(void **state)
{
    enum { READERS = 16 };
    struct readahead_config cfg = smallConfig;
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r[READERS];
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 8 * KIB;
    uint64_t direct;
    (void)state;
    cfg.budget = 2 * MIB; /* a share of 128 KiB: chunks of 64 KiB, chunk_min */
    fakeInit(&f, 2 * MIB);
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r[i], errmsg), 0);
    }
    for (uint64_t off = 0; off < f.size; off += step) {
        for (int i = 0; i < READERS; i++) {
            readOk(r[i], &f, off, step);
        }
    }
    readaheadPoolStats(p, &st);
    direct = st.fetches - st.ahead;
    assert_true(st.budget_peak <= cfg.budget);
    /* 2 MiB in 64 KiB chunks: 32 a reader, and its first read. */
    if (st.fetches > (uint64_t)READERS * (32 + 2) || direct > 2 * READERS) {
        fail_msg("%llu fetches, %llu of them by reads", (unsigned long long)st.fetches,
                 (unsigned long long)direct);
    }
    for (int i = 0; i < READERS; i++) {
        readaheadClose(r[i]);
    }
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* A restore of a chain reads its full backup and its incrementals together, each in
 * proportion to its size (issue 16: an equal share gave the 220 MiB full backup the room
 * of each 17 MiB incremental, and the restore made 782 GETs). The shares go by the
 * square root of what each reader has left, which makes the fewest fetches for the
 * budget, and a share is fetched in one chunk: here one reader of 8 MiB and eight of
 * 512 KiB, read in step, within a budget of 2 MiB: an equal share (227 KiB) fetched in
 * two halves took 121 fetches; these shares (683 KiB for the large reader, 170 KiB for
 * each small one at first), in one chunk each, take 46. */
static void test_large_reader_gets_a_larger_share(void **state)
{
    enum { SMALL = 8, ROUNDS = 64 };
    struct readahead_config cfg = smallConfig;
    struct fake f;
    struct readahead_pool *p;
    struct readahead *big, *r[SMALL];
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t big_size = 8 * MIB, small_size = 512 * KIB;
    uint64_t direct;
    (void)state;
    cfg.budget = 2 * MIB;
    cfg.chunk_max = 1 * MIB;
    cfg.ahead_max = 2 * MIB;
    fakeInit(&f, big_size);
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, big_size, &big, errmsg), 0);
    for (int i = 0; i < SMALL; i++) {
        assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, small_size, &r[i], errmsg),
                         0);
    }
    for (int k = 0; k < ROUNDS; k++) {
        const size_t big_step = big_size / ROUNDS, small_step = small_size / ROUNDS;
        for (size_t at = 0; at < big_step; at += 16 * KIB) {
            readOk(big, &f, k * big_step + at, 16 * KIB);
        }
        for (int i = 0; i < SMALL; i++) {
            readOk(r[i], &f, k * small_step, small_step);
        }
    }
    readaheadPoolStats(p, &st);
    direct = st.fetches - st.ahead;
    assert_true(st.budget_peak <= cfg.budget);
    if (st.fetches > 56 || direct > 3 * (SMALL + 1)) {
        fail_msg("%llu fetches, %llu of them by reads", (unsigned long long)st.fetches,
                 (unsigned long long)direct);
    }
    readaheadClose(big);
    for (int i = 0; i < SMALL; i++) {
        readaheadClose(r[i]);
    }
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* The process's budget is shared by every pool: READAHEAD_BUDGET at most. */
static void test_process_budget_is_shared(void **state)
{
    struct readahead_config cfg = smallConfig;
    struct fake f;
    struct readahead_pool *p[3];
    struct readahead *r[3];
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 256 * KIB;
    (void)state;
    cfg.budget = 0;
    cfg.ahead_max = 16 * MIB;
    cfg.chunk_max = 4 * MIB;
    fakeInit(&f, 48 * MIB);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(readaheadPoolOpen(&cfg, &p[i], errmsg), 0);
        assert_int_equal(readaheadOpen(p[i], fakeFetch, &f, NULL, f.size, &r[i], errmsg), 0);
    }
    for (uint64_t off = 0; off < f.size; off += step) {
        for (int i = 0; i < 3; i++) {
            readOk(r[i], &f, off, step);
        }
    }
    readaheadPoolStats(p[0], &st);
    assert_true(st.budget_peak <= READAHEAD_BUDGET);
    assert_true(st.budget_peak > READAHEAD_BUDGET / 2); /* more than one reader's share */
    for (int i = 0; i < 3; i++) {
        readaheadClose(r[i]);
        readaheadPoolClose(p[i]);
    }
    fakeFree(&f);
}

/* A fetch ahead that fails fails the read that needs its bytes, with its message; the
 * reads before it succeed; a read tried again fetches afresh. */
static void test_error_surfaces_at_the_read_that_needs_it(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned char buf[32 * KIB];
    const size_t step = sizeof buf;
    uint64_t off;
    int rv = 0;
    (void)state;
    fakeInit(&f, 4 * MIB);
    f.fail_from = 2 * MIB + 100;
    f.fail_to = 2 * MIB + 101;
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    for (off = 0; off < f.size; off += step) {
        errmsg[0] = '\0';
        rv = readaheadRead(r, off, buf, step, errmsg);
        if (rv != 0) {
            break;
        }
        assert_memory_equal(buf, f.data + off, step);
    }
    assert_int_equal(rv, CAIRN_EIO);
    /* The first read that needs bytes of the failed fetch (a chunk holds the bad byte),
     * not one before. */
    assert_true(off <= f.fail_from && off + step + smallConfig.chunk_max > f.fail_from);
    assert_non_null(strstr(errmsg, "fake object: bytes"));
    /* Other bytes are still there, and once the object mends, the same read succeeds. */
    readOk(r, &f, 1 * MIB, 50);
    pthread_mutex_lock(&f.mu);
    f.fail_to = 0;
    pthread_mutex_unlock(&f.mu);
    readOk(r, &f, off, step);
    readOk(r, &f, off + step, step);
    readaheadClose(r);
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* An error in bytes fetched ahead that nobody reads is never reported. */
static void test_error_ahead_not_needed_is_not_reported(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    struct readahead_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 32 * KIB;
    (void)state;
    fakeInit(&f, 4 * MIB);
    f.fail_from = 1 * MIB;
    f.fail_to = 4 * MIB;
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    for (uint64_t off = 0; off < 1 * MIB - 256 * KIB; off += step) {
        readOk(r, &f, off, step);
    }
    /* Read-ahead went past 1 MiB by now (those fetches failed); a jump back is fine. */
    waitIdle(p, &f, 1);
    readaheadPoolStats(p, &st);
    assert_true(st.ahead > 0);
    {
        struct readahead_stats before = st;
        readOk(r, &f, 0, 512);
        readaheadPoolStats(p, &st);
        assert_int_equal(st.ahead, before.ahead); /* a jump fetches nothing ahead */
    }
    readOk(r, &f, 100 * KIB, 64 * KIB);
    readaheadClose(r);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* A reader closed while its fetches ahead are held at the gate: they are told to stop,
 * the object is released only once the last of them ends, and closing the pool waits
 * for them. */
static void test_close_with_fetches_in_flight(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    char errmsg[CAIRN_ERRMSG_SIZE];
    const size_t step = 64 * KIB;
    (void)state;
    fakeInit(&f, 4 * MIB);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    for (uint64_t off = 0; off < 512 * KIB; off += step) {
        readOk(r, &f, off, step);
    }
    waitIdle(p, &f, 1); /* the first read's own fetch, and those ahead */
    pthread_mutex_lock(&f.mu);
    f.gate = true;
    pthread_mutex_unlock(&f.mu);
    readOk(r, &f, 512 * KIB, step); /* fetched already; queues more, which stop at the gate */
    waitFor(&f, &f.at_gate, 1);
    assert_int_equal(f.released, 0);
    readaheadClose(r);
    /* The fetches at the gate see their cancel flag (woken to look) and end; the object
     * is released when the last one has. */
    fakeSet(&f, &f.calls, f.calls);
    waitFor(&f, (unsigned *)&f.released, 1);
    assert_true(f.cancelled_seen >= 1);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* Random reads and runs mixed, checked byte for byte. */
static void test_mixed_reads_are_right(void **state)
{
    struct fake f;
    struct readahead_pool *p;
    struct readahead *r;
    char errmsg[CAIRN_ERRMSG_SIZE];
    unsigned seed = 7;
    uint64_t off = 0;
    (void)state;
    fakeInit(&f, 3 * MIB + 777);
    assert_int_equal(readaheadPoolOpen(&smallConfig, &p, errmsg), 0);
    assert_int_equal(readaheadOpen(p, fakeFetch, &f, fakeRelease, f.size, &r, errmsg), 0);
    for (int i = 0; i < 3000; i++) {
        unsigned x = (unsigned)rand_r(&seed);
        size_t n = 1 + x % (x % 7 == 0 ? 300 * KIB : 20 * KIB);
        if (x % 5 == 0) {
            off = (uint64_t)rand_r(&seed) % f.size; /* a jump */
        }
        if (off + n > f.size) {
            n = (size_t)(f.size - off);
        }
        readOk(r, &f, off, n);
        off = off + n >= f.size ? 0 : off + n;
    }
    /* Past the end is refused. */
    {
        unsigned char b[2];
        assert_int_equal(readaheadRead(r, f.size - 1, b, 2, errmsg), CAIRN_EINVAL);
    }
    readaheadClose(r);
    readaheadPoolClose(p);
    assert_int_equal(f.released, 1);
    fakeFree(&f);
}

/* ---- the spool ---- */

static const struct readahead_config spoolConfig = {
    .threads = 4,
    .small = 16 * KIB,
    .chunk_min = 64 * KIB,
    .chunk_max = 256 * KIB,
    .ahead_max = 1 * MIB,
    .budget = 4 * MIB,
    .spool_chunk_max = 2 * MIB,
    .spool_ahead_max = 8 * MIB,
    .spool_budget = 16 * MIB,
};

static bool dirEmpty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    bool empty = true;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        empty = empty && (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0);
    }
    closedir(d);
    return empty;
}

/* A scan of 48 MiB in the reads a .cbk scan makes: the bytes are right, fetched ahead in
 * chunks of the spool's size (a few large fetches where memory made many), within the
 * spool's budget; the spool leaves nothing in its directory. */
static void scanSpooled(struct readahead_pool *p, struct fake *f, struct readahead_stats *st)
{
    char errmsg[CAIRN_ERRMSG_SIZE];
    struct readahead *r;
    assert_int_equal(readaheadOpen(p, fakeFetch, f, fakeRelease, f->size, &r, errmsg), 0);
    readaheadStream(r, fakeStream);
    readOk(r, f, 0, 512);
    readaheadWillRead(r, 512);
    for (uint64_t off = 512; off < f->size; off += 256 * KIB) {
        size_t n = f->size - off < 256 * KIB ? (size_t)(f->size - off) : 256 * KIB;
        readOk(r, f, off, n);
    }
    readaheadClose(r);
    readaheadPoolStats(p, st);
}

static void test_the_spool_serves_a_scan_in_large_fetches(void **state)
{
    char dir[] = "/tmp/cairn-test-spool-XXXXXX";
    struct readahead_config cfg = spoolConfig;
    struct readahead_pool *p;
    struct readahead_stats st;
    struct fake f;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_non_null(mkdtemp(dir));
    fakeInit(&f, 48 * MIB);
    cfg.spool_dir = dir;
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    scanSpooled(p, &f, &st);
    assert_true(st.spooling);
    assert_int_equal(st.spool_failures, 0);
    assert_true(st.spooled >= 20);                /* 48 MiB in chunks of 2 MiB ... */
    assert_true(st.fetches <= st.spooled + 4);    /* ... and little else */
    assert_true(f.largest == 2 * MIB);
    assert_true(st.budget_peak <= 16 * MIB);      /* the spool's budget, not memory's */
    assert_true(st.budget_peak > 4 * MIB);
    readaheadPoolClose(p);
    assert_true(dirEmpty(dir));
    assert_int_equal(f.released, 1);
    rmdir(dir);
    fakeFree(&f);
}

/* Without a directory to spool in, the pool reads ahead in memory as before. */
static void test_no_spool_without_its_directory(void **state)
{
    struct readahead_config cfg = spoolConfig;
    struct readahead_pool *p;
    struct readahead_stats st;
    struct fake f;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    fakeInit(&f, 8 * MIB);
    cfg.spool_dir = "/nonexistent/cairn-spool";
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    scanSpooled(p, &f, &st);
    assert_false(st.spooling);
    assert_int_equal(st.spooled, 0);
    assert_true(st.ahead > 0);
    assert_true(f.largest <= 256 * KIB); /* memory's chunks */
    readaheadPoolClose(p);
    fakeFree(&f);
}

/* The spool's file system refuses a write (a file size limit here, as a full disk would):
 * every read still gets its bytes, fetched without the spool, and the pool stops using
 * it. */
static void test_a_spool_that_fails_is_left(void **state)
{
    char dir[] = "/tmp/cairn-test-spool-XXXXXX";
    struct readahead_config cfg = spoolConfig;
    struct readahead_pool *p;
    struct readahead_stats st;
    struct rlimit old, lim;
    struct fake f;
    char errmsg[CAIRN_ERRMSG_SIZE];
    (void)state;
    assert_non_null(mkdtemp(dir));
    fakeInit(&f, 24 * MIB);
    cfg.spool_dir = dir;
    assert_int_equal(readaheadPoolOpen(&cfg, &p, errmsg), 0);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 3 * MIB; /* the spool's second chunk does not fit */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    scanSpooled(p, &f, &st);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_false(st.spooling);
    assert_true(st.spool_failures >= 1);
    assert_true(st.spooled >= 2);
    readaheadPoolClose(p);
    assert_true(dirEmpty(dir));
    rmdir(dir);
    fakeFree(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_small_reads_fetch_little),
        cmocka_unit_test(test_seeded_window_serves_reads),
        cmocka_unit_test(test_will_read_starts_a_run),
        cmocka_unit_test(test_sequential_scan_has_several_fetches_in_flight),
        cmocka_unit_test(test_budget_bounds_many_readers),
        cmocka_unit_test(test_budget_is_shared_fairly_by_readers),
        cmocka_unit_test(test_many_readers_share_budget_in_large_chunks),
        cmocka_unit_test(test_large_reader_gets_a_larger_share),
        cmocka_unit_test(test_process_budget_is_shared),
        cmocka_unit_test(test_error_surfaces_at_the_read_that_needs_it),
        cmocka_unit_test(test_error_ahead_not_needed_is_not_reported),
        cmocka_unit_test(test_close_with_fetches_in_flight),
        cmocka_unit_test(test_mixed_reads_are_right),
        cmocka_unit_test(test_the_spool_serves_a_scan_in_large_fetches),
        cmocka_unit_test(test_no_spool_without_its_directory),
        cmocka_unit_test(test_a_spool_that_fails_is_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
