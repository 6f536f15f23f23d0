/* A bound on the memory one SQL statement takes while it runs (see memlimit.h). Any
 * thread. */
#include "memlimit.h"

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>

/* Before every block: which run counted it (0: none) and how much. 16 bytes keep
 * SQLite's 8-byte alignment. */
struct mlhdr {
    uint64_t run;
    uint64_t counted;
};

static sqlite3_mem_methods baseMem;
static sqlite3_pcache_methods2 basePcache;
static bool active;
static _Atomic uint64_t lastRun;

/* The run this thread counts against (NULL: none), and whether it is inside the page
 * cache, whose memory is the connection's history, not the statement's. */
static _Thread_local struct memlimit *tlMem;
static _Thread_local int tlInPcache;

static struct memlimit *counting(int n)
{
    struct memlimit *m = tlMem;
    if (m == NULL || m->limit == 0 || tlInPcache > 0 || (unsigned)n < m->counted_from) {
        return NULL;
    }
    return m;
}

static void *mlMalloc(int n)
{
    struct memlimit *m = counting(n);
    struct mlhdr *h;
    if (n < 0 || n > INT_MAX - (int)sizeof *h) {
        return NULL;
    }
    if (m != NULL && m->used + (uint64_t)n > m->limit) {
        m->tripped = true;
        return NULL;
    }
    h = baseMem.xMalloc(n + (int)sizeof *h);
    if (h == NULL) {
        return NULL;
    }
    h->run = m != NULL ? m->run : 0;
    h->counted = m != NULL ? (uint64_t)n : 0;
    if (m != NULL) {
        m->used += (uint64_t)n;
    }
    return h + 1;
}

/* What freeing or replacing h gives back to the current run. */
static uint64_t countedHere(const struct mlhdr *h)
{
    struct memlimit *m = tlMem;
    return m != NULL && h->run != 0 && h->run == m->run ? h->counted : 0;
}

static void mlFree(void *p)
{
    struct mlhdr *h;
    uint64_t back;
    if (p == NULL) {
        return; /* SQLite never passes NULL; a caller of its allocator might */
    }
    h = (struct mlhdr *)p - 1;
    back = countedHere(h);
    if (back != 0) {
        tlMem->used -= back;
    }
    baseMem.xFree(h);
}

static void *mlRealloc(void *p, int n)
{
    struct mlhdr *h = (struct mlhdr *)p - 1;
    struct memlimit *m = counting(n);
    uint64_t back = countedHere(h);
    if (n < 0 || n > INT_MAX - (int)sizeof *h) {
        return NULL;
    }
    if (m != NULL && m->used - back + (uint64_t)n > m->limit) {
        m->tripped = true;
        return NULL;
    }
    h = baseMem.xRealloc(h, n + (int)sizeof *h);
    if (h == NULL) {
        return NULL;
    }
    if (back != 0) {
        tlMem->used -= back;
    }
    h->run = m != NULL ? m->run : 0;
    h->counted = m != NULL ? (uint64_t)n : 0;
    if (m != NULL) {
        m->used += (uint64_t)n;
    }
    return h + 1;
}

static int mlSize(void *p)
{
    return p == NULL ? 0 : baseMem.xSize((struct mlhdr *)p - 1) - (int)sizeof(struct mlhdr);
}

static int mlRoundup(int n)
{
    return baseMem.xRoundup(n);
}

static int mlInit(void *app)
{
    return baseMem.xInit(app);
}

static void mlShutdown(void *app)
{
    baseMem.xShutdown(app);
}

/* The page cache's methods that allocate, with its allocations left uncounted. */
static sqlite3_pcache *pcCreate(int page, int extra, int purgeable)
{
    sqlite3_pcache *c;
    tlInPcache++;
    c = basePcache.xCreate(page, extra, purgeable);
    tlInPcache--;
    return c;
}

static sqlite3_pcache_page *pcFetch(sqlite3_pcache *c, unsigned key, int create)
{
    sqlite3_pcache_page *pg;
    tlInPcache++;
    pg = basePcache.xFetch(c, key, create);
    tlInPcache--;
    return pg;
}

static void installOnce(void)
{
    static sqlite3_mem_methods mem;
    static sqlite3_pcache_methods2 pcache;
    if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &baseMem) != SQLITE_OK ||
        sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &basePcache) != SQLITE_OK) {
        return; /* SQLite is initialised already */
    }
    mem = (sqlite3_mem_methods){mlMalloc,  mlFree, mlRealloc,  mlSize,
                                mlRoundup, mlInit, mlShutdown, baseMem.pAppData};
    pcache = basePcache;
    pcache.xCreate = pcCreate;
    pcache.xFetch = pcFetch;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &mem) != SQLITE_OK) {
        return;
    }
    if (sqlite3_config(SQLITE_CONFIG_PCACHE2, &pcache) != SQLITE_OK) {
        /* Without it the page cache's allocations would be counted: none are. */
        sqlite3_config(SQLITE_CONFIG_MALLOC, &baseMem);
        return;
    }
    active = true;
}

void memlimitInstall(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, installOnce);
}

bool memlimitActive(void)
{
    return active;
}

void memlimitStart(struct memlimit *m, uint64_t limit, uint64_t temp_limit)
{
    m->run = atomic_fetch_add(&lastRun, 1) + 1;
    m->limit = active ? limit : 0;
    m->counted_from = MEMLIMIT_COUNTED;
    m->used = 0;
    m->tripped = false;
    m->temp_limit = temp_limit;
    m->temp_used = 0;
    m->temp_tripped = false;
}

void memlimitCountAll(struct memlimit *m)
{
    m->counted_from = 0;
}

void memlimitEnter(struct memlimit *m)
{
    tlMem = m;
}

void memlimitLeave(void)
{
    tlMem = NULL;
}

int memlimitTempGrow(uint64_t grow, uint64_t *run)
{
    struct memlimit *m = tlMem;
    *run = 0;
    if (m == NULL) {
        return SQLITE_OK;
    }
    if (m->temp_limit != 0 && m->temp_used + grow > m->temp_limit) {
        m->temp_tripped = true;
        return SQLITE_FULL;
    }
    m->temp_used += grow;
    *run = m->run;
    return SQLITE_OK;
}

void memlimitTempShrink(uint64_t run, uint64_t bytes)
{
    struct memlimit *m = tlMem;
    if (m != NULL && run != 0 && run == m->run) {
        m->temp_used = bytes < m->temp_used ? m->temp_used - bytes : 0;
    }
}
