/* libFuzzer target: the TZif reader and POSIX TZ strings (tzParse, tzFromPosix,
 * src/lib/tz.c), which read the zone files of /usr/share/zoneinfo named by a
 * --backup-config.
 *
 * Every input goes through both readers: tzParse as a whole zone file, and, when it is
 * shorter than 256 bytes (a TZ string's domain: a zone file's footer, a TZ= value), up
 * to its first NUL through tzFromPosix. The answer returned (which the regression test,
 * tests/unit/test_fuzz_regress.c, judges) is chosen by the input's first bytes, never by
 * its size: a zone file's (it starts with the magic "TZif") is tzParse's, so a zone file
 * of any size, the smallest ones included, is judged as a zone file; any other input's
 * is tzFromPosix's when it is short, and tzParse's refusal when it is not. What the
 * readers promise, and the target checks:
 *   - 0 with a zone, or CAIRN_ECORRUPT (CAIRN_EINVAL for a TZ string) with a message
 *     that names the file;
 *   - on a zone it accepted: every offset is within +-26 h; the next change is after
 *     the time asked and the offset does change there; every instant a wall-clock time
 *     maps to shows that wall-clock time (u + offset(u) == local), two are in order, and
 *     a skipped time's gap end is a change;
 *   - the same input gives the same answer twice;
 *   - tzParse refuses whatever does not start with "TZif".
 * Any thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "error.h"
#include "fuzz.h"
#include "tz.h"

static void checkZone(const struct tz *z)
{
    /* Instants around the usual range of the data: 1900, 1970, 2026, 2040, 2100. */
    static const int64_t at[] = {
        -2208988800LL, 0, 1774746000LL, 1774749600LL, 1792890000LL, 2208988800LL, 4102444800LL};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int64_t t = at[i];
        int32_t off = tzOffset(z, t);
        int64_t next = tzNextChange(z, t);
        int64_t first = 0, second = 0;
        int n;
        FUZZ_CHECK(off >= -TZ_MAX_OFFSET && off <= TZ_MAX_OFFSET);
        FUZZ_CHECK(next > t);
        if (next != INT64_MAX) {
            FUZZ_CHECK(tzOffset(z, next) != tzOffset(z, next - 1));
        }
        n = tzLocalToUtc(z, t + off, &first, &second);
        FUZZ_CHECK(n >= 0 && n <= 2);
        if (n >= 1) {
            FUZZ_CHECK(first + tzOffset(z, first) == t + off);
        }
        if (n == 2) {
            FUZZ_CHECK(second > first && second + tzOffset(z, second) == t + off);
        }
        if (n == 0) {
            FUZZ_CHECK(tzOffset(z, first) != tzOffset(z, first - 1));
        }
        /* A wall-clock time in the hours after the next change (a gap or an overlap). */
        if (next != INT64_MAX && next < ((int64_t)1 << 38)) {
            n = tzLocalToUtc(z, next + off + 1800, &first, &second);
            FUZZ_CHECK(n >= 0 && n <= 2);
            if (n >= 1) {
                FUZZ_CHECK(first + tzOffset(z, first) == next + off + 1800);
            }
        }
    }
}

/* Whether the input is a zone file rather than a TZ string: it starts with the magic. */
static int isZoneFile(const uint8_t *data, size_t size)
{
    return size >= 4 && memcmp(data, "TZif", 4) == 0;
}

static int fuzzTz(const uint8_t *data, size_t size)
{
    char errmsg[CAIRN_ERRMSG_SIZE] = "";
    char errmsg2[CAIRN_ERRMSG_SIZE] = "";
    struct tz *z = NULL, *z2 = NULL;
    int rv, rv2, zone_rv, posix_rv = CAIRN_EINVAL;

    rv = tzParse(data, size, "time zone file fuzz", "fuzz", &z, errmsg);
    rv2 = tzParse(data, size, "time zone file fuzz", "fuzz", &z2, errmsg2);
    FUZZ_CHECK(rv == rv2);
    if (rv != 0) {
        FUZZ_CHECK(rv == CAIRN_ECORRUPT || rv == CAIRN_ENOMEM);
        FUZZ_CHECK(z == NULL);
        FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        FUZZ_CHECK(strstr(errmsg, "time zone file fuzz") != NULL);
        FUZZ_CHECK(strcmp(errmsg, errmsg2) == 0);
    } else {
        FUZZ_CHECK(isZoneFile(data, size));
        FUZZ_CHECK(z != NULL && strcmp(tzName(z), "fuzz") == 0);
        checkZone(z);
        tzFree(z);
        tzFree(z2);
    }
    zone_rv = rv;

    if (size < 256) {
        char s[256];
        memcpy(s, data, size);
        s[size] = '\0';
        errmsg[0] = '\0';
        z = NULL;
        posix_rv = tzFromPosix(s, &z, errmsg);
        if (posix_rv != 0) {
            FUZZ_CHECK(posix_rv == CAIRN_EINVAL || posix_rv == CAIRN_ENOMEM);
            FUZZ_CHECK(z == NULL);
            FUZZ_CHECK_ERRMSG(errmsg, sizeof errmsg);
        } else {
            checkZone(z);
            tzFree(z);
        }
    }
    return isZoneFile(data, size) || size >= 256 ? zone_rv : posix_rv;
}

#ifndef FUZZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzzTz(data, size);
    return 0;
}
#endif
