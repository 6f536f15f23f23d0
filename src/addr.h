/* "HOST:PORT" listener and peer addresses (HTTP and Raft), IPv4. Any thread. */
#ifndef CAIRN_ADDR_H
#define CAIRN_ADDR_H

#include <netinet/in.h>

/* Parse addr into *sa. HOST is an IPv4 literal, "localhost", "0.0.0.0" or empty (any
 * interface); PORT 0-65535. CAIRN_EINVAL when addr is not HOST:PORT or the port is not a
 * number in range; CAIRN_ENOTFOUND when HOST is a name rather than an IPv4 literal (left
 * to whoever resolves names). errmsg names the address as "<what> address ...". */
int addrParse(const char *addr, const char *what, struct sockaddr_in *sa, char *errmsg);

/* "HOST:PORT" with HOST resolved to an IPv4 literal into out (n bytes): "localhost:4002"
 * becomes "127.0.0.1:4002"; a literal is kept. libraft's transport takes literals only.
 * CAIRN_EINVAL for a malformed address, CAIRN_ENOTFOUND when the name does not resolve
 * to an IPv4 address; errmsg says which. */
int addrNumeric(const char *addr, const char *what, char *out, size_t n, char *errmsg);

/* A TCP socket (close-on-exec, SO_REUSEADDR) bound to *sa: its descriptor, or -1 with
 * errno set. */
int addrBind(const struct sockaddr_in *sa);

#endif
