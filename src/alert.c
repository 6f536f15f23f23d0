/* Alerts POSTed to webhooks (alert.h): a queue and the thread that drains it. */
#include "alert.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn.h"
#include "error.h"
#include "lib.h"

struct item {
    struct item *next;
    char *url;
    char *body;
    int64_t queued_ms; /* monotonic */
};

struct alerter {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an item queued, or stop */
    pthread_t thread;
    bool started, stop;
    struct item *head, *tail;
    unsigned n;
    alert_log_fn log;
    alert_mask_fn mask;
    void *arg;
    struct alert_stats st;
};

static pthread_once_t curlOnce = PTHREAD_ONCE_INIT;

static void curlInit(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void logf_(struct alerter *a, const char *url, const char *fmt, const char *what)
{
    char shown[1100];
    char msg[1600];
    if (a->mask != NULL) {
        a->mask(url, shown, sizeof shown);
    } else {
        snprintf(shown, sizeof shown, "%s", url);
    }
    snprintf(msg, sizeof msg, fmt, shown, what);
    if (a->log != NULL) {
        a->log(a->arg, msg);
    }
}

static void itemFree(struct item *it)
{
    if (it != NULL) {
        free(it->url);
        free(it->body);
        free(it);
    }
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Stop a transfer under way when the alerter stops. */
static int progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct alerter *a = arg;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return __atomic_load_n(&a->stop, __ATOMIC_RELAXED) ? 1 : 0;
}

/* One POST: 0 when taken (2xx), 1 when it may be tried again, -1 when it never will
 * be; why says what happened. */
static int post(struct alerter *a, CURL *h, const struct item *it, char *why, size_t size)
{
    struct curl_slist *hdr = NULL;
    char err[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc;
    int out;

    curl_easy_reset(h);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = hdr != NULL ? curl_slist_append(hdr, "User-Agent: cairnd/" CAIRN_VERSION) : NULL;
    if (hdr == NULL) {
        snprintf(why, size, "out of memory");
        return 1;
    }
    curl_easy_setopt(h, CURLOPT_URL, it->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(it->body));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ALERT_REQUEST_MS);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, a);
    rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK) {
        snprintf(why, size, "%s", err[0] != '\0' ? err : curl_easy_strerror(rc));
        return rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ? -1 : 1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        snprintf(why, size, "HTTP %ld", status);
        return 0;
    }
    out = status >= 500 || status == 408 || status == 429 ? 1 : -1;
    snprintf(why, size, "HTTP %ld", status);
    return out;
}

static void *senderMain(void *arg)
{
    struct alerter *a = arg;
    CURL *h = curl_easy_init();

    pthread_mutex_lock(&a->mu);
    for (;;) {
        struct item *it;
        int64_t backoff = 1000;
        char why[256] = "";
        int rv = 1;
        while (a->head == NULL && !a->stop) {
            pthread_cond_wait(&a->cv, &a->mu);
        }
        if (a->stop) {
            break;
        }
        it = a->head; /* stays queued (counted pending) until it ends */
        pthread_mutex_unlock(&a->mu);
        for (;;) {
            struct timespec until;
            if (h == NULL) {
                snprintf(why, sizeof why, "out of memory (no HTTP handle)");
                rv = -1;
                break;
            }
            rv = post(a, h, it, why, sizeof why);
            pthread_mutex_lock(&a->mu);
            a->st.tries++;
            if (rv != 0) {
                snprintf(a->st.last_error, sizeof a->st.last_error, "%s", why);
            }
            if (rv <= 0 || a->stop || libMonoMs() - it->queued_ms + backoff > ALERT_TRY_MS) {
                pthread_mutex_unlock(&a->mu);
                break;
            }
            /* Wait out the backoff, woken early only by a stop. */
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += backoff / 1000;
            until.tv_nsec += (backoff % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (!a->stop && pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0) {
            }
            pthread_mutex_unlock(&a->mu);
            backoff = backoff * 2 > ALERT_BACKOFF_MAX_MS ? ALERT_BACKOFF_MAX_MS : backoff * 2;
        }
        if (rv == 0) {
            logf_(a, it->url, "alert delivered to %s (%s)", why);
        } else {
            logf_(a, it->url, "alert NOT delivered to %s: %s", why);
        }
        pthread_mutex_lock(&a->mu);
        if (rv == 0) {
            a->st.delivered++;
            a->st.last_delivered_ms = libNowMs();
        } else {
            a->st.failed++;
            a->st.last_failed_ms = libNowMs();
        }
        a->head = it->next;
        if (a->head == NULL) {
            a->tail = NULL;
        }
        a->n--;
        itemFree(it);
    }
    pthread_mutex_unlock(&a->mu);
    if (h != NULL) {
        curl_easy_cleanup(h);
    }
    return NULL;
}

int alertOpen(alert_log_fn log, alert_mask_fn mask, void *arg, struct alerter **out,
              char *errmsg)
{
    struct alerter *a = calloc(1, sizeof *a);
    *out = NULL;
    if (a == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    pthread_once(&curlOnce, curlInit);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->log = log;
    a->mask = mask;
    a->arg = arg;
    a->st.last_delivered_ms = a->st.last_failed_ms = -1;
    *out = a;
    return 0;
}

void alertClose(struct alerter *a)
{
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    __atomic_store_n(&a->stop, true, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->started) {
        pthread_join(a->thread, NULL);
    }
    while (a->head != NULL) {
        struct item *it = a->head;
        a->head = it->next;
        logf_(a, it->url, "alert NOT delivered to %s: %s", "the node stopped first");
        itemFree(it);
    }
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

bool alertSend(struct alerter *a, const char *url, const json_t *doc)
{
    struct item *it;
    char *body;
    const char *why = NULL;

    if (a == NULL) {
        return false;
    }
    body = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    it = calloc(1, sizeof *it);
    if (body == NULL || it == NULL || (it->url = strdup(url)) == NULL) {
        why = "out of memory";
    }
    pthread_mutex_lock(&a->mu);
    if (why == NULL && a->stop) {
        why = "the node is stopping";
    } else if (why == NULL && a->n >= ALERT_QUEUE) {
        why = "the queue of alerts is full (the webhook is not taking them)";
    } else if (why == NULL && !a->started) {
        a->started = pthread_create(&a->thread, NULL, senderMain, a) == 0;
        if (!a->started) {
            why = "cannot start the thread that sends alerts";
        }
    }
    if (why != NULL) {
        a->st.dropped++;
        pthread_mutex_unlock(&a->mu);
        logf_(a, url, "alert for %s dropped: %s", why);
        free(body);
        if (it != NULL) {
            free(it->url);
            free(it);
        }
        return false;
    }
    it->body = body;
    it->queued_ms = libMonoMs();
    if (a->tail != NULL) {
        a->tail->next = it;
    } else {
        a->head = it;
    }
    a->tail = it;
    a->n++;
    a->st.queued++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return true;
}

void alertStats(struct alerter *a, struct alert_stats *out)
{
    memset(out, 0, sizeof *out);
    out->last_delivered_ms = out->last_failed_ms = -1;
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    out->pending = a->n;
    pthread_mutex_unlock(&a->mu);
}
