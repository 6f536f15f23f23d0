/* Reading what an S3 server answers (the S3 client's, s3.c, and its fuzzer's,
 * fuzz/fuzz_s3xml.c): the XML bodies of listings, of the multipart calls and of errors,
 * and the numbers and ETags found in them and in headers. Pure code: no I/O, no
 * libcurl; every function reads bytes a remote server chose, which may be broken or
 * hostile, checks them whole, and says why it refuses them.
 *
 * The XML reader underneath is small and strict: elements, text, CDATA, comments,
 * processing instructions, attributes (skipped), the five predefined entities and
 * character references; no DTD (so no entity of the document's own can expand);
 * nesting at most 16 deep; end tags must match; one root and nothing but space around
 * it; no NUL byte anywhere in text.
 *
 * Internal to the S3 client: not for the rest of the library. Any thread (no state). */
#ifndef CAIRN_S3XML_H
#define CAIRN_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "s3.h"

/* Size of a buffer that holds any UploadId this client accepts, NUL included. */
#define S3XML_ID_SIZE 1100

/* A listing page's paging fields, as s3xmlListPage finds them. */
struct s3xml_page {
    bool uploads;                  /* set by the caller: ListMultipartUploadsResult
                                    * (s3ListUploads), else ListBucketResult (s3List) */
    bool truncated;                /* IsTruncated is "true" */
    bool url_encoded;              /* EncodingType is "url": keys and next are decoded */
    char next[S3_MAX_KEY * 3 + 1]; /* NextContinuationToken or NextKeyMarker; "" if none */
    char next2[S3XML_ID_SIZE];     /* NextUploadIdMarker; "" if none */
};

/* Pass one over a listing page of len bytes: well-formed, the root pg->uploads asks
 * for, and its paging fields into *pg. Returns 0, or CAIRN_EIO with a reason in *why
 * (a static string): not well-formed, another root, a field too long or with a bad
 * entity, an IsTruncated neither "true" nor "false", a truncated page without a marker
 * to go on from, a bad URL encoding. */
int s3xmlListPage(const char *s, size_t len, struct s3xml_page *pg, const char **why);

/* Pass two over a page that pass one accepted into pg: each entry (Contents, or Upload
 * when pg->uploads) in order, to fn (objects) or pfn (uploads), with its key made
 * relative: full is the prefix listed (the client's prefix and the caller's), of which
 * the first pn bytes are the client's own. An entry whose key is full's first pn bytes
 * exactly (a "folder" marker object) is left out. Returns 0 when every entry went
 * through; the callback's value when it returned non-zero (which stopped the walk);
 * CAIRN_EIO with *why when an entry cannot be read (its key missing or empty, badly
 * encoded, longer than S3_MAX_KEY or outside full; an object without a valid Size, an
 * upload without an UploadId); CAIRN_ENOMEM with *why. Entries before the bad one have
 * been handed on. The strings a callback sees are valid during the call only. */
int s3xmlListEntries(const char *s, size_t len, const struct s3xml_page *pg, const char *full,
                     size_t pn, s3_list_fn fn, s3_pending_fn pfn, void *arg, const char **why);

/* The UploadId of an InitiateMultipartUploadResult into id (cap bytes, at most
 * S3XML_ID_SIZE needed), NUL-terminated. Returns 0 with a non-empty id, or CAIRN_EIO
 * with *why and id "" (not well-formed, another root, no UploadId, one too long, with a
 * bad entity or a control character). */
int s3xmlUploadId(const char *s, size_t len, char *id, size_t cap, const char **why);

/* What the 200 answer of CompleteMultipartUpload is: 0 with *error false for a
 * CompleteMultipartUploadResult, 0 with *error true for an <Error> (S3 answers 200 as
 * soon as it starts, then the result or an error: read it with s3xmlError); CAIRN_EIO
 * with *why for anything else. */
int s3xmlComplete(const char *s, size_t len, bool *error, const char **why);

/* Code and Message of an <Error> document, cut to code_n and msg_n bytes (each at
 * least 1), made safe for a message: the code keeps letters and digits only (others
 * become '?'), the message loses its control characters (they become ' '). Returns 0
 * when s is a well-formed <Error> whose Code and Message (each may be missing: "")
 * could be read; CAIRN_EIO with *why otherwise, code and msg then holding what could
 * be read before the failure, or "". */
int s3xmlError(const char *s, size_t len, char *code, size_t code_n, char *msg, size_t msg_n,
               const char **why);

/* A decimal number (as in Size or Content-Range): digits only, at least one, below
 * 2^64 (the last few values below it are refused too), into *out. Returns false, *out
 * untouched, otherwise. */
bool s3xmlParseU64(const char *s, uint64_t *out);

/* src without the double quotes around it (an ETag as S3 sends it), into dst (cap
 * bytes, cut if need be, NUL-terminated). */
void s3xmlUnquoteEtag(char *dst, size_t cap, const char *src);

#endif
