/*
 * nfstate_udp: a UDP socket that Node's event loop watches (a uv_poll) and that moves datagrams in
 * batches, recvmmsg in and sendmmsg out, one system call for up to 64 of them where node:dgram makes one
 * per datagram. src/wire/batch-socket.ts loads it, and falls back to node:dgram where it was not built.
 *
 *   cc -O2 -shared -fPIC -I<node>/include/node -o native/build/nfstate_udp.node native/udp.c
 *
 * JavaScript side (all numbers; buffers are Uint8Array / Uint32Array / Uint16Array views):
 *   open(host, port, bufBytes)          -> [handle, boundPort]      a non-blocking socket, bound
 *   watch(handle, onReadable)           calls onReadable() each time the socket has datagrams
 *   recv(handle, slab, slotBytes, lens) -> n     up to lens.length datagrams, datagram i at i * slotBytes;
 *                                                a truncated one has length slotBytes + 1
 *   dest(handle, index, host, port)     destination `index` of send(): a socket connected there
 *   send(handle, slab, offsets, lens, dests, count) -> sent     at most 1024; in order per destination
 *                                       (destinations one after the other); waits up to
 *                                       50 ms for a full send buffer; a datagram the kernel refuses
 *                                       (ECONNREFUSED …) is skipped and not counted as sent
 *   close(handle)
 *
 * Segmentation offload (UDP GSO, Linux 4.18): consecutive datagrams to one destination, all of one length
 * but the last (which may be shorter), leave as one send with UDP_SEGMENT. Through loopback, veths and
 * bridges the kernel carries such a run as one packet, and cuts it into the same datagrams only where it
 * is received (or at a NIC), so a run costs about one datagram's way through the stack. What the kernel
 * refuses to segment (a run longer than the path's MTU allows) goes as single datagrams, and runs of that
 * length to that destination no longer try. NFSTATE_GSO=off turns it off, to compare.
 * Errors of the socket calls are thrown as JavaScript errors with the errno's text.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define BATCH 64
/* A GSO run: at most this many datagrams and bytes (the kernel's UDP_MAX_SEGMENTS is 64 or more). */
#define GSO_SEGS 64
#define GSO_BYTES 65000
/* The datagrams one sendmmsg may carry in all. */
#define SEND_IOVS 1024
/* Receiving with UDP_GRO: messages per recvmmsg, each up to a whole run. */
#define STAGE_MSGS 8
#define STAGE_BYTES 65536

/* What recvmmsg brought in with UDP_GRO and recv() has not handed out yet: each message a run of datagrams
   of `seg` bytes (the last may be shorter), or one datagram where seg is 0. */
typedef struct {
  uint8_t *buf;
  uint32_t len[STAGE_MSGS];
  uint16_t seg[STAGE_MSGS];
  uint8_t trunc[STAGE_MSGS];
  int n, i;
  uint32_t off;
} Stage;
/* A full send buffer is waited for at most MAX_WAITS times WAIT_MS per send() before the rest is dropped. */
#define MAX_WAITS 10
#define WAIT_MS 5

typedef struct {
  int fd;
  /* The uv_poll: 0 none, 1 watching, 2 closing (uv_close called, its callback not yet run). */
  int watching;
  /* Finalized by the garbage collector while the uv_poll was closing: freed by the close callback. */
  int finalized;
  uv_poll_t poll;
  napi_env env;
  napi_ref on_readable;
  napi_async_context context;
  /* One connected socket per destination, so that a refused one reports ECONNREFUSED, as node:dgram does. */
  int *dests;
  /* Per destination: the longest datagram that GSO runs may have (0: none). */
  uint16_t *gso_max;
  uint32_t ndests;
  /* Whether GSO is tried at all (NFSTATE_GSO=off: no), and whether the socket receives runs whole. */
  int gso;
  int gro;
  Stage stage;
} Sock;

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    if ((call) != napi_ok) {                                                                          \
      napi_throw_error(env, NULL, "nfstate_udp: " #call " failed");                                 \
      return NULL;                                                                                    \
    }                                                                                                 \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what) {
  char msg[160];
  snprintf(msg, sizeof msg, "nfstate_udp: %s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int parse_addr(napi_env env, napi_value host, napi_value port, struct sockaddr_in *out) {
  char text[64];
  size_t n = 0;
  uint32_t p = 0;
  if (napi_get_value_string_utf8(env, host, text, sizeof text, &n) != napi_ok) return -1;
  if (napi_get_value_uint32(env, port, &p) != napi_ok || p > 65535) return -1;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)p);
  return inet_pton(AF_INET, text, &out->sin_addr) == 1 ? 0 : -1;
}

static Sock *sock_of(napi_env env, napi_value v) {
  Sock *s = NULL;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok || s == NULL || s->fd < 0) {
    napi_throw_error(env, NULL, "nfstate_udp: not an open socket");
    return NULL;
  }
  return s;
}

/* A typed array argument's bytes and element count. */
static void *array_of(napi_env env, napi_value v, size_t *length) {
  napi_typedarray_type type;
  void *data = NULL;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, length, &data, &ab, &offset) != napi_ok) return NULL;
  return data;
}

static void close_dests(Sock *s) {
  for (uint32_t i = 0; i < s->ndests; i++)
    if (s->dests[i] >= 0) close(s->dests[i]);
  free(s->dests);
  free(s->gso_max);
  free(s->stage.buf);
  s->stage.buf = NULL;
  s->dests = NULL;
  s->gso_max = NULL;
  s->ndests = 0;
}

static void on_closed(uv_handle_t *h) {
  Sock *s = (Sock *)h->data;
  s->watching = 0;
  if (s->finalized) free(s);
}

/*
 * Stops watching and closes every socket. The uv_poll is closed before its fd, so that libuv forgets the
 * fd before the kernel can give its number to another socket.
 */
static void shut(napi_env env, Sock *s) {
  if (s->watching == 1) {
    uv_poll_stop(&s->poll);
    s->watching = 2;
    uv_close((uv_handle_t *)&s->poll, on_closed);
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  close_dests(s);
  if (s->on_readable != NULL) {
    napi_delete_reference(env, s->on_readable);
    s->on_readable = NULL;
  }
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  Sock *s = (Sock *)data;
  shut(env, s);
  if (s->context != NULL) napi_async_destroy(env, s->context);
  if (s->watching == 2) s->finalized = 1;
  else free(s);
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct sockaddr_in addr;
  if (argc < 3 || parse_addr(env, argv[0], argv[1], &addr) != 0) {
    napi_throw_type_error(env, NULL, "nfstate_udp.open(host, port, bufBytes): an IPv4 address and a port");
    return NULL;
  }
  uint32_t buf = 0;
  CHECK(napi_get_value_uint32(env, argv[2], &buf));
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket");
  int size = (int)buf;
  if (size > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return throw_errno(env, "bind");
  }
  socklen_t len = sizeof addr;
  getsockname(fd, (struct sockaddr *)&addr, &len);
  Sock *s = calloc(1, sizeof *s);
  if (s == NULL) {
    close(fd);
    napi_throw_error(env, NULL, "nfstate_udp: out of memory");
    return NULL;
  }
  s->fd = fd;
  s->env = env;
  const char *gso = getenv("NFSTATE_GSO");
  s->gso = gso == NULL || strcmp(gso, "off") != 0;
  int on = 1;
  s->gro = s->gso && setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0;
  napi_value handle, port, out;
  CHECK(napi_create_external(env, s, finalize, NULL, &handle));
  CHECK(napi_create_uint32(env, ntohs(addr.sin_port), &port));
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_set_element(env, out, 0, handle));
  CHECK(napi_set_element(env, out, 1, port));
  return out;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  Sock *s = (Sock *)p->data;
  napi_env env = s->env;
  if (status < 0 || s->on_readable == NULL) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, result;
  if (napi_get_reference_value(env, s->on_readable, &cb) == napi_ok && napi_get_global(env, &recv) == napi_ok)
    napi_make_callback(env, s->context, recv, cb, 0, NULL, &result);
  napi_close_handle_scope(env, scope);
}

static napi_value js_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Sock *s = sock_of(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->watching != 0) {
    napi_throw_error(env, NULL, "nfstate_udp: already watched");
    return NULL;
  }
  struct uv_loop_s *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  CHECK(napi_create_reference(env, argv[1], 1, &s->on_readable));
  napi_value name;
  CHECK(napi_create_string_utf8(env, "nfstate_udp", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &s->context));
  if (uv_poll_init(loop, &s->poll, s->fd) != 0) {
    napi_throw_error(env, NULL, "nfstate_udp: uv_poll_init failed");
    return NULL;
  }
  s->poll.data = s;
  s->watching = 1;
  uv_poll_start(&s->poll, UV_READABLE, on_poll);
  return NULL;
}

/* Datagrams straight into their slots; -1 with errno on an error. */
static int recv_each(Sock *s, uint8_t *slab, uint32_t slot, uint32_t *lens, size_t max) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  memset(msgs, 0, sizeof(struct mmsghdr) * max);
  for (size_t i = 0; i < max; i++) {
    iov[i].iov_base = slab + i * slot;
    iov[i].iov_len = slot;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n = recvmmsg(s->fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
  for (int i = 0; i < n; i++)
    lens[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? slot + 1 : msgs[i].msg_len;
  return n;
}

/* Reads up to STAGE_MSGS messages, runs whole, into the stage; how many, or -1 with errno. */
static int stage_fill(Sock *s) {
  Stage *st = &s->stage;
  if (st->buf == NULL && (st->buf = malloc((size_t)STAGE_MSGS * STAGE_BYTES)) == NULL) {
    errno = ENOMEM;
    return -1;
  }
  struct mmsghdr msgs[STAGE_MSGS];
  struct iovec iov[STAGE_MSGS];
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl[STAGE_MSGS];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < STAGE_MSGS; i++) {
    iov[i].iov_base = st->buf + (size_t)i * STAGE_BYTES;
    iov[i].iov_len = STAGE_BYTES;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = ctl[i].buf;
    msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
  }
  int n = recvmmsg(s->fd, msgs, STAGE_MSGS, MSG_DONTWAIT, NULL);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
  for (int i = 0; i < n; i++) {
    st->len[i] = msgs[i].msg_len;
    st->trunc[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    st->seg[i] = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm != NULL; cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm))
      if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
        int seg = 0;
        memcpy(&seg, CMSG_DATA(cm), sizeof seg);
        st->seg[i] = (uint16_t)seg;
      }
  }
  st->n = n;
  st->i = 0;
  st->off = 0;
  return n;
}

/*
 * Datagrams cut out of the runs the socket received whole (UDP_GRO), into their slots. Fills every slot
 * while the socket has more: fewer than `max` means it is drained, as with recv_each. What does not fit
 * stays staged for the next call.
 */
static int recv_runs(Sock *s, uint8_t *slab, uint32_t slot, uint32_t *lens, size_t max) {
  Stage *st = &s->stage;
  size_t got = 0;
  while (got < max) {
    if (st->i >= st->n) {
      int r = stage_fill(s);
      if (r < 0) return got > 0 ? (int)got : -1;
      if (r == 0) break;
    }
    int i = st->i;
    uint32_t len = st->len[i], seg = st->seg[i];
    uint32_t take = seg > 0 && len - st->off > seg ? seg : len - st->off;
    if (st->trunc[i] || take > slot) lens[got] = slot + 1;
    else {
      memcpy(slab + got * slot, st->buf + (size_t)i * STAGE_BYTES + st->off, take);
      lens[got] = take;
    }
    got++;
    st->off += take;
    if (st->off >= len || st->trunc[i]) {
      st->i++;
      st->off = 0;
    }
  }
  return (int)got;
}

static napi_value js_recv(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Sock *s = sock_of(env, argv[0]);
  if (s == NULL) return NULL;
  size_t slab_len = 0, nlens = 0;
  uint8_t *slab = array_of(env, argv[1], &slab_len);
  uint32_t slot = 0;
  CHECK(napi_get_value_uint32(env, argv[2], &slot));
  uint32_t *lens = array_of(env, argv[3], &nlens);
  if (slab == NULL || lens == NULL || slot == 0) {
    napi_throw_type_error(env, NULL, "nfstate_udp.recv(handle, slab, slotBytes, lens)");
    return NULL;
  }
  size_t max = slab_len / slot;
  if (max > nlens) max = nlens;
  if (max > BATCH) max = BATCH;
  int n = s->gro ? recv_runs(s, slab, slot, lens, max) : recv_each(s, slab, slot, lens, max);
  if (n < 0) return throw_errno(env, "recvmmsg");
  napi_value out;
  CHECK(napi_create_int32(env, n, &out));
  return out;
}

static napi_value js_dest(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Sock *s = sock_of(env, argv[0]);
  if (s == NULL) return NULL;
  uint32_t index = 0;
  CHECK(napi_get_value_uint32(env, argv[1], &index));
  struct sockaddr_in addr;
  if (index > 65535 || parse_addr(env, argv[2], argv[3], &addr) != 0) {
    napi_throw_type_error(env, NULL, "nfstate_udp.dest(handle, index, host, port): an IPv4 address");
    return NULL;
  }
  if (index >= s->ndests) {
    uint32_t n = index + 16;
    int *d = realloc(s->dests, n * sizeof *d);
    if (d != NULL) s->dests = d;
    uint16_t *g = d == NULL ? NULL : realloc(s->gso_max, n * sizeof *g);
    if (g == NULL) {
      napi_throw_error(env, NULL, "nfstate_udp: out of memory");
      return NULL;
    }
    for (uint32_t i = s->ndests; i < n; i++) d[i] = -1;
    s->gso_max = g;
    s->ndests = n;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket");
  int size = 4 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return throw_errno(env, "connect");
  }
  if (s->dests[index] >= 0) close(s->dests[index]);
  s->dests[index] = fd;
  s->gso_max[index] = s->gso ? 65535 : 0;
  return NULL;
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Sock *s = sock_of(env, argv[0]);
  if (s == NULL) return NULL;
  size_t slab_len = 0, noff = 0, nlens = 0, ndest = 0;
  uint8_t *slab = array_of(env, argv[1], &slab_len);
  uint32_t *offsets = array_of(env, argv[2], &noff);
  uint32_t *lens = array_of(env, argv[3], &nlens);
  uint16_t *dests = array_of(env, argv[4], &ndest);
  uint32_t count = 0;
  CHECK(napi_get_value_uint32(env, argv[5], &count));
  if (slab == NULL || offsets == NULL || lens == NULL || dests == NULL || count > noff || count > nlens ||
      count > ndest) {
    napi_throw_type_error(env, NULL, "nfstate_udp.send(handle, slab, offsets, lens, dests, count)");
    return NULL;
  }
  for (uint32_t k = 0; k < count; k++) {
    if ((size_t)offsets[k] + lens[k] > slab_len || dests[k] >= s->ndests || s->dests[dests[k]] < 0) {
      napi_throw_range_error(env, NULL, "nfstate_udp.send: a datagram outside the slab or to no dest");
      return NULL;
    }
  }
  if (count > SEND_IOVS) {
    napi_throw_range_error(env, NULL, "nfstate_udp.send: at most 1024 datagrams a call");
    return NULL;
  }
  /* Grouped by destination, each group in the order queued, so that runs to one destination are long even
     where the caller alternates (a packet to its primary, its copy to the secondary). */
  uint16_t ord[SEND_IOVS];
  uint8_t placed[SEND_IOVS];
  memset(placed, 0, count);
  for (uint32_t first = 0, m = 0; first < count; first++) {
    if (placed[first]) continue;
    for (uint32_t k = first; k < count; k++)
      if (!placed[k] && dests[k] == dests[first]) {
        placed[k] = 1;
        ord[m++] = (uint16_t)k;
      }
  }
  struct mmsghdr msgs[BATCH];
  struct iovec iov[SEND_IOVS];
  /* Per message: how many datagrams it carries, and its UDP_SEGMENT control message. */
  uint32_t runs[BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl[BATCH];
  uint32_t sent = 0, done = 0;
  int waits = 0;
#define LEN(p) lens[ord[p]]
  while (done < count) {
    /* Datagrams to one destination, in one system call: runs of one length as one GSO message each. */
    uint16_t d = dests[ord[done]];
    uint32_t n = 0, niov = 0, p = done;
    while (p < count && n < BATCH && dests[ord[p]] == d) {
      uint32_t seg = LEN(p), run = 1;
      if (seg > 0 && seg <= s->gso_max[d])
        while (p + run < count && dests[ord[p + run]] == d && run < GSO_SEGS && LEN(p + run) > 0 &&
               LEN(p + run) <= seg && (run + 1) * seg <= GSO_BYTES) {
          run++;
          if (LEN(p + run - 1) < seg) break; /* a shorter one ends the run */
        }
      memset(&msgs[n], 0, sizeof msgs[n]);
      for (uint32_t j = 0; j < run; j++) {
        iov[niov + j].iov_base = slab + offsets[ord[p + j]];
        iov[niov + j].iov_len = LEN(p + j);
      }
      msgs[n].msg_hdr.msg_iov = &iov[niov];
      msgs[n].msg_hdr.msg_iovlen = run;
      if (run > 1) {
        msgs[n].msg_hdr.msg_control = ctl[n].buf;
        msgs[n].msg_hdr.msg_controllen = sizeof ctl[n].buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[n].msg_hdr);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &size, sizeof size);
      }
      runs[n++] = run;
      niov += run;
      p += run;
    }
    int r = sendmmsg(s->dests[d], msgs, n, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
        /* The send buffer is full: wait for room a little, as node:dgram would queue, then give up. */
        struct pollfd room = {.fd = s->dests[d], .events = POLLOUT, .revents = 0};
        if (waits++ < MAX_WAITS && poll(&room, 1, WAIT_MS) > 0) continue;
        break;
      }
      if (runs[0] > 1 && (errno == EINVAL || errno == EIO || errno == EMSGSIZE)) {
        /* The kernel would not segment this run (too long for the path's MTU): single datagrams then. */
        s->gso_max[d] = (uint16_t)(LEN(done) - 1);
        continue;
      }
      /* Refused (the destination's port is closed, reported by an earlier datagram): these are lost. */
      done += runs[0];
      continue;
    }
    for (int i = 0; i < r; i++) {
      sent += runs[i];
      done += runs[i];
    }
  }
#undef LEN
  napi_value out;
  CHECK(napi_create_uint32(env, sent, &out));
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Sock *s = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&s) != napi_ok || s == NULL) return NULL;
  shut(env, s);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, js_watch, NULL, NULL, NULL, napi_default, NULL},
      {"recv", NULL, js_recv, NULL, NULL, NULL, napi_default, NULL},
      {"dest", NULL, js_dest, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(nfstate_udp, init)
