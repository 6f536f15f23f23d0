/*
 * Counting, clock, flag parsing and the one-line JSON printer shared by the benchmark
 * drivers; see report.h.
 */
#include "report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

_Static_assert(REPORT_VALUE_LEN == 100, "the stored value is 100 bytes");

static const char *const errorNames[REPORT_ERR_COUNT] = {
    [REPORT_ERR_IO] = "io",       [REPORT_ERR_STATUS] = "status", [REPORT_ERR_BODY] = "body",
    [REPORT_ERR_EMPTY] = "empty", [REPORT_ERR_SQL] = "sql",
};

uint64_t reportNowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void tallyInit(struct tally *t)
{
    memset(t, 0, sizeof(*t) - sizeof(t->latency));
    histInit(&t->latency);
}

void tallySuccess(struct tally *t, uint64_t rows, uint64_t ns, int in_window)
{
    t->requests++;
    t->rows += rows;
    if (in_window) {
        t->window_requests++;
        t->window_rows += rows;
    }
    histRecord(&t->latency, ns);
}

void tallyError(struct tally *t, enum report_error kind, const char *fmt, ...)
{
    uint64_t before = 0;
    for (int i = 0; i < REPORT_ERR_COUNT; i++)
        before += t->errors[i];
    t->errors[kind]++;
    if (before > 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->first_error, sizeof(t->first_error), fmt, ap);
    va_end(ap);
}

void tallyMerge(struct tally *into, const struct tally *from)
{
    into->requests += from->requests;
    into->rows += from->rows;
    into->window_requests += from->window_requests;
    into->window_rows += from->window_rows;
    for (int i = 0; i < REPORT_ERR_COUNT; i++)
        into->errors[i] += from->errors[i];
    into->reconnects += from->reconnects;
    if (into->first_error[0] == '\0' && from->first_error[0] != '\0')
        memcpy(into->first_error, from->first_error, sizeof(into->first_error));
    histMerge(&into->latency, &from->latency);
}

/* Writes s as a JSON string, escaping what JSON requires and any other control byte. */
static void printJsonString(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

void reportPrint(FILE *f, const struct report_run *run, const struct tally *t)
{
    uint64_t errors = 0;
    for (int i = 0; i < REPORT_ERR_COUNT; i++)
        errors += t->errors[i];
    int timed = run->window_s > 0;
    double busy = (double)t->latency.sum / 1e9 / (run->clients > 0 ? run->clients : 1);
    double secs = timed ? run->window_s : busy > 0 ? busy : 1e-9;
    uint64_t rate_requests = timed ? t->window_requests : t->requests;
    uint64_t rate_rows = timed ? t->window_rows : t->rows;
    const struct hist *h = &t->latency;

    fprintf(f, "{\"tool\":");
    printJsonString(f, run->tool);
    fprintf(f, ",\"mode\":");
    printJsonString(f, run->mode);
    fprintf(f, ",\"target\":");
    printJsonString(f, run->target);
    fprintf(f, ",\"clients\":%d,\"rows_per_request\":%ld", run->clients, run->rows_per_request);
    fprintf(f, ",\"requests\":%llu,\"rows\":%llu,\"elapsed_s\":%.3f,\"window_s\":%.3f",
            (unsigned long long)t->requests, (unsigned long long)t->rows, run->elapsed_s,
            run->window_s);
    fprintf(f, ",\"window_requests\":%llu,\"window_rows\":%llu",
            (unsigned long long)t->window_requests, (unsigned long long)t->window_rows);
    fprintf(f, ",\"requests_per_s\":%.1f,\"rows_per_s\":%.1f", (double)rate_requests / secs,
            (double)rate_rows / secs);
    fprintf(f, ",\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f",
            histQuantile(h, 0.50) / 1e6, histQuantile(h, 0.90) / 1e6, histQuantile(h, 0.99) / 1e6,
            histQuantile(h, 0.999) / 1e6);
    fprintf(f, ",\"mean_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f",
            h->count ? (double)h->sum / (double)h->count / 1e6 : 0.0, h->count ? h->min / 1e6 : 0.0,
            h->max / 1e6);
    fprintf(f, ",\"errors\":%llu,\"error_kinds\":{", (unsigned long long)errors);
    for (int i = 0; i < REPORT_ERR_COUNT; i++)
        fprintf(f, "%s\"%s\":%llu", i ? "," : "", errorNames[i], (unsigned long long)t->errors[i]);
    fprintf(f, "},\"first_error\":");
    printJsonString(f, t->first_error);
    /* This process's CPU time, so that run.sh can tell its share from cairnd's and from
     * whatever else ran on the machine meanwhile. */
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    fprintf(f, ",\"cpu_s\":%.2f", cpu);
    fprintf(f, ",\"reconnects\":%llu,\"key_start\":%lld,\"key_end\":%lld}\n",
            (unsigned long long)t->reconnects, (long long)run->key_start, (long long)run->key_end);
    fflush(f);
}

/* Multiplier of a k/m suffix at end, or 0 if end holds anything else. */
static double suffixFactor(const char *end)
{
    if (*end == '\0')
        return 1;
    if ((end[0] == 'k' || end[0] == 'K') && end[1] == '\0')
        return 1e3;
    if ((end[0] == 'm' || end[0] == 'M') && end[1] == '\0')
        return 1e6;
    return 0;
}

double reportParseDouble(const char *flag, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double factor = end == s ? 0 : suffixFactor(end);
    if (errno != 0 || factor == 0 || v < 0) {
        fprintf(stderr, "%s: not a non-negative number: '%s'\n", flag, s);
        exit(2);
    }
    return v * factor;
}

long reportParseLong(const char *flag, const char *s)
{
    double v = reportParseDouble(flag, s);
    if (v != (double)(long)v || v > 1e15) {
        fprintf(stderr, "%s: not a whole number: '%s'\n", flag, s);
        exit(2);
    }
    return (long)v;
}
