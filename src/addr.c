/* See addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"
#include "error.h"

int addrParse(const char *addr, const char *what, struct sockaddr_in *sa, char *errmsg)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    char *end;
    long port;
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        errorf(errmsg, "%s address \"%s\" must be HOST:PORT", what, addr);
        return CAIRN_EINVAL;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535 || colon[1] == '\0') {
        errorf(errmsg, "%s address \"%s\" has an invalid port", what, addr);
        return CAIRN_EINVAL;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        errorf(errmsg, "%s address \"%s\": \"%s\" is not an IPv4 address", what, addr, host);
        return CAIRN_ENOTFOUND;
    }
    return 0;
}

int addrBind(const struct sockaddr_in *sa)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
