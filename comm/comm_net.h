// comm_net: the bytes this process has sent over TCP to other hosts, read from the
// kernel's own per-socket counters (TCP_INFO), so that an all-reduce's network
// traffic is measured rather than modelled from MPI's algorithm. Private to comm/:
// comm.c decides when to sample; this file knows nothing of MPI.
#ifndef SNAPTP_COMM_NET_H
#define SNAPTP_COMM_NET_H

#include <stdint.h>
#include <sys/types.h>

enum { COMM_NET_MAX_SOCKETS = 256 };

typedef struct comm_net_socket {
    int fd;
    ino_t ino;          // the socket's inode: a reused fd number is another socket
    uint64_t last_sent; // its counter when last sampled
} comm_net_socket;

typedef struct comm_net {
    int n_sockets;
    comm_net_socket sockets[COMM_NET_MAX_SOCKETS];
    uint64_t total_sent; // monotone: sums each socket's growth, closed sockets included
    uint64_t n_samples;
} comm_net;

// comm_net_init: an empty tracker (no sockets seen yet).
void comm_net_init(comm_net *n);

// comm_net_sample: updates and returns n->total_sent, the bytes (TCP payload,
// retransmissions included) sent on this process's TCP sockets whose peer is
// another host. `rescan`: 1 also looks for sockets opened since the last scan
// (/proc/self/fd, a few tens of microseconds); 0 reads only the known ones (one
// getsockopt each). Sockets to this host's own addresses (loopback, or a peer on
// the same address) are not network traffic and are skipped.
uint64_t comm_net_sample(comm_net *n, int rescan);

#endif
