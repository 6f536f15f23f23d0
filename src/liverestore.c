/* Live restores in two steps (see liverestore.h). */
#define _GNU_SOURCE
#include "liverestore.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "db.h"
#include "error.h"
#include "node.h"

/* Niceness of the preparing thread and of the engine's workers it starts (they inherit
 * it): a restore being prepared must not take the CPUs from the writes that go on. */
#define PREPARE_NICE 10

enum { LR_IDLE, LR_PREPARING, LR_READY, LR_FAILED };

struct lr {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the thread waits for work on it; lrWait for the thread */
    pthread_t thread;
    bool started; /* the thread runs (started at the first request) */
    bool stop;
    int state;
    bool want;    /* a request the thread has not taken up yet */
    uint64_t gen; /* bumped by each request: tells a superseded preparation */
    char id[BACKUP_ID_SIZE];
    unsigned char digest[BACKUP_DIGEST_SIZE];
    char path[PATH_MAX]; /* DB.prepared */
    struct backup_info info;
    int rv;
    char err[CAIRN_ERRMSG_SIZE];
    struct timespec ready_at; /* CLOCK_REALTIME: pthread_cond_timedwait's */
    struct node *node; /* to wake its loop; NULL until lrSetNode (the log's replay) */
};

static const char *stateName(int s)
{
    switch (s) {
        case LR_PREPARING:
            return "preparing";
        case LR_READY:
            return "ready";
        case LR_FAILED:
            return "failed";
        default:
            return "idle";
    }
}

/* The request is (id, digest). mu held. */
static bool isCurrent(const struct lr *l, const char *id, const unsigned char *digest)
{
    return strcmp(l->id, id) == 0 && memcmp(l->digest, digest, BACKUP_DIGEST_SIZE) == 0;
}



static void *lrThread(void *arg)
{
    struct cairn *db = arg;
    struct lr *l = db->lr;
    /* Linux: a thread's niceness is its own, and threads it starts inherit it. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), PREPARE_NICE) != 0) {
        dbLog(db, "live restore: cannot lower the preparing thread's priority: %s",
              strerror(errno));
    }
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        if (l->want) {
            char id[BACKUP_ID_SIZE];
            unsigned char digest[BACKUP_DIGEST_SIZE];
            struct backup_info info;
            char err[CAIRN_ERRMSG_SIZE] = "";
            struct timespec t0, t1;
            uint64_t gen = l->gen;
            int rv;
            l->want = false;
            snprintf(id, sizeof id, "%s", l->id);
            memcpy(digest, l->digest, sizeof digest);
            pthread_mutex_unlock(&l->mu);

            dbLog(db, "live restore: preparing backup %s off the loop", id);
            clock_gettime(CLOCK_MONOTONIC, &t0);
            unlink(l->path); /* a copy of an earlier request; path never changes */
            rv = adminRestoreCopy(db, id, digest, l->path, &info, err);
            clock_gettime(CLOCK_MONOTONIC, &t1);

            pthread_mutex_lock(&l->mu);
            if (l->gen != gen || l->stop) {
                /* Replaced by a newer request (taken up next turn), or stopping. */
                if (rv == 0) {
                    unlink(l->path);
                }
                continue;
            }
            l->state = rv == 0 ? LR_READY : LR_FAILED;
            l->rv = rv;
            l->info = info;
            snprintf(l->err, sizeof l->err, "%s", err);
            clock_gettime(CLOCK_REALTIME, &l->ready_at);
            pthread_cond_broadcast(&l->cv);
            pthread_mutex_unlock(&l->mu);
            if (rv == 0) {
                dbLog(db, "live restore: backup %s prepared in %.2f s (%llu pages)", id,
                      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                      (unsigned long long)info.page_count);
            } else {
                dbLog(db, "live restore: backup %s cannot be prepared: %s", id, err);
            }
            /* A follower may hold the swap entry until now: its loop looks again. */
            pthread_mutex_lock(&l->mu);
            nodeWake(l->node);
            continue;
        }
        if (l->state == LR_READY) {
            struct timespec until = l->ready_at;
            struct timespec now;
            until.tv_sec += PREPARED_TTL_S;
            clock_gettime(CLOCK_REALTIME, &now);
            if (now.tv_sec > until.tv_sec ||
                (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)) {
                dbLog(db, "live restore: the prepared copy of backup %s was not swapped in "
                          "within %d s: removed",
                      l->id, PREPARED_TTL_S);
                unlink(l->path);
                l->state = LR_IDLE;
                continue;
            }
            pthread_cond_timedwait(&l->cv, &l->mu, &until);
            continue;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
    if (l->state == LR_READY) {
        unlink(l->path); /* the node stops: nobody will swap it in */
        l->state = LR_IDLE;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int lrInit(struct cairn *db, char *errmsg)
{
    struct lr *l = calloc(1, sizeof *l);
    if (l == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    snprintf(l->path, sizeof l->path, "%s.prepared", db->db_path);
    if (unlink(l->path) == 0) {
        dbLog(db, "live restore: removed %s, prepared by an earlier run and never swapped in",
              l->path);
    }
    adminRestoreCopyClean(db);
    db->lr = l;
    return 0;
}

void lrSetNode(struct cairn *db, struct node *node)
{
    struct lr *l = db->lr;
    pthread_mutex_lock(&l->mu);
    l->node = node;
    pthread_mutex_unlock(&l->mu);
}

void lrStop(struct cairn *db)
{
    struct lr *l = db->lr;
    if (l == NULL) {
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->started) {
        pthread_join(l->thread, NULL);
        l->started = false;
    }
}

void lrFree(struct cairn *db)
{
    struct lr *l = db->lr;
    if (l == NULL) {
        return;
    }
    assert(!l->started);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    db->lr = NULL;
}

/* mu held. */
static void startLocked(struct cairn *db, const char *id, const unsigned char *digest)
{
    struct lr *l = db->lr;
    if (l->stop) {
        return;
    }
    snprintf(l->id, sizeof l->id, "%s", id);
    memcpy(l->digest, digest, BACKUP_DIGEST_SIZE);
    l->gen++;
    l->want = true;
    l->state = LR_PREPARING;
    l->err[0] = '\0';
    if (!l->started) {
        int rc = pthread_create(&l->thread, NULL, lrThread, db);
        if (rc != 0) {
            l->want = false;
            l->state = LR_FAILED;
            l->rv = CAIRN_ENOMEM;
            errorf(l->err, "cannot start the preparing thread: %s", strerror(rc));
            return;
        }
        l->started = true;
    }
    pthread_cond_broadcast(&l->cv);
}

void lrStart(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE])
{
    struct lr *l = db->lr;
    assert(nodeOnLoop(NULL));
    pthread_mutex_lock(&l->mu);
    if (!(isCurrent(l, id, digest) && (l->state == LR_PREPARING || l->state == LR_READY))) {
        startLocked(db, id, digest);
    }
    pthread_mutex_unlock(&l->mu);
}

bool lrReady(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE])
{
    struct lr *l = db->lr;
    bool ready;
    assert(nodeOnLoop(NULL));
    pthread_mutex_lock(&l->mu);
    if (!isCurrent(l, id, digest) || l->state == LR_IDLE) {
        startLocked(db, id, digest);
    }
    ready = l->state == LR_READY || l->state == LR_FAILED;
    pthread_mutex_unlock(&l->mu);
    return ready;
}

int lrWait(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE],
           char *errmsg)
{
    struct lr *l = db->lr;
    int rv;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->stop) {
            errorf(errmsg, "the node is stopping");
            rv = CAIRN_ESHUTDOWN;
            break;
        }
        if (!isCurrent(l, id, digest) || l->state == LR_IDLE) {
            errorf(errmsg, "the restore of backup %s was replaced by another (%s)", id,
                   l->id[0] ? l->id : "none");
            rv = CAIRN_EBUSY;
            break;
        }
        if (l->state == LR_READY) {
            rv = 0;
            break;
        }
        if (l->state == LR_FAILED) {
            errorf(errmsg, "%s", l->err);
            rv = l->rv != 0 ? l->rv : CAIRN_EIO;
            break;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return rv;
}

bool lrTake(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE],
            char *path, struct backup_info *info)
{
    struct lr *l = db->lr;
    bool taken = false;
    assert(nodeOnLoop(NULL));
    pthread_mutex_lock(&l->mu);
    if (l->state == LR_READY && isCurrent(l, id, digest)) {
        snprintf(path, PATH_MAX, "%s", l->path);
        *info = l->info;
        l->state = LR_IDLE;
        taken = true;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return taken;
}

bool lrPreparing(struct cairn *db, const char *id, const unsigned char digest[BACKUP_DIGEST_SIZE])
{
    struct lr *l = db->lr;
    bool yes;
    pthread_mutex_lock(&l->mu);
    yes = isCurrent(l, id, digest) && l->state == LR_PREPARING;
    pthread_mutex_unlock(&l->mu);
    return yes;
}

const char *lrState(struct cairn *db, char *id, char *error)
{
    struct lr *l = db->lr;
    const char *s;
    if (l == NULL) {
        return "idle";
    }
    pthread_mutex_lock(&l->mu);
    s = stateName(l->state);
    if (id != NULL) {
        snprintf(id, BACKUP_ID_SIZE, "%s", l->state == LR_IDLE ? "" : l->id);
    }
    if (error != NULL) {
        snprintf(error, CAIRN_ERRMSG_SIZE, "%s", l->state == LR_FAILED ? l->err : "");
    }
    pthread_mutex_unlock(&l->mu);
    return s;
}
