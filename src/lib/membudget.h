/* A node-wide budget of bytes that many threads take from and give back: what cairnd's
 * requests hold together (bodies being received, results of answers not yet read).
 *
 * Each request has its own bounds (--max-body, --max-result-size), but nothing bounded
 * how many held them at once: clients that never read their answers each kept up to
 * --max-result-size until the connection timed out (3 of them held 426 MB). Takers ask
 * before they hold, and a taker that cannot wait is refused rather than let the node
 * run out of memory. Any thread. */
#ifndef CAIRN_MEMBUDGET_H
#define CAIRN_MEMBUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct membudget {
    uint64_t limit;           /* bytes; 0: no limit (every take succeeds) */
    _Atomic uint64_t held;    /* bytes taken and not yet given back */
};

/* A budget of limit bytes (0: none), nothing held. */
void membudgetInit(struct membudget *b, uint64_t limit);

/* Take n bytes if they fit within the limit: true, or false and nothing taken. */
bool membudgetTake(struct membudget *b, uint64_t n);

/* Take n bytes, waiting up to wait_ms for others to give back enough: true, or false
 * and nothing taken. */
bool membudgetTakeWait(struct membudget *b, uint64_t n, unsigned wait_ms);

/* Take n bytes whatever the limit: memory already held that must be counted (results
 * that every node computes alike and a client is owed). */
void membudgetForce(struct membudget *b, uint64_t n);

/* Give back n bytes taken before. */
void membudgetGive(struct membudget *b, uint64_t n);

/* Bytes held now. */
uint64_t membudgetHeld(const struct membudget *b);

/* A default limit for this machine: a quarter of its memory, or of the control group's
 * limit when that is lower (a container's), at least 64 MiB. */
uint64_t membudgetDefault(void);

#endif
