/* What the unit tests of time zones share (test_tz.c, test_cron.c): whether tzdata's
 * zone files are there. Included once, after cmocka.h. */
#ifndef CAIRN_TEST_TZFX_H
#define CAIRN_TEST_TZFX_H

#include <stdbool.h>
#include <sys/stat.h>

#include "tz.h"

/* Whether TZ_DIR holds the zones the tests read; says SKIPPED when it does not
 * (scripts/deps.sh installs tzdata, so in CI they run). */
static inline bool haveZoneinfo(void)
{
    struct stat st;
    if (stat(TZ_DIR "/Europe/Paris", &st) != 0) {
        print_message("SKIPPED: %s is absent (install tzdata: scripts/deps.sh)\n", TZ_DIR);
        return false;
    }
    return true;
}

#endif
