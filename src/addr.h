/* "HOST:PORT" listener and peer addresses (HTTP and Raft), IPv4. Any thread. */
#ifndef CAIRN_ADDR_H
#define CAIRN_ADDR_H

#include <netinet/in.h>

/* Parse addr into *sa. HOST is an IPv4 literal, "localhost", "0.0.0.0" or empty (any
 * interface); PORT 0-65535. CAIRN_EINVAL when addr is not HOST:PORT or the port is not a
 * number in range; CAIRN_ENOTFOUND when HOST is a name rather than an IPv4 literal (left
 * to whoever resolves names). errmsg names the address as "<what> address ...". */
int addrParse(const char *addr, const char *what, struct sockaddr_in *sa, char *errmsg);

/* A TCP socket (close-on-exec, SO_REUSEADDR) bound to *sa: its descriptor, or -1 with
 * errno set. */
int addrBind(const struct sockaddr_in *sa);

#endif
