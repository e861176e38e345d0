// comm_net: network bytes from the kernel's TCP_INFO counters of this process's
// sockets (comm_net.h). Which sockets are MPI's is not asked: a rank process opens
// TCP sockets to other hosts only for MPI's tcp transport (NCCL's socket transport
// on GPUs being the other user), so every such socket counts.
#include "comm_net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

void comm_net_init(comm_net *n) {
    memset(n, 0, sizeof *n);
}

// The socket's sent-bytes counter, or 0 when it is not a TCP socket (any more).
// Kernels before 4.19 lack tcpi_bytes_sent; tcpi_bytes_acked (4.1) is the next best.
static int tcp_sent(int fd, uint64_t *out) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return 0;
    if (len >= offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof ti.tcpi_bytes_sent)
        *out = ti.tcpi_bytes_sent;
    else if (len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
        *out = ti.tcpi_bytes_acked;
    else
        return 0;
    return 1;
}

static int is_loopback(const struct sockaddr_storage *a) {
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss_family == AF_INET6) {
        const struct in6_addr *p = &((const struct sockaddr_in6 *)a)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(p) || (IN6_IS_ADDR_V4MAPPED(p) && p->s6_addr[12] == 127);
    }
    return 1; // not IP: not a network peer
}

static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

// Whether fd is a connected TCP socket to another host.
static int is_remote_tcp(int fd) {
    struct sockaddr_storage self, peer;
    socklen_t ls = sizeof self, lp = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&self, &ls) != 0) return 0;
    if (getpeername(fd, (struct sockaddr *)&peer, &lp) != 0) return 0; // listening
    if (is_loopback(&peer)) return 0;
    return !same_host(&self, &peer);
}

static int known(const comm_net *n, int fd, ino_t ino) {
    for (int i = 0; i < n->n_sockets; i++)
        if (n->sockets[i].fd == fd && n->sockets[i].ino == ino) return 1;
    return 0;
}

static void scan(comm_net *n) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return; // no /proc: only sockets already known are counted
    struct dirent *e;
    while ((e = readdir(d)) && n->n_sockets < COMM_NET_MAX_SOCKETS) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int fd = atoi(e->d_name);
        struct stat sb;
        if (fd == dirfd(d) || fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode)) continue;
        uint64_t sent = 0;
        if (known(n, fd, sb.st_ino) || !tcp_sent(fd, &sent) || !is_remote_tcp(fd)) continue;
        // A socket first seen now started at zero: what it sent before this scan
        // belongs to the interval being measured, so it counts from 0.
        n->sockets[n->n_sockets++] = (comm_net_socket){.fd = fd, .ino = sb.st_ino, .last_sent = 0};
    }
    closedir(d);
}

uint64_t comm_net_sample(comm_net *n, int rescan) {
    if (rescan) scan(n);
    for (int i = 0; i < n->n_sockets;) {
        comm_net_socket *s = &n->sockets[i];
        uint64_t sent = 0;
        struct stat sb;
        // A closed socket is dropped, and so (checked on a rescan) is its fd number
        // reused by another socket; what it sent stays counted.
        int alive =
            tcp_sent(s->fd, &sent) && (!rescan || (fstat(s->fd, &sb) == 0 && sb.st_ino == s->ino));
        if (!alive) {
            n->sockets[i] = n->sockets[--n->n_sockets];
            continue;
        }
        if (sent > s->last_sent) n->total_sent += sent - s->last_sent;
        s->last_sent = sent;
        i++;
    }
    n->n_samples++;
    return n->total_sent;
}
