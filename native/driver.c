/*
 * driver: the dataplane bench's load generator and sink in one process, in C, so that neither is the
 * slowest stage of the loop it measures. It sends stamped Geneve datagrams to a hop under test and
 * counts what the hop sends back to it, keeping at most <window> packets in flight.
 *
 *   cc -O2 -Wall -Wextra -pthread -o driver native/driver.c
 *   ./driver packets.bin 1024 127.0.0.1 0 512 500 2000
 *       stdout: {"port":40123}                  start the hop with 127.0.0.1:40123 as its egress, then
 *       stdin:  go 40200                        send to the hop's port (plain "go": the <dest-port>)
 *       stdin:  go 40201,40202 dests.bin        or each flow to one of several ports: byte f of the file
 *                                               is flow f's index into the list (an NF instance's
 *                                               workers, each flow at the one that owns it)
 *       stdout: {"sent":...,"received":...,"lost":0,"pps":...,"measure_s":2.000}
 *
 * The packets file holds R rounds of F flows, round-major, each record a u16 big-endian length and the
 * datagram (36-byte stamp header, then the inner IPv4 packet):
 *
 *   +--------+-----------------------+--------+-----------------------+-     -+--------+----------------+
 *   | len BE | flow 0, seq 1         | len BE | flow 1, seq 1         |  ...  | len BE | flow F-1, seq R|
 *   +--------+-----------------------+--------+-----------------------+-     -+--------+----------------+
 *     record r*F + f is flow f's packet with sequence number r + 1
 *
 * The file is sent over and over; on pass p each datagram's sequence number (u64 big endian at byte 20)
 * becomes p*R + r + 1, so every flow counts 1, 2, 3 ... without a gap, and an NF instance never holds a
 * packet back for reordering or skips one.
 *
 *   sender thread ──sendmmsg──► hop under test ──► receive socket ──recvmmsg──► receiver thread
 *        ▲                                                                          │
 *        └──────────────── in flight = sent − received − lost ≤ window ◄────────────┘ (atomic count)
 *
 * A window that sees no progress for 200 ms counts what is in flight as lost and reopens; packets that
 * turn up later were late, not lost. pps counts what arrived during the measured interval only. The
 * driver dies with its parent (PR_SET_PDEATHSIG), and SIGTERM ends it at once.
 *
 * With a <rate-pps> after <measure-ms>, the sender paces itself to that rate (the window still bounds
 * what is in flight) and measures latency: it writes the wall-clock time into each datagram's ingress
 * time (u64 ns big endian at byte 28, what the stamper would write there), every hop keeps the stamp, and
 * the receiver takes the difference on arrival. The report then adds the latency of the packets that
 * arrived during the measured interval, in 1 µs buckets up to LATENCY_BUCKETS µs:
 *
 *       stdout: {"sent":...,"pps":...,"measure_s":8.000,"latency_samples":40000,"p50_us":41,"p99_us":180}
 *
 * A <rate-pps> of 0 sends as fast as the window allows, as without one. After it, <warmup-packets> and
 * <warmup-limit-ms> make the warm-up last also until that many packets are back, and fail (exit 3) if
 * that takes longer than the limit. A hop that keeps state per flow is in steady state only once
 * every flow exists, and with a million flows one pass over them outlasts any fixed warm-up:
 *
 *   ./driver packets.bin 1000000 127.0.0.1 0 512 1000 8000 0 1000000 60000
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <linux/futex.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TX_BATCH 32
#define RX_BATCH 64
/* Longer datagrams are counted all the same, truncated; only the count matters here. */
#define RX_SLOT 2048
#define SEQ_OFFSET 20
#define TIME_OFFSET 28
#define MIN_DATAGRAM (SEQ_OFFSET + 8)
#define RCV_BUF (8 * 1024 * 1024)
#define SND_BUF (4 * 1024 * 1024)
#define STALL_NS (200LL * 1000 * 1000)
/* How long the sender sleeps on a full window before it looks at the stall clock again. */
#define WAIT_NS (20LL * 1000 * 1000)
#define TAIL_NS (300LL * 1000 * 1000)
/* How long the receiver blocks before it looks at its stop flag again. */
#define RX_TIMEOUT_US (20 * 1000)
/* One bucket per microsecond up to 1 s (4 MB, touched only where latencies fall); later arrivals all
   count in the last one. */
#define LATENCY_BUCKETS 1000000

struct packets {
  unsigned char *data;
  struct iovec *iov;
  int64_t count;
  int64_t flows;
  int64_t rounds;
};

/* Destinations of a hop that takes each flow at a port of its own. */
#define MAX_DESTS 64

struct sender_args {
  int fd;
  /* With several destinations (fd unconnected): flow f's packets go to dests[dest_of[f]]. */
  const struct sockaddr_in *dests;
  const unsigned char *dest_of;
  int64_t window;
  /* Packets per second to pace at; 0: as fast as the window allows, with no latency measured. */
  int64_t rate;
  const struct packets *packets;
};

static _Atomic int64_t received;
/* The sender's wait: it sleeps on wake_gen until `received` reaches wake_at (0: nobody waits). */
static _Atomic int64_t wake_at;
static _Atomic uint32_t wake_gen;
static atomic_int sending = 1;
static atomic_int receiving = 1;
/* Written by the sender before it returns; read after it is joined. */
static int64_t sent_total;
/* Rate mode: the receiver records latencies while `measuring` is set; read after it is joined. */
static int timing;
static atomic_int measuring;
static uint32_t latency_us[LATENCY_BUCKETS];

static void die(const char *what) {
  fprintf(stderr, "driver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *message) {
  fprintf(stderr, "driver: %s\n", message);
  exit(2);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The wall clock, as the stamper's ingress time: the receiver compares it with what the sender wrote. */
static int64_t wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t deadline_ns) {
  struct timespec ts = {.tv_sec = deadline_ns / 1000000000LL, .tv_nsec = deadline_ns % 1000000000LL};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static long parse_int(const char *s, long min, long max, const char *what) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "driver: %s must be an integer in %ld..%ld (got '%s')\n", what, min, max, s);
    exit(2);
  }
  return v;
}

/* Asks for `size`; the FORCE variant passes rmem_max/wmem_max when privileged, else the plain one is capped. */
static void set_buffer(int fd, int force, int plain, int size) {
  if (setsockopt(fd, SOL_SOCKET, force, &size, sizeof size) != 0)
    (void)setsockopt(fd, SOL_SOCKET, plain, &size, sizeof size);
}

static void load_packets(const char *path, int64_t flows, struct packets *p) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) die(path);
  if (fseek(f, 0, SEEK_END) != 0) die(path);
  long size = ftell(f);
  if (size < 0) die(path);
  rewind(f);
  p->data = malloc(size > 0 ? (size_t)size : 1);
  if (p->data == NULL) die("malloc");
  if (fread(p->data, 1, (size_t)size, f) != (size_t)size) die(path);
  fclose(f);

  int64_t count = 0;
  for (long at = 0; at < size;) {
    if (size - at < 2) fail("packets file: truncated length");
    long len = ((long)p->data[at] << 8) | p->data[at + 1];
    if (len < MIN_DATAGRAM) fail("packets file: a datagram too short to hold a stamp header");
    if (size - at - 2 < len) fail("packets file: truncated datagram");
    at += 2 + len;
    count++;
  }
  if (count == 0 || count % flows != 0) fail("packets file: the record count is not a multiple of <flows>");

  p->iov = calloc((size_t)count, sizeof *p->iov);
  if (p->iov == NULL) die("calloc");
  long at = 0;
  for (int64_t i = 0; i < count; i++) {
    size_t len = ((size_t)p->data[at] << 8) | p->data[at + 1];
    p->iov[i].iov_base = p->data + at + 2;
    p->iov[i].iov_len = len;
    at += 2 + (long)len;
  }
  p->count = count;
  p->flows = flows;
  p->rounds = count / flows;
}

/*
 * The window is full: sleep until the receiver has counted `target`, or for WAIT_NS. A waiter that
 * spins, or polls with short sleeps, takes most of a core on a 2-core machine from the hop under test,
 * which has to make the very progress being waited for. Publishing the target before reading the count
 * (and the receiver storing the count before reading the target) means one side always sees the other,
 * so no wake-up is missed; the generation number closes the gap between that check and the sleep.
 */
static void wait_for(int64_t target) {
  uint32_t gen = atomic_load(&wake_gen);
  atomic_store(&wake_at, target);
  if (atomic_load(&received) < target) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = WAIT_NS};
    (void)syscall(SYS_futex, &wake_gen, FUTEX_WAIT_PRIVATE, gen, &ts, NULL, 0);
  }
  atomic_store(&wake_at, 0);
}

static void wake_sender(int64_t count) {
  int64_t target = atomic_load(&wake_at);
  if (target != 0 && count >= target && atomic_compare_exchange_strong(&wake_at, &target, 0)) {
    atomic_fetch_add(&wake_gen, 1);
    (void)syscall(SYS_futex, &wake_gen, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
}

static void *sender(void *arg) {
  const struct sender_args *a = arg;
  const struct packets *p = a->packets;
  struct mmsghdr msgs[TX_BATCH];
  memset(msgs, 0, sizeof msgs);
  int64_t sent = 0, lost = 0, last_received = 0;
  int64_t progress_at = now_ns();
  /* Paced, a packet goes as soon as it is due and the window has room for it: waiting for a whole
     batch would send bursts, and the queueing behind them would show up as latency. */
  int64_t room_needed = a->rate > 0 ? 1 : a->window < TX_BATCH ? a->window : TX_BATCH;
  int64_t start = now_ns();
  /* The default 50 µs timer slack would delay every paced send by about that much. */
  if (a->rate > 0 && prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) != 0) die("PR_SET_TIMERSLACK");

  while (atomic_load_explicit(&sending, memory_order_relaxed)) {
    int64_t got = atomic_load_explicit(&received, memory_order_acquire);
    int64_t now = now_ns();
    if (got != last_received) {
      last_received = got;
      progress_at = now;
    }
    if (sent - got < lost) lost = sent - got > 0 ? sent - got : 0;
    int64_t room = a->window - (sent - got - lost);
    if (room < room_needed) {
      if (now - progress_at >= STALL_NS) {
        lost = sent - got;
        progress_at = now;
      } else {
        /* Half the window drained before sending again keeps sends in full batches. */
        int64_t target = sent - lost - a->window / 2;
        wait_for(target > got ? target : got + 1);
      }
      continue;
    }

    int n = room < TX_BATCH ? (int)room : TX_BATCH;
    uint64_t stamp = 0;
    if (a->rate > 0) {
      /* In doubles: nanoseconds times packets per second overflows 64 bits within an hour. */
      int64_t due = (int64_t)((double)(now - start) * (double)a->rate / 1e9) + 1 - sent;
      if (due <= 0) {
        sleep_until(start + (int64_t)((double)sent * 1e9 / (double)a->rate));
        continue;
      }
      if (due < n) n = (int)due;
      stamp = htobe64((uint64_t)wall_ns());
    }
    for (int k = 0; k < n; k++) {
      int64_t i = sent + k;
      int64_t pass = i / p->count;
      int64_t record = i % p->count;
      const struct iovec *v = &p->iov[record];
      uint64_t seq = htobe64((uint64_t)(pass * p->rounds + record / p->flows + 1));
      memcpy((unsigned char *)v->iov_base + SEQ_OFFSET, &seq, sizeof seq);
      if (a->rate > 0) memcpy((unsigned char *)v->iov_base + TIME_OFFSET, &stamp, sizeof stamp);
      msgs[k].msg_hdr.msg_iov = (struct iovec *)v;
      msgs[k].msg_hdr.msg_iovlen = 1;
      if (a->dest_of != NULL) {
        msgs[k].msg_hdr.msg_name = (void *)&a->dests[a->dest_of[record % p->flows]];
        msgs[k].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
      }
    }
    int m = sendmmsg(a->fd, msgs, (unsigned)n, 0);
    if (m > 0) {
      sent += m;
    } else if (m < 0 && (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH ||
                         errno == EAGAIN || errno == ENOBUFS || errno == EINTR)) {
      /* A pending ICMP error belongs to an earlier datagram and is cleared by being reported; a full
         send buffer drains by itself. Either way the same datagrams are tried again. */
      sched_yield();
    } else {
      die("sendmmsg");
    }
  }
  sent_total = sent;
  return NULL;
}

static void record_latencies(const struct mmsghdr *msgs, int n) {
  int64_t now = wall_ns();
  for (int i = 0; i < n; i++) {
    if (msgs[i].msg_len < TIME_OFFSET + 8) continue;
    uint64_t sent_at;
    memcpy(&sent_at, (const unsigned char *)msgs[i].msg_hdr.msg_iov->iov_base + TIME_OFFSET, sizeof sent_at);
    int64_t us = (now - (int64_t)be64toh(sent_at)) / 1000;
    if (us < 0) us = 0;
    latency_us[us < LATENCY_BUCKETS ? us : LATENCY_BUCKETS - 1]++;
  }
}

/* The smallest latency (µs) that at least `q` of the samples do not exceed. */
static int64_t percentile(int64_t samples, double q) {
  int64_t rank = (int64_t)(q * (double)samples + 0.999999);
  if (rank < 1) rank = 1;
  int64_t seen = 0;
  for (int64_t us = 0; us < LATENCY_BUCKETS; us++) {
    seen += latency_us[us];
    if (seen >= rank) return us;
  }
  return LATENCY_BUCKETS - 1;
}

static void *receiver(void *arg) {
  int fd = *(const int *)arg;
  static char bufs[RX_BATCH][RX_SLOT];
  static struct iovec iov[RX_BATCH];
  static struct mmsghdr msgs[RX_BATCH];
  for (int i = 0; i < RX_BATCH; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = RX_SLOT;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  while (atomic_load_explicit(&receiving, memory_order_relaxed)) {
    /* MSG_WAITFORONE: block (up to the timeout) for the first datagram, then take whatever is queued. */
    int n = recvmmsg(fd, msgs, RX_BATCH, MSG_WAITFORONE, NULL);
    if (n > 0) {
      wake_sender(atomic_fetch_add(&received, n) + n);
      if (timing && atomic_load_explicit(&measuring, memory_order_relaxed)) record_latencies(msgs, n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNREFUSED) {
      die("recvmmsg");
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  /* A bench that dies mid-run must not leave its driver sending into the machine. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG");
  if (argc != 8 && argc != 9 && argc != 11) {
    fprintf(stderr, "usage: driver <packets-file> <flows> <dest-host> <dest-port> <window> <warmup-ms> "
                    "<measure-ms> [<rate-pps> [<warmup-packets> <warmup-limit-ms>]]\n");
    return 2;
  }
  int64_t flows = parse_int(argv[2], 1, 1 << 24, "<flows>");
  long dest_port = parse_int(argv[4], 0, 65535, "<dest-port>");
  int64_t window = parse_int(argv[5], 1, 1 << 24, "<window>");
  int64_t warmup_ms = parse_int(argv[6], 0, 3600 * 1000, "<warmup-ms>");
  int64_t measure_ms = parse_int(argv[7], 1, 3600 * 1000, "<measure-ms>");
  int64_t rate = argc >= 9 ? parse_int(argv[8], 0, 100 * 1000 * 1000, "<rate-pps>") : 0;
  int64_t warmup_packets = argc == 11 ? parse_int(argv[9], 0, 1L << 40, "<warmup-packets>") : 0;
  int64_t warmup_limit_ms = argc == 11 ? parse_int(argv[10], 0, 3600 * 1000, "<warmup-limit-ms>") : 0;
  timing = rate > 0;

  struct packets packets;
  load_packets(argv[1], flows, &packets);

  int rx = socket(AF_INET, SOCK_DGRAM, 0);
  if (rx < 0) die("socket");
  set_buffer(rx, SO_RCVBUFFORCE, SO_RCVBUF, RCV_BUF);
  struct timeval tv = {.tv_sec = 0, .tv_usec = RX_TIMEOUT_US};
  if (setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) die("SO_RCVTIMEO");
  struct sockaddr_in local;
  memset(&local, 0, sizeof local);
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(rx, (struct sockaddr *)&local, sizeof local) != 0) die("bind");
  socklen_t len = sizeof local;
  if (getsockname(rx, (struct sockaddr *)&local, &len) != 0) die("getsockname");

  printf("{\"port\":%d}\n", ntohs(local.sin_port));
  fflush(stdout);

  /* The hop under test is started only now, with the port above as its egress; "go" says it is up. */
  char line[1024];
  if (fgets(line, sizeof line, stdin) == NULL) fail("stdin closed before \"go\"");
  char *word = strtok(line, " \t\r\n");
  if (word == NULL || strcmp(word, "go") != 0) fail("expected \"go\" or \"go <dest-port>\" on stdin");
  char *port_text = strtok(NULL, " \t\r\n");
  char *table = strtok(NULL, " \t\r\n");
  long ports[MAX_DESTS];
  int nports = 0;
  if (port_text != NULL) {
    for (char *save = NULL, *t = strtok_r(port_text, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
      if (nports == MAX_DESTS) fail("more than 64 ports after \"go\"");
      ports[nports++] = parse_int(t, 1, 65535, "a port after \"go\"");
    }
    dest_port = ports[0];
  }
  if (dest_port == 0) fail("no destination port: <dest-port> is 0 and \"go\" named none");
  if ((nports > 1) != (table != NULL)) fail("several ports after \"go\" need a table of flows, and only they");
  unsigned char *dest_of = NULL;
  if (table != NULL) {
    dest_of = malloc((size_t)flows);
    if (dest_of == NULL) die("malloc");
    FILE *f = fopen(table, "rb");
    if (f == NULL) die("the table of flows");
    size_t got = fread(dest_of, 1, (size_t)flows, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != (size_t)flows || extra != EOF) fail("the table of flows must hold one byte per flow");
    for (int64_t i = 0; i < flows; i++)
      if (dest_of[i] >= nports) fail("the table of flows names a port that \"go\" did not list");
  }

  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  struct addrinfo *dest = NULL;
  char service[16];
  snprintf(service, sizeof service, "%ld", dest_port);
  int gai = getaddrinfo(argv[3], service, &hints, &dest);
  if (gai != 0) {
    fprintf(stderr, "driver: cannot resolve %s: %s\n", argv[3], gai_strerror(gai));
    return 2;
  }
  int tx = socket(AF_INET, SOCK_DGRAM, 0);
  if (tx < 0) die("socket");
  set_buffer(tx, SO_SNDBUFFORCE, SO_SNDBUF, SND_BUF);
  static struct sockaddr_in dests[MAX_DESTS];
  for (int i = 0; i < nports; i++) {
    memcpy(&dests[i], dest->ai_addr, sizeof dests[i]);
    dests[i].sin_port = htons((uint16_t)ports[i]);
  }
  if (dest_of == NULL && connect(tx, dest->ai_addr, dest->ai_addrlen) != 0) die("connect");
  freeaddrinfo(dest);

  pthread_t rx_thread, tx_thread;
  struct sender_args args = {
      .fd = tx, .dests = dests, .dest_of = dest_of, .window = window, .rate = rate, .packets = &packets};
  if ((errno = pthread_create(&rx_thread, NULL, receiver, &rx)) != 0) die("pthread_create");
  int64_t start = now_ns();
  if ((errno = pthread_create(&tx_thread, NULL, sender, &args)) != 0) die("pthread_create");

  sleep_until(start + warmup_ms * 1000000LL);
  /* Polled: a few ms of delay to the mark is nothing next to a pass over a million flows. */
  while (atomic_load(&received) < warmup_packets) {
    if (now_ns() - start >= warmup_limit_ms * 1000000LL) {
      fprintf(stderr, "driver: warm-up: %lld of %lld packets back within %lld ms\n",
              (long long)atomic_load(&received), (long long)warmup_packets, (long long)warmup_limit_ms);
      exit(3);
    }
    sleep_until(now_ns() + 5LL * 1000 * 1000);
  }
  int64_t mark_received = atomic_load(&received);
  int64_t mark_at = now_ns();
  atomic_store(&measuring, 1);
  sleep_until(mark_at + measure_ms * 1000000LL);
  atomic_store(&measuring, 0);
  int64_t end_received = atomic_load(&received);
  int64_t end_at = now_ns();

  atomic_store(&sending, 0);
  pthread_join(tx_thread, NULL);
  int64_t tail_until = now_ns() + TAIL_NS;
  while (atomic_load(&received) < sent_total && now_ns() < tail_until) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  int64_t got = atomic_load(&received);
  atomic_store(&receiving, 0);
  pthread_join(rx_thread, NULL);

  double measure_s = (double)(end_at - mark_at) / 1e9;
  double pps = measure_s > 0 ? (double)(end_received - mark_received) / measure_s : 0;
  int64_t lost = sent_total > got ? sent_total - got : 0;
  printf("{\"sent\":%lld,\"received\":%lld,\"lost\":%lld,\"pps\":%.1f,\"measure_s\":%.3f",
         (long long)sent_total, (long long)got, (long long)lost, pps, measure_s);
  if (timing) {
    int64_t samples = 0;
    for (int64_t us = 0; us < LATENCY_BUCKETS; us++) samples += latency_us[us];
    printf(",\"latency_samples\":%lld,\"p50_us\":%lld,\"p99_us\":%lld", (long long)samples,
           (long long)percentile(samples, 0.5), (long long)percentile(samples, 0.99));
  }
  printf("}\n");
  fflush(stdout);
  close(rx);
  close(tx);
  free(packets.iov);
  free(packets.data);
  free(dest_of);
  return 0;
}
