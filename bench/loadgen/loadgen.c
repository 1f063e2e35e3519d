/* A lean HTTP/1.1 load generator for bench.overload: what bench/loadgen/http1.py's RawSender does,
 * without the interpreter. Why it exists: the load generator shares the server's 2 cores, and
 * at 4x capacity the Python one spent ~0.1 cores (py-spy and perf: ~60 % of it the interpreter
 * and asyncio's loop), CPU the server under test did not get. This one does the same requests
 * on the same keep-alive connections at a fraction of that.
 *
 *   loadgen HOST PORT PATH open RATE_PER_S DURATION_S SEED MAX_OUTSTANDING BODY_FILE...
 *   loadgen HOST PORT PATH closed USERS DURATION_S SEED MAX_OUTSTANDING BODY_FILE...
 *
 * open:   Poisson arrivals (seeded), each request timed from its SCHEDULED send time; an arrival
 *         finding MAX_OUTSTANDING requests in flight is dropped and counted, never queued.
 * closed: USERS users, each sending its next body when its last one is answered.
 * Bodies go round-robin, each POSTed as image/jpeg. A request is done when its whole body is
 * written and its whole response read (as RawSender: write, drain, read). A reused keep-alive
 * connection that fails before any byte of its answer is retried once on a new connection.
 *
 * Output, one line per request: status latency_us sent_late_us server_total_us, where status is
 * the HTTP status or a negative error (-1 connect, -2 closed or reset, -3 bad response, -4 no
 * answer) and server_total_us is the Server-Timing "total" (-1 when absent); then a last line
 * "# elapsed_us dropped".
 *
 * After the step's duration, requests still in flight get LOADGEN_DRAIN_S seconds (default 30:
 * three times the service's 10 s deadline) to be answered; one that is not is recorded as -4 and
 * the generator ends, so a lost request shows in the results instead of hanging the run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { E_CONNECT = -1, E_CLOSED = -2, E_BAD = -3, E_NO_ANSWER = -4 };
enum { HEAD_MAX = 16384 };

typedef struct {
    char *head;
    size_t head_len;
    char *body;
    size_t body_len;
} Body;

typedef struct {
    int fd;
    int busy;          /* carrying a request */
    int reused;        /* came from the idle pool: may have been closed by the server */
    int retried;
    int body_index;
    int64_t since_ns;  /* the latency's origin: scheduled (open) or send (closed) time */
    int64_t late_ns;
    size_t written;    /* bytes of head + body written */
    char in[HEAD_MAX];
    size_t in_len;     /* bytes of the response head buffered */
    int head_done;
    int status;
    long long body_left;
    int keep_alive;
    int64_t server_total_us;
} Conn;

typedef struct {
    int status;
    int64_t latency_us, late_us, server_us;
} Result;

static Body *bodies;
static int n_bodies;
static struct sockaddr_storage addr;
static socklen_t addr_len;
static int epfd;
static Conn *conns;
static int max_conns;
static int *idle;  /* stack of idle connection slots */
static int n_idle;
static int *free_slots;  /* slots without a connection */
static int n_free;
static int in_flight;
static Result *results;
static size_t n_results, cap_results;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void record(int status, int64_t latency_ns, int64_t late_ns, int64_t server_us) {
    if (n_results == cap_results) {
        cap_results = cap_results ? cap_results * 2 : 4096;
        results = realloc(results, cap_results * sizeof *results);
        if (!results) die("realloc");
    }
    results[n_results++] = (Result){status, latency_ns / 1000, late_ns / 1000, server_us};
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void drop_conn(Conn *c) {
    close(c->fd);
    c->fd = -1;
    free_slots[n_free++] = (int)(c - conns);
}

static int open_conn(Conn *c) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, addr_len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
    return 0;
}

static void begin(Conn *c, int body_index, int64_t since, int64_t late) {
    c->busy = 1;
    c->retried = 0;
    c->body_index = body_index;
    c->since_ns = since;
    c->late_ns = late;
    c->written = c->in_len = 0;
    c->head_done = c->status = 0;
    c->body_left = 0;
    c->keep_alive = 1;
    c->server_total_us = -1;
}

/* A connection for a request: an idle keep-alive one (unless ``fresh``), else a new one. NULL
 * when none can be had (every slot carries a request) or the connect failed (then recorded). */
static Conn *connection_for(int64_t since, int64_t late, int fresh) {
    if (n_idle > 0 && !fresh) {
        Conn *c = &conns[idle[--n_idle]];
        c->reused = 1;
        watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_MOD);
        return c;
    }
    if (n_free == 0) return NULL;
    Conn *c = &conns[free_slots[--n_free]];
    c->reused = 0;
    if (open_conn(c) < 0) {
        free_slots[n_free++] = (int)(c - conns);
        record(E_CONNECT, now_ns() - since, late, -1);
        return NULL;
    }
    return c;
}

/* Sends body ``index``, timed from ``since``; returns -1 when every slot carries a request. */
static int send_request(int index, int64_t since) {
    int64_t late = now_ns() - since;
    if (n_idle == 0 && n_free == 0) return -1;
    Conn *c = connection_for(since, late, 0);
    if (!c) return 0; /* a failed connect, recorded */
    begin(c, index, since, late);
    in_flight++;
    return 0;
}

static void finish(Conn *c, int status) {
    record(status, now_ns() - c->since_ns, c->late_ns, status > 0 ? c->server_total_us : -1);
    c->busy = 0;
    in_flight--;
    if (status > 0 && c->keep_alive) {
        watch(c, 0, EPOLL_CTL_MOD);
        idle[n_idle++] = (int)(c - conns);
    } else {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        drop_conn(c);
    }
}

/* Waited long enough: recorded as never answered, no retry. */
static void give_up(Conn *c) {
    record(E_NO_ANSWER, now_ns() - c->since_ns, c->late_ns, -1);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    drop_conn(c);
    c->busy = 0;
    in_flight--;
}

/* A failure: a reused connection that had not yet been answered gets one retry, fresh (the
 * server may have closed it while it was idle). */
static void fail(Conn *c, int status) {
    int retry = c->reused && !c->retried && c->in_len == 0 && !c->head_done;
    int index = c->body_index;
    int64_t since = c->since_ns, late = c->late_ns;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    drop_conn(c);
    c->busy = 0;
    in_flight--;
    if (!retry) {
        record(status, now_ns() - since, late, -1);
        return;
    }
    Conn *fresh = connection_for(since, late, 1); /* a slot was just freed: never short of one */
    if (!fresh) return;
    begin(fresh, index, since, late);
    fresh->retried = 1;
    in_flight++;
}

static int failure(const Conn *c) {
    return c->written == 0 && !c->reused ? E_CONNECT : E_CLOSED;
}

static const char *header_value(const char *line, const char *name) {
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':') return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t') line++;
    return line;
}

/* Parses the buffered head; returns 0 on success, -1 when malformed. */
static int parse_head(Conn *c, size_t head_len) {
    c->in[head_len - 2] = '\0'; /* the blank line's CRLF: lines end in "\r\n" before it */
    char *line = c->in;
    char *eol = strstr(line, "\r\n");
    if (!eol || strncmp(line, "HTTP/1.", 7) != 0) return -1;
    *eol = '\0';
    int http10 = line[7] == '0';
    c->status = atoi(line + 9);
    if (c->status < 100) return -1;
    long long length = -1;
    int close_asked = 0, keep_asked = 0;
    for (line = eol + 2; *line; line = eol + 2) {
        eol = strstr(line, "\r\n");
        if (eol) *eol = '\0';
        const char *v;
        if ((v = header_value(line, "content-length"))) length = atoll(v);
        else if ((v = header_value(line, "connection"))) {
            close_asked = strncasecmp(v, "close", 5) == 0;
            keep_asked = strncasecmp(v, "keep-alive", 10) == 0;
        } else if ((v = header_value(line, "server-timing"))) {
            const char *total = strstr(v, "total;dur=");
            if (total) c->server_total_us = (int64_t)(atof(total + 10) * 1000.0);
        }
        if (!eol) break;
    }
    if (length < 0) return -1;
    c->keep_alive = !close_asked && (!http10 || keep_asked);
    c->body_left = length;
    return 0;
}

static void on_readable(Conn *c) {
    for (;;) {
        if (!c->head_done) {
            ssize_t n = read(c->fd, c->in + c->in_len, HEAD_MAX - 1 - c->in_len);
            if (n < 0 && (errno == EAGAIN || errno == EINTR || errno == ENOTCONN)) return;
            if (n <= 0) return fail(c, failure(c));
            c->in_len += (size_t)n;
            c->in[c->in_len] = '\0';
            char *end = strstr(c->in, "\r\n\r\n");
            if (!end) {
                if (c->in_len >= HEAD_MAX - 1) return fail(c, E_BAD);
                continue;
            }
            size_t head_len = (size_t)(end - c->in) + 4;
            size_t extra = c->in_len - head_len;
            if (parse_head(c, head_len) < 0) return fail(c, E_BAD);
            c->head_done = 1;
            c->body_left -= (long long)extra;
        } else if (c->body_left > 0) {
            char sink[65536];
            size_t want = c->body_left < (long long)sizeof sink ? (size_t)c->body_left : sizeof sink;
            ssize_t n = read(c->fd, sink, want);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            if (n <= 0) return fail(c, E_CLOSED);
            c->body_left -= n;
        }
        if (c->head_done && c->body_left <= 0) {
            if (c->body_left < 0) return fail(c, E_BAD); /* more bytes than announced */
            Body *b = &bodies[c->body_index % n_bodies];
            if (c->written >= b->head_len + b->body_len) return finish(c, c->status);
            /* answered before the upload ended (a refusal from the head): finish the upload,
             * as a client must to reuse the connection, then count the request done */
            watch(c, EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
    }
}

static void on_writable(Conn *c) {
    Body *b = &bodies[c->body_index % n_bodies];
    size_t total = b->head_len + b->body_len;
    while (c->written < total) {
        struct iovec iov[2];
        int n_iov = 0;
        if (c->written < b->head_len) {
            iov[n_iov++] = (struct iovec){b->head + c->written, b->head_len - c->written};
            iov[n_iov++] = (struct iovec){b->body, b->body_len};
        } else {
            size_t off = c->written - b->head_len;
            iov[n_iov++] = (struct iovec){b->body + off, b->body_len - off};
        }
        ssize_t n = writev(c->fd, iov, n_iov);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n < 0 && c->head_done) {
            /* answered, then closed mid-upload: the answer stands, the connection ends */
            c->written = total;
            c->keep_alive = 0;
            break;
        }
        if (n < 0) return fail(c, failure(c));
        c->written += (size_t)n;
    }
    if (c->head_done && c->body_left <= 0) return finish(c, c->status);
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void load_bodies(char **paths, int n, const char *host, const char *port,
                        const char *path) {
    bodies = calloc((size_t)n, sizeof *bodies);
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) die(paths[i]);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        bodies[i].body = malloc((size_t)size);
        if (fread(bodies[i].body, 1, (size_t)size, f) != (size_t)size) die("fread");
        fclose(f);
        bodies[i].body_len = (size_t)size;
        bodies[i].head = malloc(512);
        bodies[i].head_len = (size_t)snprintf(
            bodies[i].head, 512,
            "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: image/jpeg\r\n"
            "Content-Length: %ld\r\n\r\n",
            path, host, port, size);
    }
    n_bodies = n;
}

/* Exponential inter-arrival times from a seeded xorshift generator. */
static uint64_t rng_state;
static double next_exp(double rate) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    double u = ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    return -__builtin_log(u) / rate;
}

static void arm(int tfd, int64_t at_ns) {
    struct itimerspec it = {.it_value = {at_ns / 1000000000, at_ns % 1000000000}};
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL) < 0) die("timerfd_settime");
}

int main(int argc, char **argv) {
    if (argc < 10) {
        fprintf(stderr, "usage: %s HOST PORT PATH open|closed RATE|USERS DURATION_S SEED "
                        "MAX_OUTSTANDING BODY_FILE...\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a write to a connection the server closed fails, not kills */
    const char *host = argv[1], *port = argv[2], *path = argv[3];
    int open_loop = strcmp(argv[4], "open") == 0;
    double arg = atof(argv[5]), duration_s = atof(argv[6]);
    rng_state = (uint64_t)atoll(argv[7]) * 2654435761u + 88172645463325252ull;
    max_conns = atoi(argv[8]);
    load_bodies(argv + 9, argc - 9, host, port, path);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, port, &hints, &found) != 0) die("getaddrinfo");
    memcpy(&addr, found->ai_addr, found->ai_addrlen);
    addr_len = found->ai_addrlen;
    freeaddrinfo(found);

    conns = calloc((size_t)max_conns, sizeof *conns);
    idle = calloc((size_t)max_conns, sizeof *idle);
    free_slots = calloc((size_t)max_conns, sizeof *free_slots);
    for (int i = max_conns - 1; i >= 0; i--) {
        conns[i].fd = -1;
        free_slots[n_free++] = i;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

    int64_t start = now_ns(), stop = start + (int64_t)(duration_s * 1e9);
    const char *drain_env = getenv("LOADGEN_DRAIN_S");
    int64_t give_up_at = stop + (int64_t)((drain_env ? atof(drain_env) : 30.0) * 1e9);
    int64_t next = start;
    long long index = 0, dropped = 0;
    int users = open_loop ? 0 : (int)arg;
    if (open_loop) arm(tfd, next);
    else
        for (int i = 0; i < users && i < max_conns; i++) send_request((int)(index++ % n_bodies), now_ns());

    struct epoll_event events[256];
    for (;;) {
        if (now_ns() >= stop && in_flight == 0) break;
        if (now_ns() >= give_up_at) {
            for (int i = 0; i < max_conns; i++)
                if (conns[i].busy && conns[i].fd >= 0) give_up(&conns[i]);
            break;
        }
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            uint32_t id = events[i].data.u32;
            if (id == UINT32_MAX) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timer");
                int64_t t = now_ns();
                while (next <= t && next < stop) {
                    if (send_request((int)(index % n_bodies), next) < 0) dropped++;
                    index++;
                    next += (int64_t)(next_exp(arg) * 1e9);
                }
                if (next < stop) arm(tfd, next);
                continue;
            }
            Conn *c = &conns[id];
            if (c->fd < 0 || !c->busy) {
                /* an idle keep-alive connection the server closed: forget it */
                if (c->fd >= 0 && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    for (int k = 0; k < n_idle; k++)
                        if (idle[k] == (int)id) { idle[k] = idle[--n_idle]; break; }
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    drop_conn(c);
                }
                continue;
            }
            uint32_t ev = events[i].events;
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
            if (c->busy && c->fd >= 0 && (ev & EPOLLOUT)) on_writable(c);
        }
        if (!open_loop) /* each user whose request ended (answered, failed, never connected) */
            while (now_ns() < stop && in_flight < users && n_free + n_idle > 0)
                send_request((int)(index++ % n_bodies), now_ns());
    }
    int64_t elapsed = now_ns() - start;
    FILE *out = stdout;
    for (size_t i = 0; i < n_results; i++)
        fprintf(out, "%d %lld %lld %lld\n", results[i].status, (long long)results[i].latency_us,
                (long long)results[i].late_us, (long long)results[i].server_us);
    fprintf(out, "# %lld %lld\n", (long long)(elapsed / 1000), dropped);
    return 0;
}
