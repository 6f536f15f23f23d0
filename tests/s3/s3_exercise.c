/* s3_exercise: drives the S3 client (src/backup/s3.c) from the system tests
 * (tests/system/test_s3_client.py) until cairn's own commands use it.
 *
 *   s3_exercise [options] COMMAND ARGS...
 *
 *   put KEY FILE            one PUT of the whole file
 *   get KEY OUT [OFF LEN]   ranged GET into the file OUT (LEN "end": to the end)
 *   head KEY
 *   list [PREFIX]
 *   delete KEY
 *   upload KEY FILE         s3UploadWrite in 1 MiB pieces (multipart past one part)
 *   abort-test KEY BYTES    write BYTES of generated data, then s3UploadAbort
 *   uploads [PREFIX]        pending multipart uploads
 *   abort KEY UPLOAD_ID
 *   parallel KEY THREADS ROUNDS   THREADS threads share the client, each ROUNDS times
 *                           HEAD, GET whole and LIST KEY; prints the bytes read and
 *                           the FNV-1a hash of the object (the same for all, or it fails)
 *
 * Options: --url s3://BUCKET/PREFIX (default $CAIRN_S3_URL), --endpoint URL, --region R,
 * --profile P, --retry-ms N, --stall-ms N, --connect-ms N, --part-size BYTES,
 * --parts-in-flight N, --size-hint BYTES and --no-replace (upload: S3_NO_REPLACE),
 * --etag ETAG (get: the version to read). Credentials come from the
 * environment or the AWS files, as for any S3 tool.
 *
 * SIGTERM and SIGINT set the client's stop flag (calls end with CAIRN_ESHUTDOWN).
 *
 * Prints one JSON object on stdout; on failure {"error": errmsg, "code": "CAIRN_..."}
 * and the errmsg on stderr, exit status 1 (2 for bad usage). Every result carries
 * "requests" and "retries" (HTTP attempts) and "vm_hwm_kib", the peak resident set
 * from /proc/self/status. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "s3.h"

static volatile int stopFlag;

static void onSignal(int sig)
{
    (void)sig;
    stopFlag = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: s3_exercise [--url s3://BUCKET/PREFIX] [--endpoint URL] [--region R] "
                    "[--profile P] [--retry-ms N] [--stall-ms N] [--connect-ms N] "
                    "[--part-size N] [--parts-in-flight N] [--size-hint N] [--no-replace] "
                    "[--etag ETAG] COMMAND ARGS...\n"
                    "commands: put KEY FILE | get KEY OUT [OFF LEN] | head KEY | list [PREFIX] "
                    "| delete KEY | upload KEY FILE | abort-test KEY BYTES | uploads [PREFIX] "
                    "| abort KEY UPLOAD_ID\n");
    exit(2);
}

static long long vmHwmKib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    long long v = -1;
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            v = strtoll(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return v;
}

static unsigned long long number(const char *s, const char *what)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        fprintf(stderr, "s3_exercise: %s '%s' is not a number\n", what, s);
        exit(2);
    }
    return v;
}

static int fail(json_t *out, int rc, const char *errmsg)
{
    json_object_set_new(out, "error", json_string(errmsg));
    json_object_set_new(out, "code", json_string(errorName(rc)));
    fprintf(stderr, "s3_exercise: %s\n", errmsg);
    return 1;
}

/* Read a whole file into memory (put). */
static char *slurp(const char *path, size_t *len, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        errorf(errmsg, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    p = malloc((size_t)n + 1);
    if (p == NULL || fread(p, 1, (size_t)n, f) != (size_t)n) {
        errorf(errmsg, "cannot read %s", path);
        free(p);
        p = NULL;
        goto out;
    }
    *len = (size_t)n;
out:
    if (f != NULL) {
        fclose(f);
    }
    return p;
}

static int sinkFile(void *arg, const void *data, size_t n)
{
    return fwrite(data, 1, n, arg) == n ? 0 : CAIRN_EIO;
}

struct fnv {
    uint64_t h, n;
};

static int sinkFnv(void *arg, const void *data, size_t n)
{
    struct fnv *f = arg;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        f->h = (f->h ^ p[i]) * 1099511628211ULL;
    }
    f->n += n;
    return 0;
}

struct worker {
    pthread_t t;
    struct s3 *s3;
    const char *key;
    unsigned rounds;
    uint64_t hash, bytes;
    int rv;
    char errmsg[CAIRN_ERRMSG_SIZE];
};

static int countObject(void *arg, const struct s3_object *o)
{
    (void)o;
    (*(unsigned *)arg)++;
    return 0;
}

static void *workerRun(void *arg)
{
    struct worker *w = arg;
    for (unsigned r = 0; r < w->rounds && w->rv == 0; r++) {
        struct s3_object o;
        struct fnv f = {14695981039346656037ULL, 0};
        unsigned count = 0;
        w->rv = s3Head(w->s3, w->key, &o, w->errmsg);
        if (w->rv == 0) {
            w->rv = s3Get(w->s3, w->key, o.etag, 0, S3_TO_END, sinkFnv, &f, NULL, w->errmsg);
        }
        if (w->rv == 0 && f.n != o.size) {
            errorf(w->errmsg, "read %llu bytes of %llu", (unsigned long long)f.n,
                   (unsigned long long)o.size);
            w->rv = CAIRN_EIO;
        }
        if (w->rv == 0 && r > 0 && f.h != w->hash) {
            errorf(w->errmsg, "round %u read other bytes", r);
            w->rv = CAIRN_EIO;
        }
        if (w->rv == 0) {
            w->rv = s3List(w->s3, w->key, countObject, &count, w->errmsg);
        }
        w->hash = f.h;
        w->bytes += f.n;
    }
    return NULL;
}

static int onObject(void *arg, const struct s3_object *o)
{
    json_t *o2 = json_object();
    json_object_set_new(o2, "key", json_string(o->key));
    json_object_set_new(o2, "size", json_integer((json_int_t)o->size));
    json_object_set_new(o2, "etag", json_string(o->etag));
    json_object_set_new(o2, "mtime_ms", json_integer(o->mtime_ms));
    json_array_append_new(arg, o2);
    return 0;
}

static int onPending(void *arg, const struct s3_pending *p)
{
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(p->key));
    json_object_set_new(o, "upload_id", json_string(p->upload_id));
    json_object_set_new(o, "initiated_ms", json_integer(p->initiated_ms));
    json_array_append_new(arg, o);
    return 0;
}

int main(int argc, char **argv)
{
    struct s3_config cfg;
    struct s3 *s3 = NULL;
    struct s3_stats st;
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    json_t *out = json_object();
    unsigned long long size_hint = 0;
    bool no_replace = false;
    const char *etag = NULL;
    struct timespec t0, t1;
    const char *cmd;
    int i, rv = 0, status = 0;

    memset(&cfg, 0, sizeof cfg);
    cfg.url = getenv("CAIRN_S3_URL");
    cfg.stop = &stopFlag;
    signal(SIGTERM, onSignal);
    signal(SIGINT, onSignal);
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        const char *o = argv[i];
        if (strcmp(o, "--no-replace") == 0) {
            no_replace = true;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(o, "--url") == 0) {
            cfg.url = argv[i + 1];
        } else if (strcmp(o, "--endpoint") == 0) {
            cfg.endpoint = argv[i + 1];
        } else if (strcmp(o, "--region") == 0) {
            cfg.region = argv[i + 1];
        } else if (strcmp(o, "--profile") == 0) {
            cfg.profile = argv[i + 1];
        } else if (strcmp(o, "--retry-ms") == 0) {
            cfg.retry_ms = (unsigned)number(argv[i + 1], o);
        } else if (strcmp(o, "--stall-ms") == 0) {
            cfg.stall_ms = (unsigned)number(argv[i + 1], o);
        } else if (strcmp(o, "--connect-ms") == 0) {
            cfg.connect_ms = (unsigned)number(argv[i + 1], o);
        } else if (strcmp(o, "--part-size") == 0) {
            cfg.part_size = (size_t)number(argv[i + 1], o);
        } else if (strcmp(o, "--parts-in-flight") == 0) {
            cfg.parts_in_flight = (unsigned)number(argv[i + 1], o);
        } else if (strcmp(o, "--etag") == 0) {
            etag = argv[i + 1];
        } else if (strcmp(o, "--size-hint") == 0) {
            size_hint = number(argv[i + 1], o);
        } else {
            usage();
        }
    }
    if (i >= argc) {
        usage();
    }
    cmd = argv[i++];
    argc -= i;
    argv += i;
#define NEED(lo, hi)                                                                               \
    if (argc < (lo) || argc > (hi)) {                                                              \
        usage();                                                                                   \
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    rv = s3Open(&cfg, &s3, errmsg);
    if (rv != 0) {
        status = fail(out, rv, errmsg);
        goto done;
    }
    if (strcmp(cmd, "put") == 0) {
        size_t len = 0;
        char *data;
        NEED(2, 2);
        data = slurp(argv[1], &len, errmsg);
        if (data == NULL) {
            rv = CAIRN_EIO;
        } else {
            rv = s3Put(s3, argv[0], data, len, errmsg);
            free(data);
        }
        json_object_set_new(out, "key", json_string(argv[0]));
        json_object_set_new(out, "bytes", json_integer((json_int_t)len));
    } else if (strcmp(cmd, "get") == 0) {
        uint64_t off = 0, len = S3_TO_END, got = 0;
        FILE *f;
        if (argc != 2 && argc != 4) {
            usage();
        }
        if (argc == 4) {
            off = number(argv[2], "offset");
            len = strcmp(argv[3], "end") == 0 ? S3_TO_END : number(argv[3], "length");
        }
        f = fopen(argv[1], "wb");
        if (f == NULL) {
            errorf(errmsg, "cannot create %s: %s", argv[1], strerror(errno));
            rv = CAIRN_EIO;
        } else {
            rv = s3Get(s3, argv[0], etag, off, len, sinkFile, f, &got, errmsg);
            if (fclose(f) != 0 && rv == 0) {
                errorf(errmsg, "cannot write %s", argv[1]);
                rv = CAIRN_EIO;
            }
        }
        json_object_set_new(out, "key", json_string(argv[0]));
        json_object_set_new(out, "bytes", json_integer((json_int_t)got));
    } else if (strcmp(cmd, "head") == 0) {
        struct s3_object o;
        NEED(1, 1);
        rv = s3Head(s3, argv[0], &o, errmsg);
        if (rv == 0) {
            json_object_set_new(out, "key", json_string(argv[0]));
            json_object_set_new(out, "size", json_integer((json_int_t)o.size));
            json_object_set_new(out, "etag", json_string(o.etag));
            json_object_set_new(out, "mtime_ms", json_integer(o.mtime_ms));
        }
    } else if (strcmp(cmd, "list") == 0 || strcmp(cmd, "uploads") == 0) {
        json_t *arr = json_array();
        bool up = strcmp(cmd, "uploads") == 0;
        NEED(0, 1);
        if (up) {
            rv = s3ListUploads(s3, argc ? argv[0] : "", onPending, arr, errmsg);
        } else {
            rv = s3List(s3, argc ? argv[0] : "", onObject, arr, errmsg);
        }
        json_object_set_new(out, "count", json_integer((json_int_t)json_array_size(arr)));
        json_object_set_new(out, up ? "uploads" : "objects", arr);
    } else if (strcmp(cmd, "delete") == 0) {
        NEED(1, 1);
        rv = s3Delete(s3, argv[0], errmsg);
        json_object_set_new(out, "key", json_string(argv[0]));
    } else if (strcmp(cmd, "abort") == 0) {
        NEED(2, 2);
        rv = s3AbortUpload(s3, argv[0], argv[1], errmsg);
        json_object_set_new(out, "key", json_string(argv[0]));
    } else if (strcmp(cmd, "upload") == 0 || strcmp(cmd, "abort-test") == 0) {
        bool gen = strcmp(cmd, "abort-test") == 0;
        struct s3_upload *u = NULL;
        FILE *f = NULL;
        uint64_t want = 0, sent = 0, size = 0;
        unsigned parts = 0;
        char *chunk = malloc(1 << 20);
        NEED(2, 2);
        if (gen) {
            want = number(argv[1], "bytes");
        } else if ((f = fopen(argv[1], "rb")) == NULL) {
            errorf(errmsg, "cannot read %s: %s", argv[1], strerror(errno));
            rv = CAIRN_EIO;
        }
        if (rv == 0 && chunk == NULL) {
            errorf(errmsg, "out of memory");
            rv = CAIRN_ENOMEM;
        }
        if (rv == 0) {
            rv = s3UploadBegin(s3, argv[0], size_hint, no_replace ? S3_NO_REPLACE : 0, &u, errmsg);
        }
        while (rv == 0) {
            size_t n;
            if (gen) {
                n = want - sent < (1u << 20) ? (size_t)(want - sent) : (1u << 20);
                for (size_t k = 0; k < n; k++) {
                    chunk[k] = (char)((sent + k) * 131 >> 3);
                }
            } else {
                n = fread(chunk, 1, 1 << 20, f);
                if (n == 0 && ferror(f)) {
                    errorf(errmsg, "cannot read %s", argv[1]);
                    rv = CAIRN_EIO;
                    break;
                }
            }
            if (n == 0) {
                break;
            }
            rv = s3UploadWrite(u, chunk, n, errmsg);
            sent += n;
        }
        if (u != NULL) {
            if (rv == 0 && !gen) {
                rv = s3UploadCommit(u, &size, &parts, errmsg);
            } else {
                char err2[CAIRN_ERRMSG_SIZE];
                int rv2 = s3UploadAbort(u, err2);
                if (rv == 0) {
                    rv = rv2;
                    snprintf(errmsg, CAIRN_ERRMSG_SIZE, "%s", err2);
                }
                json_object_set_new(out, "aborted", json_boolean(rv2 == 0));
            }
        }
        if (f != NULL) {
            fclose(f);
        }
        free(chunk);
        json_object_set_new(out, "key", json_string(argv[0]));
        json_object_set_new(out, "bytes", json_integer((json_int_t)(gen ? sent : size)));
        json_object_set_new(out, "parts", json_integer(parts));
    } else if (strcmp(cmd, "parallel") == 0) {
        unsigned n, rounds;
        struct worker *w;
        uint64_t bytes = 0;
        NEED(3, 3);
        n = (unsigned)number(argv[1], "threads");
        rounds = (unsigned)number(argv[2], "rounds");
        w = calloc(n ? n : 1, sizeof *w);
        for (unsigned k = 0; w != NULL && k < n; k++) {
            w[k].s3 = s3;
            w[k].key = argv[0];
            w[k].rounds = rounds;
            pthread_create(&w[k].t, NULL, workerRun, &w[k]);
        }
        for (unsigned k = 0; w != NULL && k < n; k++) {
            pthread_join(w[k].t, NULL);
            bytes += w[k].bytes;
            if (rv == 0 && w[k].rv != 0) {
                rv = w[k].rv;
                snprintf(errmsg, sizeof errmsg, "thread %u: %s", k, w[k].errmsg);
            } else if (rv == 0 && w[k].hash != w[0].hash) {
                rv = CAIRN_EIO;
                snprintf(errmsg, sizeof errmsg, "threads 0 and %u read other bytes", k);
            }
        }
        json_object_set_new(out, "bytes", json_integer((json_int_t)bytes));
        if (w != NULL && n > 0) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)w[0].hash);
            json_object_set_new(out, "fnv1a", json_string(hex));
        }
        free(w);
    } else {
        usage();
    }
    if (rv != 0) {
        status = fail(out, rv, errmsg);
    }
done:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (s3 != NULL) {
        s3Stats(s3, &st);
        json_object_set_new(out, "requests", json_integer((json_int_t)st.requests));
        json_object_set_new(out, "retries", json_integer((json_int_t)st.retries));
    }
    json_object_set_new(
        out, "ms",
        json_integer((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    json_object_set_new(out, "vm_hwm_kib", json_integer(vmHwmKib()));
    {
        char *s = json_dumps(out, JSON_COMPACT);
        if (s != NULL) {
            puts(s);
            free(s);
        }
    }
    json_decref(out);
    s3Close(s3);
    return status;
}
