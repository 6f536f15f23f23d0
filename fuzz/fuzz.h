/* Shared by the libFuzzer targets of fuzz/ and by tests/unit/test_fuzz_regress.c.
 *
 * Each fuzz_<target>.c defines `static int fuzz<Target>(const uint8_t *data, size_t
 * size)`, which runs one input through the parser, checks what the parser promises
 * (FUZZ_CHECK aborts, which libFuzzer reports as a crash and cmocka as a failed
 * test) and frees everything, and returns the parser's code. Its
 * LLVMFuzzerTestOneInput is left out when FUZZ_NO_MAIN is defined, so that the
 * regression test can include every target in one program and replay the saved
 * inputs through the very same function. Any thread. */
#ifndef CAIRN_FUZZ_H
#define CAIRN_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An error message must be set, terminated within its buffer and not empty. */
#define FUZZ_CHECK_ERRMSG(errmsg, size)                                                            \
    do {                                                                                           \
        FUZZ_CHECK(memchr((errmsg), '\0', (size)) != NULL);                                        \
        FUZZ_CHECK((errmsg)[0] != '\0');                                                           \
    } while (0)

#endif
