/* See addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
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

int addrNumeric(const char *addr, const char *what, char *out, size_t n, char *errmsg)
{
    struct sockaddr_in sa;
    struct addrinfo hints, *res = NULL;
    char host[128];
    const char *colon;
    int rv = addrParse(addr, what, &sa, errmsg);
    if (rv == 0) {
        char ip[INET_ADDRSTRLEN];
        const char *port = strrchr(addr, ':') + 1;
        if (sa.sin_addr.s_addr == htonl(INADDR_ANY) || strncmp(addr, "localhost:", 10) != 0) {
            snprintf(out, n, "%s", addr); /* a literal, or any interface: as given */
            return 0;
        }
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
        snprintf(out, n, "%s:%s", ip, port);
        return 0;
    }
    if (rv != CAIRN_ENOTFOUND) {
        return rv;
    }
    colon = strrchr(addr, ':');
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        errorf(errmsg, "%s address \"%s\": the name \"%s\" does not resolve to an IPv4 address",
               what, addr, host);
        return CAIRN_ENOTFOUND;
    }
    {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
        snprintf(out, n, "%s:%s", ip, colon + 1);
    }
    freeaddrinfo(res);
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
