// loadgen: the WebSocket load generator of the benchmark suite.
//
// A single-threaded epoll client in C, so that it is none of the servers under test and costs
// as little CPU per message as possible. Every frame it sends is masked with a fresh key, every
// echoed payload is checked byte for byte against what was sent (in order), and the latency of
// every message is measured from the moment its frame was queued to the moment its echo was
// parsed.
//
//   loadgen --port P --mode echo      --conns 64 --inflight 1 --size 32 --text --warmup 1 --duration 5
//   loadgen --port P --mode handshake --conns 32 --duration 5
//   loadgen --port P --mode idle      --conns 10000 --duration 3   (prints "ready", holds 3 s)
//   loadgen --port P --mode broadcast --conns 100 --warmup 1 --duration 5
//   loadgen --port P --mode subscribe --conns 100 --path /room --warmup 2 --duration 8 [--cpu NAME:PID ...]
//   --path P      request path of the upgrade (default "/", "/broadcast" in broadcast mode)
//   --deflate     offer permessage-deflate and send compressed messages
//   --sources N   spread connections over source addresses 127.0.0.1 .. 127.0.0.N
//   --server-pid P  also report the server's CPU use over the measurement (from /proc/P/stat)
//   --count M     echo mode: each connection sends M messages; the run ends when all echoes are
//                 in (for instruction counts under valgrind, where time means little)
//
// Broadcast mode (W7, fan-out): N connections on /broadcast, where the server sends every
// message it receives to all N (the sender included). The load generator runs rounds: in a
// round every connection sends one binary message of 64 bytes (round, sender and a pattern
// derived from both); the round is complete when every connection has received all N messages
// of the round, each exactly once and byte for byte (the order across senders is free); then
// the next round starts. It reports deliveries/s (N x N per round), rounds/s and the round
// latency (from the round's first send to its last delivery) over whole rounds: the rounds that
// start within the measurement window, and at least --min-rounds of them. Any message of
// another round, a duplicate, an unknown sender, wrong bytes, a lost connection, or a round
// not complete within --round-timeout seconds is an error.
//   --min-rounds R     (default 3)   --round-timeout S (default 60)
//   --settle S         wait S seconds after the last connection opened before the first round
//                      (default 0.5: servers that register a connection in a task of their own)
//
// Subscribe mode (cluster.sh): N connections on --path (a topic of a node of the cluster) that
// only receive. It prints "ready N" once all are open. The messages are published elsewhere
// (cluster-node --publish): 64 bytes, word 0 the CLOCK_MONOTONIC time of the publish in ns
// (same machine), word 1 the sequence number 0, 1, ..., words 2-7 derived from it. Every
// connection must get every message once, in order, byte for byte. Two windows of --duration
// seconds after --warmup: by receive time (from the first message received): deliveries/s, the
// publications/s that reached every connection (the smallest per-connection count / window),
// and the CPU of each --cpu process; by publish time (from the first message published): the
// latency from publish to receipt of every delivery published in it (p50, p99, p99.9, max).
// The run ends --idle-end seconds (default 2) after the last message, once both windows are over.
//   --cpu NAME:PID   also report the CPU of PID over the receive window as cpu_NAME_s and
//                    cpu_NAME_pct (repeatable; several PIDs with one NAME are summed)
//
// The result is one line of key=value pairs on stdout. Exit status 1 on any validation error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

// ---------------------------------------------------------------- options

static const char *opt_host = "127.0.0.1";
static int opt_port = 9000;
static const char *opt_mode = "echo";
static int opt_conns = 64;
static int opt_inflight = 1;
static size_t opt_size = 32;
static int opt_text = 0;
static double opt_warmup = 1.0;
static double opt_duration = 5.0;
static int opt_deflate = 0;
static int opt_sources = 1;
static int opt_open_concurrency = 128;
static int opt_server_pid = 0;
static long opt_count = 0;  // echo mode: each connection sends exactly this many messages, then the run ends
static const char *opt_path = NULL;  // upgrade request path; NULL: "/" ("/broadcast" in broadcast mode)
static int opt_min_rounds = 3;
static double opt_round_timeout = 60.0;
static double opt_settle = 0.5;

static double opt_idle_end = 2.0;
#define MAX_CPU 64
static int cpu_count;
static char cpu_names[MAX_CPU][32];
static int cpu_pids[MAX_CPU];
static double cpu_start[MAX_CPU], cpu_end[MAX_CPU];

enum { MODE_ECHO, MODE_HANDSHAKE, MODE_IDLE, MODE_BROADCAST, MODE_SUBSCRIBE } mode;

// ---------------------------------------------------------------- small utilities

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {  // xorshift64*: masking keys and handshake keys
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

// CPU seconds (user + system) used so far by process `pid`, from /proc; -1 if unknown.
static double process_cpu_s(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    // Fields after the command: state(3) ... utime(14) stime(15).
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) { fprintf(stderr, "loadgen: out of memory\n"); exit(2); }
    return q;
}

// ---------------------------------------------------------------- SHA-1 and base64 (handshake check)

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *msg = calloc(total, 1);
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)msg[off + 4 * i] << 24 | (uint32_t)msg[off + 4 * i + 1] << 16 |
                   (uint32_t)msg[off + 4 * i + 2] << 8 | msg[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) {
            uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
            w[i] = x << 1 | x >> 31;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = (a << 5 | a >> 27) + f + e + k + w[i];
            e = d; d = c; c = b << 30 | b >> 2; b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < len ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? t[v & 63] : '=';
    }
    out[o] = 0;
}

// ---------------------------------------------------------------- payloads

// Plain mode: every message is `base` with its first 16 bytes replaced by the hex of
// (connection << 40 | sequence number), so each echo is checked for content and order.
// Deflate mode: messages cycle through SLOTS payloads compressed once up front (raw DEFLATE,
// no context takeover, as the client offers), each checked in full after inflating the echo.
#define SLOTS 64
static uint8_t *base;
static uint8_t *slot_plain[SLOTS];
static uint8_t *slot_deflated[SLOTS];
static size_t slot_deflated_len[SLOTS];

static void hex16(uint64_t v, uint8_t *out) {
    static const char d[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) { out[i] = (uint8_t)d[v & 15]; v >>= 4; }
}

static void make_payloads(void) {
    base = malloc(opt_size + 16);
    static const char *words[] = {"alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ",
                                  "india ", "juliett ", "kilo ", "lima ", "mike ", "november ", "oscar ", "papa "};
    if (opt_deflate) {
        // Text-like, compressible content (a few words in random order).
        size_t i = 0;
        while (i < opt_size) {
            const char *w = words[rng() & 15];
            for (size_t j = 0; w[j] && i < opt_size; j++) base[i++] = (uint8_t)w[j];
        }
    } else {
        for (size_t i = 0; i < opt_size; i++)
            base[i] = opt_text ? (uint8_t)('a' + rng() % 26) : (uint8_t)rng();
    }
    if (!opt_deflate) return;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) { fprintf(stderr, "deflateInit2\n"); exit(2); }
    for (int s = 0; s < SLOTS; s++) {
        slot_plain[s] = malloc(opt_size + 1);
        memcpy(slot_plain[s], base, opt_size);
        uint8_t tag[16];
        hex16((uint64_t)s * 0x9E3779B97F4A7C15ull, tag);
        memcpy(slot_plain[s], tag, opt_size < 16 ? opt_size : 16);
        size_t cap = deflateBound(&z, opt_size) + 16;
        slot_deflated[s] = malloc(cap);
        deflateReset(&z);
        z.next_in = slot_plain[s];
        z.avail_in = (uInt)opt_size;
        z.next_out = slot_deflated[s];
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in != 0) { fprintf(stderr, "deflate\n"); exit(2); }
        size_t n = cap - z.avail_out;
        if (n >= 4 && memcmp(slot_deflated[s] + n - 4, "\x00\x00\xff\xff", 4) == 0) n -= 4;
        slot_deflated_len[s] = n;
    }
    deflateEnd(&z);
}

// ---------------------------------------------------------------- connections

enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSING, S_WAIT_EOF, S_DEAD };

typedef struct {
    int fd;
    int id;
    int state;
    int want_out;
    uint8_t *rbuf; size_t rcap, rlen, rpos;
    uint8_t *wbuf; size_t wcap, wlen, wpos;
    uint64_t sent, received;
    uint64_t ts[64];                 // send times by sequence number (ring; inflight <= 64)
    char accept[32];
    uint8_t *msg; size_t msg_len, msg_cap; int msg_opcode, msg_rsv1, in_message;
    z_stream inf; int inf_ready;
    uint8_t *dbuf; size_t dcap;
    double deadline;
    int idle_echoed;
    uint32_t *seen;     // broadcast: seen[s] == round when sender s's message of that round arrived
    int got;            // broadcast: messages of the current round received
} conn_t;

static conn_t *conns;
static int epfd;
static struct sockaddr_in server_addr;

// Results.
static uint64_t count_compressed;  // echoes that came back compressed (RSV1)
static uint64_t count_msgs, count_bytes, count_errors, count_handshakes, count_client_closed;
static int measuring, stopping, finished_conns;
#define HIST_US 2000000
static uint32_t *hist;  // latency histogram, 1 µs buckets up to 2 s
static uint64_t hist_over;

static void error_at(conn_t *c, const char *what) {
    if (count_errors < 10) fprintf(stderr, "loadgen: connection %d: %s\n", c->id, what);
    count_errors++;
}

static void ensure(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *buf = xrealloc(*buf, n);
    *cap = n;
}

static void set_events(conn_t *c, int out) {
    if (c->want_out == out) return;
    c->want_out = out;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u32 = (uint32_t)c->id};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = S_DEAD;
    c->rlen = c->rpos = c->wlen = c->wpos = 0;
    c->in_message = 0;
    c->msg_len = 0;
    if (c->inf_ready) { inflateEnd(&c->inf); c->inf_ready = 0; }
}

static void flush_out(conn_t *c) {
    while (c->wpos < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) { set_events(c, 1); return; }
            if (!stopping) error_at(c, "send failed");
            close_conn(c);
            return;
        }
        c->wpos += (size_t)n;
    }
    c->wpos = c->wlen = 0;
    set_events(c, 0);
}

// Appends a masked frame to the connection's output.
static void queue_frame(conn_t *c, int first_byte, const uint8_t *payload, size_t len) {
    if (c->wpos > 0 && c->wpos == c->wlen) c->wpos = c->wlen = 0;
    ensure(&c->wbuf, &c->wcap, c->wlen + len + 14);
    uint8_t *p = c->wbuf + c->wlen;
    *p++ = (uint8_t)first_byte;
    if (len <= 125) *p++ = 0x80 | (uint8_t)len;
    else if (len <= 0xFFFF) { *p++ = 0x80 | 126; *p++ = (uint8_t)(len >> 8); *p++ = (uint8_t)len; }
    else { *p++ = 0x80 | 127; for (int i = 7; i >= 0; i--) *p++ = (uint8_t)((uint64_t)len >> (8 * i)); }
    uint32_t key32 = (uint32_t)rng();
    memcpy(p, &key32, 4);
    p += 4;
    uint64_t key64 = (uint64_t)key32 | (uint64_t)key32 << 32;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, payload + i, 8);
        v ^= key64;
        memcpy(p + i, &v, 8);
    }
    const uint8_t *kb = (const uint8_t *)&key32;
    for (; i < len; i++) p[i] = payload[i] ^ kb[i & 3];
    c->wlen = (size_t)(p - c->wbuf) + len;
}

static void send_message(conn_t *c, uint64_t t) {
    uint64_t seq = c->sent++;
    c->ts[seq & 63] = t;
    if (opt_deflate) {
        int s = (int)(seq % SLOTS);
        queue_frame(c, 0x80 | 0x40 | (opt_text ? 1 : 2), slot_deflated[s], slot_deflated_len[s]);
        return;
    }
    // Write the frame with `base`, then patch the tag into the (masked) payload.
    size_t before = c->wlen;
    queue_frame(c, 0x80 | (opt_text ? 1 : 2), base, opt_size);
    if (opt_size >= 16) {
        uint8_t tag[16];
        hex16((uint64_t)c->id << 40 | seq, tag);
        size_t header = opt_size <= 125 ? 6 : (opt_size <= 0xFFFF ? 8 : 14);
        uint8_t *frame = c->wbuf + before;
        const uint8_t *key = frame + header - 4;
        for (int i = 0; i < 16; i++) frame[header + i] = tag[i] ^ key[i & 3];
    }
}

static void send_close(conn_t *c) {
    uint8_t payload[2] = {0x03, 0xE8};  // 1000
    queue_frame(c, 0x88, payload, 2);
}

static void start_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt_sources > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
        src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(c->id % opt_sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind source address");
    }
    int r = connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr);
    if (r < 0 && errno != EINPROGRESS) die("connect");
    c->fd = fd;
    c->state = S_CONNECTING;
    c->want_out = 1;
    c->sent = c->received = 0;
    c->rlen = c->rpos = c->wlen = c->wpos = 0;
    c->in_message = 0;
    c->idle_echoed = 0;
    c->deadline = now_s() + 10.0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)c->id};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static void send_upgrade(conn_t *c) {
    uint8_t raw[16];
    for (int i = 0; i < 16; i++) raw[i] = (uint8_t)rng();
    char key[32];
    base64(raw, 16, key);
    char concat[80];
    snprintf(concat, sizeof concat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t digest[20];
    sha1((const uint8_t *)concat, strlen(concat), digest);
    base64(digest, 20, c->accept);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     opt_path, opt_host, opt_port, key,
                     opt_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits\r\n" : "");
    ensure(&c->wbuf, &c->wcap, c->wlen + (size_t)n);
    memcpy(c->wbuf + c->wlen, req, (size_t)n);
    c->wlen += (size_t)n;
    c->state = S_HANDSHAKE;
    flush_out(c);
}

static void on_open(conn_t *c, uint64_t t);

// Parses the 101 response; returns 1 when complete, 0 when more input is needed, -1 on error.
static int parse_response(conn_t *c) {
    uint8_t *start = c->rbuf + c->rpos;
    size_t avail = c->rlen - c->rpos;
    uint8_t *end = memmem(start, avail, "\r\n\r\n", 4);
    if (!end) return avail > 16384 ? -1 : 0;
    size_t head_len = (size_t)(end - start) + 4;
    char *head = malloc(head_len + 1);
    memcpy(head, start, head_len);
    head[head_len] = 0;
    int ok = strncmp(head, "HTTP/1.1 101", 12) == 0;
    char *accept = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (ok && accept) {
        accept += 23;
        while (*accept == ' ') accept++;
        ok = strncmp(accept, c->accept, strlen(c->accept)) == 0;
    } else ok = 0;
    if (ok && opt_deflate && !strcasestr(head, "permessage-deflate")) ok = 0;
    free(head);
    c->rpos += head_len;
    return ok ? 1 : -1;
}

// ---------------------------------------------------------------- broadcast mode

// A broadcast message: 64 bytes, eight little-endian words. Word 0 is round << 32 | sender;
// words 1-7 are h ^ (k * K) with h a hash of word 0, so every byte depends on round and sender.
#define BCAST_SIZE 64
static uint32_t bc_round;           // the current round (1, 2, ...); 0 before the first
static uint64_t bc_round_start_ns;  // when its first message was queued
static double bc_round_start_s;
static int bc_done_conns;           // connections that have all N messages of the current round
static int bc_round_measured;       // the current round started inside the measurement window
static uint64_t bc_rounds, bc_deliveries;  // measured
static uint64_t *bc_latency_us;     // each measured round's latency (rounds can exceed the histogram's 2 s)
static size_t bc_latency_cap;

static uint64_t splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void broadcast_payload(uint32_t round, uint32_t sender, uint64_t out[8]) {
    out[0] = (uint64_t)round << 32 | sender;
    uint64_t h = splitmix(out[0]);
    for (int k = 1; k < 8; k++) out[k] = h ^ ((uint64_t)k * 0xD6E8FEB86659FD93ull);
}

static void broadcast_start_round(double t_s) {
    bc_round++;
    bc_done_conns = 0;
    bc_round_start_s = t_s;
    bc_round_start_ns = now_ns();
    bc_round_measured = measuring;
    for (int i = 0; i < opt_conns; i++) {
        conn_t *c = &conns[i];
        c->got = 0;
        uint64_t words[8];
        broadcast_payload(bc_round, (uint32_t)i, words);
        queue_frame(c, 0x82, (const uint8_t *)words, BCAST_SIZE);
        flush_out(c);
    }
}

static void validate_broadcast(conn_t *c, const uint8_t *data, size_t len, int opcode, uint64_t t) {
    if (opcode != 2) { error_at(c, "broadcast message with the wrong opcode"); return; }
    if (len != BCAST_SIZE) { error_at(c, "broadcast message with the wrong length"); return; }
    uint64_t words[8];
    memcpy(words, data, BCAST_SIZE);
    uint32_t round = (uint32_t)(words[0] >> 32), sender = (uint32_t)words[0];
    char what[128];
    if (round != bc_round) {
        snprintf(what, sizeof what, "message of round %u during round %u", round, bc_round);
        error_at(c, what);
        return;
    }
    if (sender >= (uint32_t)opt_conns) { error_at(c, "message from an unknown sender"); return; }
    uint64_t expected[8];
    broadcast_payload(round, sender, expected);
    if (memcmp(words, expected, BCAST_SIZE) != 0) {
        snprintf(what, sizeof what, "message of round %u from %u has wrong bytes", round, sender);
        error_at(c, what);
        return;
    }
    if (c->seen[sender] == round) {
        snprintf(what, sizeof what, "message of round %u from %u received twice", round, sender);
        error_at(c, what);
        return;
    }
    c->seen[sender] = round;
    if (++c->got < opt_conns) return;
    if (++bc_done_conns < opt_conns) return;
    // The round is complete: its last delivery is this one.
    if (bc_round_measured) {
        if (bc_rounds == bc_latency_cap) {
            bc_latency_cap = bc_latency_cap ? 2 * bc_latency_cap : 1024;
            bc_latency_us = xrealloc(bc_latency_us, bc_latency_cap * sizeof *bc_latency_us);
        }
        bc_latency_us[bc_rounds] = (t - bc_round_start_ns) / 1000;
        bc_rounds++;
        bc_deliveries += (uint64_t)opt_conns * (uint64_t)opt_conns;
    }
}

// ---------------------------------------------------------------- subscribe mode

static uint64_t sub_send0;           // publish time of the first message (seq 0), ns; 0 before
static double sub_recv0;             // receive time of the first message, s; 0 before
static double sub_last_recv;         // receive time of the latest message, s
static uint64_t sub_deliveries;      // received in the receive window
static uint64_t *sub_window_count;   // per connection, received in the receive window
static uint64_t sub_lat_count, sub_lat_max_us;  // deliveries published in the publish window
static uint64_t sub_lat_seq_lo = UINT64_MAX, sub_lat_seq_hi;  // their sequence numbers
static uint64_t sub_total;           // every delivery

static void validate_subscribe(conn_t *c, const uint8_t *data, size_t len, int opcode, uint64_t t) {
    if (opcode != 2) { error_at(c, "message with the wrong opcode"); return; }
    if (len != BCAST_SIZE) { error_at(c, "message with the wrong length"); return; }
    uint64_t words[8];
    memcpy(words, data, BCAST_SIZE);
    uint64_t seq = words[1];
    char what[128];
    uint64_t h = splitmix(seq);
    for (int k = 2; k < 8; k++) {
        if (words[k] != (h ^ ((uint64_t)k * 0xD6E8FEB86659FD93ull))) {
            snprintf(what, sizeof what, "message %llu has wrong bytes", (unsigned long long)seq);
            error_at(c, what);
            return;
        }
    }
    if (seq != c->received) {
        snprintf(what, sizeof what, "message %llu where %llu was expected (lost, duplicated or out of order)",
                 (unsigned long long)seq, (unsigned long long)c->received);
        error_at(c, what);
        c->received = seq + 1;
        return;
    }
    c->received++;
    sub_total++;
    double ts = (double)t * 1e-9;
    if (!sub_recv0) sub_recv0 = ts;
    sub_last_recv = ts;
    if (seq == 0 && !sub_send0) sub_send0 = words[0];
    if (measuring) { sub_deliveries++; sub_window_count[c->id]++; }
    if (sub_send0 && words[0] >= sub_send0 + (uint64_t)(opt_warmup * 1e9) &&
        words[0] < sub_send0 + (uint64_t)((opt_warmup + opt_duration) * 1e9)) {
        uint64_t lat = t > words[0] ? (t - words[0]) / 1000 : 0;
        if (lat < HIST_US) hist[lat]++; else hist_over++;
        if (lat > sub_lat_max_us) sub_lat_max_us = lat;
        sub_lat_count++;
        if (seq < sub_lat_seq_lo) sub_lat_seq_lo = seq;
        if (seq > sub_lat_seq_hi) sub_lat_seq_hi = seq;
    }
}

static void sample_cpus(double *into) {
    for (int i = 0; i < cpu_count; i++) into[i] = process_cpu_s(cpu_pids[i]);
}

static void validate_message(conn_t *c, const uint8_t *data, size_t len, int opcode, int rsv1, uint64_t t) {
    if (mode == MODE_BROADCAST) { validate_broadcast(c, data, len, opcode, t); return; }
    if (mode == MODE_SUBSCRIBE) { validate_subscribe(c, data, len, opcode, t); return; }
    if (opcode != (opt_text ? 1 : 2)) { error_at(c, "echo has the wrong opcode"); return; }
    uint64_t seq = c->received++;
    if (rsv1) {
        if (!c->inf_ready) {
            memset(&c->inf, 0, sizeof c->inf);
            if (inflateInit2(&c->inf, -15) != Z_OK) { error_at(c, "inflateInit2"); return; }
            c->inf_ready = 1;
        }
        uint8_t *in = malloc(len + 4);
        memcpy(in, data, len);
        memcpy(in + len, "\x00\x00\xff\xff", 4);
        ensure(&c->dbuf, &c->dcap, opt_size + 64);
        c->inf.next_in = in;
        c->inf.avail_in = (uInt)(len + 4);
        size_t out = 0;
        while (c->inf.avail_in > 0) {
            if (out + 1024 > c->dcap) ensure(&c->dbuf, &c->dcap, c->dcap * 2);
            c->inf.next_out = c->dbuf + out;
            c->inf.avail_out = (uInt)(c->dcap - out);
            int r = inflate(&c->inf, Z_SYNC_FLUSH);
            out = c->dcap - c->inf.avail_out;
            if (r == Z_STREAM_END) inflateReset(&c->inf);
            else if (r != Z_OK && r != Z_BUF_ERROR) { free(in); error_at(c, "inflate failed"); return; }
            else if (r == Z_BUF_ERROR && c->inf.avail_out > 0) break;
        }
        free(in);
        data = c->dbuf;
        len = out;
    }
    if (len != opt_size) { error_at(c, "echo has the wrong length"); return; }
    if (opt_deflate) {
        if (memcmp(data, slot_plain[seq % SLOTS], len) != 0) error_at(c, "echo differs from the message sent");
    } else if (opt_size >= 16) {
        uint8_t tag[16];
        hex16((uint64_t)c->id << 40 | seq, tag);
        if (memcmp(data, tag, 16) != 0 || memcmp(data + 16, base + 16, len - 16) != 0)
            error_at(c, "echo differs from the message sent");
    } else if (memcmp(data, base, len) != 0) {
        error_at(c, "echo differs from the message sent");
    }
    if (mode == MODE_IDLE) { c->idle_echoed = 1; return; }
    if (measuring) {
        uint64_t lat = (t - c->ts[seq & 63]) / 1000;
        if (lat < HIST_US) hist[lat]++; else hist_over++;
        count_msgs++;
        count_bytes += opt_size;
        count_compressed += rsv1;
    }
    if (!stopping && (!opt_count || c->sent < (uint64_t)opt_count)) send_message(c, t);
    if (opt_count && c->received == (uint64_t)opt_count) finished_conns++;
}

// Parses the frames in the input buffer.
static void parse_frames(conn_t *c, uint64_t t) {
    for (;;) {
        uint8_t *p = c->rbuf + c->rpos;
        size_t avail = c->rlen - c->rpos;
        if (avail < 2) break;
        size_t len7 = p[1] & 0x7F, header = 2;
        uint64_t len = len7;
        if (p[1] & 0x80) { error_at(c, "masked frame from the server"); close_conn(c); return; }
        if (len7 == 126) { if (avail < 4) break; len = (uint64_t)p[2] << 8 | p[3]; header = 4; }
        else if (len7 == 127) { if (avail < 10) break; len = 0; for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i]; header = 10; }
        if (avail < header + len) {
            ensure(&c->rbuf, &c->rcap, c->rpos + header + len);
            break;
        }
        int fin = p[0] & 0x80, rsv1 = (p[0] & 0x40) != 0, opcode = p[0] & 0x0F;
        uint8_t *payload = p + header;
        c->rpos += header + len;
        switch (opcode) {
        case 0x1: case 0x2:
            if (c->in_message) { error_at(c, "new message inside a fragmented one"); break; }
            if (fin) { validate_message(c, payload, len, opcode, rsv1, t); break; }
            c->in_message = 1; c->msg_opcode = opcode; c->msg_rsv1 = rsv1; c->msg_len = 0;
            /* fall through */
        case 0x0:
            if (!c->in_message) { error_at(c, "continuation without a message"); break; }
            ensure(&c->msg, &c->msg_cap, c->msg_len + len + 4);
            memcpy(c->msg + c->msg_len, payload, len);
            c->msg_len += len;
            if (fin) {
                c->in_message = 0;
                validate_message(c, c->msg, c->msg_len, c->msg_opcode, c->msg_rsv1, t);
            }
            break;
        case 0x8:
            if (c->state == S_CLOSING) {
                c->state = S_WAIT_EOF;
                c->deadline = now_s() + 1.0;
            } else if (!stopping) {
                error_at(c, "unexpected close frame");
                close_conn(c);
                return;
            }
            break;
        case 0x9:
            queue_frame(c, 0x8A, payload, len);
            break;
        case 0xA:
            break;
        default:
            error_at(c, "unknown opcode");
        }
    }
    if (c->rpos == c->rlen) c->rpos = c->rlen = 0;
}

static void handshake_done(conn_t *c) {
    count_handshakes += measuring;
    close_conn(c);
    if (!stopping) start_connect(c);
}

static void on_readable(conn_t *c) {
    if (c->rpos > 0 && c->rcap - c->rlen < 65536) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    ensure(&c->rbuf, &c->rcap, c->rlen + (mode == MODE_IDLE ? 4096 : mode == MODE_BROADCAST ? 262144 : 65536));
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n == 0) {
        if (c->state == S_WAIT_EOF || c->state == S_CLOSING) {
            if (c->state == S_CLOSING && !stopping) error_at(c, "closed before its close frame");
            handshake_done(c);
        } else {
            if (!stopping) error_at(c, "server closed the connection");
            close_conn(c);
        }
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (!stopping) error_at(c, "recv failed");
        close_conn(c);
        return;
    }
    c->rlen += (size_t)n;
    uint64_t t = now_ns();
    if (c->state == S_HANDSHAKE) {
        int r = parse_response(c);
        if (r == 0) return;
        if (r < 0) { error_at(c, "bad upgrade response"); close_conn(c); return; }
        c->state = S_OPEN;
        on_open(c, t);
        if (c->state == S_DEAD) return;
    }
    parse_frames(c, t);
    if (c->state != S_DEAD && c->wlen > c->wpos) flush_out(c);
}

static void on_open(conn_t *c, uint64_t t) {
    switch (mode) {
    case MODE_ECHO:
        for (int i = 0; i < opt_inflight; i++) send_message(c, t);
        break;
    case MODE_IDLE:
        send_message(c, t);
        break;
    case MODE_BROADCAST:  // sends when the rounds begin
    case MODE_SUBSCRIBE:  // only receives
        (void)t;
        break;
    case MODE_HANDSHAKE:
        send_close(c);
        c->state = S_CLOSING;
        c->deadline = now_s() + 2.0;
        break;
    }
    flush_out(c);
}

static void on_writable(conn_t *c) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char what[96];
            snprintf(what, sizeof what, "connect failed: %s", strerror(err));
            error_at(c, what);
            close_conn(c);
            if (!stopping && mode == MODE_HANDSHAKE) start_connect(c);
            return;
        }
        send_upgrade(c);
        return;
    }
    flush_out(c);
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen --port P [--host A] [--mode echo|handshake|idle|broadcast|subscribe] [--conns N] [--inflight K]\n"
                    "               [--size BYTES] [--text] [--warmup S] [--duration S] [--deflate] [--sources N] [--path P]\n"
                    "               [--min-rounds R] [--round-timeout S] [--settle S] [--idle-end S] [--cpu NAME:PID]\n");
    exit(2);
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// The q-quantile of the measured rounds' latencies (the same rank as percentile() below).
static uint64_t round_percentile(double q) {
    if (!bc_rounds) return 0;
    qsort(bc_latency_us, bc_rounds, sizeof *bc_latency_us, compare_u64);
    uint64_t i = (uint64_t)(q * (double)bc_rounds);
    return bc_latency_us[i < bc_rounds ? i : bc_rounds - 1];
}

static uint64_t percentile(double q, uint64_t total) {
    uint64_t target = (uint64_t)(q * (double)total), seen = 0;
    for (uint64_t i = 0; i < HIST_US; i++) {
        seen += hist[i];
        if (seen > target) return i;
    }
    return HIST_US;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--text")) { opt_text = 1; continue; }
        if (!strcmp(a, "--deflate")) { opt_deflate = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "--conns")) opt_conns = atoi(v);
        else if (!strcmp(a, "--inflight")) opt_inflight = atoi(v);
        else if (!strcmp(a, "--size")) opt_size = (size_t)atol(v);
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--sources")) opt_sources = atoi(v);
        else if (!strcmp(a, "--open-concurrency")) opt_open_concurrency = atoi(v);
        else if (!strcmp(a, "--server-pid")) opt_server_pid = atoi(v);
        else if (!strcmp(a, "--count")) opt_count = atol(v);
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "--min-rounds")) opt_min_rounds = atoi(v);
        else if (!strcmp(a, "--round-timeout")) opt_round_timeout = atof(v);
        else if (!strcmp(a, "--settle")) opt_settle = atof(v);
        else if (!strcmp(a, "--idle-end")) opt_idle_end = atof(v);
        else if (!strcmp(a, "--cpu")) {
            const char *colon = strchr(v, ':');
            if (!colon || cpu_count == MAX_CPU || colon - v >= 32) usage();
            memcpy(cpu_names[cpu_count], v, (size_t)(colon - v));
            cpu_names[cpu_count][colon - v] = 0;
            cpu_pids[cpu_count++] = atoi(colon + 1);
        }
        else usage();
    }
    if (!strcmp(opt_mode, "echo")) mode = MODE_ECHO;
    else if (!strcmp(opt_mode, "handshake")) mode = MODE_HANDSHAKE;
    else if (!strcmp(opt_mode, "idle")) mode = MODE_IDLE;
    else if (!strcmp(opt_mode, "broadcast")) mode = MODE_BROADCAST;
    else if (!strcmp(opt_mode, "subscribe")) mode = MODE_SUBSCRIBE;
    else usage();
    if (!opt_path) opt_path = mode == MODE_BROADCAST ? "/broadcast" : "/";
    if ((mode == MODE_BROADCAST || mode == MODE_SUBSCRIBE) && (opt_deflate || opt_text)) usage();
    if (opt_inflight < 1 || opt_inflight > 64 || opt_conns < 1) usage();
    signal(SIGPIPE, SIG_IGN);
    rng_state ^= (uint64_t)now_ns() * 0x2545F4914F6CDD1Dull;
    if (!rng_state) rng_state = 1;
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1) usage();
    make_payloads();
    hist = calloc(HIST_US, sizeof *hist);
    conns = calloc((size_t)opt_conns, sizeof *conns);
    epfd = epoll_create1(0);
    struct epoll_event *events = calloc(1024, sizeof *events);

    double start = now_s();
    int started = 0;
    // Echo and handshake modes open every connection at once (handshake: that is the
    // concurrency); idle mode opens them at most opt_open_concurrency at a time.
    int opening_limit = mode == MODE_IDLE || mode == MODE_BROADCAST || mode == MODE_SUBSCRIBE ? opt_open_concurrency : opt_conns;
    if (mode == MODE_SUBSCRIBE) sub_window_count = calloc((size_t)opt_conns, sizeof *sub_window_count);
    for (int i = 0; i < opt_conns; i++) { conns[i].id = i; conns[i].fd = -1; conns[i].state = S_DEAD; }
    if (mode == MODE_BROADCAST)
        for (int i = 0; i < opt_conns; i++) conns[i].seen = calloc((size_t)opt_conns, sizeof(uint32_t));
    double all_open_at = 0, first_round_at = 0;
    int broadcast_failed = 0;

    double measure_start = 0, measure_end = 0, ready_at = 0;
    double server_cpu0 = 0, server_cpu1 = 0, self_cpu0 = 0, self_cpu1 = 0;
    int ready_printed = 0;
    for (;;) {
        double t = now_s();
        // Open more connections.
        if (!stopping) {
            int in_progress = 0, ready = 0;
            if (mode == MODE_IDLE || ((mode == MODE_BROADCAST || mode == MODE_SUBSCRIBE) && !all_open_at)) {
                for (int i = 0; i < started; i++) {
                    if (conns[i].state == S_OPEN && (mode != MODE_IDLE || conns[i].idle_echoed)) ready++;
                    else if (conns[i].state != S_DEAD) in_progress++;
                }
            }
            if ((mode == MODE_BROADCAST || mode == MODE_SUBSCRIBE) && !all_open_at && ready == opt_conns) {
                all_open_at = t;
                if (mode == MODE_SUBSCRIBE) { printf("ready %d %.2fs\n", ready, t - start); fflush(stdout); }
            }
            while (started < opt_conns && in_progress < opening_limit) {
                start_connect(&conns[started++]);
                in_progress++;
            }
            if (mode == MODE_IDLE && !ready_printed && ready == opt_conns) {
                printf("ready %d %.2fs\n", ready, t - start);
                fflush(stdout);
                ready_printed = 1;
                ready_at = t;
            }
        }
        if (mode == MODE_BROADCAST) {
            if (!all_open_at) {
                // A refused connection or upgrade ends the run at once (rounds need all N).
                if (count_errors) { fprintf(stderr, "loadgen: a connection failed while opening\n"); broadcast_failed = 1; break; }
                if (t - start > 60) { fprintf(stderr, "loadgen: not every connection opened within 60 s\n"); count_errors++; broadcast_failed = 1; break; }
            } else if (!bc_round) {
                if (t - all_open_at >= opt_settle) { first_round_at = t; broadcast_start_round(t); }
            } else {
                if (count_errors > 1000) { broadcast_failed = 1; break; }
                int lost = 0;
                for (int i = 0; i < opt_conns; i++) lost += conns[i].state != S_OPEN;
                if (lost) { fprintf(stderr, "loadgen: %d connections lost in round %u\n", lost, bc_round); count_errors++; broadcast_failed = 1; break; }
                if (bc_done_conns == opt_conns) {
                    // The round is complete. Start measuring after the warm-up; stop after the
                    // last round begun within the window (and at least --min-rounds measured).
                    if (measuring && t - measure_start >= opt_duration && bc_rounds >= (uint64_t)opt_min_rounds) {
                        measuring = 0;
                        measure_end = t;
                        if (opt_server_pid) server_cpu1 = process_cpu_s(opt_server_pid);
                        self_cpu1 = self_cpu_s();
                        break;
                    }
                    if (!measuring && t - first_round_at >= opt_warmup) {
                        measuring = 1;
                        measure_start = t;
                        if (opt_server_pid) server_cpu0 = process_cpu_s(opt_server_pid);
                        self_cpu0 = self_cpu_s();
                    }
                    broadcast_start_round(t);
                } else if (t - bc_round_start_s > opt_round_timeout) {
                    char what[128];
                    int reported = 0;
                    for (int i = 0; i < opt_conns && reported < 5; i++) {
                        if (conns[i].got < opt_conns) {
                            snprintf(what, sizeof what, "round %u not complete after %.0f s: %d of %d messages", bc_round, opt_round_timeout, conns[i].got, opt_conns);
                            error_at(&conns[i], what);
                            reported++;
                        }
                    }
                    broadcast_failed = 1;
                    break;
                }
            }
        }
        if (mode == MODE_SUBSCRIBE) {
            if (!all_open_at) {
                if (count_errors) { fprintf(stderr, "loadgen: a connection failed while opening\n"); break; }
                if (t - start > 60) { fprintf(stderr, "loadgen: not every connection opened within 60 s\n"); count_errors++; break; }
            } else if (!sub_recv0) {
                if (t - all_open_at > 120) { fprintf(stderr, "loadgen: no message within 120 s\n"); count_errors++; break; }
            } else {
                if (!measuring && !measure_end && t >= sub_recv0 + opt_warmup) {
                    measuring = 1;
                    measure_start = t;
                    sample_cpus(cpu_start);
                    self_cpu0 = self_cpu_s();
                }
                if (measuring && t >= measure_start + opt_duration) {
                    measuring = 0;
                    measure_end = t;
                    sample_cpus(cpu_end);
                    self_cpu1 = self_cpu_s();
                }
                int lost = 0;
                for (int i = 0; i < opt_conns; i++) lost += conns[i].state != S_OPEN;
                if (lost) { fprintf(stderr, "loadgen: %d connections lost\n", lost); count_errors++; break; }
                if (measure_end && t - sub_last_recv > opt_idle_end) break;
                if (t - sub_recv0 > opt_warmup + opt_duration + 300) { fprintf(stderr, "loadgen: still receiving 300 s after the windows\n"); count_errors++; break; }
            }
        }
        if (mode != MODE_IDLE && mode != MODE_BROADCAST && mode != MODE_SUBSCRIBE && !measuring && !stopping && (opt_count || t - start >= opt_warmup)) {
            measuring = 1;
            measure_start = t;
            if (opt_server_pid) server_cpu0 = process_cpu_s(opt_server_pid);
            self_cpu0 = self_cpu_s();
        }
        if (opt_count && mode == MODE_ECHO && started == opt_conns) {
            // Connections that failed never finish: stop when none is left running.
            int live = 0;
            for (int i = 0; i < opt_conns; i++) live += conns[i].state != S_DEAD;
            if (!live) finished_conns = opt_conns;
        }
        if (opt_count && mode == MODE_ECHO && finished_conns == opt_conns) {
            measuring = 0;
            measure_end = t;
            if (opt_server_pid) server_cpu1 = process_cpu_s(opt_server_pid);
            self_cpu1 = self_cpu_s();
            break;
        }
        if (mode != MODE_IDLE && mode != MODE_BROADCAST && mode != MODE_SUBSCRIBE && measuring && !opt_count && t - measure_start >= opt_duration) {
            measuring = 0;
            measure_end = t;
            if (opt_server_pid) server_cpu1 = process_cpu_s(opt_server_pid);
            self_cpu1 = self_cpu_s();
            break;
        }
        if (mode == MODE_IDLE) {
            if (t - start > 120) { fprintf(stderr, "loadgen: idle mode timed out\n"); count_errors++; break; }
            if (ready_printed && t - ready_at > opt_duration) break;
            if (count_errors > 100) break;
        }
        // Per-connection deadlines (handshake mode: a server that does not close).
        if (mode == MODE_HANDSHAKE) {
            for (int i = 0; i < opt_conns; i++) {
                conn_t *c = &conns[i];
                if ((c->state == S_WAIT_EOF || c->state == S_CLOSING) && t > c->deadline) {
                    if (c->state == S_CLOSING) error_at(c, "no close frame from the server");
                    count_client_closed++;
                    handshake_done(c);
                }
            }
        }
        int n = epoll_wait(epfd, events, 1024, 5);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = &conns[events[i].data.u32];
            if (c->state == S_DEAD) continue;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (c->state == S_CONNECTING && (events[i].events & (EPOLLERR | EPOLLHUP))) {
                    on_writable(c);
                    continue;
                }
                on_readable(c);
            }
            if (c->state != S_DEAD && (events[i].events & EPOLLOUT)) on_writable(c);
        }
    }
    stopping = 1;
    if (broadcast_failed && measuring) {
        measure_end = now_s();
        if (opt_server_pid) server_cpu1 = process_cpu_s(opt_server_pid);
        self_cpu1 = self_cpu_s();
    }
    double elapsed = measure_end - measure_start;
    if (elapsed <= 0) elapsed = 1e-9;
    char cpu[160] = "";
    double ops = mode == MODE_ECHO ? (double)count_msgs : mode == MODE_BROADCAST ? (double)bc_deliveries : (double)count_handshakes;
    int k = snprintf(cpu, sizeof cpu, " loadgen_cpu_pct=%.0f", 100 * (self_cpu1 - self_cpu0) / elapsed);
    if (opt_deflate) k += snprintf(cpu + k, sizeof cpu - (size_t)k, " compressed_pct=%.0f", count_msgs ? 100.0 * count_compressed / count_msgs : 0.0);
    if (opt_server_pid && server_cpu0 >= 0 && server_cpu1 >= 0)
        snprintf(cpu + k, sizeof cpu - (size_t)k, " server_cpu_pct=%.0f server_us_per_op=%.2f",
                 100 * (server_cpu1 - server_cpu0) / elapsed, ops > 0 ? 1e6 * (server_cpu1 - server_cpu0) / ops : 0.0);
    if (mode == MODE_ECHO) {
        uint64_t total = count_msgs;
        printf("msgs=%llu msgs_per_s=%.0f mb_per_s=%.2f p50_us=%llu p99_us=%llu%s errors=%llu\n",
               (unsigned long long)total, total / elapsed, count_bytes / elapsed / 1e6,
               (unsigned long long)percentile(0.50, total + hist_over), (unsigned long long)percentile(0.99, total + hist_over),
               cpu, (unsigned long long)count_errors);
    } else if (mode == MODE_BROADCAST) {
        printf("conns=%d rounds=%llu deliveries=%llu deliveries_per_s=%.0f rounds_per_s=%.2f p50_us=%llu p99_us=%llu%s errors=%llu\n",
               opt_conns, (unsigned long long)bc_rounds, (unsigned long long)bc_deliveries, bc_deliveries / elapsed,
               bc_rounds / elapsed, (unsigned long long)round_percentile(0.50),
               (unsigned long long)round_percentile(0.99), cpu, (unsigned long long)count_errors);
    } else if (mode == MODE_SUBSCRIBE) {
        uint64_t lo = UINT64_MAX, hi = 0, rmin = UINT64_MAX, rmax = 0;
        for (int i = 0; i < opt_conns; i++) {
            if (sub_window_count[i] < lo) lo = sub_window_count[i];
            if (sub_window_count[i] > hi) hi = sub_window_count[i];
            if (conns[i].received < rmin) rmin = conns[i].received;
            if (conns[i].received > rmax) rmax = conns[i].received;
        }
        uint64_t lat_total = sub_lat_count + hist_over;
        uint64_t published_in_window = sub_lat_count ? sub_lat_seq_hi - sub_lat_seq_lo + 1 : 0;
        printf("conns=%d window_s=%.3f deliveries=%llu deliveries_per_s=%.0f pubs_per_s=%.0f pubs_per_s_max=%.0f "
               "received_min=%llu received_max=%llu lat_msgs=%llu lat_pubs=%llu p50_us=%llu p99_us=%llu p999_us=%llu max_us=%llu "
               "loadgen_cpu_pct=%.0f",
               opt_conns, elapsed, (unsigned long long)sub_deliveries, sub_deliveries / elapsed, lo / elapsed, hi / elapsed,
               (unsigned long long)rmin, (unsigned long long)rmax, (unsigned long long)sub_lat_count,
               (unsigned long long)published_in_window,
               (unsigned long long)percentile(0.50, lat_total), (unsigned long long)percentile(0.99, lat_total),
               (unsigned long long)percentile(0.999, lat_total), (unsigned long long)sub_lat_max_us,
               100 * (self_cpu1 - self_cpu0) / elapsed);
        for (int i = 0; i < cpu_count; i++) {
            int first = 1;
            for (int j = 0; j < i; j++) if (!strcmp(cpu_names[j], cpu_names[i])) first = 0;
            if (!first) continue;
            double sum = 0;
            for (int j = i; j < cpu_count; j++)
                if (!strcmp(cpu_names[j], cpu_names[i]) && cpu_start[j] >= 0 && cpu_end[j] >= 0) sum += cpu_end[j] - cpu_start[j];
            printf(" cpu_%s_s=%.3f cpu_%s_pct=%.1f", cpu_names[i], sum, cpu_names[i], 100 * sum / elapsed);
        }
        printf(" errors=%llu\n", (unsigned long long)count_errors);
    } else if (mode == MODE_HANDSHAKE) {
        printf("handshakes=%llu handshakes_per_s=%.0f client_closed=%llu%s errors=%llu\n",
               (unsigned long long)count_handshakes, count_handshakes / elapsed,
               (unsigned long long)count_client_closed, cpu, (unsigned long long)count_errors);
    } else {
        int open = 0;
        for (int i = 0; i < opt_conns; i++) open += conns[i].state == S_OPEN;
        printf("idle_open=%d errors=%llu\n", open, (unsigned long long)count_errors);
    }
    fflush(stdout);
    for (int i = 0; i < opt_conns; i++) if (conns[i].fd >= 0) close(conns[i].fd);
    return count_errors ? 1 : 0;
}
