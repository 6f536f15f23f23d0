/* See path.h. */
#include "path.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void pathClean(char *p)
{
    char *out = p;       /* where the next byte of the result goes */
    const char *in = p;  /* the next byte to read */
    int absolute = p[0] == '/';
    size_t floor = 0;    /* out - p below which ".." may not go back (root, or leading "..") */

    if (absolute) {
        *out++ = '/';
        in++;
        floor = 1;
    }
    while (*in != '\0') {
        const char *seg = in;
        size_t len;
        while (*in != '\0' && *in != '/') {
            in++;
        }
        len = (size_t)(in - seg);
        while (*in == '/') {
            in++;
        }
        if (len == 0 || (len == 1 && seg[0] == '.')) {
            continue;
        }
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            if ((size_t)(out - p) > floor) {
                /* Back to the slash before the last segment kept. */
                while ((size_t)(out - p) > floor && out[-1] != '/') {
                    out--;
                }
                if ((size_t)(out - p) > floor) {
                    out--; /* that slash */
                }
                if (out == p && absolute) {
                    out++;
                }
                continue;
            }
            if (absolute) {
                continue; /* "/.." is "/" */
            }
            /* A leading "..": kept, and nothing before it to take back. */
            if (out != p && out[-1] != '/') {
                *out++ = '/';
            }
            memcpy(out, "..", 2);
            out += 2;
            floor = (size_t)(out - p);
            continue;
        }
        if (out != p && out[-1] != '/') {
            *out++ = '/';
        }
        memmove(out, seg, len);
        out += len;
    }
    if (out == p) {
        *out++ = '.';
    }
    *out = '\0';
}

void pathAbsolute(const char *path, char *out, size_t size)
{
    char cwd[PATH_MAX];
    if (path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL) {
        snprintf(out, size, "%s", path);
    } else {
        snprintf(out, size, "%s/%s", cwd, path);
    }
    pathClean(out);
}
