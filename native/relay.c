/*
 * relay: the fastest userspace UDP hop this machine can do, as a yardstick for nfstate's own hops.
 * It receives datagrams on 127.0.0.1:<listen-port> and sends each, unchanged and in order, to
 * <dest-host>:<dest-port>, 64 at a time with recvmmsg/sendmmsg, touching no payload byte.
 *
 *   cc -O2 -Wall -Wextra -o relay native/relay.c
 *   ./relay 9000 127.0.0.1 9001 &        # stderr: relay: listening on 127.0.0.1:9000
 *   kill -TERM $!                        # stdout: {"received":1000,"sent":1000}
 *
 * A listen port of 0 binds an ephemeral port; the stderr line says which. The receive socket has a
 * 100 ms SO_RCVTIMEO so the loop notices SIGTERM/SIGINT even when no traffic arrives. Sending uses a
 * second, connected socket, so the destination's replies are not relayed back to it. "sent" counts
 * datagrams handed to the kernel; whether a closed destination port then drops them is not seen here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_DATAGRAM 65536
#define SOCK_BUF (4 * 1024 * 1024)

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void die(const char *what) {
  fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Asks for 4 MiB; the FORCE variant passes rmem_max/wmem_max when privileged, else the plain one is capped. */
static void set_buffers(int fd) {
  int size = SOCK_BUF;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static int parse_port(const char *s) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < 0 || v > 65535) return -1;
  return (int)v;
}

int main(int argc, char **argv) {
  /* A bench that dies mid-run must not leave its relay forwarding into the machine. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");
  if (argc != 4) {
    fprintf(stderr, "usage: relay <listen-port> <dest-host> <dest-port>\n");
    return 2;
  }
  int listen_port = parse_port(argv[1]);
  int dest_port = parse_port(argv[3]);
  if (listen_port < 0 || dest_port <= 0) {
    fprintf(stderr, "relay: ports must be integers (listen 0..65535, destination 1..65535)\n");
    return 2;
  }

  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  struct addrinfo *dest = NULL;
  int gai = getaddrinfo(argv[2], argv[3], &hints, &dest);
  if (gai != 0) {
    fprintf(stderr, "relay: cannot resolve %s: %s\n", argv[2], gai_strerror(gai));
    return 2;
  }

  int rx = socket(AF_INET, SOCK_DGRAM, 0);
  if (rx < 0) die("socket");
  set_buffers(rx);
  struct timeval tv = {.tv_sec = 0, .tv_usec = 100 * 1000};
  if (setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) die("SO_RCVTIMEO");
  struct sockaddr_in local;
  memset(&local, 0, sizeof local);
  local.sin_family = AF_INET;
  local.sin_port = htons((unsigned short)listen_port);
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(rx, (struct sockaddr *)&local, sizeof local) != 0) die("bind");
  socklen_t len = sizeof local;
  if (getsockname(rx, (struct sockaddr *)&local, &len) != 0) die("getsockname");

  int tx = socket(AF_INET, SOCK_DGRAM, 0);
  if (tx < 0) die("socket");
  set_buffers(tx);
  if (connect(tx, dest->ai_addr, dest->ai_addrlen) != 0) die("connect");
  freeaddrinfo(dest);

  /* No SA_RESTART: a signal must interrupt a blocked recvmmsg/sendmmsg so the flag is seen at once. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  /* One buffer per slot, reused for every batch; the receive lengths become the send lengths. */
  static char bufs[BATCH][MAX_DATAGRAM];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];

  fprintf(stderr, "relay: listening on 127.0.0.1:%d\n", ntohs(local.sin_port));
  fflush(stderr);

  unsigned long long received = 0, sent = 0;
  while (!stop_requested) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = MAX_DATAGRAM;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_len = 0;
    }
    /* MSG_WAITFORONE: block (up to the timeout) for the first datagram, then take whatever is queued. */
    int n = recvmmsg(rx, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      die("recvmmsg");
    }
    received += (unsigned long long)n;
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;

    int done = 0;
    while (done < n) {
      int m = sendmmsg(tx, msgs + done, (unsigned int)(n - done), 0);
      if (m > 0) {
        sent += (unsigned long long)m;
        done += m;
      } else if (m < 0 && errno == EINTR) {
        if (stop_requested) break;
      } else if (m < 0 && (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH ||
                            errno == EAGAIN || errno == ENOBUFS)) {
        /* A pending ICMP error belongs to an earlier datagram and is cleared by being reported, so
           the same datagram is simply tried again. */
        continue;
      } else {
        die("sendmmsg");
      }
    }
  }

  printf("{\"received\":%llu,\"sent\":%llu}\n", received, sent);
  fflush(stdout);
  close(rx);
  close(tx);
  return 0;
}
