/* XXH3 compiled with AVX2 (hash.h): <xxhash.h> inline, every function of this file
 * under the CPU target "avx2"; hash.c calls them only when the CPU has AVX2. */
#include "hash_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2")
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#define HASH_TABLE_NAME "avx2"
#include "hash_table.h"
#pragma GCC pop_options
const struct hash_impl *const hashAvx2 = &hashTable;
#else
const struct hash_impl *const hashAvx2 = NULL;
#endif
