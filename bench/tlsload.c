/*
 * tlsload: the benchmark's load generator (C, OpenSSL, epoll).
 *
 * A Python client loop cannot saturate a Python server, so every
 * connection-rate, request-rate and bulk measurement of the suite is driven
 * by this program, the same way for every peer.  It speaks a minimal
 * HTTP/1.1 (GET /<size>, responses framed by Content-Length) or AMP (an Echo
 * box), optionally after securenet's authentication exchange (AUTH EXTERNAL,
 * docs/protocol.md), over mutual TLS.  Like securenet's own client it
 * pipelines AUTH EXTERNAL (sent right after the handshake, before the
 * greeting is read; docs/protocol.md, "Pipelining EXTERNAL") unless
 * --no-pipeline, which waits for the greeting first.  With --early-data the
 * first request leaves with the AUTH line (AUTH EXTERNAL = EARLY; "Early
 * application data"), as securenet.connect(early_data=True) sends it.
 *
 * Modes:
 *   conn  each slot loops: TCP connect, TLS handshake (full, or resumed with
 *         the thread's last session when --resume), [auth], one request,
 *         one response, close_notify, close.
 *   keep  --conns persistent connections, each keeping --depth requests in
 *         flight (pipelined); with --interval-ms, one request per interval
 *         on schedule (a latency probe).
 *   hold  open --conns connections, authenticate, one request each, print
 *         "READY n errors", keep them idle until stdin closes (or
 *         --hold-seconds), then close them.
 *
 * Every run is bounded: --warmup + --duration seconds (hold: --hold-seconds).
 * The result is one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { M_CONN, M_KEEP, M_HOLD };
enum { P_HTTP, P_AMP };
enum { CS_FREE, CS_CONNECTING, CS_HANDSHAKE, CS_GREETING, CS_AUTHOK, CS_RUN, CS_IDLE };

#define RING 256
#define RBUF (256 * 1024)

static struct {
    const char *host, *ca, *cert, *key, *path;
    int port, mode, proto, conns, depth, threads, resume, auth, amp_size, verify, pipeline, early;
    double duration, warmup, interval_ms, hold_seconds;
} o = {.host = "127.0.0.1", .path = "/64", .mode = M_KEEP, .proto = P_HTTP, .conns = 1, .depth = 1, .threads = 1,
       .amp_size = 64, .pipeline = 1, .duration = 2.0, .warmup = 0.5, .hold_seconds = 30};

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static char *req;       /* one request */
static size_t reqlen;
static char *reqs;      /* RING requests back to back (pipelining) */
static char *early_buf; /* --early-data: the AUTH line and the first request in one write */
static size_t early_len;
static double t_begin, t_measure, t_end;
static volatile int stop_all;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct thread;

struct conn {
    int fd, state, id;
    SSL *ssl;
    struct thread *t;
    double t_start;
    double sent[RING];
    int rh, rt, inflight;
    char line[2048];
    int linelen;
    /* response parser */
    int ps, match;
    char hdr[4096];
    int hlen;
    long long left;
    int klen;
    /* pending write */
    const char *wbuf;
    size_t wlen;
    int ev;        /* registered epoll events */
    int owed;      /* requests to send once the current write finishes */
    double next_tick;
    int done;      /* hold: finished its request */
};

struct thread {
    int idx, ep, nconns;
    struct conn *conns;
    SSL_SESSION *sess;
    long long ops, bytes, errors, connects, resumed, handshakes, idle;
    double *lat;
    size_t nlat, caplat;
    char first_error[256];
    char tls[128];
    unsigned char rbuf[RBUF];
    pthread_t th;
};

static struct thread *threads;

static void record_error(struct thread *t, const char *what) {
    t->errors++;
    if (!t->first_error[0]) {
        unsigned long e = ERR_peek_error();
        char buf[160] = "";
        if (e) ERR_error_string_n(e, buf, sizeof buf);
        snprintf(t->first_error, sizeof t->first_error, "%s %s errno=%d", what, buf, errno);
    }
    ERR_clear_error();
}

static void set_events(struct conn *c, int ev) {
    if (c->ev == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->t->ep, c->ev ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
    c->ev = ev;
}

static void close_conn(struct conn *c, int graceful) {
    if (c->ssl) {
        if (graceful) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        epoll_ctl(c->t->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->ev = 0;
    c->state = CS_FREE;
}

static void start_conn(struct conn *c) {
    struct thread *t = c->t;
    memset(&c->t_start, 0, sizeof *c - offsetof(struct conn, t_start));
    c->t_start = now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        record_error(t, "socket");
        c->state = CS_FREE;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ev = 0;
    c->state = CS_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        record_error(t, "connect");
        close_conn(c, 0);
        return;
    }
    set_events(c, EPOLLOUT);
}

static int send_requests(struct conn *c, int k, double when);

static int flush_write(struct conn *c) {
    while (c->wlen > 0) {
        int n = SSL_write(c->ssl, c->wbuf, (int)c->wlen);
        if (n > 0) {
            c->wbuf += n;
            c->wlen -= n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        record_error(c->t, "write");
        return -1;
    }
    set_events(c, EPOLLIN);
    if (c->owed > 0 && c->state == CS_RUN) return send_requests(c, 0, now());
    return 0;
}

static int send_requests(struct conn *c, int k, double when) {
    c->owed += k;
    if (c->wlen > 0 || c->owed <= 0) return 0; /* still writing the previous batch */
    k = c->owed;
    if (k > RING - 1 - c->inflight) k = RING - 1 - c->inflight;
    if (k <= 0) return 0;
    c->owed -= k;
    for (int i = 0; i < k; i++) {
        c->sent[c->rt] = when;
        c->rt = (c->rt + 1) % RING;
    }
    c->inflight += k;
    c->wbuf = reqs;
    c->wlen = reqlen * k;
    return flush_write(c);
}

static void response_done(struct conn *c, double t) {
    struct thread *t_ = c->t;
    double sent = c->sent[c->rh];
    c->rh = (c->rh + 1) % RING;
    c->inflight--;
    if (t >= t_measure && t <= t_end) {
        t_->ops++;
        if (t_->nlat < t_->caplat) t_->lat[t_->nlat++] = (o.mode == M_CONN ? t - c->t_start : t - sent);
    }
}

/* Feed response bytes; returns responses completed, -1 on a protocol error. */
static int parse(struct conn *c, const unsigned char *p, size_t n, double t) {
    int done = 0;
    size_t i = 0;
    while (i < n) {
        if (o.proto == P_HTTP) {
            if (c->ps == 0) {
                unsigned char b = p[i++];
                if (c->hlen < (int)sizeof c->hdr - 1) c->hdr[c->hlen++] = b;
                static const char pat[] = "\r\n\r\n";
                if (b == (unsigned char)pat[c->match]) c->match++;
                else c->match = (b == '\r') ? 1 : 0;
                if (c->match == 4) {
                    c->hdr[c->hlen] = 0;
                    if (strncmp(c->hdr, "HTTP/1.1 200", 12) != 0) {
                        record_error(c->t, "status");
                        return -1;
                    }
                    char *cl = strcasestr(c->hdr, "content-length:");
                    c->left = cl ? atoll(cl + 15) : 0;
                    c->match = 0;
                    c->hlen = 0;
                    if (c->left == 0) {
                        response_done(c, t);
                        done++;
                    } else
                        c->ps = 1;
                }
            } else {
                size_t k = n - i < (size_t)c->left ? n - i : (size_t)c->left;
                i += k;
                c->left -= k;
                if (c->left == 0) {
                    c->ps = 0;
                    response_done(c, t);
                    done++;
                }
            }
        } else { /* AMP box: (u16 klen, key, u16 vlen, value)*, u16 0 */
            switch (c->ps) {
            case 0: c->klen = p[i++] << 8; c->ps = 1; break;
            case 1:
                c->klen |= p[i++];
                if (c->klen == 0) {
                    c->ps = 0;
                    response_done(c, t);
                    done++;
                } else {
                    c->left = c->klen;
                    c->ps = 2;
                }
                break;
            case 2: case 5: {
                size_t k = n - i < (size_t)c->left ? n - i : (size_t)c->left;
                i += k;
                c->left -= k;
                if (c->left == 0) c->ps = (c->ps == 2) ? 3 : 0;
                break;
            }
            case 3: c->klen = p[i++] << 8; c->ps = 4; break;
            case 4:
                c->klen |= p[i++];
                c->left = c->klen;
                c->ps = c->left ? 5 : 0;
                break;
            }
        }
    }
    return done;
}

static void next_step(struct conn *c);

/* After the handshake (and the exchange): start the application traffic. */
static void app_ready(struct conn *c) {
    c->state = CS_RUN;
    double t = now();
    if (o.mode == M_KEEP && o.interval_ms > 0) {
        c->next_tick = t;
        set_events(c, EPOLLIN);
        return;
    }
    int k = (o.mode == M_KEEP) ? o.depth : 1;
    if (send_requests(c, k, t) < 0) close_conn(c, 0);
}

/* A line of the securenet exchange. */
static int exchange_line(struct conn *c) {
    c->line[c->linelen] = 0;
    if (c->state == CS_GREETING) {
        if (strncmp(c->line, "SECURENET ", 10) != 0) {
            record_error(c->t, "greeting");
            return -1;
        }
        c->state = CS_AUTHOK;
        if (o.pipeline) return 0; /* AUTH already sent with the handshake's last flight */
        c->wbuf = "AUTH EXTERNAL =\r\n";
        c->wlen = strlen(c->wbuf);
        return flush_write(c);
    }
    if (strncmp(c->line, "OK ", 3) != 0) {
        snprintf(c->t->first_error, sizeof c->t->first_error, "auth refused: %.200s", c->line);
        c->t->errors++;
        return -1;
    }
    if (o.early) {
        c->state = CS_RUN; /* the first request is already on its way */
        if (o.mode == M_KEEP && o.depth > 1 && o.interval_ms <= 0) return send_requests(c, o.depth - 1, now());
        return 0;
    }
    app_ready(c);
    return 0;
}

static void on_readable(struct conn *c) {
    struct thread *t = c->t;
    for (;;) {
        int n = SSL_read(c->ssl, t->rbuf, RBUF);
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ) return;
            if (err == SSL_ERROR_WANT_WRITE) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return;
            }
            if (c->state == CS_IDLE) { /* the server closed an idle connection */
                t->idle--;
            }
            record_error(t, err == SSL_ERROR_ZERO_RETURN ? "closed by server" : "read");
            close_conn(c, 0);
            return;
        }
        double tn = now();
        if (tn >= t_measure && tn <= t_end) t->bytes += n;
        size_t i = 0;
        while ((c->state == CS_GREETING || c->state == CS_AUTHOK) && i < (size_t)n) {
            char b = t->rbuf[i++];
            if (b == '\n') {
                if (c->linelen && c->line[c->linelen - 1] == '\r') c->linelen--;
                if (exchange_line(c) < 0) {
                    close_conn(c, 0);
                    return;
                }
                c->linelen = 0;
            } else if (c->linelen < (int)sizeof c->line - 1)
                c->line[c->linelen++] = b;
        }
        if (i >= (size_t)n) continue;
        if (c->state != CS_RUN && c->state != CS_IDLE) continue;
        int done = parse(c, t->rbuf + i, n - i, tn);
        if (done < 0) {
            close_conn(c, 0);
            return;
        }
        if (done == 0) continue;
        if (o.mode == M_CONN) {
            if (o.resume) {
                SSL_SESSION *s = SSL_get1_session(c->ssl);
                if (s && SSL_SESSION_is_resumable(s)) {
                    if (t->sess) SSL_SESSION_free(t->sess);
                    t->sess = s;
                } else if (s)
                    SSL_SESSION_free(s);
            }
            close_conn(c, 1);
            if (!stop_all && now() < t_end) start_conn(c);
            return;
        }
        if (o.mode == M_HOLD) {
            if (!c->done) {
                c->done = 1;
                c->state = CS_IDLE;
                t->idle++;
            }
            continue;
        }
        if (o.interval_ms <= 0 && tn < t_end) {
            if (send_requests(c, done, tn) < 0) {
                close_conn(c, 0);
                return;
            }
        }
    }
}

static void next_step(struct conn *c) {
    struct thread *t = c->t;
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            record_error(t, "connect");
            close_conn(c, 0);
            return;
        }
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (o.resume && t->sess) SSL_set_session(c->ssl, t->sess);
        SSL_set_connect_state(c->ssl);
        c->state = CS_HANDSHAKE;
    }
    if (c->state == CS_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) set_events(c, EPOLLIN);
            else if (err == SSL_ERROR_WANT_WRITE) set_events(c, EPOLLOUT);
            else {
                record_error(t, "handshake");
                close_conn(c, 0);
            }
            return;
        }
        t->handshakes++;
        if (SSL_session_reused(c->ssl)) t->resumed++;
        if (!t->tls[0])
            snprintf(t->tls, sizeof t->tls, "%s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
        t->connects++;
        set_events(c, EPOLLIN);
        if (o.auth) {
            c->state = CS_GREETING;
            c->linelen = 0;
            if (o.early) {
                /* early data: the first request leaves with the AUTH line */
                c->sent[c->rt] = now();
                c->rt = (c->rt + 1) % RING;
                c->inflight++;
                c->wbuf = early_buf;
                c->wlen = early_len;
                if (flush_write(c) < 0) {
                    close_conn(c, 0);
                    return;
                }
            } else if (o.pipeline) {
                c->wbuf = "AUTH EXTERNAL =\r\n";
                c->wlen = strlen(c->wbuf);
                if (flush_write(c) < 0) {
                    close_conn(c, 0);
                    return;
                }
            }
        } else
            app_ready(c);
        if (c->fd >= 0 && c->state >= CS_GREETING) on_readable(c);
        return;
    }
}

static void on_event(struct conn *c, int ev) {
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) {
        next_step(c);
        return;
    }
    if (c->state == CS_FREE) return;
    if ((ev & EPOLLOUT) && c->wlen > 0) {
        if (flush_write(c) < 0) {
            close_conn(c, 0);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    else if (c->wlen == 0 && (c->ev & EPOLLOUT)) set_events(c, EPOLLIN);
}

static void *run_thread(void *arg) {
    struct thread *t = arg;
    t->ep = epoll_create1(0);
    struct epoll_event evs[256];
    int opened = 0;
    double hold_until = 0;
    /* hold: open connections at most 64 at a time */
    int batch = (o.mode == M_HOLD) ? 64 : t->nconns;
    for (int i = 0; i < t->nconns && i < batch; i++, opened++) start_conn(&t->conns[i]);
    for (;;) {
        double tn = now();
        if (stop_all) break;
        if (o.mode != M_HOLD && tn >= t_end) break;
        if (o.mode == M_HOLD && tn >= t_begin + o.hold_seconds) break;
        int timeout = 50;
        if (o.mode == M_KEEP && o.interval_ms > 0) {
            for (int i = 0; i < t->nconns; i++) {
                struct conn *c = &t->conns[i];
                if (c->state != CS_RUN) continue;
                while (c->next_tick <= tn) {
                    if (c->inflight < RING - 1) send_requests(c, 1, c->next_tick);
                    c->next_tick += o.interval_ms / 1000.0;
                }
                int ms = (int)((c->next_tick - tn) * 1000) + 1;
                if (ms < timeout) timeout = ms;
            }
        }
        int n = epoll_wait(t->ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
        if (o.mode == M_HOLD) {
            int active = 0;
            for (int i = 0; i < opened; i++)
                if (t->conns[i].state != CS_FREE && t->conns[i].state != CS_IDLE) active++;
            while (opened < t->nconns && active < batch) {
                start_conn(&t->conns[opened++]);
                active++;
            }
        } else if (o.mode == M_KEEP || o.mode == M_CONN) {
            /* a slot that failed reconnects (bounded by the run's end) */
            if (now() < t_end)
                for (int i = 0; i < t->nconns; i++)
                    if (t->conns[i].state == CS_FREE) start_conn(&t->conns[i]);
        }
        if (o.mode == M_HOLD && opened == t->nconns && !hold_until) {
            int pending = 0;
            for (int i = 0; i < t->nconns; i++)
                if (t->conns[i].state != CS_FREE && t->conns[i].state != CS_IDLE) pending++;
            if (!pending) hold_until = 1; /* all idle or failed: main thread reports */
        }
        if (t->errors > 100000) break;
    }
    for (int i = 0; i < t->nconns; i++)
        if (t->conns[i].state != CS_FREE) close_conn(&t->conns[i], 1);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void build_request(void) {
    if (o.proto == P_HTTP) {
        req = malloc(1024);
        reqlen = snprintf(req, 1024, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", o.path,
                          o.mode == M_CONN ? "Connection: close\r\n" : "");
    } else {
        size_t cap = 64 + o.amp_size;
        unsigned char *b = malloc(cap);
        size_t n = 0;
        const char *kv[][2] = {{"_command", "Echo"}, {"_ask", "1"}, {"value", NULL}};
        for (int i = 0; i < 3; i++) {
            size_t kl = strlen(kv[i][0]);
            size_t vl = kv[i][1] ? strlen(kv[i][1]) : (size_t)o.amp_size;
            b[n++] = kl >> 8; b[n++] = kl & 255;
            memcpy(b + n, kv[i][0], kl); n += kl;
            b[n++] = vl >> 8; b[n++] = vl & 255;
            if (kv[i][1]) memcpy(b + n, kv[i][1], vl);
            else memset(b + n, 'x', vl);
            n += vl;
        }
        b[n++] = 0; b[n++] = 0;
        req = (char *)b;
        reqlen = n;
    }
    reqs = malloc(reqlen * RING);
    for (int i = 0; i < RING; i++) memcpy(reqs + i * reqlen, req, reqlen);
    static const char auth_early[] = "AUTH EXTERNAL = EARLY\r\n";
    early_len = strlen(auth_early) + reqlen;
    early_buf = malloc(early_len);
    memcpy(early_buf, auth_early, strlen(auth_early));
    memcpy(early_buf + strlen(auth_early), req, reqlen);
}

static void usage(void) {
    fprintf(stderr,
            "usage: tlsload --port P --ca CA [--cert C --key K] [--mode conn|keep|hold] [--proto http|amp]\n"
            "  [--path /64] [--amp-size N] [--conns N] [--depth N] [--threads N] [--duration S] [--warmup S]\n"
            "  [--resume] [--auth-external [--no-pipeline | --early-data]] [--verify] [--interval-ms MS] [--hold-seconds S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--host")) o.host = ARG();
        else if (!strcmp(a, "--port")) o.port = atoi(ARG());
        else if (!strcmp(a, "--ca")) o.ca = ARG();
        else if (!strcmp(a, "--cert")) o.cert = ARG();
        else if (!strcmp(a, "--key")) o.key = ARG();
        else if (!strcmp(a, "--path")) o.path = ARG();
        else if (!strcmp(a, "--mode")) {
            const char *m = ARG();
            o.mode = !strcmp(m, "conn") ? M_CONN : !strcmp(m, "hold") ? M_HOLD : M_KEEP;
        } else if (!strcmp(a, "--proto")) o.proto = !strcmp(ARG(), "amp") ? P_AMP : P_HTTP;
        else if (!strcmp(a, "--amp-size")) o.amp_size = atoi(ARG());
        else if (!strcmp(a, "--conns")) o.conns = atoi(ARG());
        else if (!strcmp(a, "--depth")) o.depth = atoi(ARG());
        else if (!strcmp(a, "--threads")) o.threads = atoi(ARG());
        else if (!strcmp(a, "--duration")) o.duration = atof(ARG());
        else if (!strcmp(a, "--warmup")) o.warmup = atof(ARG());
        else if (!strcmp(a, "--interval-ms")) o.interval_ms = atof(ARG());
        else if (!strcmp(a, "--hold-seconds")) o.hold_seconds = atof(ARG());
        else if (!strcmp(a, "--resume")) o.resume = 1;
        else if (!strcmp(a, "--auth-external")) o.auth = 1;
        else if (!strcmp(a, "--no-pipeline")) o.pipeline = 0;
        else if (!strcmp(a, "--early-data")) o.early = 1;
        else if (!strcmp(a, "--verify")) o.verify = 1;
        else usage();
    }
    if (!o.port || !o.ca) usage();
    if (o.depth < 1) o.depth = 1;
    if (o.depth > RING - 1) o.depth = RING - 1;
    if (o.threads < 1) o.threads = 1;
    if (o.threads > o.conns) o.threads = o.conns;
    if (o.amp_size > 65535) o.amp_size = 65535;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(o.port);
    inet_pton(AF_INET, o.host, &addr.sin_addr);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, o.ca, NULL) != 1) {
        fprintf(stderr, "tlsload: cannot load CA %s\n", o.ca);
        return 2;
    }
    /* Verifying the server's chain is the client's cost, not the server's: off
     * unless --verify (OpenSSL 3.0's X509_verify_cert would otherwise halve the
     * connection rate this client can drive). */
    SSL_CTX_set_verify(ctx, o.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (o.cert && (SSL_CTX_use_certificate_chain_file(ctx, o.cert) != 1 ||
                   SSL_CTX_use_PrivateKey_file(ctx, o.key, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "tlsload: cannot load client certificate %s / %s\n", o.cert, o.key);
        return 2;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    build_request();

    threads = calloc(o.threads, sizeof *threads);
    size_t cap = o.mode == M_HOLD ? 0 : 2000000 / o.threads;
    for (int i = 0; i < o.threads; i++) {
        struct thread *t = &threads[i];
        t->idx = i;
        t->nconns = o.conns / o.threads + (i < o.conns % o.threads);
        t->conns = calloc(t->nconns, sizeof *t->conns);
        for (int j = 0; j < t->nconns; j++) {
            t->conns[j].t = t;
            t->conns[j].fd = -1;
            t->conns[j].id = j;
        }
        t->caplat = cap;
        t->lat = cap ? malloc(cap * sizeof(double)) : NULL;
    }
    t_begin = now();
    t_measure = t_begin + o.warmup;
    t_end = t_measure + o.duration;
    if (o.mode == M_HOLD) t_measure = t_begin, t_end = t_begin + o.hold_seconds;
    for (int i = 0; i < o.threads; i++) pthread_create(&threads[i].th, NULL, run_thread, &threads[i]);

    if (o.mode == M_HOLD) {
        /* report READY once every connection is idle (or failed), then wait for stdin EOF */
        int reported = 0;
        while (now() < t_begin + o.hold_seconds) {
            long long idle = 0, errors = 0, settled = 1;
            for (int i = 0; i < o.threads; i++) {
                idle += threads[i].idle;
                errors += threads[i].errors;
            }
            if (idle + errors < o.conns) settled = 0;
            if (settled && !reported) {
                printf("READY %lld %lld\n", idle, errors);
                fflush(stdout);
                reported = 1;
            }
            if (reported) {
                struct pollfd p = {.fd = 0, .events = POLLIN};
                if (poll(&p, 1, 100) > 0) {
                    char b[64];
                    if (read(0, b, sizeof b) <= 0) break;
                }
            } else
                usleep(20000);
        }
        stop_all = 1;
    }
    for (int i = 0; i < o.threads; i++) pthread_join(threads[i].th, NULL);

    long long ops = 0, bytes = 0, errors = 0, connects = 0, resumed = 0, handshakes = 0, idle = 0;
    size_t nlat = 0;
    const char *tls = "", *ferr = "";
    for (int i = 0; i < o.threads; i++) {
        struct thread *t = &threads[i];
        ops += t->ops; bytes += t->bytes; errors += t->errors; connects += t->connects;
        resumed += t->resumed; handshakes += t->handshakes; nlat += t->nlat; idle += t->idle;
        if (!tls[0]) tls = t->tls;
        if (!ferr[0]) ferr = t->first_error;
    }
    double *lat = malloc((nlat + 1) * sizeof(double));
    size_t k = 0;
    for (int i = 0; i < o.threads; i++) {
        memcpy(lat + k, threads[i].lat, threads[i].nlat * sizeof(double));
        k += threads[i].nlat;
    }
    qsort(lat, nlat, sizeof(double), cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((nlat - 1) * (p))] * 1e6 : 0)
    double secs = o.mode == M_HOLD ? now() - t_begin : o.duration;
    printf("{\"ops\": %lld, \"seconds\": %.3f, \"rate\": %.2f, \"bytes\": %lld, \"mbps\": %.3f, "
           "\"errors\": %lld, \"handshakes\": %lld, \"resumed\": %lld, \"idle\": %lld, "
           "\"lat_us\": {\"n\": %zu, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"max\": %.1f}, "
           "\"tls\": \"%s\", \"first_error\": \"",
           ops, secs, ops / secs, bytes, bytes / secs / 1e6, errors, handshakes, resumed, idle, nlat, PCT(0.5),
           PCT(0.9), PCT(0.99), PCT(1.0), tls);
    for (const char *p = ferr; *p; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 32) putchar(*p);
    printf("\"}\n");
    return 0;
}
