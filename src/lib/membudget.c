/* A node-wide byte budget (see membudget.h). Any thread: the count is one atomic, and a
 * taker that waits polls it, since what is given back comes from many threads and waits
 * are short and rare (the budget is full only under a flood). */
#define _GNU_SOURCE
#include "membudget.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define MEMBUDGET_FLOOR (64ULL << 20)
#define MEMBUDGET_POLL_MS 10

void membudgetInit(struct membudget *b, uint64_t limit)
{
    b->limit = limit;
    atomic_store(&b->held, 0);
}

bool membudgetTake(struct membudget *b, uint64_t n)
{
    uint64_t cur = atomic_load(&b->held);
    if (b->limit == 0) {
        atomic_fetch_add(&b->held, n);
        return true;
    }
    do {
        if (n > b->limit || cur > b->limit - n) {
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->held, &cur, cur + n));
    return true;
}

bool membudgetTakeWait(struct membudget *b, uint64_t n, unsigned wait_ms)
{
    unsigned waited = 0;
    while (!membudgetTake(b, n)) {
        struct timespec ts = {0, MEMBUDGET_POLL_MS * 1000000L};
        if (waited >= wait_ms || n > b->limit) {
            return false;
        }
        nanosleep(&ts, NULL);
        waited += MEMBUDGET_POLL_MS;
    }
    return true;
}

void membudgetForce(struct membudget *b, uint64_t n)
{
    atomic_fetch_add(&b->held, n);
}

void membudgetGive(struct membudget *b, uint64_t n)
{
    atomic_fetch_sub(&b->held, n);
}

uint64_t membudgetHeld(const struct membudget *b)
{
    return atomic_load(&((struct membudget *)b)->held);
}

/* The control group's memory limit (cgroup v2's memory.max, else v1's), 0 when none
 * or unreadable. */
static uint64_t cgroupLimit(void)
{
    static const char *const files[] = {"/sys/fs/cgroup/memory.max",
                                        "/sys/fs/cgroup/memory/memory.limit_in_bytes", NULL};
    for (int i = 0; files[i] != NULL; i++) {
        FILE *f = fopen(files[i], "r");
        unsigned long long v;
        if (f == NULL) {
            continue;
        }
        if (fscanf(f, "%llu", &v) == 1) {
            fclose(f);
            return v; /* "max" (no limit) does not scan */
        }
        fclose(f);
    }
    return 0;
}

uint64_t membudgetDefault(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long size = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
    uint64_t cg = cgroupLimit();
    uint64_t v;
    if (cg != 0 && (mem == 0 || cg < mem)) {
        mem = cg;
    }
    v = mem / 4;
    return v < MEMBUDGET_FLOOR ? MEMBUDGET_FLOOR : v;
}
