/* cairnd --backup-config: reading and checking the backup configuration, and showing it
 * with its secrets masked (bconfig.h). The file is parsed with jansson, every string
 * has its $VAR references expanded first, and each key is checked with a message that
 * names it; nothing of a configuration is used unless all of it is valid, so that a
 * SIGHUP with a broken file keeps the configuration running. Any thread. */
#define _GNU_SOURCE
#include "bconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "repo.h"

int bconfigParseDuration(const char *s, int64_t *ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1},      {"s", 1000},     {"m", 60000},
                 {"h", 3600000}, {"d", 86400000}, {"w", 604800000}};
    char *end;
    long long v;
    if (!isdigit((unsigned char)s[0])) {
        return -1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || v <= 0 || v > 100000000LL) {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            *ms = v * units[i].ms;
            return *ms <= 366LL * 86400000 ? 0 : -1;
        }
    }
    return -1;
}

/* ---- $VAR expansion ------------------------------------------------------------------ */

/* Expand s into out (size bytes): $NAME, ${NAME}, $$. */
static int expandString(const char *s, const char *key, char *out, size_t size, char *errmsg)
{
    size_t o = 0;
    for (const char *p = s; *p != '\0';) {
        const char *val;
        char name[128];
        size_t n = 0;
        if (*p != '$') {
            if (o + 1 >= size) {
                goto too_long;
            }
            out[o++] = *p++;
            continue;
        }
        p++;
        if (*p == '$') {
            if (o + 1 >= size) {
                goto too_long;
            }
            out[o++] = '$';
            p++;
            continue;
        }
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL || close == p + 1 || (size_t)(close - p - 1) >= sizeof name) {
                errorf(errmsg, "%s: \"${\" without a variable name and '}' in \"%.100s\"", key, s);
                return CAIRN_EINVAL;
            }
            n = (size_t)(close - p - 1);
            memcpy(name, p + 1, n);
            p = close + 1;
        } else {
            while ((isalnum((unsigned char)*p) || *p == '_') && n < sizeof name - 1) {
                name[n++] = *p++;
            }
            if (n == 0) {
                errorf(errmsg,
                       "%s: '$' not followed by a variable name in \"%.100s\" (write "
                       "$$ for a '$')",
                       key, s);
                return CAIRN_EINVAL;
            }
        }
        name[n] = '\0';
        if ((val = getenv(name)) == NULL) {
            errorf(errmsg, "%s: environment variable %s is not set", key, name);
            return CAIRN_EINVAL;
        }
        if (o + strlen(val) >= size) {
            goto too_long;
        }
        memcpy(out + o, val, strlen(val));
        o += strlen(val);
    }
    out[o] = '\0';
    return 0;
too_long:
    errorf(errmsg, "%s: value too long once expanded (at most %zu bytes)", key, size - 1);
    return CAIRN_EINVAL;
}

/* Replace every string of v (recursively) by its expansion. key: v's path. */
static int expandAll(json_t *v, const char *key, char *errmsg)
{
    char sub[512];
    int rv;
    if (json_is_string(v)) {
        char out[2048];
        if ((rv = expandString(json_string_value(v), key, out, sizeof out, errmsg)) != 0) {
            return rv;
        }
        return json_string_set(v, out) == 0 ? 0 : CAIRN_ENOMEM;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m)
        {
            snprintf(sub, sizeof sub, "%s%s%s", key, key[0] ? "." : "", k);
            if ((rv = expandAll(m, sub, errmsg)) != 0) {
                return rv;
            }
        }
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            snprintf(sub, sizeof sub, "%s[%zu]", key, i);
            if ((rv = expandAll(m, sub, errmsg)) != 0) {
                return rv;
            }
        }
    }
    return 0;
}

/* ---- schedules ------------------------------------------------------------------------- */

/* Zone `name` for key: the one c already loaded, or loaded now and kept in c. */
static int getZone(struct bconfig *c, const char *name, const char *key, const struct tz **out,
                   char *errmsg)
{
    char why[CAIRN_ERRMSG_SIZE];
    struct tz *z;
    int rv;
    for (unsigned i = 0; i < c->nzones; i++) {
        if (strcmp(tzName(c->zones[i]), name) == 0) {
            *out = c->zones[i];
            return 0;
        }
    }
    if (c->nzones == BCONFIG_MAX_ZONES) {
        errorf(errmsg, "%s: more than %d time zones in one configuration", key, BCONFIG_MAX_ZONES);
        return CAIRN_EINVAL;
    }
    if ((rv = tzLoad(name, &z, why)) != 0) {
        errorf(errmsg, "%s: %s", key, why);
        return rv == CAIRN_ENOMEM ? rv : CAIRN_EINVAL;
    }
    c->zones[c->nzones++] = z;
    *out = z;
    return 0;
}

/* v into *out; a cron expression is read in zone (NULL: UTC) unless it names its own. */
static int parseSchedule(json_t *v, const char *key, bool allow_off, struct bconfig *c,
                         const struct tz *zone, struct bschedule *out, char *errmsg)
{
    const char *s;
    char why[CAIRN_ERRMSG_SIZE];
    int rv;
    memset(out, 0, sizeof *out);
    if (!json_is_string(v)) {
        errorf(errmsg,
               "%s: expected a string: an interval (\"2s\", \"1h\", \"7d\") or a "
               "five-field cron expression (\"0 3 * * 0\")",
               key);
        return CAIRN_EINVAL;
    }
    s = json_string_value(v);
    if (strlen(s) >= sizeof out->text) {
        errorf(errmsg, "%s: too long (%zu characters)", key, strlen(s));
        return CAIRN_EINVAL;
    }
    snprintf(out->text, sizeof out->text, "%s", s);
    if (allow_off && strcmp(s, "off") == 0) {
        out->kind = BSCHED_NONE;
        return 0;
    }
    if (strncmp(s, "CRON_TZ=", 8) == 0 || strncmp(s, "TZ=", 3) == 0) {
        /* Vixie cron's (and cronie's) way of naming the zone of one line. */
        const char *name = strchr(s, '=') + 1;
        size_t zl = strcspn(name, " \t");
        char zname[TZ_NAME_MAX + 1];
        if (zl == 0 || zl > TZ_NAME_MAX) {
            errorf(errmsg, "%s: %.*s needs a zone name (\"CRON_TZ=Europe/Paris 0 3 * * *\")", key,
                   (int)(name - s - 1), s);
            return CAIRN_EINVAL;
        }
        memcpy(zname, name, zl);
        zname[zl] = '\0';
        snprintf(why, sizeof why, "%.400s: %.*s", key, (int)(name - s - 1), s);
        if ((rv = getZone(c, zname, why, &zone, errmsg)) != 0) {
            return rv;
        }
        s = name + zl;
        while (*s == ' ' || *s == '\t') {
            s++;
        }
    }
    if (strchr(s, ' ') == NULL && strchr(s, '\t') == NULL) {
        if (bconfigParseDuration(s, &out->interval_ms) != 0) {
            errorf(errmsg,
                   "%s: \"%s\" is neither an interval (a positive integer and ms, s, "
                   "m, h, d or w, at most 366d: \"2s\", \"1h\", \"7d\") nor a cron "
                   "expression (five fields)",
                   key, s);
            return CAIRN_EINVAL;
        }
        out->kind = BSCHED_INTERVAL;
        return 0;
    }
    if (cronParse(s, &out->cron, why) != 0) {
        errorf(errmsg, "%s: %s", key, why);
        return CAIRN_EINVAL;
    }
    out->zone = zone != NULL && strcmp(tzName(zone), "UTC") != 0 ? zone : NULL;
    if (cronNext(&out->cron, out->zone, repoNowMs()) < 0) {
        errorf(errmsg, "%s: cron expression \"%s\" matches no date in the next 8 years", key, s);
        return CAIRN_EINVAL;
    }
    out->kind = BSCHED_CRON;
    return 0;
}

int64_t bscheduleNext(const struct bschedule *s, int64_t last_ms, int64_t now_ms)
{
    switch (s->kind) {
    case BSCHED_INTERVAL:
        return last_ms < 0 ? now_ms : last_ms + s->interval_ms;
    case BSCHED_CRON:
        return cronNext(&s->cron, s->zone, last_ms < 0 ? now_ms : last_ms);
    default:
        return -1;
    }
}

/* ---- one repository's section ----------------------------------------------------------- */

static int pickRepo(const struct reposet *rs, const char *ref, const char *key, struct bconfig *c,
                    struct bconfig_repo *out, char *errmsg)
{
    char why[CAIRN_ERRMSG_SIZE];
    unsigned which;
    if (reposetPick(rs, ref, &which, why) != 0) {
        reposetDescribe(rs, why, sizeof why);
        errorf(errmsg,
               "%s: no repository of this node is named '%.100s' or has that URL "
               "(--backup-dir, --repo NAME=URL); it has %s",
               key, ref ? ref : "", why);
        return CAIRN_EINVAL;
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (c->r[i].which == which) {
            errorf(errmsg, "%s: repository '%s' is configured twice", key, rs->r[which].name);
            return CAIRN_EINVAL;
        }
    }
    out->which = which;
    snprintf(out->name, sizeof out->name, "%s", rs->r[which].name);
    return 0;
}

/* The repository's "time_zone", into r->time_zone and *zone (NULL when none). */
static int parseZone(json_t *o, const char *prefix, struct bconfig *c, struct bconfig_repo *r,
                     const struct tz **zone, char *errmsg)
{
    char key[512];
    json_t *v = json_object_get(o, "time_zone");
    const char *s = json_string_value(v);
    *zone = NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    snprintf(key, sizeof key, "%stime_zone", prefix);
    if (s == NULL || s[0] == '\0') {
        errorf(errmsg, "%s: expected a zone name (\"Europe/Paris\", \"UTC\")", key);
        return CAIRN_EINVAL;
    }
    if (strlen(s) > TZ_NAME_MAX) {
        errorf(errmsg, "%s: zone name too long (%zu characters)", key, strlen(s));
        return CAIRN_EINVAL;
    }
    snprintf(r->time_zone, sizeof r->time_zone, "%s", s);
    return getZone(c, s, key, zone, errmsg);
}

/* The keys a repository's section shares between both shapes; zone: its time_zone. */
static int parseCommon(json_t *o, const char *prefix, struct bconfig *c, const struct tz *zone,
                       struct bconfig_repo *r, char *errmsg)
{
    char key[512];
    json_t *v;
    int rv;
    if ((v = json_object_get(o, "from")) != NULL) {
        const char *s = json_string_value(v);
        if (s == NULL || (strcmp(s, "leader") != 0 && strcmp(s, "follower") != 0)) {
            errorf(errmsg, "%sfrom: expected \"leader\" or \"follower\"", prefix);
            return CAIRN_EINVAL;
        }
        r->from_follower = strcmp(s, "follower") == 0;
    }
    if ((v = json_object_get(o, "retention")) != NULL) {
        snprintf(key, sizeof key, "%sretention", prefix);
        if (!json_is_object(v)) {
            errorf(errmsg,
                   "%s: expected an object ({\"keep_full\": 4, \"keep_within\": "
                   "\"7d\"})",
                   key);
            return CAIRN_EINVAL;
        }
        if ((rv = retentionFromJson(v, key, &r->retention, errmsg)) != 0) {
            return rv;
        }
        r->has_retention = !retentionIsEmpty(&r->retention);
    }
    snprintf(key, sizeof key, "%sdrill", prefix);
    if ((v = json_object_get(o, "drill")) != NULL) {
        if (json_is_false(v)) {
            r->drill.kind = BSCHED_NONE;
            snprintf(r->drill.text, sizeof r->drill.text, "off");
        } else if ((rv = parseSchedule(v, key, true, c, zone, &r->drill, errmsg)) != 0) {
            return rv;
        }
    } else {
        r->drill.kind = BSCHED_INTERVAL;
        r->drill.interval_ms = 86400000;
        snprintf(r->drill.text, sizeof r->drill.text, "24h");
    }
    if ((v = json_object_get(o, "webhook")) != NULL && !json_is_null(v)) {
        const char *s = json_string_value(v);
        if (s == NULL || (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)) {
            errorf(errmsg, "%swebhook: expected an http:// or https:// URL", prefix);
            return CAIRN_EINVAL;
        }
        if (strlen(s) >= sizeof r->webhook) {
            errorf(errmsg, "%swebhook: URL too long (%zu bytes)", prefix, strlen(s));
            return CAIRN_EINVAL;
        }
        snprintf(r->webhook, sizeof r->webhook, "%s", s);
    }
    return 0;
}

static int checkKeys(json_t *o, const char *prefix, const char *const *allowed, char *errmsg)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++) {
            ok = strcmp(k, allowed[i]) == 0;
        }
        if (!ok) {
            char list[256] = "";
            for (size_t i = 0; allowed[i] != NULL; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", allowed[i]);
            }
            errorf(errmsg, "%s%s: unknown key (known: %s)", prefix, k, list);
            return CAIRN_EINVAL;
        }
    }
    return 0;
}

static int parseRepoSection(json_t *o, const char *name, const struct reposet *rs,
                            struct bconfig *c, char *errmsg)
{
    static const char *const keys[] = {"schedules", "from",      "retention", "drill",
                                       "webhook",   "time_zone", NULL};
    struct bconfig_repo *r = &c->r[c->n];
    const struct tz *zone;
    char prefix[300];
    char key[400];
    json_t *sch, *v;
    const char *k;
    int rv;

    snprintf(prefix, sizeof prefix, "repositories.%.200s.", name);
    memset(r, 0, sizeof *r);
    if (!json_is_object(o)) {
        errorf(errmsg, "repositories.%.200s: expected an object", name);
        return CAIRN_EINVAL;
    }
    snprintf(key, sizeof key, "repositories.%.200s", name);
    if ((rv = checkKeys(o, prefix, keys, errmsg)) != 0 ||
        (rv = pickRepo(rs, name, key, c, r, errmsg)) != 0 ||
        (rv = parseZone(o, prefix, c, r, &zone, errmsg)) != 0) {
        return rv;
    }
    sch = json_object_get(o, "schedules");
    if (sch != NULL && !json_is_object(sch)) {
        errorf(errmsg,
               "%sschedules: expected an object ({\"full\": \"0 3 * * 0\", "
               "\"incremental\": \"1h\"})",
               prefix);
        return CAIRN_EINVAL;
    }
    json_object_foreach(sch, k, v)
    {
        int type = backupTypeFromName(k);
        snprintf(key, sizeof key, "%sschedules.%s", prefix, k);
        if (type < BACKUP_FULL || type > BACKUP_DIFFERENTIAL) {
            errorf(errmsg, "%s: unknown backup type (full, incremental or differential)", key);
            return CAIRN_EINVAL;
        }
        if ((rv = parseSchedule(v, key, true, c, zone, &r->sched[type], errmsg)) != 0) {
            return rv;
        }
    }
    if ((rv = parseCommon(o, prefix, c, zone, r, errmsg)) != 0) {
        return rv;
    }
    c->n++;
    return 0;
}

/* rqlite's auto-backup shape: one schedule. */
static int parseRqlite(json_t *root, const struct reposet *rs, struct bconfig *c, char *errmsg)
{
    static const char *const keys[] = {
        "version", "type",      "interval",    "sub",    "retention", "drill", "webhook",
        "from",    "time_zone", "no_compress", "vacuum", "timestamp", NULL};
    struct bconfig_repo *r = &c->r[0];
    const struct tz *zone;
    json_t *v, *sub;
    int type = BACKUP_FULL;
    char ref[PATH_MAX] = "";
    int rv;

    memset(r, 0, sizeof *r);
    c->rqlite_shape = true;
    if ((rv = checkKeys(root, "", keys, errmsg)) != 0) {
        return rv;
    }
    if ((v = json_object_get(root, "version")) != NULL &&
        !(json_is_integer(v) && json_integer_value(v) == 1)) {
        errorf(errmsg, "version: expected 1");
        return CAIRN_EINVAL;
    }
    if ((v = json_object_get(root, "type")) != NULL) {
        const char *s = json_string_value(v);
        if (s != NULL && (strcmp(s, "file") == 0 || strcmp(s, "s3") == 0)) {
            type = BACKUP_FULL; /* rqlite's storage types: its backups are full copies */
        } else if (s == NULL || (type = backupTypeFromName(s)) < BACKUP_FULL ||
                   type > BACKUP_DIFFERENTIAL) {
            errorf(errmsg, "type: expected \"full\", \"incremental\" or \"differential\" (or "
                           "rqlite's \"file\" or \"s3\", a full backup)");
            return CAIRN_EINVAL;
        }
    }
    if ((rv = parseZone(root, "", c, r, &zone, errmsg)) != 0) {
        return rv;
    }
    if ((v = json_object_get(root, "interval")) == NULL) {
        errorf(errmsg, "interval: missing (the schedule: \"1h\", or \"0 3 * * *\")");
        return CAIRN_EINVAL;
    }
    if ((rv = parseSchedule(v, "interval", false, c, zone, &r->sched[type], errmsg)) != 0) {
        return rv;
    }
    if ((sub = json_object_get(root, "sub")) != NULL) {
        if (json_is_string(sub)) {
            snprintf(ref, sizeof ref, "%s", json_string_value(sub));
        } else if (json_is_object(sub)) {
            static const char *const subkeys[] = {"path", "bucket", "region", "endpoint", NULL};
            const char *path = json_string_value(json_object_get(sub, "path"));
            const char *bucket = json_string_value(json_object_get(sub, "bucket"));
            if (json_object_get(sub, "access_key_id") != NULL ||
                json_object_get(sub, "secret_access_key") != NULL) {
                errorf(errmsg, "sub: access keys: cairnd reads S3 credentials from its "
                               "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); remove "
                               "them here");
                return CAIRN_EINVAL;
            }
            if ((rv = checkKeys(sub, "sub.", subkeys, errmsg)) != 0) {
                return rv;
            }
            if (path == NULL) {
                errorf(errmsg, "sub.path: missing (the repository's directory, or its key "
                               "prefix in the bucket)");
                return CAIRN_EINVAL;
            }
            if (bucket != NULL) {
                snprintf(ref, sizeof ref, "s3://%s/%s", bucket, path[0] == '/' ? path + 1 : path);
            } else {
                snprintf(ref, sizeof ref, "%s", path);
            }
        } else {
            errorf(errmsg, "sub: expected a repository name or URL, or an object with path "
                           "(and bucket)");
            return CAIRN_EINVAL;
        }
    }
    if ((rv = pickRepo(rs, ref[0] ? ref : NULL, "sub", c, r, errmsg)) != 0 ||
        (rv = parseCommon(root, "", c, zone, r, errmsg)) != 0) {
        return rv;
    }
    c->n = 1;
    return 0;
}

int bconfigParse(const char *text, size_t len, const char *origin, const struct reposet *rs,
                 struct bconfig **out, char *errmsg)
{
    struct bconfig *c;
    json_error_t jerr;
    json_t *root;
    char why[CAIRN_ERRMSG_SIZE];
    int rv = CAIRN_EINVAL;

    *out = NULL;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        errorf(errmsg, "%s: not valid JSON: %s at line %d column %d", origin, jerr.text, jerr.line,
               jerr.column);
        return CAIRN_EINVAL;
    }
    if ((c = calloc(1, sizeof *c)) == NULL) {
        json_decref(root);
        errorf(errmsg, "%s: out of memory", origin);
        return CAIRN_ENOMEM;
    }
    c->loaded_ms = repoNowMs();
    if (!json_is_object(root)) {
        errorf(why, "expected a JSON object");
        goto bad;
    }
    if ((rv = expandAll(root, "", why)) != 0) {
        goto bad;
    }
    rv = CAIRN_EINVAL;
    if (json_object_get(root, "repositories") != NULL) {
        json_t *repos = json_object_get(root, "repositories");
        const char *k;
        json_t *v;
        if (json_object_size(root) != 1) {
            const char *other = NULL;
            json_object_foreach(root, k, v)
            {
                if (strcmp(k, "repositories") != 0 && other == NULL) {
                    other = k;
                }
            }
            errorf(why,
                   "%s: unknown key beside \"repositories\" (rqlite's shape, with "
                   "\"interval\", is a file of its own)",
                   other);
            goto bad;
        }
        if (!json_is_object(repos) || json_object_size(repos) == 0) {
            errorf(why, "repositories: expected an object naming at least one repository");
            goto bad;
        }
        if (json_object_size(repos) > BCONFIG_MAX_REPOS) {
            errorf(why, "repositories: at most %d", BCONFIG_MAX_REPOS);
            goto bad;
        }
        json_object_foreach(repos, k, v)
        {
            if ((rv = parseRepoSection(v, k, rs, c, why)) != 0) {
                goto bad;
            }
        }
    } else if ((rv = parseRqlite(root, rs, c, why)) != 0) {
        goto bad;
    }
    json_decref(root);
    *out = c;
    return 0;
bad:
    errorf(errmsg, "%s: %s", origin, why);
    json_decref(root);
    bconfigFree(c);
    return rv;
}

int bconfigLoad(const char *path, const struct reposet *rs, struct bconfig **out, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    char *text;
    size_t len;
    int rv;
    *out = NULL;
    if (f == NULL) {
        errorf(errmsg, "--backup-config %s: %s", path, strerror(errno));
        return errorFromErrno(errno);
    }
    if ((text = malloc(1 << 20)) == NULL) {
        fclose(f);
        errorf(errmsg, "--backup-config %s: out of memory", path);
        return CAIRN_ENOMEM;
    }
    len = fread(text, 1, 1 << 20, f);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || len == 1 << 20) {
        errorf(errmsg, "--backup-config %s: %s", path, failed ? "read error" : "larger than 1 MiB");
        free(text);
        return failed ? CAIRN_EIO : CAIRN_EINVAL;
    }
    {
        char origin[PATH_MAX + 32];
        snprintf(origin, sizeof origin, "--backup-config %s", path);
        rv = bconfigParse(text, len, origin, rs, out, errmsg);
    }
    free(text);
    if (rv == 0) {
        snprintf((*out)->path, sizeof(*out)->path, "%s", path);
    }
    return rv;
}

void bconfigFree(struct bconfig *c)
{
    if (c == NULL) {
        return;
    }
    for (unsigned i = 0; i < c->nzones; i++) {
        tzFree(c->zones[i]);
    }
    free(c);
}

void bconfigMaskUrl(const char *url, char *out, size_t size)
{
    size_t o = 0;
    const char *p = url;
    const char *scheme = strstr(url, "://");
    const char *at = NULL;
    const char *hostend;
    if (size == 0) {
        return;
    }
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < size) {                                                                        \
            out[o++] = (ch);                                                                       \
        }                                                                                          \
    } while (0)
#define PUTS(s)                                                                                    \
    do {                                                                                           \
        for (const char *q_ = (s); *q_; q_++) {                                                    \
            PUT(*q_);                                                                              \
        }                                                                                          \
    } while (0)
    if (scheme != NULL) {
        hostend = scheme + 3 + strcspn(scheme + 3, "/?#");
        for (const char *q = scheme + 3; q < hostend; q++) {
            if (*q == '@') {
                at = q;
            }
        }
        if (at != NULL) {
            const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
            if (colon != NULL) {
                for (; p <= colon; p++) {
                    PUT(*p);
                }
                PUTS("***");
                p = at;
            }
        }
    }
    for (; *p != '\0' && *p != '?'; p++) {
        PUT(*p);
    }
    if (*p == '?') {
        PUT(*p++);
        while (*p != '\0' && *p != '#') {
            size_t n = strcspn(p, "&#");
            const char *eq = memchr(p, '=', n);
            for (const char *q = p; q < (eq != NULL ? eq + 1 : p + n); q++) {
                PUT(*q);
            }
            if (eq != NULL) {
                PUTS("***");
            }
            p += n;
            if (*p == '&') {
                PUT(*p++);
            }
        }
        PUTS(p);
    }
    out[o] = '\0';
#undef PUT
#undef PUTS
}

json_t *bconfigJson(const struct bconfig *c, const struct reposet *rs)
{
    json_t *root = json_object();
    json_t *repos = json_object();
    char iso[32];
    char masked[1100];
    if (root == NULL || repos == NULL) {
        json_decref(root);
        json_decref(repos);
        return NULL;
    }
    repoIso8601(c->loaded_ms, iso);
    json_object_set_new(root, "file", c->path[0] ? json_string(c->path) : json_null());
    json_object_set_new(root, "loaded_at", json_string(iso));
    json_object_set_new(root, "shape", json_string(c->rqlite_shape ? "rqlite" : "cairn"));
    for (unsigned i = 0; i < c->n; i++) {
        const struct bconfig_repo *r = &c->r[i];
        json_t *o = json_object();
        json_t *sch = json_object();
        bconfigMaskUrl(r->which < rs->n ? rs->r[r->which].url : "", masked, sizeof masked);
        json_object_set_new(o, "url", json_string(masked));
        for (int t = BACKUP_FULL; t <= BACKUP_DIFFERENTIAL; t++) {
            if (r->sched[t].kind != BSCHED_NONE) {
                json_object_set_new(sch, backupTypeName(t), json_string(r->sched[t].text));
            }
        }
        json_object_set_new(o, "schedules", sch);
        /* The zone cron schedules are read in unless they say CRON_TZ= themselves. */
        json_object_set_new(o, "time_zone", json_string(r->time_zone[0] ? r->time_zone : "UTC"));
        json_object_set_new(o, "from", json_string(r->from_follower ? "follower" : "leader"));
        json_object_set_new(o, "retention",
                            r->has_retention ? retentionJson(&r->retention) : json_null());
        json_object_set_new(o, "drill",
                            json_string(r->drill.kind == BSCHED_NONE ? "off" : r->drill.text));
        if (r->webhook[0] != '\0') {
            bconfigMaskUrl(r->webhook, masked, sizeof masked);
            json_object_set_new(o, "webhook", json_string(masked));
        } else {
            json_object_set_new(o, "webhook", json_null());
        }
        json_object_set_new(repos, r->name, o);
    }
    json_object_set_new(root, "repositories", repos);
    return root;
}
