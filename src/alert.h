/* Alerts sent to webhooks: a JSON document POSTed to a URL, retried until it is taken.
 *
 * An alerter owns one thread that delivers, in order, the alerts queued with alertSend.
 * A delivery is taken when the webhook answers 2xx; a 5xx, 408, 429, a timeout or a
 * connection failure is tried again after 1, 2, 4, ... seconds (at most
 * ALERT_BACKOFF_MAX_MS between tries) until ALERT_TRY_MS has passed since it was queued;
 * any other answer (a 4xx: the webhook refuses this document) ends it at once. Each
 * outcome is logged through the log function the alerter was opened with, naming the
 * webhook (its query and password masked by the caller's mask function), and counted.
 *
 * The queue holds at most ALERT_QUEUE alerts: an alert queued when it is full is dropped
 * and counted (the log says so), never blocking the caller. alertClose stops the thread:
 * a delivery under way ends at its next timeout at the latest (ALERT_REQUEST_MS), and
 * what is still queued is logged as not sent.
 *
 * Threads: alertSend and alertStats from any thread; the sender's own thread does the
 * HTTP. */
#ifndef CAIRN_ALERT_H
#define CAIRN_ALERT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define ALERT_QUEUE 256
#define ALERT_TRY_MS (5 * 60 * 1000)
#define ALERT_BACKOFF_MAX_MS (60 * 1000)
#define ALERT_REQUEST_MS 10000

struct alerter;

/* log(arg, message) reports each outcome (any thread of the alerter's); mask(url, out,
 * size) writes the form of a URL that may appear in a log (NULL: the URL as it is). */
typedef void (*alert_log_fn)(void *arg, const char *message);
typedef void (*alert_mask_fn)(const char *url, char *out, size_t size);

/* 0 and *out, or CAIRN_ENOMEM. The thread starts with the first alert. */
int alertOpen(alert_log_fn log, alert_mask_fn mask, void *arg, struct alerter **out,
              char *errmsg);

/* Stop and free (NULL is fine). */
void alertClose(struct alerter *a);

/* Queue doc (borrowed: a copy is sent) to be POSTed to url as application/json. False
 * when it was dropped (a full queue, no memory, a stopping alerter, a == NULL): the
 * caller needs nothing else to do, the drop is logged and counted. */
bool alertSend(struct alerter *a, const char *url, const json_t *doc);

struct alert_stats {
    uint64_t queued, delivered, failed, dropped, tries;
    unsigned pending;
    int64_t last_delivered_ms; /* Unix ms; -1 if none */
    int64_t last_failed_ms;
    char last_error[256]; /* of the last failed try, "" if none */
};

void alertStats(struct alerter *a, struct alert_stats *out);

#endif
