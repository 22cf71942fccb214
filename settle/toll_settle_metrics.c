/*
 * toll-settle: the metrics listener (docs/settle.md, "Metrics").
 *
 * A thread accepts one connection at a time, reads one request of at
 * most TOLL_SETTLE_METRICS_REQUEST_LEN_MAX bytes within
 * TOLL_SETTLE_METRICS_READ_MS, answers it and closes.  Those two bounds
 * are what keep a client that connects and says nothing (or says too
 * much) from holding the next scrape.  Every wait also watches a pipe:
 * one byte in it, written by toll_settle_metrics_stop(), ends the thread
 * at once, so that SIGTERM is never held up by a scraper.
 *
 * The page is rendered from a copy of the figures the drain published
 * after its last pass, and from the webhook sender's atomic counters;
 * only the lag is computed at scrape time, from the monotonic clock.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "toll_addr.h"
#include "toll_clock.h"
#include "toll_log.h"
#include "toll_settle_metrics.h"
#include "toll_settle_metrics_page.h"
#include "toll_thread.h"


/* a scrape's request: its line and a few headers fit many times over */
#define TOLL_SETTLE_METRICS_REQUEST_LEN_MAX  8192
/* the whole request, from accept: a silent client holds no longer */
#define TOLL_SETTLE_METRICS_READ_MS          2000
/* the whole answer; it is a few KiB, a socket buffer takes it at once */
#define TOLL_SETTLE_METRICS_WRITE_MS         2000
/*
 * After the answer, what the client still sends is read and dropped for
 * at most this long: a close with unread bytes would reset the
 * connection and might cut the answer short.
 */
#define TOLL_SETTLE_METRICS_LINGER_MS        200
/* the page: every family below is about 4 KiB */
#define TOLL_SETTLE_METRICS_BODY_LEN_MAX     16384
#define TOLL_SETTLE_METRICS_HEAD_LEN_MAX     512
#define TOLL_SETTLE_METRICS_BACKLOG          16
/* accept() out of descriptors: a pause, not a busy loop */
#define TOLL_SETTLE_METRICS_PAUSE_MS         100
#define TOLL_SETTLE_METRICS_METHOD_LEN_MAX   16
#define TOLL_SETTLE_METRICS_VERSION_LEN_MAX  32

#define TOLL_SETTLE_METRICS_PATH             "/metrics"
#define TOLL_SETTLE_METRICS_TYPE                                            \
    "text/plain; version=0.0.4; charset=utf-8"


typedef enum {
    TOLL_SETTLE_IO_READY = 0,
    TOLL_SETTLE_IO_TIMEOUT,
    TOLL_SETTLE_IO_STOP
} toll_settle_io_e;


struct toll_settle_metrics_s {
    /* shared: under mutex */
    pthread_mutex_t            mutex;
    toll_settle_figures_t      figures;
    toll_settle_webhooks_t    *hooks;

    /* set by start, read-only while the thread runs */
    pthread_t                  thread;
    int                        fd;
    int                        wake[2];       /* stop writes, all poll */
    int64_t                    started_mono_ms;
    char                       version[TOLL_SETTLE_METRICS_VERSION_LEN_MAX];

    /* the thread's own */
    int                        accept_failing;  /* logged once a streak */
    char                       request[TOLL_SETTLE_METRICS_REQUEST_LEN_MAX];
    char                       body[TOLL_SETTLE_METRICS_BODY_LEN_MAX];
    char                       out[TOLL_SETTLE_METRICS_HEAD_LEN_MAX
                                   + TOLL_SETTLE_METRICS_BODY_LEN_MAX];
};


static int toll_settle_metrics_listen(toll_settle_metrics_t *m,
    const toll_settle_listen_t *l, char *err, size_t err_size);
static int toll_settle_metrics_spawn(toll_settle_metrics_t *m);
static void toll_settle_metrics_free(toll_settle_metrics_t *m);
static void *toll_settle_metrics_thread(void *arg);
static int toll_settle_metrics_accept_failed(toll_settle_metrics_t *m);
static int toll_settle_metrics_serve(toll_settle_metrics_t *m, int c);
static int toll_settle_metrics_head_end(const char *p, size_t from,
    size_t len);
static int toll_settle_metrics_route(const char *req, size_t len,
    int *head_only);
static int toll_settle_metrics_answer(toll_settle_metrics_t *m, int c,
    int status, int head_only);
static int toll_settle_metrics_send(toll_settle_metrics_t *m, int c,
    const char *p, size_t len);
static int toll_settle_metrics_linger(toll_settle_metrics_t *m, int c);
static toll_settle_io_e toll_settle_metrics_wait(toll_settle_metrics_t *m,
    int c, short events, int64_t deadline_ms);
static size_t toll_settle_metrics_render(toll_settle_metrics_t *m,
    int *overflow);
static int toll_settle_metrics_tchar(unsigned char ch);


/*
 * lib/toll_addr reads the text by the rules every address of toll's
 * follows; only a literal or "localhost" (127.0.0.1, without a resolver)
 * is taken: a listener binds where the docs say, whatever DNS says.
 */
int
toll_settle_listen_parse(const char *text, toll_settle_listen_t *l)
{
    toll_addr_t  a;

    if (strcmp(text, "off") == 0) {
        memset(l, 0, sizeof(toll_settle_listen_t));
        return 0;
    }

    /* an IPv6 literal without brackets is refused: its port is a guess */
    if (strlen(text) >= sizeof(l->text)
        || toll_addr_parse(&a, text, 0) != 0
        || toll_addr_sockaddr(&a, &l->addr, &l->addr_len) != 0)
    {
        return -1;
    }

    snprintf(l->text, sizeof(l->text), "%s", text);

    return 0;
}


int
toll_settle_metrics_start(const toll_settle_listen_t *l, const char *version,
    toll_settle_metrics_t **out, char *err, size_t err_size)
{
    int                     flags, i;
    toll_settle_metrics_t  *m;

    *out = NULL;

    m = calloc(1, sizeof(toll_settle_metrics_t));
    if (m == NULL) {
        snprintf(err, err_size, "metrics: out of memory");
        return EX_OSERR;
    }

    m->fd = -1;
    m->wake[0] = -1;
    m->wake[1] = -1;
    m->started_mono_ms = toll_clock_mono_ms();
    snprintf(m->version, sizeof(m->version), "%s", version);

    if (toll_settle_metrics_listen(m, l, err, err_size) != 0) {
        toll_settle_metrics_free(m);
        return EX_UNAVAILABLE;
    }

    if (pipe(m->wake) != 0) {
        snprintf(err, err_size, "metrics: cannot make a pipe: %s",
                 strerror(errno));
        m->wake[0] = -1;
        m->wake[1] = -1;
        toll_settle_metrics_free(m);
        return EX_OSERR;
    }

    for (i = 0; i < 2; i++) {
        flags = fcntl(m->wake[i], F_GETFD);
        (void) fcntl(m->wake[i], F_SETFD, flags | FD_CLOEXEC);
    }

    if (pthread_mutex_init(&m->mutex, NULL) != 0) {
        snprintf(err, err_size, "metrics: cannot make a mutex");
        toll_settle_metrics_free(m);
        return EX_OSERR;
    }

    if (toll_settle_metrics_spawn(m) != 0) {
        snprintf(err, err_size, "metrics: cannot start the listener thread");
        pthread_mutex_destroy(&m->mutex);
        toll_settle_metrics_free(m);
        return EX_OSERR;
    }

    *out = m;

    return EX_OK;
}


void
toll_settle_metrics_publish(toll_settle_metrics_t *m,
    const toll_settle_figures_t *f)
{
    if (m == NULL) {
        return;
    }

    pthread_mutex_lock(&m->mutex);
    m->figures = *f;
    pthread_mutex_unlock(&m->mutex);
}


void
toll_settle_metrics_hooks(toll_settle_metrics_t *m,
    toll_settle_webhooks_t *w)
{
    if (m == NULL) {
        return;
    }

    /* a scrape reads the sender's counters under this mutex: after the
     * unlock, no scrape holds the old pointer */
    pthread_mutex_lock(&m->mutex);
    m->hooks = w;
    pthread_mutex_unlock(&m->mutex);
}


void
toll_settle_metrics_stop(toll_settle_metrics_t *m)
{
    ssize_t  n;

    if (m == NULL) {
        return;
    }

    /* never read: the pipe stays readable, and every wait sees it */
    do {
        n = write(m->wake[1], "x", 1);
    } while (n == -1 && errno == EINTR);

    if (n != 1 || pthread_join(m->thread, NULL) != 0) {
        /* the thread may still run: its memory must stay */
        toll_log("metrics: cannot stop the listener thread");
        return;
    }

    pthread_mutex_destroy(&m->mutex);
    toll_settle_metrics_free(m);
}


static int
toll_settle_metrics_listen(toll_settle_metrics_t *m,
    const toll_settle_listen_t *l, char *err, size_t err_size)
{
    int  fd, on;

    fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, err_size, "cannot listen for metrics on %s: %s",
                 l->text, strerror(errno));
        return -1;
    }

    on = 1;

    /*
     * A restart finds its old connections in TIME_WAIT, which must not
     * stop it; a port that another socket listens on is still refused.
     */
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));

    /* "[::]" means IPv6 only, as in nginx: "0.0.0.0" may share the port */
    if (l->addr.ss_family == AF_INET6) {
        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    }

    if (bind(fd, (const struct sockaddr *) &l->addr, l->addr_len) != 0
        || listen(fd, TOLL_SETTLE_METRICS_BACKLOG) != 0)
    {
        snprintf(err, err_size, "cannot listen for metrics on %s: %s; free "
                 "the port or change metrics_listen", l->text,
                 strerror(errno));
        close(fd);
        return -1;
    }

    m->fd = fd;

    return 0;
}


/*
 * The thread starts with the asynchronous signals blocked, so that
 * SIGTERM and SIGINT reach the drain thread and interrupt its sleeps.
 */
static int
toll_settle_metrics_spawn(toll_settle_metrics_t *m)
{
    return toll_thread_start(&m->thread, toll_settle_metrics_thread, m);
}


/* after the thread has ended, or when it never started */
static void
toll_settle_metrics_free(toll_settle_metrics_t *m)
{
    if (m->fd != -1) {
        close(m->fd);
    }

    if (m->wake[0] != -1) {
        close(m->wake[0]);
        close(m->wake[1]);
    }

    free(m);
}


static void *
toll_settle_metrics_thread(void *arg)
{
    int                     c, n;
    struct pollfd           pfd[2];
    toll_settle_metrics_t  *m;

    m = arg;

    for ( ;; ) {
        pfd[0].fd = m->wake[0];
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        pfd[1].fd = m->fd;
        pfd[1].events = POLLIN;
        pfd[1].revents = 0;

        n = poll(pfd, 2, -1);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            toll_log("metrics: poll: %s; the listener stops",
                     strerror(errno));
            break;
        }

        if (pfd[0].revents != 0) {
            break;
        }

        if (pfd[1].revents == 0) {
            continue;
        }

        c = accept(m->fd, NULL, NULL);

        if (c == -1) {
            if (toll_settle_metrics_accept_failed(m) != 0) {
                break;
            }

            continue;
        }

        m->accept_failing = 0;

        n = toll_settle_metrics_serve(m, c);
        close(c);

        if (n != 0) {
            break;
        }
    }

    return NULL;
}


/* 0: go on; 1: asked to stop during the pause */
static int
toll_settle_metrics_accept_failed(toll_settle_metrics_t *m)
{
    int      err;
    int64_t  deadline_ms;

    err = errno;

    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        /* the client left (ECONNABORTED) or a signal: nothing is wrong */
        return 0;
    }

    if (!m->accept_failing) {
        m->accept_failing = 1;
        toll_log("metrics: cannot accept a scrape: %s",
                 strerror(err));
    }

    /* the connection stays queued: poll() would return at once */
    deadline_ms = toll_clock_mono_ms() + TOLL_SETTLE_METRICS_PAUSE_MS;

    return toll_settle_metrics_wait(m, -1, 0, deadline_ms)
           == TOLL_SETTLE_IO_STOP;
}


/* one connection: its request, the answer; 1 when asked to stop */
static int
toll_settle_metrics_serve(toll_settle_metrics_t *m, int c)
{
    int               status, head_only;
    size_t            len, from;
    ssize_t           n;
    int64_t           deadline_ms;
    toll_settle_io_e  io;

    len = 0;
    head_only = 0;
    deadline_ms = toll_clock_mono_ms() + TOLL_SETTLE_METRICS_READ_MS;

    for ( ;; ) {
        io = toll_settle_metrics_wait(m, c, POLLIN, deadline_ms);

        if (io != TOLL_SETTLE_IO_READY) {
            /* a client that says nothing in time is not answered */
            return io == TOLL_SETTLE_IO_STOP;
        }

        n = recv(c, m->request + len, sizeof(m->request) - len,
                 MSG_DONTWAIT);

        if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }

        if (n <= 0) {
            return 0;                 /* gone before asking */
        }

        /* a byte at a time must not cost a rescan of all before it */
        from = (len > 2) ? len - 2 : 0;
        len += n;

        if (toll_settle_metrics_head_end(m->request, from, len)) {
            status = toll_settle_metrics_route(m->request, len, &head_only);
            break;
        }

        if (len == sizeof(m->request)) {
            status = 400;             /* not a scrape */
            break;
        }
    }

    return toll_settle_metrics_answer(m, c, status, head_only);
}


/* the blank line after the headers, "\n\n" or "\n\r\n", from p[from] */
static int
toll_settle_metrics_head_end(const char *p, size_t from, size_t len)
{
    size_t  i;

    for (i = from; i + 1 < len; i++) {
        if (p[i] != '\n') {
            continue;
        }

        if (p[i + 1] == '\n'
            || (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n'))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The request line, "METHOD TARGET HTTP/1.x": the status to answer.
 * The headers are not looked at: nothing in them changes the answer.
 */
static int
toll_settle_metrics_route(const char *req, size_t len, int *head_only)
{
    size_t               i, eol, method_len, target, target_len, plen;
    const unsigned char  *p;

    p = (const unsigned char *) req;

    for (eol = 0; eol < len && p[eol] != '\n'; eol++) { /* void */ }

    if (eol > 0 && p[eol - 1] == '\r') {
        eol--;
    }

    for (i = 0; i < eol && toll_settle_metrics_tchar(p[i]); i++) {
        /* void */
    }

    if (i == 0 || i > TOLL_SETTLE_METRICS_METHOD_LEN_MAX || i == eol
        || p[i] != ' ')
    {
        return 400;
    }

    method_len = i;
    target = i + 1;

    for (i = target; i < eol && p[i] > 0x20 && p[i] < 0x7f; i++) {
        /* void */
    }

    target_len = i - target;

    if (target_len == 0 || i == eol || p[i] != ' '
        || eol - i - 1 != sizeof("HTTP/1.1") - 1
        || (memcmp(req + i + 1, "HTTP/1.1", 8) != 0
            && memcmp(req + i + 1, "HTTP/1.0", 8) != 0)
        || p[target] != '/')
    {
        return 400;
    }

    /* "/metrics", with or without a query string, which is ignored */
    plen = sizeof(TOLL_SETTLE_METRICS_PATH) - 1;

    if (target_len < plen
        || memcmp(req + target, TOLL_SETTLE_METRICS_PATH, plen) != 0
        || (target_len > plen && p[target + plen] != '?'))
    {
        return 404;
    }

    if (method_len == 3 && memcmp(req, "GET", 3) == 0) {
        return 200;
    }

    if (method_len == 4 && memcmp(req, "HEAD", 4) == 0) {
        *head_only = 1;
        return 200;
    }

    return 405;
}


static int
toll_settle_metrics_answer(toll_settle_metrics_t *m, int c, int status,
    int head_only)
{
    int          n, overflow;
    size_t       body_len;
    const char  *reason, *type, *body;

    type = "text/plain; charset=utf-8";
    body_len = 0;

    switch (status) {

    case 200:
        body_len = toll_settle_metrics_render(m, &overflow);

        if (!overflow) {
            reason = "OK";
            type = TOLL_SETTLE_METRICS_TYPE;
            body = m->body;
            break;
        }

        /* a family added without room for it: a bug, not the drain's */
        toll_log("metrics: the page is over %d bytes",
                 TOLL_SETTLE_METRICS_BODY_LEN_MAX);
        status = 500;
        reason = "Internal Server Error";
        body = "the metrics page is too large\n";
        break;

    case 404:
        reason = "Not Found";
        body = "not found: the metrics are at " TOLL_SETTLE_METRICS_PATH "\n";
        break;

    case 405:
        reason = "Method Not Allowed";
        body = "method not allowed: use GET\n";
        break;

    default:
        status = 400;
        reason = "Bad Request";
        body = "bad request\n";
        break;
    }

    if (body != m->body) {
        body_len = strlen(body);
    }

    /* one buffer, one send: a second small segment would wait on Nagle */

    n = snprintf(m->out, TOLL_SETTLE_METRICS_HEAD_LEN_MAX,
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "%s"
                 "Cache-Control: no-store\r\n"
                 "Connection: close\r\n"
                 "\r\n",
                 status, reason, type, body_len,
                 (status == 405) ? "Allow: GET, HEAD\r\n" : "");

    if (n < 0 || n >= TOLL_SETTLE_METRICS_HEAD_LEN_MAX) {
        return 0;
    }

    if (!head_only) {
        memcpy(m->out + n, body, body_len);
        n += body_len;
    }

    if (toll_settle_metrics_send(m, c, m->out, (size_t) n) != 0) {
        return 1;
    }

    return toll_settle_metrics_linger(m, c);
}


/* 0 sent or given up on; 1 asked to stop */
static int
toll_settle_metrics_send(toll_settle_metrics_t *m, int c, const char *p,
    size_t len)
{
    ssize_t           n;
    int64_t           deadline_ms;
    toll_settle_io_e  io;

    deadline_ms = toll_clock_mono_ms() + TOLL_SETTLE_METRICS_WRITE_MS;

    while (len > 0) {
        n = send(c, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }

        if (n == -1 && errno != EAGAIN && errno != EINTR) {
            return 0;                 /* the client left */
        }

        io = toll_settle_metrics_wait(m, c, POLLOUT, deadline_ms);

        if (io != TOLL_SETTLE_IO_READY) {
            return io == TOLL_SETTLE_IO_STOP;
        }
    }

    return 0;
}


/* 0 done; 1 asked to stop */
static int
toll_settle_metrics_linger(toll_settle_metrics_t *m, int c)
{
    ssize_t           n;
    int64_t           deadline_ms;
    toll_settle_io_e  io;

    if (shutdown(c, SHUT_WR) != 0) {
        return 0;
    }

    deadline_ms = toll_clock_mono_ms() + TOLL_SETTLE_METRICS_LINGER_MS;

    for ( ;; ) {
        io = toll_settle_metrics_wait(m, c, POLLIN, deadline_ms);

        if (io != TOLL_SETTLE_IO_READY) {
            return io == TOLL_SETTLE_IO_STOP;
        }

        n = recv(c, m->request, sizeof(m->request), MSG_DONTWAIT);

        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
            return 0;                 /* the client closed: done */
        }
    }
}


/*
 * Until c is ready for events (c = -1: only the stop), the deadline
 * passes, or the stop pipe is readable, which wins over both.
 */
static toll_settle_io_e
toll_settle_metrics_wait(toll_settle_metrics_t *m, int c, short events,
    int64_t deadline_ms)
{
    int            n;
    int64_t        left;
    struct pollfd  pfd[2];

    for ( ;; ) {
        left = deadline_ms - toll_clock_mono_ms();

        pfd[0].fd = m->wake[0];
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        pfd[1].fd = c;
        pfd[1].events = events;
        pfd[1].revents = 0;

        n = poll(pfd, 2, (left > 0) ? (int) left : 0);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            return TOLL_SETTLE_IO_TIMEOUT;
        }

        if (pfd[0].revents != 0) {
            return TOLL_SETTLE_IO_STOP;
        }

        /* an error or a hang-up counts as ready: recv() or send() says */
        if (pfd[1].revents != 0) {
            return TOLL_SETTLE_IO_READY;
        }

        if (left <= 0) {
            return TOLL_SETTLE_IO_TIMEOUT;
        }
    }
}


/*
 * The page, into m->body, from a copy of the figures taken under the
 * mutex (toll_settle_metrics_page.c writes it).
 */
static size_t
toll_settle_metrics_render(toll_settle_metrics_t *m, int *overflow)
{
    int64_t                    since_ms;
    toll_settle_figures_t      f;
    toll_settle_hook_stats_t   hs;

    pthread_mutex_lock(&m->mutex);
    f = m->figures;
    toll_settle_webhooks_stats(m->hooks, &hs);
    pthread_mutex_unlock(&m->mutex);

    /*
     * The lag from the monotonic clock, now: it must grow while no pass
     * completes, which a figure published by the passes cannot do.
     */
    since_ms = (f.full_pass_unix_ms != 0) ? f.full_pass_mono_ms
                                          : m->started_mono_ms;

    return toll_settle_metrics_page(m->body, sizeof(m->body), m->version,
                                    &f, &hs, toll_clock_mono_ms() - since_ms,
                                    overflow);
}


/* RFC 9110 token characters, those of a method */
static int
toll_settle_metrics_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
           || (ch >= '0' && ch <= '9')
           || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}
