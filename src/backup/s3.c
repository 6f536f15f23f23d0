/* S3 client on libcurl (see s3.h): configuration and credentials, request signing by
 * libcurl, retries, and multipart uploads on a curl multi handle. S3's XML answers are
 * read by s3xml.c.
 *
 * Signing is libcurl's (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3"). libcurl 7.88 signs
 * the URL's path and query exactly as given, and every header of CURLOPT_HTTPHEADER;
 * so this file builds URLs already in SigV4's canonical form (each byte but
 * A-Za-z0-9-_.~ percent-encoded, '/' kept in the path, query parameters sorted, every
 * parameter written `name=value`) and puts in CURLOPT_HTTPHEADER only headers that are
 * sent as they are (no "Expect:" removal, which would be signed but not sent). 7.88
 * does not send x-amz-content-sha256, which S3 requires: requests without a body send
 * the hash of the empty string, requests with one UNSIGNED-PAYLOAD (the library links
 * no SHA-256; the data is covered by TLS on the wire and by the backup format's own
 * checksums end to end).
 *
 * Threads: see s3.h. A struct s3 is read-only after s3Open but for the share handle
 * (DNS, TLS sessions and connections of the single requests), whose locks are here;
 * an upload's multi handle has its own connections. */
#define _GNU_SOURCE
#include "s3.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "error.h"
#include "s3xml.h"

#define DEFAULT_RETRY_MS 60000u
#define DEFAULT_STALL_MS 30000u
#define DEFAULT_CONNECT_MS 10000u
#define DEFAULT_PART_SIZE ((size_t)8 << 20)
#define MIN_PART_SIZE ((size_t)5 << 20)
#define MAX_PART_SIZE ((size_t)5 << 30)
#define DEFAULT_PARTS_IN_FLIGHT 4u
#define MAX_PARTS_IN_FLIGHT 64u
#define MAX_PARTS 10000u
/* Backoff between attempts: BASE << attempt, capped, half of it random. */
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 8000
/* Largest answer read into memory: a listing page (1000 keys of up to 1 KiB each,
 * escaped), and any other answer (errors, small XML results). */
#define MAX_LIST_ANSWER ((size_t)16 << 20)
#define MAX_SMALL_ANSWER ((size_t)256 << 10)
/* The one attempt at aborting an upload that a stop ended. */
#define QUICK_MS 2000L

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3 {
    char bucket[64];
    char prefix[S3_MAX_KEY + 1]; /* "" or ends with '/' */
    char base[400];              /* URL up to the key: "http://h:p/bucket/" or
                                  * "https://bucket.s3.r.amazonaws.com/" (an endpoint of
                                  * under 300 bytes, a bucket of at most 63, fit) */
    char bucket_url[400];        /* URL of the bucket itself, no trailing '/' in path style */
    char region[64];
    char sigv4[96];
    char key_id[256];
    char secret[256];
    char *token_header; /* "x-amz-security-token: ...", or NULL */
    char describe[600];
    unsigned retry_ms, stall_ms, connect_ms, parts_in_flight;
    size_t part_size;
    volatile int *stop;
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    uint64_t n_requests, n_retries; /* __atomic */
};

static pthread_once_t globalOnce = PTHREAD_ONCE_INIT;
static CURLcode globalRc;

static void globalInit(void)
{
    globalRc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t monoMs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* s3StopAll's count, and whether the calling thread is out of its reach (s3StopAllExempt;
 * the thread's calls and their curl callbacks run on it). */
static int stopAll;
static __thread bool stopAllExempt;

void s3StopAll(bool on)
{
    __atomic_add_fetch(&stopAll, on ? 1 : -1, __ATOMIC_RELAXED);
}

bool s3StopAllOn(void)
{
    return __atomic_load_n(&stopAll, __ATOMIC_RELAXED) > 0;
}

void s3StopAllExempt(void)
{
    stopAllExempt = true;
}

static bool stopped(const struct s3 *s3)
{
    return (s3->stop != NULL && *s3->stop != 0) ||
           (!stopAllExempt && __atomic_load_n(&stopAll, __ATOMIC_RELAXED) > 0);
}

/* A random number in [0, n) for jitter; not for secrets. */
static unsigned jitter(unsigned n)
{
    static __thread unsigned seed;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)&ts;
        if (seed == 0) {
            seed = 1;
        }
    }
    return n == 0 ? 0 : (unsigned)rand_r(&seed) % n;
}

/* Milliseconds to wait before attempt number `attempt` + 1 (attempt >= 1). */
static unsigned backoffMs(int attempt, long retry_after_s)
{
    unsigned exp = BACKOFF_BASE_MS;
    unsigned ms;
    for (int i = 1; i < attempt && exp < BACKOFF_CAP_MS; i++) {
        exp *= 2;
    }
    if (exp > BACKOFF_CAP_MS) {
        exp = BACKOFF_CAP_MS;
    }
    ms = exp / 2 + jitter(exp / 2 + 1);
    /* A server that says when to come back is believed, within reason. */
    if (retry_after_s > 0 && retry_after_s <= 60 && (unsigned)retry_after_s * 1000 > ms) {
        ms = (unsigned)retry_after_s * 1000;
    }
    return ms;
}

/* ---- configuration ------------------------------------------------------------------ */

static const char *envGet(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static void trim(char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1])) {
        (*n)--;
    }
}

/* Values of one profile, from the credentials or the config file. */
struct profile {
    char key_id[256];
    char secret[256];
    char *token; /* malloc'd: session tokens run to a few KiB */
    char region[64];
    char endpoint[256];
    char other[64]; /* a credential source this client does not read (role_arn, ...) */
    bool found;     /* the section exists */
};

static void profileFree(struct profile *p)
{
    if (p->token != NULL) {
        explicit_bzero(p->token, strlen(p->token));
        free(p->token);
    }
    explicit_bzero(p, sizeof *p);
}

static int copyValue(char *dst, size_t cap, const char *v, size_t n, const char *what,
                     const char *path, char *errmsg)
{
    if (n >= cap) {
        errorf(errmsg, "%s in %s is longer than %zu bytes", what, path, cap - 1);
        return CAIRN_EINVAL;
    }
    memcpy(dst, v, n);
    dst[n] = '\0';
    return 0;
}

/* Read section `section` of the INI file path into *p (only the keys it knows). A
 * missing file is no error. Nested settings (indented lines under `s3 =`) are skipped:
 * only top-level keys are read, as the AWS CLI does for these names. */
static int iniRead(const char *path, const char *section, struct profile *p, char *errmsg)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    bool in = false;
    int rv = 0;

    f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return 0;
        }
        errorf(errmsg, "cannot read %s: %s", path, strerror(errno));
        return CAIRN_EINVAL;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        char *s = line;
        size_t n = (size_t)len;
        char *eq;
        bool indented = n > 0 && (s[0] == ' ' || s[0] == '\t');
        trim(&s, &n);
        if (n == 0 || s[0] == '#' || s[0] == ';') {
            continue;
        }
        if (s[0] == '[') {
            char *name = s + 1;
            size_t nn;
            if (s[n - 1] != ']') {
                continue; /* not a section line: the AWS CLI refuses the file; skip */
            }
            nn = n - 2;
            trim(&name, &nn);
            in = strlen(section) == nn && strncmp(name, section, nn) == 0;
            if (in) {
                p->found = true;
            }
            continue;
        }
        if (!in || indented) {
            continue;
        }
        eq = memchr(s, '=', n);
        if (eq == NULL) {
            continue;
        }
        {
            char *k = s;
            size_t kn = (size_t)(eq - s);
            char *v = eq + 1;
            size_t vn = n - kn - 1;
            trim(&k, &kn);
            trim(&v, &vn);
            for (size_t i = 0; i < kn; i++) {
                k[i] = (char)tolower((unsigned char)k[i]);
            }
#define IS(name) (kn == strlen(name) && strncmp(k, name, kn) == 0)
            if (IS("aws_access_key_id")) {
                rv = copyValue(p->key_id, sizeof p->key_id, v, vn, "aws_access_key_id", path,
                               errmsg);
            } else if (IS("aws_secret_access_key")) {
                rv = copyValue(p->secret, sizeof p->secret, v, vn, "aws_secret_access_key", path,
                               errmsg);
            } else if (IS("aws_session_token")) {
                free(p->token);
                p->token = strndup(v, vn);
                if (p->token == NULL) {
                    rv = CAIRN_ENOMEM;
                    errorf(errmsg, "out of memory");
                }
            } else if (IS("region")) {
                rv = copyValue(p->region, sizeof p->region, v, vn, "region", path, errmsg);
            } else if (IS("endpoint_url")) {
                rv =
                    copyValue(p->endpoint, sizeof p->endpoint, v, vn, "endpoint_url", path, errmsg);
            } else if (IS("role_arn") || IS("credential_process") || IS("sso_start_url") ||
                       IS("sso_session") || IS("web_identity_token_file") ||
                       IS("credential_source")) {
                snprintf(p->other, sizeof p->other, "%.*s", (int)kn, k);
            }
#undef IS
            if (rv != 0) {
                break;
            }
        }
    }
    free(line);
    fclose(f);
    return rv;
}

static void homePath(char *out, size_t n, const char *env, const char *rel)
{
    const char *v = envGet(env);
    const char *home;
    if (v != NULL) {
        snprintf(out, n, "%s", v);
        return;
    }
    home = envGet("HOME");
    if (home == NULL) {
        struct passwd pw, *res = NULL;
        char pwbuf[1024];
        if (getpwuid_r(getuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res != NULL) {
            home = res->pw_dir;
        }
    }
    snprintf(out, n, "%s/%s", home != NULL ? home : ".", rel);
}

/* Find credentials, region and endpoint: the environment first, then the profile in
 * the credentials file, then in the config file. */
static int loadSettings(struct s3 *s3, const struct s3_config *cfg, char *endpoint,
                        size_t endpoint_n, char *errmsg)
{
    struct profile cred, conf;
    char cred_path[1024], conf_path[1024], section[300];
    const char *profile = cfg->profile;
    const char *id = envGet("AWS_ACCESS_KEY_ID");
    const char *secret = envGet("AWS_SECRET_ACCESS_KEY");
    const char *token = NULL;
    const char *region = cfg->region;
    const char *v;
    bool explicit_profile;
    int rv;

    memset(&cred, 0, sizeof cred);
    memset(&conf, 0, sizeof conf);
    if (profile == NULL) {
        profile = envGet("AWS_PROFILE");
    }
    explicit_profile = profile != NULL;
    if (profile == NULL) {
        profile = "default";
    }
    if (strlen(profile) > 200) {
        errorf(errmsg, "AWS profile name is longer than 200 bytes");
        return CAIRN_EINVAL;
    }
    homePath(cred_path, sizeof cred_path, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    homePath(conf_path, sizeof conf_path, "AWS_CONFIG_FILE", ".aws/config");
    rv = iniRead(cred_path, profile, &cred, errmsg);
    if (rv != 0) {
        goto out;
    }
    if (strcmp(profile, "default") == 0) {
        rv = iniRead(conf_path, "default", &conf, errmsg);
    }
    if (rv == 0 && !conf.found) {
        snprintf(section, sizeof section, "profile %s", profile);
        rv = iniRead(conf_path, section, &conf, errmsg);
    }
    if (rv != 0) {
        goto out;
    }

    rv = CAIRN_EINVAL;
    if ((id != NULL) != (secret != NULL)) {
        errorf(errmsg, "%s is set but %s is not: S3 needs both",
               id != NULL ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
               id != NULL ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        goto out;
    }
    if (id != NULL) {
        token = envGet("AWS_SESSION_TOKEN");
    } else {
        struct profile *p = cred.key_id[0] || cred.secret[0] ? &cred : &conf;
        const char *where = p == &cred ? cred_path : conf_path;
        if (p->key_id[0] == '\0' && p->secret[0] == '\0') {
            if (explicit_profile && !cred.found && !conf.found) {
                errorf(errmsg,
                       "no S3 credentials: AWS profile '%s' is in neither %s nor %s, and "
                       "AWS_ACCESS_KEY_ID is not set",
                       profile, cred_path, conf_path);
            } else if (cred.other[0] || conf.other[0]) {
                errorf(errmsg,
                       "no S3 credentials: AWS profile '%s' gets them through %s, which "
                       "cairn does not read yet; set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY (or aws_access_key_id and "
                       "aws_secret_access_key in %s)",
                       profile, cred.other[0] ? cred.other : conf.other, cred_path);
            } else {
                errorf(errmsg,
                       "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                       "or aws_access_key_id and aws_secret_access_key in profile '%s' of "
                       "%s (AWS_SHARED_CREDENTIALS_FILE) or %s (AWS_CONFIG_FILE)",
                       profile, cred_path, conf_path);
            }
            goto out;
        }
        if (p->key_id[0] == '\0' || p->secret[0] == '\0') {
            errorf(errmsg, "profile '%s' of %s has %s but not %s", profile, where,
                   p->key_id[0] ? "aws_access_key_id" : "aws_secret_access_key",
                   p->key_id[0] ? "aws_secret_access_key" : "aws_access_key_id");
            goto out;
        }
        id = p->key_id;
        secret = p->secret;
        token = p->token;
    }
    if (strlen(id) >= sizeof s3->key_id || strlen(secret) >= sizeof s3->secret) {
        errorf(errmsg, "the S3 access key id or secret is longer than %zu bytes",
               sizeof s3->key_id - 1);
        goto out;
    }
    for (const char *c = id; *c; c++) {
        /* The key id is written into the Authorization header. */
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.') {
            errorf(errmsg, "the S3 access key id holds a character other than letters, "
                           "digits, '_', '-' and '.'");
            goto out;
        }
    }
    snprintf(s3->key_id, sizeof s3->key_id, "%s", id);
    snprintf(s3->secret, sizeof s3->secret, "%s", secret);
    if (token != NULL) {
        for (const char *c = token; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                errorf(errmsg, "the S3 session token holds a control character");
                goto out;
            }
        }
        if (asprintf(&s3->token_header, "x-amz-security-token: %s", token) < 0) {
            s3->token_header = NULL;
            errorf(errmsg, "out of memory");
            rv = CAIRN_ENOMEM;
            goto out;
        }
    }

    if (region == NULL) {
        region = envGet("AWS_REGION");
    }
    if (region == NULL) {
        region = envGet("AWS_DEFAULT_REGION");
    }
    if (region == NULL && conf.region[0]) {
        region = conf.region;
    }
    if (region == NULL) {
        region = "us-east-1";
    }
    if (strlen(region) >= sizeof s3->region || region[0] == '\0') {
        errorf(errmsg, "S3 region '%.80s' is too long", region);
        goto out;
    }
    for (const char *c = region; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_') {
            errorf(errmsg,
                   "S3 region '%s' holds a character other than letters, digits, "
                   "'-' and '_'",
                   region);
            goto out;
        }
    }
    snprintf(s3->region, sizeof s3->region, "%s", region);

    v = cfg->endpoint;
    if (v == NULL) {
        v = envGet("AWS_ENDPOINT_URL_S3");
    }
    if (v == NULL) {
        v = envGet("AWS_ENDPOINT_URL");
    }
    if (v == NULL && conf.endpoint[0]) {
        v = conf.endpoint;
    }
    snprintf(endpoint, endpoint_n, "%s", v != NULL ? v : "");
    if (v != NULL && strlen(v) >= endpoint_n) {
        errorf(errmsg, "S3 endpoint '%.80s...' is too long", v);
        goto out;
    }
    rv = 0;
out:
    profileFree(&cred);
    profileFree(&conf);
    return rv;
}

/* "http[s]://HOST[:PORT][/]" -> base without the trailing '/'. */
static int parseEndpoint(const char *ep, char *out, size_t n, char *errmsg)
{
    const char *host;
    const char *end;
    size_t len = strlen(ep);
    while (len > 0 && ep[len - 1] == '/') {
        len--;
    }
    if (strncasecmp(ep, "http://", 7) == 0) {
        host = ep + 7;
    } else if (strncasecmp(ep, "https://", 8) == 0) {
        host = ep + 8;
    } else {
        errorf(errmsg, "S3 endpoint '%.200s' is not an http:// or https:// URL", ep);
        return CAIRN_EINVAL;
    }
    end = ep + len;
    if (host >= end) {
        errorf(errmsg, "S3 endpoint '%.200s' has no host", ep);
        return CAIRN_EINVAL;
    }
    for (const char *c = host; c < end; c++) {
        if (!isalnum((unsigned char)*c) && strchr(".-_:[]", *c) == NULL) {
            errorf(errmsg,
                   "S3 endpoint '%.200s' is not of the form http[s]://HOST[:PORT] (a path, "
                   "user, query or odd character is not accepted)",
                   ep);
            return CAIRN_EINVAL;
        }
    }
    if (len >= n) {
        errorf(errmsg, "S3 endpoint '%.80s...' is too long", ep);
        return CAIRN_EINVAL;
    }
    memcpy(out, ep, len);
    out[len] = '\0';
    return 0;
}

/* s3://BUCKET[/PREFIX] */
static int parseUrl(struct s3 *s3, const char *url, char *errmsg)
{
    const char *sep = strstr(url, "://");
    const char *b, *slash;
    size_t bn;
    if (sep == NULL) {
        errorf(errmsg, "repository URL '%.200s' is malformed: expected s3://BUCKET/PREFIX", url);
        return CAIRN_EINVAL;
    }
    if ((size_t)(sep - url) != 2 || strncasecmp(url, "s3", 2) != 0) {
        errorf(errmsg,
               "repository URL '%.200s' has an unknown scheme '%.*s': the S3 client takes "
               "s3://BUCKET/PREFIX",
               url, (int)(sep - url) > 20 ? 20 : (int)(sep - url), url);
        return CAIRN_EINVAL;
    }
    b = sep + 3;
    slash = strchr(b, '/');
    bn = slash != NULL ? (size_t)(slash - b) : strlen(b);
    if (bn == 0) {
        errorf(errmsg, "repository URL '%.200s' names no bucket: expected s3://BUCKET/PREFIX", url);
        return CAIRN_EINVAL;
    }
    if (bn < 3 || bn > 63) {
        errorf(errmsg, "repository URL '%.200s': a bucket name is 3 to 63 characters", url);
        return CAIRN_EINVAL;
    }
    for (size_t i = 0; i < bn; i++) {
        char c = b[i];
        if (!isalnum((unsigned char)c) && c != '.' && c != '-' && c != '_') {
            errorf(errmsg,
                   "repository URL '%.200s' is malformed: the bucket name holds '%c' (letters, "
                   "digits, '.', '-' and '_' only)",
                   url, isprint((unsigned char)c) ? c : '?');
            return CAIRN_EINVAL;
        }
    }
    memcpy(s3->bucket, b, bn);
    s3->bucket[bn] = '\0';
    s3->prefix[0] = '\0';
    if (slash != NULL && slash[1] != '\0') {
        const char *p = slash + 1;
        size_t pn = strlen(p);
        if (pn + 1 > S3_MAX_KEY - 1) {
            errorf(errmsg, "repository URL '%.200s': the prefix is too long", url);
            return CAIRN_EINVAL;
        }
        for (size_t i = 0; i < pn; i++) {
            unsigned char c = (unsigned char)p[i];
            if (c < 0x20 || c == 0x7f || c == '?' || c == '#' || c == '\\') {
                errorf(errmsg,
                       "repository URL '%.200s' is malformed: the prefix holds a control "
                       "character, '?', '#' or '\\'",
                       url);
                return CAIRN_EINVAL;
            }
            if (c == '/' && (i == 0 || p[i - 1] == '/')) {
                errorf(errmsg, "repository URL '%.200s' is malformed: empty path segment", url);
                return CAIRN_EINVAL;
            }
            /* A "." or ".." segment: an HTTP stack may resolve it in a request's path
             * (the object lands elsewhere) while the listing's prefix keeps it. */
            if (p[i] == '.' && (i == 0 || p[i - 1] == '/')) {
                size_t dots = (i + 1 < pn && p[i + 1] == '.') ? 2 : 1;
                if (i + dots == pn || p[i + dots] == '/') {
                    errorf(errmsg,
                           "repository URL '%.200s' is malformed: a '%s' path segment (name "
                           "the prefix itself)",
                           url, dots == 2 ? ".." : ".");
                    return CAIRN_EINVAL;
                }
            }
        }
        memcpy(s3->prefix, p, pn);
        if (p[pn - 1] != '/') {
            s3->prefix[pn++] = '/';
        }
        s3->prefix[pn] = '\0';
    }
    return 0;
}

static void shareLock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    struct s3 *s3 = arg;
    (void)h;
    (void)access;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST) {
        pthread_mutex_lock(&s3->locks[data]);
    }
}

static void shareUnlock(CURL *h, curl_lock_data data, void *arg)
{
    struct s3 *s3 = arg;
    (void)h;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST) {
        pthread_mutex_unlock(&s3->locks[data]);
    }
}

int s3Open(const struct s3_config *cfg, struct s3 **out, char *errmsg)
{
    struct s3 *s3;
    char endpoint[300];
    char ep[300];
    int rv;

    *out = NULL;
    if (cfg == NULL || cfg->url == NULL || cfg->url[0] == '\0') {
        errorf(errmsg, "no repository URL given (s3://BUCKET/PREFIX)");
        return CAIRN_EINVAL;
    }
    pthread_once(&globalOnce, globalInit);
    if (globalRc != CURLE_OK) {
        errorf(errmsg, "libcurl: %s", curl_easy_strerror(globalRc));
        return CAIRN_EIO;
    }
    s3 = calloc(1, sizeof *s3);
    if (s3 == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) {
        pthread_mutex_init(&s3->locks[i], NULL);
    }
    rv = parseUrl(s3, cfg->url, errmsg);
    if (rv != 0) {
        goto err;
    }
    rv = loadSettings(s3, cfg, endpoint, sizeof endpoint, errmsg);
    if (rv != 0) {
        goto err;
    }
    s3->retry_ms = cfg->retry_ms ? cfg->retry_ms : DEFAULT_RETRY_MS;
    s3->stall_ms = cfg->stall_ms ? cfg->stall_ms : DEFAULT_STALL_MS;
    s3->connect_ms = cfg->connect_ms ? cfg->connect_ms : DEFAULT_CONNECT_MS;
    s3->part_size = cfg->part_size ? cfg->part_size : DEFAULT_PART_SIZE;
    s3->parts_in_flight = cfg->parts_in_flight ? cfg->parts_in_flight : DEFAULT_PARTS_IN_FLIGHT;
    s3->stop = cfg->stop;
    rv = CAIRN_EINVAL;
    if (s3->part_size < MIN_PART_SIZE || s3->part_size > MAX_PART_SIZE) {
        errorf(errmsg, "S3 part size %zu is outside 5 MiB to 5 GiB", s3->part_size);
        goto err;
    }
    if (s3->parts_in_flight > MAX_PARTS_IN_FLIGHT) {
        errorf(errmsg, "S3 parts in flight %u is more than %u", s3->parts_in_flight,
               MAX_PARTS_IN_FLIGHT);
        goto err;
    }
    if (endpoint[0] != '\0') {
        rv = parseEndpoint(endpoint, ep, sizeof ep, errmsg);
        if (rv != 0) {
            goto err;
        }
        /* A custom endpoint (MinIO, Ceph, R2, a test server): path-style addressing. */
        snprintf(s3->bucket_url, sizeof s3->bucket_url, "%s/%s", ep, s3->bucket);
        snprintf(s3->base, sizeof s3->base, "%s/%s/", ep, s3->bucket);
        snprintf(s3->describe, sizeof s3->describe, "s3://%s/%s at %s", s3->bucket, s3->prefix, ep);
    } else {
        /* AWS: virtual-host addressing, but for names with dots, which would not match
         * the certificate's wildcard (AWS still serves those path-style). */
        if (strchr(s3->bucket, '.') != NULL) {
            snprintf(ep, sizeof ep, "https://s3.%s.amazonaws.com", s3->region);
            snprintf(s3->bucket_url, sizeof s3->bucket_url, "%s/%s", ep, s3->bucket);
            snprintf(s3->base, sizeof s3->base, "%s/%s/", ep, s3->bucket);
        } else {
            snprintf(s3->bucket_url, sizeof s3->bucket_url, "https://%s.s3.%s.amazonaws.com/",
                     s3->bucket, s3->region);
            snprintf(s3->base, sizeof s3->base, "%s", s3->bucket_url);
        }
        snprintf(s3->describe, sizeof s3->describe, "s3://%s/%s in AWS region %s", s3->bucket,
                 s3->prefix, s3->region);
    }
    snprintf(s3->sigv4, sizeof s3->sigv4, "aws:amz:%s:s3", s3->region);

    rv = CAIRN_ENOMEM;
    s3->share = curl_share_init();
    if (s3->share == NULL) {
        errorf(errmsg, "out of memory");
        goto err;
    }
    curl_share_setopt(s3->share, CURLSHOPT_LOCKFUNC, shareLock);
    curl_share_setopt(s3->share, CURLSHOPT_UNLOCKFUNC, shareUnlock);
    curl_share_setopt(s3->share, CURLSHOPT_USERDATA, s3);
    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(s3->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    *out = s3;
    return 0;
err:
    s3Close(s3);
    return rv;
}

void s3Close(struct s3 *s3)
{
    if (s3 == NULL) {
        return;
    }
    if (s3->share != NULL) {
        curl_share_cleanup(s3->share);
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) {
        pthread_mutex_destroy(&s3->locks[i]);
    }
    if (s3->token_header != NULL) {
        explicit_bzero(s3->token_header, strlen(s3->token_header));
        free(s3->token_header);
    }
    explicit_bzero(s3, sizeof *s3);
    free(s3);
}

const char *s3Describe(const struct s3 *s3)
{
    return s3->describe;
}

void s3Stats(const struct s3 *s3, struct s3_stats *out)
{
    out->requests = __atomic_load_n(&s3->n_requests, __ATOMIC_RELAXED);
    out->retries = __atomic_load_n(&s3->n_retries, __ATOMIC_RELAXED);
}

/* ---- URLs ---------------------------------------------------------------------------- */

/* SigV4's URI encoding: every byte but A-Za-z0-9-_.~ as %XX (upper case), '/' kept
 * when keep_slash. */
static void uriEncode(struct buf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
            (keep_slash && c == '/')) {
            bufPutc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            bufPut(b, e, 3);
        }
    }
}

struct qparam {
    const char *name;
    const char *value; /* NULL: empty */
};

/* The URL of key (full, prefix included; NULL: the bucket) with the query params,
 * sorted by name as SigV4 wants them (the names given here are plain ASCII). Returns a
 * malloc'd string, NULL when out of memory. */
static char *makeUrl(const struct s3 *s3, const char *key, struct qparam *q, size_t nq)
{
    struct buf b;
    bufInit(&b);
    if (key != NULL) {
        bufPuts(&b, s3->base);
        uriEncode(&b, key, strlen(key), true);
    } else {
        bufPuts(&b, s3->bucket_url);
    }
    /* insertion sort: at most a handful */
    for (size_t i = 1; i < nq; i++) {
        for (size_t j = i; j > 0 && strcmp(q[j - 1].name, q[j].name) > 0; j--) {
            struct qparam t = q[j];
            q[j] = q[j - 1];
            q[j - 1] = t;
        }
    }
    for (size_t i = 0; i < nq; i++) {
        bufPutc(&b, i == 0 ? '?' : '&');
        uriEncode(&b, q[i].name, strlen(q[i].name), false);
        bufPutc(&b, '=');
        if (q[i].value != NULL) {
            uriEncode(&b, q[i].value, strlen(q[i].value), false);
        }
    }
    return bufDetach(&b, NULL);
}

/* The full key of a relative one; errmsg when it is empty or too long. */
static int fullKey(const struct s3 *s3, const char *key, char *out, char *errmsg)
{
    size_t pn = strlen(s3->prefix);
    size_t kn = key != NULL ? strlen(key) : 0;
    if (kn == 0) {
        errorf(errmsg, "empty object key under s3://%s/%s", s3->bucket, s3->prefix);
        return CAIRN_EINVAL;
    }
    if (pn + kn > S3_MAX_KEY) {
        errorf(errmsg, "object key '%.100s...' under s3://%s/%s is longer than %d bytes", key,
               s3->bucket, s3->prefix, S3_MAX_KEY);
        return CAIRN_EINVAL;
    }
    memcpy(out, s3->prefix, pn);
    memcpy(out + pn, key, kn + 1);
    return 0;
}

/* ---- one request, with retries ---------------------------------------------------- */

enum verdict { V_OK, V_RETRY, V_FAIL };

struct call {
    struct s3 *s3;
    CURL *curl; /* of the attempt under way */
    const char *method;
    char *url;      /* owned */
    char what[300]; /* "PUT s3://bucket/key", for messages */
    struct curl_slist *hdrs;
    /* request body, from memory */
    const char *body;
    size_t body_len, body_pos;
    bool has_body;
    /* ranged GET */
    bool ranged;
    uint64_t range_off, range_len; /* range_len S3_TO_END: to the end */
    uint64_t delivered, skip;
    bool sink_done;
    s3_sink_fn sink;
    void *sink_arg;
    int sink_rc;
    void *check_arg; /* for the function judging a 2xx answer (callRun's check) */
    char if_match[100];
    bool pinned; /* if_match from the caller: sent from the first attempt on */
    bool body_started;
    bool range_bad; /* the answer's range does not hold the bytes asked for */
    /* answer */
    long status;
    struct buf answer;
    size_t answer_max;
    bool answer_over;
    char etag[100];
    char content_range[100];
    char bucket_region[64];
    char request_id[80];
    long retry_after;
    CURLcode cc;
    char cerr[CURL_ERROR_SIZE];
    char last[400]; /* the last answer, for the final message */
    bool last_timeout;
    int attempts;
    int64_t started;    /* first attempt, monotonic ms */
    int64_t fail_since; /* start of the retry budget: the first failure (since the last
                         * progress of a GET); 0 before */
    int64_t last_move;  /* when a byte last moved in this attempt */
    curl_off_t moved;   /* bytes moved in this attempt (both ways) */
    bool stalled;
    bool quick; /* one attempt of at most QUICK_MS, whatever the stop flag says: the
                 * abort of an upload ended by a stop */
};

static size_t onHeader(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb;
    const char *colon;
    char name[40];
    const char *v;
    size_t vn, kn;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new answer (after 100 Continue): forget the previous one's headers */
        c->etag[0] = c->content_range[0] = c->bucket_region[0] = c->request_id[0] = '\0';
        c->retry_after = 0;
        return n;
    }
    colon = memchr(p, ':', n);
    if (colon == NULL) {
        return n;
    }
    kn = (size_t)(colon - p);
    if (kn >= sizeof name) {
        return n;
    }
    for (size_t i = 0; i < kn; i++) {
        name[i] = (char)tolower((unsigned char)p[i]);
    }
    name[kn] = '\0';
    v = colon + 1;
    vn = n - kn - 1;
    while (vn > 0 && isspace((unsigned char)*v)) {
        v++;
        vn--;
    }
    while (vn > 0 && isspace((unsigned char)v[vn - 1])) {
        vn--;
    }
    for (size_t i = 0; i < vn; i++) {
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
            return n; /* a value with control characters is not kept: an ETag goes back
                       * out in If-Match and in the completion's XML */
        }
    }
#define KEEP(field)                                                                                \
    snprintf(c->field, sizeof c->field, "%.*s", (int)(vn < sizeof c->field ? vn : 0), v)
    if (strcmp(name, "etag") == 0) {
        KEEP(etag);
    } else if (strcmp(name, "content-range") == 0) {
        KEEP(content_range);
    } else if (strcmp(name, "x-amz-bucket-region") == 0) {
        KEEP(bucket_region);
    } else if (strcmp(name, "x-amz-request-id") == 0) {
        KEEP(request_id);
    } else if (strcmp(name, "retry-after") == 0) {
        char tmp[16];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vn < sizeof tmp ? vn : 0), v);
        c->retry_after = atol(tmp);
    }
#undef KEEP
    return n;
}

/* At the first byte of a 2xx answer to a GET: where does the body start? A 206 names
 * its range; a 200 is the whole object (a server may ignore Range), whose first bytes
 * before the offset are skipped. The ETag seen first pins the version read. */
static bool rangeStart(struct call *c)
{
    uint64_t from = c->range_off + c->delivered;
    c->skip = 0;
    if (c->status == 206) {
        unsigned long long start, end;
        if (sscanf(c->content_range, "bytes %llu-%llu", &start, &end) != 2 || start > from ||
            end < start) {
            c->range_bad = true;
            return false;
        }
        c->skip = from - start;
    } else {
        c->skip = from;
    }
    if (c->if_match[0] == '\0' && c->etag[0] != '\0') {
        snprintf(c->if_match, sizeof c->if_match, "%s", c->etag);
    }
    return true;
}

/* Bodies of 2xx answers to a ranged GET go to the sink (skipping what a server that
 * ignored the range sent before the offset, and stopping at the length); every other
 * body is kept, up to answer_max. */
static size_t onBody(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb;
    if (c->sink != NULL && c->status >= 200 && c->status < 300) {
        size_t off = 0;
        uint64_t want;
        if (!c->body_started) {
            c->body_started = true;
            if (!rangeStart(c)) {
                return 0;
            }
        }
        if (c->skip > 0) {
            size_t s = c->skip < n ? (size_t)c->skip : n;
            c->skip -= s;
            off = s;
        }
        want = c->range_len == S3_TO_END ? UINT64_MAX : c->range_len - c->delivered;
        if (n - off > want) {
            n = off + (size_t)want;
        }
        if (n > off) {
            int rc = c->sink(c->sink_arg, p + off, n - off);
            if (rc != 0) {
                c->sink_rc = rc;
                return 0;
            }
            c->delivered += n - off;
        }
        if (c->range_len != S3_TO_END && c->delivered >= c->range_len) {
            c->sink_done = true;
            return 0; /* all that was asked for: stop reading */
        }
        return size * nmemb;
    }
    if (c->answer.len + n > c->answer_max) {
        c->answer_over = true;
        return 0;
    }
    bufPut(&c->answer, p, n);
    return c->answer.oom ? 0 : n;
}

static size_t onRead(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = c->body_len - c->body_pos;
    if (n > size * nmemb) {
        n = size * nmemb;
    }
    memcpy(p, c->body + c->body_pos, n);
    c->body_pos += n;
    return n;
}

static int onSeek(void *arg, curl_off_t off, int origin)
{
    struct call *c = arg;
    if (origin != SEEK_SET || off < 0 || (size_t)off > c->body_len) {
        return CURL_SEEKFUNC_CANTSEEK;
    }
    c->body_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* Stall detection: no byte moved, either way, for stall_ms. (libcurl's low-speed limit
 * compares against the speed averaged over the last few seconds, so a dead connection
 * after a fast burst looks alive for seconds more; and S3 keeps a slow
 * CompleteMultipartUpload alive by trickling spaces, which a bytes-per-second floor would
 * cut.) Called at least about once a second by libcurl. */
static int onProgress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                      curl_off_t ulnow)
{
    struct call *c = arg;
    int64_t now = monoMs();
    (void)dltotal;
    (void)ultotal;
    if (stopped(c->s3) && !c->quick) {
        return 1;
    }
    if (dlnow + ulnow != c->moved) {
        c->moved = dlnow + ulnow;
        c->last_move = now;
    } else if (now - c->last_move > (int64_t)c->s3->stall_ms) {
        c->stalled = true;
        return 1;
    }
    return 0;
}

/* The status is needed inside onBody, before the transfer ends. */
static size_t onBodyStatus(char *p, size_t size, size_t nmemb, void *arg);

static void callInit(struct call *c, struct s3 *s3, const char *method, const char *what_key,
                     const char *what_extra)
{
    memset(c, 0, sizeof *c);
    c->s3 = s3;
    c->method = method;
    c->started = monoMs();
    bufInit(&c->answer);
    c->answer_max = MAX_SMALL_ANSWER;
    if (what_key != NULL) {
        size_t kn = strlen(what_key);
        snprintf(c->what, sizeof c->what, "%s s3://%s/%.*s%s%s", method, s3->bucket,
                 kn > 200 ? 200 : (int)kn, what_key, kn > 200 ? "..." : "",
                 what_extra != NULL ? what_extra : "");
    } else {
        snprintf(c->what, sizeof c->what, "%s s3://%s/%s", method, s3->bucket,
                 what_extra != NULL ? what_extra : "");
    }
}

static void callFree(struct call *c)
{
    free(c->url);
    c->url = NULL;
    curl_slist_free_all(c->hdrs);
    c->hdrs = NULL;
    bufFree(&c->answer);
}

/* Headers signed and sent with every attempt; extra (may be NULL) is one more line. */
static int callHeaders(struct call *c, const char *content_type, const char *extra)
{
    struct curl_slist *h = NULL, *t;
    const char *sha = c->has_body && c->body_len > 0 ? "UNSIGNED-PAYLOAD" : EMPTY_SHA256;
    char line[120];
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", sha);
    h = curl_slist_append(h, line);
    if (h != NULL && c->s3->token_header != NULL) {
        t = curl_slist_append(h, c->s3->token_header);
        h = t != NULL ? t : (curl_slist_free_all(h), NULL);
    }
    if (h != NULL && content_type != NULL) {
        snprintf(line, sizeof line, "Content-Type: %s", content_type);
        t = curl_slist_append(h, line);
        h = t != NULL ? t : (curl_slist_free_all(h), NULL);
    }
    if (h != NULL && extra != NULL) {
        t = curl_slist_append(h, extra);
        h = t != NULL ? t : (curl_slist_free_all(h), NULL);
    }
    c->hdrs = h;
    return h != NULL ? 0 : CAIRN_ENOMEM;
}

/* Set up h for the next attempt of c. If-Match headers come and go between attempts of
 * a GET, so the header list may be rebuilt here. */
static int callSetup(struct call *c, CURL *h, bool shared)
{
    struct s3 *s3 = c->s3;
    char range[64];

    curl_easy_reset(h);
    c->curl = h;
    c->status = 0;
    c->body_started = false;
    c->range_bad = false;
    c->cc = CURLE_OK;
    c->cerr[0] = '\0';
    c->body_pos = 0;
    c->answer_over = false;
    c->sink_done = false;
    c->etag[0] = c->content_range[0] = c->bucket_region[0] = c->request_id[0] = '\0';
    c->retry_after = 0;
    c->stalled = false;
    c->moved = 0;
    c->last_move = monoMs();
    bufReset(&c->answer);
    c->attempts++;
    __atomic_add_fetch(&s3->n_requests, 1, __ATOMIC_RELAXED);
    if (c->attempts > 1) {
        __atomic_add_fetch(&s3->n_retries, 1, __ATOMIC_RELAXED);
    }

    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn/" CAIRN_VERSION);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, s3->key_id);
    curl_easy_setopt(h, CURLOPT_PASSWORD, s3->secret);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s3->connect_ms);
    if (c->quick) {
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, QUICK_MS);
    }
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->cerr);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, onHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, onBodyStatus);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    if (shared) {
        curl_easy_setopt(h, CURLOPT_SHARE, s3->share);
    }
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
    } else if (strcmp(c->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
    }
    if (c->has_body) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, onRead);
        curl_easy_setopt(h, CURLOPT_READDATA, c);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, onSeek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, c);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->body_len);
    }
    if (c->ranged) {
        uint64_t from = c->range_off + c->delivered;
        if (c->range_len == S3_TO_END) {
            if (from > 0) {
                snprintf(range, sizeof range, "%llu-", (unsigned long long)from);
                curl_easy_setopt(h, CURLOPT_RANGE, range);
            }
        } else {
            snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)from,
                     (unsigned long long)(c->range_off + c->range_len - 1));
            curl_easy_setopt(h, CURLOPT_RANGE, range);
        }
        c->skip = 0;
        if (c->if_match[0] != '\0' && (c->delivered > 0 || c->pinned)) {
            /* A resumed read must come from the same version of the object. */
            struct curl_slist *t;
            char line[128];
            snprintf(line, sizeof line, "If-Match: %s", c->if_match);
            for (t = c->hdrs; t != NULL && t->next != NULL; t = t->next) {
                if (strncmp(t->next->data, "If-Match:", 9) == 0) {
                    break;
                }
            }
            if (t == NULL || t->next == NULL) {
                t = curl_slist_append(c->hdrs, line);
                if (t == NULL) {
                    return CAIRN_ENOMEM;
                }
                c->hdrs = t;
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
            }
        }
    }
    return 0;
}

static size_t onBodyStatus(char *p, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    if (c->status == 0) {
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
    }
    return onBody(p, size, nmemb, arg);
}

static bool retryableCode(const char *code)
{
    /* ConditionalRequestConflict: a conditional write raced another on the same key;
     * S3 asks for it to be sent again. */
    return strcmp(code, "SlowDown") == 0 || strcmp(code, "InternalError") == 0 ||
           strcmp(code, "ServiceUnavailable") == 0 || strcmp(code, "RequestTimeout") == 0 ||
           strcmp(code, "Throttling") == 0 || strcmp(code, "ThrottlingException") == 0 ||
           strcmp(code, "ConditionalRequestConflict") == 0;
}

/* Put the answer in words into c->last: status, the S3 error code and message of an
 * <Error> body, the request id. The error code goes into code. */
static void describeHttp(struct call *c, char *code, size_t code_n)
{
    char msg[300];
    const char *why;
    s3xmlError(c->answer.p != NULL ? c->answer.p : "", c->answer.len, code, code_n, msg, sizeof msg,
               &why);
    if (code[0] == '\0' && c->status == 404) {
        snprintf(code, code_n, "NotFound");
    }
    snprintf(c->last, sizeof c->last, "HTTP %ld%s%s%s%s%s%s", c->status, code[0] ? " " : "", code,
             msg[0] ? ": " : "", msg, c->request_id[0] ? " (request id " : "",
             c->request_id[0] ? c->request_id : "");
    if (c->request_id[0]) {
        size_t n = strlen(c->last);
        if (n + 1 < sizeof c->last) {
            c->last[n] = ')';
            c->last[n + 1] = '\0';
        }
    }
}

/* Judge the attempt just made: done, worth another attempt, or failed for good (*rc).
 * c->last says what the answer was. */
static enum verdict callJudge(struct call *c, int *rc)
{
    struct s3 *s3 = c->s3;
    char code[64];
    c->last_timeout = false;
    *rc = CAIRN_EIO;
    if (c->cc == CURLE_ABORTED_BY_CALLBACK && stopped(s3) && !c->quick) {
        snprintf(c->last, sizeof c->last, "stopped");
        *rc = CAIRN_ESHUTDOWN;
        return V_FAIL;
    }
    if (c->cc == CURLE_ABORTED_BY_CALLBACK && c->stalled) {
        snprintf(c->last, sizeof c->last, "stalled: no data moved for %.1f s",
                 (double)s3->stall_ms / 1000.0);
        c->last_timeout = true;
        return V_RETRY;
    }
    if (c->cc == CURLE_WRITE_ERROR) {
        if (c->sink_rc != 0) {
            snprintf(c->last, sizeof c->last, "stopped by the reader");
            *rc = c->sink_rc;
            return V_FAIL;
        }
        if (c->sink_done) {
            return V_OK;
        }
        if (c->range_bad) {
            snprintf(c->last, sizeof c->last,
                     "HTTP %ld with Content-Range '%s', which does not hold the bytes asked for",
                     c->status, c->content_range);
            return V_FAIL;
        }
        if (c->answer_over) {
            snprintf(c->last, sizeof c->last, "HTTP %ld with an answer longer than %zu bytes",
                     c->status, c->answer_max);
            return V_FAIL;
        }
        if (c->answer.oom) {
            snprintf(c->last, sizeof c->last, "out of memory reading the answer");
            *rc = CAIRN_ENOMEM;
            return V_FAIL;
        }
    }
    if (c->cc != CURLE_OK) {
        snprintf(c->last, sizeof c->last, "%s", c->cerr[0] ? c->cerr : curl_easy_strerror(c->cc));
        switch (c->cc) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_AGAIN:
            c->last_timeout = c->cc == CURLE_OPERATION_TIMEDOUT;
            return V_RETRY;
        default:
            return V_FAIL;
        }
    }
    if (c->status == 0) {
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
    }
    if (c->status >= 200 && c->status < 300) {
        return V_OK;
    }
    describeHttp(c, code, sizeof code);
    if (c->status >= 300 && c->status < 400) {
        size_t n = strlen(c->last);
        if (c->bucket_region[0] != '\0' && strcmp(c->bucket_region, s3->region) != 0) {
            snprintf(c->last + n, sizeof c->last - n,
                     "; the bucket is in region %s, not %s: set the region to %s", c->bucket_region,
                     s3->region, c->bucket_region);
        } else {
            snprintf(c->last + n, sizeof c->last - n, "; redirects are not followed");
        }
        return V_FAIL;
    }
    if (c->status >= 500 || c->status == 429 || retryableCode(code)) {
        return V_RETRY;
    }
    /* A HEAD's answer has no body: its 403 cannot say whether the signature or the
     * permissions were refused, and a backup's first request is a HEAD. */
    if (c->status == 403 &&
        (strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
         (code[0] == '\0' && strcmp(c->method, "HEAD") == 0))) {
        size_t n = strlen(c->last);
        snprintf(c->last + n, sizeof c->last - n, "; check the credentials (access key id %s)%s",
                 s3->key_id, code[0] == '\0' ? " and what they may read in the bucket" : "");
    }
    if (c->status == 404) {
        *rc = CAIRN_ENOTFOUND;
    } else if (c->status == 416) {
        *rc = CAIRN_EINVAL;
    }
    return V_FAIL;
}

/* After a failed attempt: 0 and *delay_ms before the next one, or the final error in
 * errmsg when the retry budget would be spent. The budget runs from the first failure
 * (so a long first attempt does not use it up), or from the last failure after which a
 * GET had moved on. */
static int callRetryDelay(struct call *c, unsigned *delay_ms, char *errmsg)
{
    struct s3 *s3 = c->s3;
    int64_t now = monoMs();
    unsigned delay = backoffMs(c->attempts, c->retry_after);
    if (stopped(s3) || c->quick) {
        errorf(errmsg, "%s: %s", c->what, c->quick ? c->last : "stopped");
        return c->quick ? CAIRN_EIO : CAIRN_ESHUTDOWN;
    }
    if (c->fail_since == 0) {
        c->fail_since = now;
    }
    if (now + (int64_t)delay - c->fail_since > (int64_t)s3->retry_ms) {
        errorf(errmsg,
               "%s: gave up after %d attempt%s in %.1f s (retries stop %.1f s after a failure); "
               "last answer: %s",
               c->what, c->attempts, c->attempts == 1 ? "" : "s",
               (double)(now - c->started) / 1000.0, (double)s3->retry_ms / 1000.0, c->last);
        return c->last_timeout ? CAIRN_ETIMEOUT : CAIRN_EIO;
    }
    *delay_ms = delay;
    return 0;
}

static void pauseMs(const struct s3 *s3, unsigned ms)
{
    int64_t end = monoMs() + ms;
    int64_t now;
    while ((now = monoMs()) < end && !stopped(s3)) {
        int64_t step = end - now < 100 ? end - now : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* What an easy request keeps of its last answer once its handle is gone. */
struct answer_info {
    curl_off_t length;
    curl_off_t filetime;
};

/* Run c to the end on an easy handle (connections shared through the client):
 * attempts until one succeeds, one fails for good, or the retry budget is spent. check
 * (may be NULL) judges a 2xx answer further. */
static int callRun(struct call *c, enum verdict (*check)(struct call *c, int *rc),
                   struct answer_info *info, char *errmsg)
{
    CURL *h = curl_easy_init();
    uint64_t progress = 0;
    int rv = 0;
    if (h == NULL) {
        errorf(errmsg, "%s: out of memory", c->what);
        return CAIRN_ENOMEM;
    }
    for (;;) {
        enum verdict v;
        unsigned delay;
        rv = callSetup(c, h, true);
        if (rv != 0) {
            errorf(errmsg, "%s: out of memory", c->what);
            break;
        }
        c->cc = curl_easy_perform(h);
        v = callJudge(c, &rv);
        if (v == V_OK && check != NULL) {
            v = check(c, &rv);
        }
        if (v == V_OK) {
            rv = 0;
            if (info != NULL) {
                info->length = -1;
                info->filetime = -1;
                curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &info->length);
                curl_easy_getinfo(h, CURLINFO_FILETIME_T, &info->filetime);
            }
            break;
        }
        if (v == V_FAIL) {
            errorf(errmsg, "%s: %s", c->what, c->last);
            break;
        }
        if (c->delivered > progress) {
            /* a read that moved on gets a fresh budget */
            progress = c->delivered;
            c->fail_since = 0;
        }
        rv = callRetryDelay(c, &delay, errmsg);
        if (rv != 0) {
            break;
        }
        pauseMs(c->s3, delay);
    }
    curl_easy_cleanup(h);
    return rv;
}

/* ---- single requests ------------------------------------------------------------------ */

int s3Head(struct s3 *s3, const char *key, struct s3_object *out, char *errmsg)
{
    char full[S3_MAX_KEY + 1];
    struct call c;
    struct answer_info info;
    int rv;

    memset(out, 0, sizeof *out);
    rv = fullKey(s3, key, full, errmsg);
    if (rv != 0) {
        return rv;
    }
    callInit(&c, s3, "HEAD", full, NULL);
    c.url = makeUrl(s3, full, NULL, 0);
    if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
        errorf(errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    rv = callRun(&c, NULL, &info, errmsg);
    if (rv != 0) {
        goto out;
    }
    if (info.length < 0) {
        errorf(errmsg, "%s: HTTP %ld without a Content-Length", c.what, c.status);
        rv = CAIRN_EIO;
        goto out;
    }
    out->size = (uint64_t)info.length;
    out->mtime_ms = info.filetime > 0 ? (int64_t)info.filetime * 1000 : 0;
    s3xmlUnquoteEtag(out->etag, sizeof out->etag, c.etag);
out:
    callFree(&c);
    return rv;
}

/* The object's whole size from a 206's Content-Range ("bytes A-B/SIZE"), or from a
 * 200's Content-Length; false when the answer does not say. */
static bool wholeSize(const struct call *c, const struct answer_info *info, uint64_t *size)
{
    if (c->status == 206) {
        const char *slash = strchr(c->content_range, '/');
        return slash != NULL && s3xmlParseU64(slash + 1, size);
    }
    if (info->length < 0) {
        return false;
    }
    *size = (uint64_t)info->length;
    return true;
}

int s3Get(struct s3 *s3, const char *key, const char *etag, uint64_t offset, uint64_t len,
          s3_sink_fn fn, void *arg, uint64_t *got, char *errmsg)
{
    return s3GetObject(s3, key, etag, offset, len, fn, arg, got, NULL, errmsg);
}

int s3GetObject(struct s3 *s3, const char *key, const char *etag, uint64_t offset, uint64_t len,
                s3_sink_fn fn, void *arg, uint64_t *got, struct s3_object *out, char *errmsg)
{
    char full[S3_MAX_KEY + 1];
    char extra[80] = "";
    struct answer_info info;
    struct call c;
    int rv;

    if (got != NULL) {
        *got = 0;
    }
    if (out != NULL) {
        memset(out, 0, sizeof *out);
    }
    rv = fullKey(s3, key, full, errmsg);
    if (rv != 0 || len == 0) {
        return rv;
    }
    if (len != S3_TO_END && offset + len < offset) {
        errorf(errmsg, "GET s3://%s/%s: range overflows", s3->bucket, full);
        return CAIRN_EINVAL;
    }
    if (offset > 0 || len != S3_TO_END) {
        if (len == S3_TO_END) {
            snprintf(extra, sizeof extra, " from byte %llu", (unsigned long long)offset);
        } else {
            snprintf(extra, sizeof extra, " bytes %llu-%llu", (unsigned long long)offset,
                     (unsigned long long)(offset + len - 1));
        }
    }
    callInit(&c, s3, "GET", full, extra);
    c.ranged = true;
    c.range_off = offset;
    c.range_len = len;
    c.sink = fn;
    c.sink_arg = arg;
    if (etag != NULL && etag[0] != '\0') {
        bool quoted = etag[0] == '"';
        if (strlen(etag) + 3 > sizeof c.if_match) {
            errorf(errmsg, "%s: ETag '%.40s...' is too long", c.what, etag);
            callFree(&c);
            return CAIRN_EINVAL;
        }
        snprintf(c.if_match, sizeof c.if_match, "%s%s%s", quoted ? "" : "\"", etag,
                 quoted ? "" : "\"");
        c.pinned = true;
    }
    c.url = makeUrl(s3, full, NULL, 0);
    if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
        errorf(errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
        goto out;
    }
    rv = callRun(&c, NULL, &info, errmsg);
    if (rv == 0 && out != NULL) {
        if (!wholeSize(&c, &info, &out->size)) {
            errorf(errmsg, "%s: HTTP %ld that says neither the object's size nor its range (%s)",
                   c.what, c.status, c.content_range[0] ? c.content_range : "no Content-Range");
            rv = CAIRN_EIO;
        }
        s3xmlUnquoteEtag(out->etag, sizeof out->etag, c.if_match[0] ? c.if_match : c.etag);
    }
    if (rv == CAIRN_EINVAL && c.status == 416) {
        errorf(errmsg, "%s: the offset is at or past the end of the object (%s)", c.what, c.last);
    } else if (rv != 0 && c.status == 412) {
        errorf(errmsg, "%s: the object changed %s (%s)", c.what,
               c.pinned ? "since its ETag was read" : "while it was read", c.last);
    }
    if (got != NULL) {
        *got = c.delivered;
    }
out:
    callFree(&c);
    return rv;
}

/* A conditional write was refused (412): CAIRN_EEXIST, unless an earlier attempt of
 * the same request, whose answer was lost, is what made the object exist: the object
 * then has the size written. */
static int refusedWrite(struct call *c, const char *key, uint64_t size, char *errmsg)
{
    struct s3_object o;
    char err[CAIRN_ERRMSG_SIZE];
    if (c->attempts > 1 && s3Head(c->s3, key, &o, err) == 0 && o.size == size) {
        return 0;
    }
    errorf(errmsg, "%s: the object already exists (%s)", c->what, c->last);
    return CAIRN_EEXIST;
}

/* PUT the full key; no_replace: only if no object has that name (If-None-Match). */
static int putFull(struct s3 *s3, const char *full, const void *data, size_t len, bool no_replace,
                   char *errmsg)
{
    struct call c;
    int rv;
    callInit(&c, s3, "PUT", full, NULL);
    c.has_body = true;
    c.body = data;
    c.body_len = len;
    c.url = makeUrl(s3, full, NULL, 0);
    if (c.url == NULL || callHeaders(&c, NULL, no_replace ? "If-None-Match: *" : NULL) != 0) {
        errorf(errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
    } else {
        rv = callRun(&c, NULL, NULL, errmsg);
        if (rv != 0 && no_replace && c.status == 412) {
            rv = refusedWrite(&c, full + strlen(s3->prefix), len, errmsg);
        }
    }
    callFree(&c);
    return rv;
}

int s3Put(struct s3 *s3, const char *key, const void *data, size_t len, char *errmsg)
{
    char full[S3_MAX_KEY + 1];
    int rv = fullKey(s3, key, full, errmsg);
    if (rv != 0) {
        return rv;
    }
    return putFull(s3, full, data, len, false, errmsg);
}

void s3KeyUrl(const struct s3 *s3, const char *key, char *out, size_t n)
{
    snprintf(out, n, "s3://%s/%s%s", s3->bucket, s3->prefix, key);
}

int s3Delete(struct s3 *s3, const char *key, char *errmsg)
{
    char full[S3_MAX_KEY + 1];
    struct call c;
    int rv = fullKey(s3, key, full, errmsg);
    if (rv != 0) {
        return rv;
    }
    callInit(&c, s3, "DELETE", full, NULL);
    c.url = makeUrl(s3, full, NULL, 0);
    if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
        errorf(errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
    } else {
        rv = callRun(&c, NULL, NULL, errmsg);
    }
    callFree(&c);
    return rv;
}

/* ---- listings -------------------------------------------------------------------------- */

static enum verdict checkListing(struct call *c, int *rc)
{
    struct s3xml_page *pg = c->check_arg;
    const char *why = NULL;
    if (s3xmlListPage(c->answer.p != NULL ? c->answer.p : "", c->answer.len, pg, &why) != 0) {
        snprintf(c->last, sizeof c->last, "HTTP %ld with an answer that is not a %s: %s", c->status,
                 pg->uploads ? "ListMultipartUploadsResult" : "ListBucketResult", why);
        *rc = CAIRN_EIO;
        return V_FAIL;
    }
    return V_OK;
}

/* The listings: objects (uploads false) or pending multipart uploads. */
static int listRun(struct s3 *s3, const char *prefix, bool uploads, s3_list_fn fn,
                   s3_pending_fn pfn, void *arg, char *errmsg)
{
    char full[S3_MAX_KEY + 2];
    size_t pn = strlen(s3->prefix);
    struct s3xml_page *pg = calloc(1, sizeof *pg);
    char *token = NULL, *token2 = NULL;
    char *seen = NULL, *seen2 = NULL; /* the continuation kept for cycle detection */
    unsigned pages = 1, steps = 0, power = 1;
    int rv = 0;

    if (pg == NULL) {
        errorf(errmsg, "out of memory");
        rv = CAIRN_ENOMEM;
        goto out;
    }
    if (prefix == NULL) {
        prefix = "";
    }
    if (pn + strlen(prefix) > S3_MAX_KEY) {
        errorf(errmsg, "listing prefix '%.100s' under s3://%s/%s is too long", prefix, s3->bucket,
               s3->prefix);
        rv = CAIRN_EINVAL;
        goto out;
    }
    snprintf(full, sizeof full, "%s%s", s3->prefix, prefix);
    pg->uploads = uploads;
    for (;;) {
        struct call c;
        struct qparam q[6];
        size_t nq = 0;
        const char *why = NULL;

        if (uploads) {
            q[nq++] = (struct qparam){"uploads", NULL};
            if (token != NULL) {
                q[nq++] = (struct qparam){"key-marker", token};
                q[nq++] = (struct qparam){"upload-id-marker", token2};
            }
        } else {
            q[nq++] = (struct qparam){"list-type", "2"};
            q[nq++] = (struct qparam){"max-keys", "1000"};
            if (token != NULL) {
                q[nq++] = (struct qparam){"continuation-token", token};
            }
        }
        q[nq++] = (struct qparam){"encoding-type", "url"};
        if (full[0] != '\0') {
            q[nq++] = (struct qparam){"prefix", full};
        }
        callInit(&c, s3, "GET", NULL, NULL);
        snprintf(c.what, sizeof c.what, "%s s3://%s/%.200s%s", uploads ? "LIST-UPLOADS" : "LIST",
                 s3->bucket, full, strlen(full) > 200 ? "..." : "");
        c.answer_max = MAX_LIST_ANSWER;
        c.check_arg = pg;
        c.url = makeUrl(s3, NULL, q, nq);
        if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
            errorf(errmsg, "%s: out of memory", c.what);
            callFree(&c);
            rv = CAIRN_ENOMEM;
            goto out;
        }
        rv = callRun(&c, checkListing, NULL, errmsg);
        if (rv != 0) {
            if (rv == CAIRN_ENOTFOUND) {
                errorf(errmsg, "%s: %s (does the bucket exist?)", c.what, c.last);
            }
            callFree(&c);
            goto out;
        }
        /* pass two: the entries, the page being known well-formed */
        rv = s3xmlListEntries(c.answer.p, c.answer.len, pg, full, pn, fn, pfn, arg, &why);
        if (why != NULL) {
            errorf(errmsg, "%s: HTTP %ld with a listing that cannot be read: %s", c.what, c.status,
                   why);
            rv = rv == CAIRN_ENOMEM ? rv : CAIRN_EIO;
        }
        callFree(&c);
        if (rv != 0 || !pg->truncated) {
            goto out;
        }
        if (token != NULL && strcmp(token, pg->next) == 0 &&
            (!uploads || strcmp(token2, pg->next2) == 0)) {
            errorf(errmsg, "LIST s3://%s/%s: the server gave the same continuation twice",
                   s3->bucket, full);
            rv = CAIRN_EIO;
            goto out;
        }
        /* A server handing back continuations in a cycle (A, B, A, ...) would be listed
         * forever: Brent's cycle detection, one continuation kept, caught within twice
         * the cycle's length. */
        if (seen != NULL && strcmp(seen, pg->next) == 0 &&
            (!uploads || strcmp(seen2, pg->next2) == 0)) {
            errorf(errmsg, "LIST s3://%s/%s: the server's continuations run in a cycle "
                           "(page %u hands back one it gave before)",
                   s3->bucket, full, pages);
            rv = CAIRN_EIO;
            goto out;
        }
        pages++;
        if (++steps == power) {
            free(seen);
            free(seen2);
            seen = strdup(pg->next);
            seen2 = strdup(pg->next2);
            if (seen == NULL || seen2 == NULL) {
                errorf(errmsg, "out of memory");
                rv = CAIRN_ENOMEM;
                goto out;
            }
            power *= 2;
            steps = 0;
        }
        free(token);
        free(token2);
        token = strdup(pg->next);
        token2 = strdup(pg->next2);
        if (token == NULL || token2 == NULL) {
            errorf(errmsg, "out of memory");
            rv = CAIRN_ENOMEM;
            goto out;
        }
    }
out:
    free(token);
    free(token2);
    free(seen);
    free(seen2);
    free(pg);
    return rv;
}

int s3List(struct s3 *s3, const char *prefix, s3_list_fn fn, void *arg, char *errmsg)
{
    return listRun(s3, prefix, false, fn, NULL, arg, errmsg);
}

int s3ListUploads(struct s3 *s3, const char *prefix, s3_pending_fn fn, void *arg, char *errmsg)
{
    return listRun(s3, prefix, true, NULL, fn, arg, errmsg);
}

/* Abort upload_id of the full key. An upload that no longer exists is no error; *gone
 * (may be NULL) tells that case apart. quick: one short attempt, even when stopped. */
static int abortFull(struct s3 *s3, const char *full, const char *upload_id, bool quick, bool *gone,
                     char *errmsg)
{
    struct call c;
    struct qparam q[1] = {{"uploadId", upload_id}};
    int rv;
    callInit(&c, s3, "DELETE", full, " (abort multipart upload)");
    c.quick = quick;
    c.url = makeUrl(s3, full, q, 1);
    if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
        errorf(errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
    } else {
        rv = callRun(&c, NULL, NULL, errmsg);
        if (gone != NULL) {
            *gone = rv == CAIRN_ENOTFOUND;
        }
        if (rv == CAIRN_ENOTFOUND) {
            rv = 0; /* already gone */
        }
    }
    callFree(&c);
    return rv;
}

int s3AbortUpload(struct s3 *s3, const char *key, const char *upload_id, char *errmsg)
{
    char full[S3_MAX_KEY + 1];
    int rv = fullKey(s3, key, full, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (upload_id == NULL || upload_id[0] == '\0') {
        errorf(errmsg, "abort of s3://%s/%s: no upload id", s3->bucket, full);
        return CAIRN_EINVAL;
    }
    return abortFull(s3, full, upload_id, false, NULL, errmsg);
}

/* ---- multipart uploads --------------------------------------------------------------- */

enum { SLOT_FREE, SLOT_RUNNING, SLOT_WAITING };

struct slot {
    struct call c;
    CURL *h;
    char *buf; /* part_size bytes, allocated at first use */
    size_t len;
    unsigned part;
    int state;
    int64_t due; /* SLOT_WAITING: when to try again */
};

struct s3_upload {
    struct s3 *s3;
    char key[S3_MAX_KEY + 1];
    char *upload_id;
    size_t part_size;
    unsigned nslots;
    struct slot *slots;
    struct slot *fill; /* the slot being filled, or NULL */
    unsigned parts;    /* part numbers given out */
    char **etags;      /* etags[i]: of part i + 1 */
    unsigned etags_cap;
    uint64_t total;
    CURLM *multi;
    int failed; /* the error that ended the upload, or 0 */
    char errmsg[CAIRN_ERRMSG_SIZE];
    bool aborted;    /* the multipart upload is gone from the server (or never was) */
    bool completing; /* CompleteMultipartUpload was sent */
    bool no_replace; /* S3_NO_REPLACE */
    bool gone;       /* the abort found the upload gone already */
};

int s3UploadBegin(struct s3 *s3, const char *key, uint64_t size_hint, unsigned flags,
                  struct s3_upload **out, char *errmsg)
{
    struct s3_upload *u;
    int rv;
    *out = NULL;
    u = calloc(1, sizeof *u);
    if (u == NULL) {
        errorf(errmsg, "out of memory");
        return CAIRN_ENOMEM;
    }
    rv = fullKey(s3, key, u->key, errmsg);
    if (rv != 0) {
        free(u);
        return rv;
    }
    u->s3 = s3;
    u->no_replace = (flags & S3_NO_REPLACE) != 0;
    u->part_size = s3->part_size;
    if (size_hint / MAX_PARTS >= u->part_size) {
        /* whole MiB, enough for the hinted size in 10000 parts */
        uint64_t need = size_hint / MAX_PARTS + 1;
        need = (need + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
        if (need > MAX_PART_SIZE) {
            errorf(errmsg, "PUT s3://%s/%s: %llu bytes is more than S3 takes in one object",
                   s3->bucket, u->key, (unsigned long long)size_hint);
            free(u);
            return CAIRN_ETOOBIG;
        }
        u->part_size = (size_t)need;
    }
    /* Larger parts, fewer of them in flight: the buffers stay within what the client was
     * configured for (one part at least). */
    u->nslots = (unsigned)((s3->part_size * s3->parts_in_flight) / u->part_size);
    if (u->nslots == 0) {
        u->nslots = 1;
    }
    u->slots = calloc(u->nslots, sizeof *u->slots);
    if (u->slots == NULL) {
        errorf(errmsg, "out of memory");
        free(u);
        return CAIRN_ENOMEM;
    }
    u->aborted = true; /* nothing on the server yet */
    *out = u;
    return 0;
}

static void uploadFree(struct s3_upload *u)
{
    for (unsigned i = 0; i < u->nslots; i++) {
        struct slot *s = &u->slots[i];
        if (s->state == SLOT_RUNNING && u->multi != NULL) {
            curl_multi_remove_handle(u->multi, s->h);
        }
        if (s->h != NULL) {
            curl_easy_cleanup(s->h);
        }
        callFree(&s->c);
        free(s->buf);
    }
    if (u->multi != NULL) {
        curl_multi_cleanup(u->multi);
    }
    for (unsigned i = 0; i < u->parts && u->etags != NULL; i++) {
        free(u->etags[i]);
    }
    free(u->etags);
    free(u->upload_id);
    free(u->slots);
    free(u);
}

/* Stop every transfer of u (the slots become free). */
static void uploadCancel(struct s3_upload *u)
{
    for (unsigned i = 0; i < u->nslots; i++) {
        struct slot *s = &u->slots[i];
        if (s->state == SLOT_RUNNING) {
            curl_multi_remove_handle(u->multi, s->h);
        }
        s->state = SLOT_FREE;
        s->len = 0;
    }
    u->fill = NULL;
}

/* Abort the server's multipart upload, if there is one; 0 when nothing is left. */
static int uploadAbortRemote(struct s3_upload *u, char *errmsg)
{
    int rv;
    if (u->aborted) {
        return 0;
    }
    /* Stopping: one short attempt, so that a clean stop leaves nothing behind when the
     * server answers, and stays quick when it does not. */
    rv = abortFull(u->s3, u->key, u->upload_id, stopped(u->s3), &u->gone, errmsg);
    if (rv == 0) {
        u->aborted = true;
    }
    return rv;
}

/* The upload failed for good (rc, u->errmsg already written): stop, and abort it on the
 * server, saying in u->errmsg how that went. Returns rc. */
static int uploadFail(struct s3_upload *u, int rc)
{
    char err[CAIRN_ERRMSG_SIZE];
    size_t n;
    if (u->failed != 0) {
        return u->failed;
    }
    u->failed = rc;
    uploadCancel(u);
    if (u->aborted) {
        return rc;
    }
    n = strlen(u->errmsg);
    if (uploadAbortRemote(u, err) == 0) {
        if (u->gone && u->completing) {
            /* An attempt of the completion whose answer was lost may have gone through. */
            snprintf(u->errmsg + n, sizeof u->errmsg - n,
                     " (the multipart upload is gone: a completion may have gone through, so "
                     "the object may exist)");
        } else {
            snprintf(u->errmsg + n, sizeof u->errmsg - n, " (the multipart upload was aborted)");
        }
    } else {
        snprintf(u->errmsg + n, sizeof u->errmsg - n,
                 " (aborting the multipart upload failed too, upload id %s is left pending: %s)",
                 u->upload_id, err);
    }
    return rc;
}

static enum verdict checkInitiate(struct call *c, int *rc)
{
    struct s3_upload *u = c->check_arg;
    const char *body = c->answer.p != NULL ? c->answer.p : "";
    char id[S3XML_ID_SIZE];
    const char *why = NULL;
    if (s3xmlUploadId(body, c->answer.len, id, sizeof id, &why) != 0) {
        snprintf(c->last, sizeof c->last, "HTTP %ld with an answer that cannot be read: %s",
                 c->status, why);
        *rc = CAIRN_EIO;
        return V_FAIL;
    }
    u->upload_id = strdup(id);
    if (u->upload_id == NULL) {
        snprintf(c->last, sizeof c->last, "out of memory");
        *rc = CAIRN_ENOMEM;
        return V_FAIL;
    }
    return V_OK;
}

static int uploadInitiate(struct s3_upload *u)
{
    struct call c;
    struct qparam q[1] = {{"uploads", NULL}};
    int rv;
    callInit(&c, u->s3, "POST", u->key, " (create multipart upload)");
    c.has_body = true; /* empty, but with a Content-Length */
    c.check_arg = u;
    c.url = makeUrl(u->s3, u->key, q, 1);
    if (c.url == NULL || callHeaders(&c, NULL, NULL) != 0) {
        errorf(u->errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
    } else {
        rv = callRun(&c, checkInitiate, NULL, u->errmsg);
    }
    callFree(&c);
    if (rv == 0) {
        u->aborted = false;
    }
    return rv;
}

static int slotStart(struct s3_upload *u, struct slot *s)
{
    CURLMcode mc;
    if (callSetup(&s->c, s->h, false) != 0) {
        errorf(u->errmsg, "%s: out of memory", s->c.what);
        return uploadFail(u, CAIRN_ENOMEM);
    }
    curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
    mc = curl_multi_add_handle(u->multi, s->h);
    if (mc != CURLM_OK) {
        errorf(u->errmsg, "%s: %s", s->c.what, curl_multi_strerror(mc));
        return uploadFail(u, CAIRN_EIO);
    }
    s->state = SLOT_RUNNING;
    return 0;
}

/* Send the part held by s. */
static int slotDispatch(struct s3_upload *u, struct slot *s)
{
    char num[16];
    char extra[40];
    struct qparam q[2];
    int rv;
    if (u->upload_id == NULL) {
        rv = uploadInitiate(u);
        if (rv != 0) {
            return uploadFail(u, rv);
        }
    }
    if (u->parts == MAX_PARTS) {
        errorf(u->errmsg,
               "PUT s3://%s/%s: more than %u parts of %zu bytes (give a size hint for objects "
               "this large)",
               u->s3->bucket, u->key, MAX_PARTS, u->part_size);
        return uploadFail(u, CAIRN_ETOOBIG);
    }
    if (u->parts == u->etags_cap) {
        unsigned cap = u->etags_cap ? u->etags_cap * 2 : 64;
        char **e = realloc(u->etags, cap * sizeof *e);
        if (e == NULL) {
            errorf(u->errmsg, "out of memory");
            return uploadFail(u, CAIRN_ENOMEM);
        }
        memset(e + u->etags_cap, 0, (cap - u->etags_cap) * sizeof *e);
        u->etags = e;
        u->etags_cap = cap;
    }
    if (u->multi == NULL) {
        u->multi = curl_multi_init();
        if (u->multi == NULL) {
            errorf(u->errmsg, "out of memory");
            return uploadFail(u, CAIRN_ENOMEM);
        }
    }
    if (s->h == NULL) {
        s->h = curl_easy_init();
        if (s->h == NULL) {
            errorf(u->errmsg, "out of memory");
            return uploadFail(u, CAIRN_ENOMEM);
        }
    }
    s->part = ++u->parts;
    snprintf(num, sizeof num, "%u", s->part);
    snprintf(extra, sizeof extra, " (part %u)", s->part);
    q[0] = (struct qparam){"partNumber", num};
    q[1] = (struct qparam){"uploadId", u->upload_id};
    callFree(&s->c);
    callInit(&s->c, u->s3, "PUT", u->key, extra);
    s->c.has_body = true;
    s->c.body = s->buf;
    s->c.body_len = s->len;
    s->c.url = makeUrl(u->s3, u->key, q, 2);
    if (s->c.url == NULL || callHeaders(&s->c, NULL, NULL) != 0) {
        errorf(u->errmsg, "%s: out of memory", s->c.what);
        return uploadFail(u, CAIRN_ENOMEM);
    }
    return slotStart(u, s);
}

/* A transfer of the multi ended. */
static void slotDone(struct s3_upload *u, struct slot *s, CURLcode cc)
{
    enum verdict v;
    int rc;
    unsigned delay;
    curl_multi_remove_handle(u->multi, s->h);
    s->state = SLOT_FREE;
    s->c.cc = cc;
    v = callJudge(&s->c, &rc);
    if (v == V_OK && s->c.etag[0] == '\0') {
        snprintf(s->c.last, sizeof s->c.last, "HTTP %ld without an ETag", s->c.status);
        v = V_FAIL;
        rc = CAIRN_EIO;
    }
    if (v == V_OK) {
        u->etags[s->part - 1] = strdup(s->c.etag);
        if (u->etags[s->part - 1] == NULL) {
            errorf(u->errmsg, "out of memory");
            uploadFail(u, CAIRN_ENOMEM);
            return;
        }
        s->len = 0;
        return;
    }
    if (v == V_FAIL) {
        errorf(u->errmsg, "%s: %s", s->c.what, s->c.last);
        uploadFail(u, rc);
        return;
    }
    rc = callRetryDelay(&s->c, &delay, u->errmsg);
    if (rc != 0) {
        uploadFail(u, rc);
        return;
    }
    s->state = SLOT_WAITING;
    s->due = monoMs() + delay;
}

/* Move the transfers on; with wait, block until something happens (at most a moment).
 * Returns u->failed. */
static int uploadPump(struct s3_upload *u, bool wait)
{
    CURLMsg *msg;
    CURLMcode mc;
    int left, running;
    int64_t now;
    if (u->multi == NULL || u->failed != 0) {
        return u->failed;
    }
    if (wait) {
        int timeout = 200; /* the stop flag is looked at this often */
        now = monoMs();
        for (unsigned i = 0; i < u->nslots; i++) {
            if (u->slots[i].state == SLOT_WAITING && u->slots[i].due - now < timeout) {
                timeout = u->slots[i].due - now > 0 ? (int)(u->slots[i].due - now) : 0;
            }
        }
        mc = curl_multi_poll(u->multi, NULL, 0, timeout, NULL);
        if (mc != CURLM_OK) {
            errorf(u->errmsg, "PUT s3://%s/%s: %s", u->s3->bucket, u->key, curl_multi_strerror(mc));
            return uploadFail(u, CAIRN_EIO);
        }
    }
    mc = curl_multi_perform(u->multi, &running);
    if (mc != CURLM_OK) {
        errorf(u->errmsg, "PUT s3://%s/%s: %s", u->s3->bucket, u->key, curl_multi_strerror(mc));
        return uploadFail(u, mc == CURLM_OUT_OF_MEMORY ? CAIRN_ENOMEM : CAIRN_EIO);
    }
    while (u->failed == 0 && (msg = curl_multi_info_read(u->multi, &left)) != NULL) {
        struct slot *s = NULL;
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        slotDone(u, s, msg->data.result);
    }
    if (u->failed == 0 && stopped(u->s3)) {
        errorf(u->errmsg, "PUT s3://%s/%s: stopped", u->s3->bucket, u->key);
        return uploadFail(u, CAIRN_ESHUTDOWN);
    }
    now = monoMs();
    for (unsigned i = 0; i < u->nslots && u->failed == 0; i++) {
        struct slot *s = &u->slots[i];
        if (s->state == SLOT_WAITING && s->due <= now) {
            slotStart(u, s);
        }
    }
    return u->failed;
}

/* A free slot to fill, waiting for one if all are busy. */
static int slotAcquire(struct s3_upload *u, struct slot **out)
{
    for (;;) {
        for (unsigned i = 0; i < u->nslots; i++) {
            struct slot *s = &u->slots[i];
            if (s->state == SLOT_FREE) {
                if (s->buf == NULL) {
                    s->buf = malloc(u->part_size);
                    if (s->buf == NULL) {
                        errorf(u->errmsg, "PUT s3://%s/%s: out of memory for a part of %zu bytes",
                               u->s3->bucket, u->key, u->part_size);
                        return uploadFail(u, CAIRN_ENOMEM);
                    }
                }
                s->len = 0;
                *out = s;
                return 0;
            }
        }
        if (uploadPump(u, true) != 0) {
            return u->failed;
        }
    }
}

int s3UploadWrite(struct s3_upload *u, const void *data, size_t n, char *errmsg)
{
    const char *p = data;
    while (n > 0 && u->failed == 0) {
        size_t k;
        if (u->fill != NULL && u->fill->len == u->part_size) {
            struct slot *s = u->fill;
            u->fill = NULL;
            if (slotDispatch(u, s) != 0) {
                break;
            }
        }
        if (u->fill == NULL && slotAcquire(u, &u->fill) != 0) {
            break;
        }
        k = u->part_size - u->fill->len;
        if (k > n) {
            k = n;
        }
        memcpy(u->fill->buf + u->fill->len, p, k);
        u->fill->len += k;
        u->total += k;
        p += k;
        n -= k;
    }
    uploadPump(u, false);
    if (u->failed != 0) {
        errorf(errmsg, "%s", u->errmsg);
    }
    return u->failed;
}

static enum verdict checkComplete(struct call *c, int *rc)
{
    char code[64];
    const char *why = "";
    bool error;
    /* S3 answers 200 as soon as it starts, then the result, or an <Error>. */
    if (s3xmlComplete(c->answer.p != NULL ? c->answer.p : "", c->answer.len, &error, &why) == 0) {
        if (!error) {
            return V_OK;
        }
        describeHttp(c, code, sizeof code);
        if (retryableCode(code)) {
            return V_RETRY;
        }
        *rc = CAIRN_EIO;
        return V_FAIL;
    }
    snprintf(c->last, sizeof c->last, "HTTP %ld with an answer that cannot be read: %s", c->status,
             why);
    *rc = CAIRN_EIO;
    return V_FAIL;
}

static int uploadComplete(struct s3_upload *u)
{
    struct call c;
    struct qparam q[1] = {{"uploadId", u->upload_id}};
    struct buf body;
    int rv;

    bufInit(&body);
    bufPuts(&body, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < u->parts; i++) {
        bufPrintf(&body, "<Part><PartNumber>%u</PartNumber><ETag>", i + 1);
        for (const char *e = u->etags[i]; *e; e++) {
            switch (*e) {
            case '"':
                bufPuts(&body, "&quot;");
                break;
            case '&':
                bufPuts(&body, "&amp;");
                break;
            case '<':
                bufPuts(&body, "&lt;");
                break;
            case '>':
                bufPuts(&body, "&gt;");
                break;
            default:
                bufPutc(&body, *e);
            }
        }
        bufPuts(&body, "</ETag></Part>");
    }
    bufPuts(&body, "</CompleteMultipartUpload>");
    callInit(&c, u->s3, "POST", u->key, " (complete multipart upload)");
    u->completing = true;
    c.has_body = true;
    c.body = body.p;
    c.body_len = body.len;
    c.url = makeUrl(u->s3, u->key, q, 1);
    if (body.oom || c.url == NULL ||
        callHeaders(&c, "application/xml", u->no_replace ? "If-None-Match: *" : NULL) != 0) {
        errorf(u->errmsg, "%s: out of memory", c.what);
        rv = CAIRN_ENOMEM;
    } else {
        rv = callRun(&c, checkComplete, NULL, u->errmsg);
    }
    if (rv != 0 && u->no_replace && c.status == 412) {
        rv = refusedWrite(&c, u->key + strlen(u->s3->prefix), u->total, u->errmsg);
    } else if (rv == CAIRN_ENOTFOUND && c.attempts > 1) {
        /* An earlier attempt may have completed it, its answer lost on the way: the
         * upload is gone then, and the object is there, of the size written. */
        struct s3_object o;
        char err[CAIRN_ERRMSG_SIZE];
        if (s3Head(u->s3, u->key + strlen(u->s3->prefix), &o, err) == 0 && o.size == u->total) {
            rv = 0;
        }
    }
    if (rv == 0) {
        u->aborted = true; /* nothing pending any more: the object is whole */
    }
    callFree(&c);
    bufFree(&body);
    return rv;
}

int s3UploadCommit(struct s3_upload *u, uint64_t *size, unsigned *parts, char *errmsg)
{
    int rv = u->failed;
    if (size != NULL) {
        *size = u->total;
    }
    if (parts != NULL) {
        *parts = 0;
    }
    if (rv != 0) {
        goto out;
    }
    if (u->upload_id == NULL) {
        /* all of it in one part's buffer: one PUT */
        rv = putFull(u->s3, u->key, u->fill != NULL ? u->fill->buf : "",
                     u->fill != NULL ? u->fill->len : 0, u->no_replace, u->errmsg);
        goto out;
    }
    if (u->fill != NULL && u->fill->len > 0) {
        struct slot *s = u->fill;
        u->fill = NULL;
        if (slotDispatch(u, s) != 0) {
            rv = u->failed;
            goto out;
        }
    }
    for (;;) {
        bool busy = false;
        for (unsigned i = 0; i < u->nslots; i++) {
            busy = busy || u->slots[i].state != SLOT_FREE;
        }
        if (!busy) {
            break;
        }
        rv = uploadPump(u, true);
        if (rv != 0) {
            goto out;
        }
    }
    rv = uploadComplete(u);
    if (rv != 0) {
        rv = uploadFail(u, rv);
        goto out;
    }
    if (parts != NULL) {
        *parts = u->parts;
    }
out:
    if (rv != 0) {
        errorf(errmsg, "%s", u->errmsg);
    }
    uploadFree(u);
    return rv;
}

int s3UploadAbort(struct s3_upload *u, char *errmsg)
{
    int rv = 0;
    if (u == NULL) {
        return 0;
    }
    if (u->multi != NULL) {
        uploadCancel(u);
    }
    if (!u->aborted) {
        rv = uploadAbortRemote(u, errmsg);
        if (rv != 0) {
            char tmp[CAIRN_ERRMSG_SIZE];
            snprintf(tmp, sizeof tmp, "%s", errmsg);
            errorf(errmsg, "%s (upload id %s is left pending)", tmp, u->upload_id);
        }
    }
    uploadFree(u);
    return rv;
}
