/* The cairn command's progress bar (see progress.h).
 *
 * The line is drawn with a carriage return and erased with "\r" + ESC[K, so it never
 * scrolls the terminal and leaves nothing behind once the operation ends. Its width
 * follows the terminal's, asked on every drawing because the window may be resized
 * during a long backup. Main thread only.
 */
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

#define REDRAW_NS (100 * 1000000LL)     /* at most ten drawings a second */
#define RATE_ETA_WIDTH 28               /* "  1023 MiB/s  ETA 99.9 s" and some */
#define RATE_AFTER_NS (200 * 1000000LL) /* before that, a rate would be noise */

int64_t cliNowNs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

char *cliFormatBytes(uint64_t bytes, char *out, size_t size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int u = -1;

    if (bytes < 1024) {
        snprintf(out, size, "%llu B", (unsigned long long)bytes);
        return out;
    }
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, size, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return out;
}

char *cliFormatDuration(int64_t ms, char *out, size_t size)
{
    if (ms < 0) {
        snprintf(out, size, "-");
    } else if (ms < 1000) {
        snprintf(out, size, "%lld ms", (long long)ms);
    } else if (ms < 100000) {
        snprintf(out, size, "%.1f s", (double)ms / 1000);
    } else {
        snprintf(out, size, "%lld s", (long long)((ms + 500) / 1000));
    }
    return out;
}

int cliProgressWanted(void)
{
    return isatty(STDERR_FILENO);
}

void cliProgressInit(cliProgress *p, const char *label, int enabled)
{
    memset(p, 0, sizeof *p);
    p->enabled = enabled;
    p->label = label;
    p->out = stderr;
}

static int terminalColumns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        return ws.ws_col;
    }
    return 80;
}

static void draw(cliProgress *p, int64_t now)
{
    char doneText[32], totalText[32], stats[160], rate[48], eta[48];
    double elapsed = (double)(now - p->startNs) / 1e9;
    int cols = terminalColumns();
    int barWidth;
    char line[512];
    size_t n;

    cliFormatBytes(p->done, doneText, sizeof doneText);
    rate[0] = eta[0] = '\0';
    if (now - p->startNs >= RATE_AFTER_NS && p->done > p->startDone) {
        double perSecond = (double)(p->done - p->startDone) / elapsed;
        char r[32];
        cliFormatBytes((uint64_t)perSecond, r, sizeof r);
        snprintf(rate, sizeof rate, "  %s/s", r);
        if (p->total > p->done) {
            char d[32];
            cliFormatDuration((int64_t)((double)(p->total - p->done) / perSecond * 1000), d,
                              sizeof d);
            snprintf(eta, sizeof eta, "  ETA %s", d);
        }
    }
    if (p->total > 0) {
        unsigned pct = (unsigned)(p->done >= p->total ? 100 : p->done * 100 / p->total);
        cliFormatBytes(p->total, totalText, sizeof totalText);
        /* Done padded to the width of "1.00 MiB" (8), so that the line keeps its layout. */
        snprintf(stats, sizeof stats, "%8s / %s  %3u%%%s%s", doneText, totalText, pct, rate, eta);
    } else {
        snprintf(stats, sizeof stats, "%s%s", doneText, rate);
    }

    /* label, two spaces, [bar], two spaces, stats; one column spare so that the cursor
     * never wraps onto a new line at the right margin. Room for the rate and the ETA is
     * kept from the start, so that the bar does not shrink when they appear. */
    barWidth = cols - 1 - (int)strlen(p->label) - 2 - 2 - 2 - (int)strlen(stats) +
               (int)strlen(rate) + (int)strlen(eta) - RATE_ETA_WIDTH;
    if (barWidth > 40) {
        barWidth = 40;
    }
    n = (size_t)snprintf(line, sizeof line, "\r%s  ", p->label);
    if (barWidth >= 10 && p->total > 0) {
        int filled = (int)((double)barWidth * (double)(p->done > p->total ? p->total : p->done) /
                           (double)p->total);
        line[n++] = '[';
        for (int i = 0; i < barWidth; i++) {
            line[n++] = i < filled ? '#' : '-';
        }
        line[n++] = ']';
        line[n++] = ' ';
        line[n++] = ' ';
    }
    snprintf(line + n, sizeof line - n, "%s\033[K", stats);
    fputs(line, p->out);
    fflush(p->out);
    p->drawn = 1;
    p->lastDrawNs = now;
}

void cliProgressUpdate(cliProgress *p, uint64_t done, uint64_t total)
{
    int64_t now;

    if (!p->enabled) {
        return;
    }
    now = cliNowNs();
    if (!p->started) {
        p->started = 1;
        p->startNs = now;
        p->startDone = done;
    }
    p->done = done;
    p->total = total;
    if (p->lastDrawNs != 0 && now - p->lastDrawNs < REDRAW_NS) {
        return;
    }
    draw(p, now);
}

void cliProgressClear(cliProgress *p)
{
    if (!p->enabled || !p->drawn) {
        return;
    }
    fputs("\r\033[K", p->out);
    fflush(p->out);
    p->drawn = 0;
}
