/* A one-line progress bar on stderr for the cairn command's long operations (backup,
 * verify, restore).
 *
 * The bar shows bytes done and total, percent, rate and ETA, and is redrawn at most ten
 * times a second so that a fast engine does not spend its time writing to the terminal.
 * It draws nothing unless it was enabled, which callers do only when stderr is a terminal
 * and the output is not machine-read (--json). Main thread only.
 */
#ifndef CAIRN_CLI_PROGRESS_H
#define CAIRN_CLI_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct cliProgress {
    int enabled;        /* draw at all */
    const char *label;  /* shown before the bar (borrowed; e.g. "backup") */
    FILE *out;          /* stderr */
    int64_t startNs;    /* monotonic clock at the first update (work before it, such as
                           opening the source's snapshot, would distort the rate) */
    uint64_t startDone; /* bytes done at the first update */
    int started;
    int64_t lastDrawNs; /* when the bar was last drawn; 0 before the first time */
    uint64_t done;
    uint64_t total;
    int drawn; /* a bar is on the line now and must be cleared */
} cliProgress;

/* Starts a bar for label (borrowed, must outlive p). enabled = 0 makes every other call
 * a no-op. */
void cliProgressInit(cliProgress *p, const char *label, int enabled);

/* True when stderr is a terminal: where a bar can be drawn and erased. */
int cliProgressWanted(void);

/* Records done/total and redraws if the last drawing is at least 100 ms old. */
void cliProgressUpdate(cliProgress *p, uint64_t done, uint64_t total);

/* Erases the bar, so that what follows starts on a clean line. Safe to call twice. */
void cliProgressClear(cliProgress *p);

/* Human-readable sizes and durations shared by the backup commands: "512 B", "1.5 MiB";
 * "35 ms", "1.2 s", "75 s". Write into out (size bytes) and return it. */
char *cliFormatBytes(uint64_t bytes, char *out, size_t size);
char *cliFormatDuration(int64_t ms, char *out, size_t size);

/* Monotonic clock in nanoseconds. */
int64_t cliNowNs(void);

#endif
