/* The webhook sender (src/alert.c) against a small HTTP server on 127.0.0.1 run by the
 * test: delivery, retries on 503, no retry on 400, the queue's bound, and a stop while a
 * delivery waits to be tried again. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alert.h"
#include "error.h"

/* The server answers each request with statuses[i] (the last one from then on) and
 * keeps the bodies it got. */
struct hook {
    int fd;
    int port;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int statuses[8];
    int nstatuses;
    int requests;
    char bodies[16][512];
    bool stop;
};

static void *hookMain(void *arg)
{
    struct hook *k = arg;
    for (;;) {
        char buf[8192];
        size_t got = 0;
        int status;
        char *body;
        int c = accept(k->fd, NULL, NULL);
        if (c < 0) {
            return NULL;
        }
        /* Read the head, then Content-Length bytes of body. */
        for (;;) {
            ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
            char *end, *cl;
            if (r <= 0) {
                break;
            }
            got += (size_t)r;
            buf[got] = '\0';
            if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
                size_t want = 0;
                if ((cl = strcasestr(buf, "Content-Length:")) != NULL) {
                    want = strtoul(cl + 15, NULL, 10);
                }
                if (got >= (size_t)(end + 4 - buf) + want) {
                    break;
                }
            }
        }
        body = strstr(buf, "\r\n\r\n");
        pthread_mutex_lock(&k->mu);
        if (k->stop) {
            pthread_mutex_unlock(&k->mu);
            close(c);
            return NULL;
        }
        status = k->statuses[k->requests < k->nstatuses ? k->requests : k->nstatuses - 1];
        if (k->requests < 16) {
            snprintf(k->bodies[k->requests], sizeof k->bodies[0], "%s", body ? body + 4 : "");
        }
        k->requests++;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
        snprintf(buf, sizeof buf, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 status);
        if (write(c, buf, strlen(buf)) < 0) {
            /* the client went: nothing to do */
        }
        close(c);
    }
}

static void hookStart(struct hook *k, const int *statuses, int n)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(k, 0, sizeof *k);
    memcpy(k->statuses, statuses, (size_t)n * sizeof *statuses);
    k->nstatuses = n;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(k->fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(k->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(k->fd, 16), 0);
    assert_int_equal(getsockname(k->fd, (struct sockaddr *)&sa, &len), 0);
    k->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&k->th, NULL, hookMain, k), 0);
}

static void hookStop(struct hook *k)
{
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_mutex_unlock(&k->mu);
    shutdown(k->fd, SHUT_RDWR);
    close(k->fd);
    pthread_join(k->th, NULL);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
}

/* Wait (deadline 20 s) until the server has had n requests. */
static void hookWait(struct hook *k, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&k->mu);
    while (k->requests < n && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0) {
    }
    assert_true(k->requests >= n);
    pthread_mutex_unlock(&k->mu);
}

static void waitStats(struct alerter *a, uint64_t delivered, uint64_t failed)
{
    struct alert_stats st;
    for (int i = 0; i < 2000; i++) {
        alertStats(a, &st);
        if (st.delivered >= delivered && st.failed >= failed) {
            return;
        }
        usleep(10000); /* polling with a deadline */
    }
    fail_msg("delivered %llu failed %llu, wanted %llu and %llu",
             (unsigned long long)st.delivered, (unsigned long long)st.failed,
             (unsigned long long)delivered, (unsigned long long)failed);
}

/* What the alerter logged: the first lines, and whether any line held each mark. */
static char logged[4096];
static const char *const marks[] = {"alert delivered to http://hook/***", "secret",
                                    "alert NOT delivered to", "the queue of alerts is full",
                                    "the node stopped first"};
static bool seen[5];
static pthread_mutex_t logMu = PTHREAD_MUTEX_INITIALIZER;

static void logTo(void *arg, const char *msg)
{
    size_t used;
    (void)arg;
    pthread_mutex_lock(&logMu);
    used = strlen(logged);
    if (used + strlen(msg) + 2 < sizeof logged) {
        snprintf(logged + used, sizeof logged - used, "%s\n", msg);
    }
    for (unsigned i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        seen[i] = seen[i] || strstr(msg, marks[i]) != NULL;
    }
    pthread_mutex_unlock(&logMu);
}

static void logReset(void)
{
    logged[0] = '\0';
    memset(seen, 0, sizeof seen);
}

static void maskAll(const char *url, char *out, size_t size)
{
    (void)url;
    snprintf(out, size, "http://hook/***");
}

static void test_delivers_after_retries(void **state)
{
    static const int st[] = {503, 503, 200};
    struct hook k;
    struct alerter *a;
    struct alert_stats s;
    char url[64], errmsg[CAIRN_ERRMSG_SIZE];
    json_t *doc = json_pack("{s:s, s:s}", "alert", "backup_failed", "repository", "default");
    (void)state;
    logReset();
    hookStart(&k, st, 3);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook?token=secret", k.port);
    assert_int_equal(alertOpen(logTo, maskAll, NULL, &a, errmsg), 0);
    assert_true(alertSend(a, url, doc));
    waitStats(a, 1, 0);
    alertStats(a, &s);
    assert_int_equal(s.tries, 3);
    assert_int_equal(s.delivered, 1);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.pending, 0);
    assert_string_equal(k.bodies[2], "{\"alert\":\"backup_failed\",\"repository\":\"default\"}");
    alertClose(a);
    hookStop(&k);
    assert_true(seen[0]);
    assert_false(seen[1]);
    json_decref(doc);
}

static void test_a_refusal_is_not_retried(void **state)
{
    static const int st[] = {400, 200};
    struct hook k;
    struct alerter *a;
    struct alert_stats s;
    char url[64], errmsg[CAIRN_ERRMSG_SIZE];
    json_t *doc = json_pack("{s:s}", "alert", "drill_failed");
    (void)state;
    logReset();
    hookStart(&k, st, 2);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", k.port);
    assert_int_equal(alertOpen(logTo, NULL, NULL, &a, errmsg), 0);
    assert_true(alertSend(a, url, doc));
    waitStats(a, 0, 1);
    alertStats(a, &s);
    assert_int_equal(s.tries, 1);
    assert_string_equal(s.last_error, "HTTP 400");
    /* The next alert goes on its own. */
    assert_true(alertSend(a, url, doc));
    waitStats(a, 1, 1);
    alertClose(a);
    hookStop(&k);
    assert_true(seen[2]);
    json_decref(doc);
}

/* A webhook that keeps failing: the alerter stops at once when closed, its queue bounded,
 * and what was not sent is logged. */
static void test_stop_while_retrying_and_bounded_queue(void **state)
{
    static const int st[] = {503};
    struct hook k;
    struct alerter *a;
    struct alert_stats s;
    char url[64], errmsg[CAIRN_ERRMSG_SIZE];
    json_t *doc = json_pack("{s:s}", "alert", "backup_stale");
    struct timespec t0, t1;
    int kept = 0;
    (void)state;
    logReset();
    hookStart(&k, st, 1);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", k.port);
    assert_int_equal(alertOpen(logTo, NULL, NULL, &a, errmsg), 0);
    for (int i = 0; i < ALERT_QUEUE + 10; i++) {
        kept += alertSend(a, url, doc);
    }
    assert_int_equal(kept, ALERT_QUEUE);
    hookWait(&k, 2); /* tried, and tried again after its backoff */
    alertStats(a, &s);
    assert_int_equal(s.dropped, 10);
    assert_int_equal(s.pending, ALERT_QUEUE);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    alertClose(a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    hookStop(&k);
    assert_true(seen[3]);
    assert_true(seen[4]);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivers_after_retries),
        cmocka_unit_test(test_a_refusal_is_not_retried),
        cmocka_unit_test(test_stop_while_retrying_and_bounded_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
