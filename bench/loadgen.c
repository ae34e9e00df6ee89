/* qgreyd load generator: behaves like many qmail-smtpd processes at the DATA stage.
 *
 * N clients, each with its own UDP socket and exactly one request in flight: send, wait for
 * the two reply bytes (or a timeout), send the next. All clients run in one thread on one
 * epoll set, so the generator costs little CPU next to the daemon on a 2-core machine (a Node
 * generator could not keep 32 clients busy fast enough; see "Performance" in the README).
 *
 * Workload (shares are flags, normalised to sum 1):
 *   new     a new triplet from a random IP (11.0.0.0-99.255.255.255) with 1-3 recipients;
 *           its bytes go into a ring that retries draw from
 *   retry   the exact bytes of an earlier new request (qmail retrying after a 4xx)
 *   hot     an IP from the hot set: even indexes are whitelisted (192.168.0.0/16 in the
 *           bench whitelist), odd ones are known good (172.16.x.y, written by bench fill)
 *   stored  a triplet the bench fill tool wrote: index i -> ip 10.a.b.c (see tripletFor in
 *           bench/workload.ts, which must stay in step with stored_request below)
 *
 * SIGINT or SIGTERM ends the run early (the figures cover the time until then).
 *
 * Output: one JSON object on stdout. With --trace FILE, every completed request is also
 * written as two little-endian uint32 (completion time in us since start_ms, latency in us),
 * so the caller can compare latency inside and outside a window (the expiry sweep).
 *
 * Built by bench/run.ts with the machine's cc; no binary is committed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXREQ 512
#define RING 65536
#define HIST_US 1000000 /* latency histogram: 1 us buckets up to 1 s, then an overflow bucket */

static uint64_t rng_state;
static uint64_t rnd(void) {
  /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}
static double rnd01(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + ts.tv_nsec / 1000;
}
static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + ts.tv_nsec / 1000000;
}

struct req {
  int len;
  char b[MAXREQ];
};

static struct req *ring;
static size_t ring_fill, ring_next;

/* appends a NUL-terminated field */
static int field(char *b, int at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static int field(char *b, int at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b + at, MAXREQ - at - 2, fmt, ap);
  va_end(ap);
  return at + n + 1; /* vsnprintf wrote the NUL */
}

static void new_request(struct req *r) {
  int at = 0;
  at = field(r->b, at, "I%u.%u.%u.%u", (unsigned)(11 + rnd() % 89), (unsigned)(rnd() % 256), (unsigned)(rnd() % 256), (unsigned)(1 + rnd() % 254));
  at = field(r->b, at, "Fu%u@s%u.example", (unsigned)(rnd() % 1000000), (unsigned)(rnd() % 5000));
  int n = 1 + (int)(rnd() % 3);
  unsigned dom = (unsigned)(rnd() % 200);
  for (int i = 0; i < n; i++) at = field(r->b, at, "Tr%u@d%u.example", (unsigned)(rnd() % 100000), dom);
  r->b[at++] = 0;
  r->len = at;
  ring[ring_next] = *r;
  ring_next = (ring_next + 1) % RING;
  if (ring_fill < RING) ring_fill++;
}

static void hot_request(struct req *r, unsigned hot_ips) {
  unsigned k = (unsigned)(rnd() % hot_ips);
  int at = 0;
  if (k % 2 == 0) at = field(r->b, at, "I192.168.%u.%u", (k >> 8) & 255, k & 255);
  else at = field(r->b, at, "I172.16.%u.%u", (k >> 8) & 255, k & 255);
  at = field(r->b, at, "Fu%u@s%u.example", (unsigned)(rnd() % 1000000), (unsigned)(rnd() % 5000));
  at = field(r->b, at, "Tr%u@d%u.example", (unsigned)(rnd() % 100000), (unsigned)(rnd() % 200));
  r->b[at++] = 0;
  r->len = at;
}

/* must match tripletFor() in bench/workload.ts */
static void stored_request(struct req *r, unsigned count) {
  unsigned i = (unsigned)(rnd() % count);
  int at = 0;
  at = field(r->b, at, "I10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
  at = field(r->b, at, "Fs%u@f%u.example", i % 9973, i % 101);
  at = field(r->b, at, "Tr%u@t%u.example", i, i % 37);
  r->b[at++] = 0;
  r->len = at;
}

struct client {
  int fd;
  uint64_t sent_at;
  int busy;
};

static volatile sig_atomic_t stop_early;
static void on_signal(int sig) {
  (void)sig;
  stop_early = 1;
}

static struct sockaddr_in target;
static int epfd;

static int open_client(struct client *c, int idx) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) return -1;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
  c->fd = fd;
  c->busy = 0;
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --port P [--host 127.0.0.1] [--clients 32] [--duration 10] [--warmup 1]\n"
          "               [--seed 1] [--new 0.4] [--retry 0.3] [--hot 0.3] [--stored 0]\n"
          "               [--stored-count N] [--hot-ips 1000] [--timeout-ms 1000] [--trace FILE]\n");
  exit(100);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *trace_path = NULL;
  int port = 0, nclients = 32;
  double duration = 10, warmup = 1, share_new = 0.4, share_retry = 0.3, share_hot = 0.3, share_stored = 0;
  unsigned stored_count = 0, hot_ips = 1000, timeout_ms = 1000;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--host")) host = v;
    else if (!strcmp(a, "--port")) port = atoi(v);
    else if (!strcmp(a, "--clients")) nclients = atoi(v);
    else if (!strcmp(a, "--duration")) duration = atof(v);
    else if (!strcmp(a, "--warmup")) warmup = atof(v);
    else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--new")) share_new = atof(v);
    else if (!strcmp(a, "--retry")) share_retry = atof(v);
    else if (!strcmp(a, "--hot")) share_hot = atof(v);
    else if (!strcmp(a, "--stored")) share_stored = atof(v);
    else if (!strcmp(a, "--stored-count")) stored_count = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(a, "--hot-ips")) hot_ips = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(a, "--timeout-ms")) timeout_ms = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(a, "--trace")) trace_path = v;
    else usage();
  }
  if (port <= 0 || port > 65535 || nclients < 1 || duration <= 0 || hot_ips < 1) usage();
  if (share_stored > 0 && stored_count == 0) {
    fprintf(stderr, "loadgen: --stored needs --stored-count (how many triplets bench fill wrote)\n");
    exit(100);
  }
  double total = share_new + share_retry + share_hot + share_stored;
  if (total <= 0) usage();
  share_new /= total, share_retry /= total, share_hot /= total, share_stored /= total;
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
    fprintf(stderr, "loadgen: --host %s is not an IPv4 address\n", host);
    exit(100);
  }
  ring = malloc(sizeof(struct req) * RING);
  uint32_t *hist = calloc(HIST_US + 1, sizeof(uint32_t));
  uint64_t *codes = calloc(65536, sizeof(uint64_t));
  struct client *cl = calloc((size_t)nclients, sizeof *cl);
  struct req *cur = calloc((size_t)nclients, sizeof *cur);
  size_t trace_cap = 0, trace_len = 0;
  uint32_t *trace = NULL;
  epfd = epoll_create1(0);
  if (!ring || !hist || !codes || !cl || !cur || epfd < 0) {
    perror("loadgen: setup");
    exit(111);
  }
  for (int i = 0; i < nclients; i++)
    if (open_client(&cl[i], i) < 0) {
      perror("loadgen: socket");
      exit(111);
    }

  /* SIGINT/SIGTERM end the run early and still report: bench/run.ts stops the sweep run so */
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  uint64_t t_start = now_us();
  uint64_t t_measure = t_start + (uint64_t)(warmup * 1e6);
  uint64_t t_end = t_measure + (uint64_t)(duration * 1e6);
  uint64_t start_ms = wall_ms() + (uint64_t)(warmup * 1000);
  uint64_t done = 0, lost = 0, bad = 0, max_us = 0, sent = 0, send_errors = 0;
  uint64_t kinds[4] = {0, 0, 0, 0};
  int measuring = 0, in_flight = 0;

#define SEND(i)                                                                   \
  do {                                                                            \
    struct req *r = &cur[i];                                                      \
    double x = rnd01();                                                           \
    int kind;                                                                     \
    if (x < share_new || (x < share_new + share_retry && ring_fill == 0)) kind = 0; \
    else if (x < share_new + share_retry) kind = 1;                               \
    else if (x < share_new + share_retry + share_hot) kind = 2;                   \
    else kind = 3;                                                                \
    if (kind == 0) new_request(r);                                                \
    else if (kind == 1) *r = ring[rnd() % ring_fill];                             \
    else if (kind == 2) hot_request(r, hot_ips);                                  \
    else stored_request(r, stored_count);                                         \
    if (measuring) kinds[kind]++;                                                 \
    cl[i].sent_at = now_us();                                                     \
    cl[i].busy = 1;                                                               \
    in_flight++;                                                                  \
    sent++;                                                                       \
    if (send(cl[i].fd, r->b, (size_t)r->len, 0) < 0) send_errors++;               \
  } while (0)

  for (int i = 0; i < nclients; i++) SEND(i);

  struct epoll_event evs[256];
  unsigned char buf[64];
  uint64_t last_timeout_check = t_start;
  for (;;) {
    int n = epoll_wait(epfd, evs, 256, 5);
    if (n < 0 && errno != EINTR) {
      perror("loadgen: epoll_wait");
      exit(111);
    }
    uint64_t t = now_us();
    if (!measuring && t >= t_measure) {
      measuring = 1;
      t_measure = t;
    }
    if (stop_early && t < t_end) t_end = t > t_measure ? t : t_measure + 1;
    int stopping = t >= t_end;
    for (int e = 0; e < n; e++) {
      int i = (int)evs[e].data.u32;
      for (;;) {
        ssize_t got = recv(cl[i].fd, buf, sizeof buf, 0);
        if (got < 0) break; /* EAGAIN, or ECONNREFUSED from an ICMP: the timeout deals with it */
        if (!cl[i].busy) continue; /* a duplicate; cannot happen with one request in flight */
        t = now_us();
        uint64_t lat = t - cl[i].sent_at;
        cl[i].busy = 0;
        in_flight--;
        if (measuring && cl[i].sent_at >= t_measure) {
          done++;
          hist[lat < HIST_US ? lat : HIST_US]++;
          if (lat > max_us) max_us = lat;
          if (got == 2) codes[buf[0] * 256 + buf[1]]++;
          else bad++;
          if (trace_path) {
            if (trace_len + 2 > trace_cap) {
              trace_cap = trace_cap ? trace_cap * 2 : 1 << 20;
              trace = realloc(trace, trace_cap * sizeof *trace);
              if (!trace) exit(111);
            }
            trace[trace_len++] = (uint32_t)(t - t_measure);
            trace[trace_len++] = (uint32_t)lat;
          }
        }
        if (!stopping) SEND(i);
        break;
      }
    }
    t = now_us();
    if (t - last_timeout_check >= 2000) {
      last_timeout_check = t;
      for (int i = 0; i < nclients; i++) {
        if (!cl[i].busy || (int64_t)(t - cl[i].sent_at) < (int64_t)timeout_ms * 1000) continue;
        /* lost: a fresh socket, so that a late reply cannot pass for the next one's */
        if (measuring && cl[i].sent_at >= t_measure) lost++;
        epoll_ctl(epfd, EPOLL_CTL_DEL, cl[i].fd, NULL);
        close(cl[i].fd);
        in_flight--;
        if (open_client(&cl[i], i) < 0) {
          perror("loadgen: socket");
          exit(111);
        }
        if (!stopping) SEND(i);
      }
    }
    if (stopping && in_flight == 0) break;
  }
  double secs = (double)(t_end - t_measure) / 1e6;

  uint64_t acc = 0, p50 = 0, p99 = 0, p999 = 0;
  int have50 = 0, have99 = 0, have999 = 0;
  for (uint64_t us = 0; us <= HIST_US; us++) {
    acc += hist[us];
    if (!have50 && acc * 100 >= done * 50) have50 = 1, p50 = us;
    if (!have99 && acc * 100 >= done * 99) have99 = 1, p99 = us;
    if (!have999 && acc * 1000 >= done * 999) have999 = 1, p999 = us;
  }
  printf("{\"generator\":\"c\",\"clients\":%d,\"seconds\":%.3f,\"requests\":%llu,\"rps\":%.0f,"
         "\"p50_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu,\"lost\":%llu,\"bad_replies\":%llu,"
         "\"send_errors\":%llu,\"start_ms\":%llu,\"kinds\":{\"new\":%llu,\"retry\":%llu,\"hot\":%llu,\"stored\":%llu},\"codes\":{",
         nclients, secs, (unsigned long long)done, done / secs, (unsigned long long)p50, (unsigned long long)p99,
         (unsigned long long)p999, (unsigned long long)max_us, (unsigned long long)lost, (unsigned long long)bad,
         (unsigned long long)send_errors, (unsigned long long)start_ms, (unsigned long long)kinds[0],
         (unsigned long long)kinds[1], (unsigned long long)kinds[2], (unsigned long long)kinds[3]);
  int first = 1;
  for (int c = 0; c < 65536; c++)
    if (codes[c]) {
      printf("%s\"%02x%02x\":%llu", first ? "" : ",", c >> 8, c & 255, (unsigned long long)codes[c]);
      first = 0;
    }
  printf("}}\n");
  if (trace_path) {
    FILE *f = fopen(trace_path, "wb");
    if (!f || fwrite(trace, sizeof *trace, trace_len, f) != trace_len || fclose(f) != 0) {
      perror(trace_path);
      exit(111);
    }
  }
  (void)sent;
  return 0;
}
