/* Paths as they are shown and recorded: one lexical normal form. Any thread. */
#ifndef CAIRN_PATH_H
#define CAIRN_PATH_H

#include <stddef.h>

/* Rewrite the path p in place: repeated slashes as one, no "." segment, a ".." segment
 * taken back with the segment before it (not past the root or a leading ".."), no
 * trailing slash ("/" stays "/", "" becomes "."). Purely lexical: no file is looked at,
 * so a ".." after a symbolic link is taken back as written. */
void pathClean(char *p);

/* path made absolute against the working directory (when it is relative and that can be
 * read) and cleaned (pathClean), into out (size bytes, cut to fit). Lexical too. */
void pathAbsolute(const char *path, char *out, size_t size);

#endif
