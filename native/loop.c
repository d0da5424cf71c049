/* The wait loop: the worker's select loop for packets, with no interpreter a wake-up.
 *
 * A peer that sends a datagram a syscall (openvpn does) wakes the worker for about one
 * packet at a time; with Python between the wait and the batch loops, the interpreter's
 * cost a wake-up is its cost a packet. Here epoll and the loops of io.c run back to back,
 * and the owner gets control back only when it has work: a `wake` fd is readable (a verb
 * from the control plane), an event waits to go up, or the deadline (keepalive) passed.
 * epoll rather than poll: the set rarely changes, so no wake-up re-polls every fd. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

enum watched_kind { W_WAKE, W_XSK, W_SOCKET, W_TUN };

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* Python's time.monotonic(): the same clock */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int wait_ms(double deadline)
{
    double left = (deadline - monotonic()) * 1000;
    int ms;
    if (left <= 0)
        return 0;
    if (left > 3600 * 1000)
        return 3600 * 1000;
    ms = (int)left;
    return ms < left ? ms + 1 : ms; /* rounded up: no busy wake-up just before it */
}

/* What to watch: the wake fds, the AF_XDP sockets, the UDP socket, the TUN; each entry's
 * epoll data is its kind and index. */
static int watch_list(const struct engine *e, const struct serve *s, struct watched *w)
{
    int n = 0;
    for (int i = 0; i < s->nwake; i++)
        w[n++] = (struct watched){s->wake[i], W_WAKE, i};
    for (int i = 0; i < e->nxsk; i++)
        w[n++] = (struct watched){e->xsks[i].fd, W_XSK, i};
    if (s->read_socket)
        w[n++] = (struct watched){e->sock_fd, W_SOCKET, 0};
    if (s->read_tun && e->tun_fd >= 0)
        w[n++] = (struct watched){e->tun_fd, W_TUN, 0};
    return n;
}

/* The epoll set for this list, remade only when the list changed since the last call. */
static int epoll_for(struct engine *e, const struct serve *s)
{
    struct watched w[SERVE_MAX_WATCHED];
    int n = watch_list(e, s, w), fd;
    if (e->epfd >= 0 && n == e->nwatched && !memcmp(w, e->watched, n * sizeof(*w)))
        return 0;
    if (e->epfd >= 0)
        close(e->epfd);
    e->nwatched = 0;
    e->epfd = fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = (uint64_t)w[i].kind << 32 | (uint32_t)w[i].index};
        if (epoll_ctl(fd, EPOLL_CTL_ADD, w[i].fd, &ev) < 0) {
            int err = errno;
            close(fd);
            e->epfd = -1;
            errno = err;
            return -1;
        }
    }
    memcpy(e->watched, w, n * sizeof(*w));
    e->nwatched = n;
    return 0;
}

void serve_close(struct engine *e)
{
    if (e->epfd >= 0)
        close(e->epfd);
    e->epfd = -1;
    e->nwatched = 0;
}

enum serve_end serve(struct engine *e, const struct serve *s, double timeout,
                     void (*unlock)(void *), void (*relock)(void *), void *lock_ctx)
{
    struct epoll_event ready[SERVE_MAX_WATCHED];
    double deadline = monotonic() + timeout;
    uint64_t emitted = e->emitted;

    if (s->nwake < 0 || s->nwake > SERVE_MAX_WAKE) {
        errno = EINVAL;
        return SERVE_ERROR;
    }
    if (epoll_for(e, s) < 0)
        return SERVE_ERROR;
    for (;;) {
        int ms = wait_ms(deadline), n;
        unlock(lock_ctx);
        n = epoll_wait(e->epfd, ready, SERVE_MAX_WATCHED, ms);
        relock(lock_ctx);
        if (n < 0)
            return errno == EINTR ? SERVE_INTERRUPTED : SERVE_ERROR;
        if (!n)
            return SERVE_DEADLINE;
        for (int i = 0; i < n; i++)
            if (ready[i].data.u64 >> 32 == W_WAKE)
                return SERVE_WAKE;
        for (int i = 0; i < n; i++) {
            int index = (int)(uint32_t)ready[i].data.u64;
            double now = monotonic();
            switch (ready[i].data.u64 >> 32) {
            case W_XSK:
                for (int round = 0; round < s->rx_rounds; round++)
                    if (rx_xsk(e, index, s->rx_batch, now) < s->rx_batch)
                        break;
                break;
            case W_SOCKET:
                rx_socket(e, s->batch, now);
                break;
            case W_TUN:
                tx_tun(e, s->batch, now);
                break;
            }
        }
        if (e->emitted != emitted)
            return SERVE_EVENT;
        if (monotonic() >= deadline)
            return SERVE_DEADLINE;
    }
}
