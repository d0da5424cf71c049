/* Packet-ids (proto/pktid.py, openvpn's packet_id.c): the receiver's replay window with its
 * one-second time marks, and the sender with the shared ledger (xdppath.LedgerSender) or,
 * for several workers, the key's shared slot (a live counter, the window under a lock; its
 * set-up and window blocks serve epoch.c's part of a slot too). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "engine.h"

#define MARK_INTERVAL 1.0

static uint32_t window_cap(uint32_t size)
{
    uint32_t cap = 64;
    while (cap < size)
        cap <<= 1;
    return cap;
}

static void state_init(struct replay_state *st)
{
    memset(st, 0, sizeof(*st));
    st->cur_start = st->cur_time = -INFINITY;
}

int replay_init(struct replay *r, uint32_t size, double time_window)
{
    uint32_t cap = window_cap(size);
    memset(r, 0, sizeof(*r));
    r->bits = calloc(cap / 64, sizeof(uint64_t));
    if (!r->bits)
        return -1;
    r->size = size;
    r->time_window = time_window;
    r->cap_mask = cap - 1;
    r->st = &r->own;
    state_init(r->st);
    return 0;
}

void replay_free(struct replay *r)
{
    if (!r->lock) { /* a shared slot's memory is the control plane's */
        free(r->bits);
        free(r->marks);
    }
    r->bits = NULL;
    r->marks = NULL;
}

static inline int bit_get(const struct replay *r, uint64_t pid)
{
    uint32_t i = pid & r->cap_mask;
    return r->bits[i >> 6] >> (i & 63) & 1;
}

static inline void bit_set(struct replay *r, uint64_t pid)
{
    uint32_t i = pid & r->cap_mask;
    r->bits[i >> 6] |= 1ull << (i & 63);
}

static inline void bit_clear(struct replay *r, uint64_t pid)
{
    uint32_t i = pid & r->cap_mask;
    r->bits[i >> 6] &= ~(1ull << (i & 63));
}

static inline struct mark *mark_at(const struct replay *r, uint32_t i)
{
    return &r->marks[(r->st->m_head + i) % r->m_cap];
}

/* Highest id that arrived before now - time_window: it and all below are stale. */
static uint64_t expired_below(const struct replay *r, double now)
{
    const struct replay_state *st = r->st;
    double cutoff = now - r->time_window;
    uint64_t stale = 0;
    if (st->cur_high && st->cur_time < cutoff)
        return st->cur_high;
    for (uint32_t i = 0; i < st->m_len; i++) {
        const struct mark *m = mark_at(r, i);
        if (m->t >= cutoff)
            break;
        stale = m->high;
    }
    return stale;
}

int replay_check(struct replay *r, uint64_t pid, double now)
{
    struct replay_state *st = r->st;
    uint64_t diff;
    if (pid > st->highest)
        return 1;
    if (pid == 0) {
        st->invalid++;
        return 0;
    }
    diff = st->highest - pid;
    if (diff >= r->size) {
        st->too_old++;
        return 0;
    }
    if (bit_get(r, pid)) {
        st->replayed++;
        return 0;
    }
    if (r->time_window != 0.0 && pid <= expired_below(r, now)) {
        st->expired++;
        return 0;
    }
    return 1;
}

static int roll_mark(struct replay *r, double now)
{
    struct replay_state *st = r->st;
    double cutoff;
    if (st->cur_high) {
        if (st->m_len == r->m_cap && r->lock) {
            /* A shared ring has room for every mark the time window keeps (a mark a
             * second): only a clock going backwards gets here. Forget the oldest. */
            st->m_head = (st->m_head + 1) % r->m_cap;
            st->m_len--;
        } else if (st->m_len == r->m_cap) { /* grows at most once a second */
            uint32_t cap = r->m_cap ? r->m_cap * 2 : 4;
            struct mark *m = malloc(cap * sizeof(*m));
            if (!m)
                return -1;
            for (uint32_t i = 0; i < st->m_len; i++)
                m[i] = *mark_at(r, i);
            free(r->marks);
            r->marks = m;
            st->m_head = 0;
            r->m_cap = cap;
        }
        *mark_at(r, st->m_len) = (struct mark){st->cur_time, st->cur_high};
        st->m_len++;
    }
    st->cur_start = now;
    cutoff = now - r->time_window;
    /* Only the newest mark older than the cutoff matters: drop the ones before it. */
    while (st->m_len > 1 && mark_at(r, 1)->t < cutoff) {
        st->m_head = (st->m_head + 1) % r->m_cap;
        st->m_len--;
    }
    return 0;
}

int replay_update(struct replay *r, uint64_t pid, double now)
{
    struct replay_state *st = r->st;
    if (pid > st->highest) {
        uint64_t shift = pid - st->highest;
        if (shift > r->cap_mask) {
            memset(r->bits, 0, (r->cap_mask + 1) / 8);
        } else {
            for (uint64_t id = st->highest + 1; id < pid; id++)
                bit_clear(r, id);
        }
        bit_set(r, pid);
        st->highest = pid;
        if (now - st->cur_start >= MARK_INTERVAL && roll_mark(r, now) < 0)
            return -1;
        st->cur_time = now;
        st->cur_high = pid;
    } else if (st->highest - pid < r->size) {
        bit_set(r, pid);
    }
    return 0;
}

/* -- several workers: the window under the slot's lock ---------------------------------- */

static void lock_robust(pthread_mutex_t *m)
{
    /* Robust: a worker killed while holding it leaves it to the next one, which takes the
     * state as it stands (at worst one id's bit or mark half written). */
    if (pthread_mutex_lock(m) == EOWNERDEAD)
        pthread_mutex_consistent(m);
}

void key_shared_lock(struct key_shared *ks)
{
    lock_robust(&ks->lock);
}

void key_shared_unlock(struct key_shared *ks)
{
    pthread_mutex_unlock(&ks->lock);
}

static void lock(struct replay *r)
{
    lock_robust(r->lock);
}

int replay_admit(struct replay *r, uint64_t pid, double now)
{
    int ok;
    if (!r->lock)
        return pid > r->st->highest || replay_check(r, pid, now);
    lock(r);
    ok = replay_check(r, pid, now);
    pthread_mutex_unlock(r->lock);
    return ok;
}

int replay_commit(struct replay *r, uint64_t pid, double now)
{
    int ok;
    if (!r->lock) /* nobody else changed the window since replay_admit */
        return replay_update(r, pid, now) < 0 ? -1 : 1;
    lock(r);
    ok = replay_check(r, pid, now); /* another worker may have taken the id meanwhile */
    if (ok && replay_update(r, pid, now) < 0)
        ok = -1;
    if (ok > 0 && now > *r->last_rx)
        *r->last_rx = now;
    pthread_mutex_unlock(r->lock);
    return ok;
}

static uint32_t shared_marks(double time_window)
{
    /* a mark a second at most, those younger than the window plus the newest older one */
    return (uint32_t)ceil(time_window / MARK_INTERVAL) + 4;
}

/* A window block: struct replay_state, struct mark marks[m_cap], uint64_t bits[cap / 64]. */
size_t replay_block_size(uint32_t size, double time_window)
{
    return ALIGN_UP(sizeof(struct replay_state) + shared_marks(time_window) * sizeof(struct mark)
                    + window_cap(size) / 8);
}

void replay_reset(struct replay *r)
{
    state_init(r->st);
    memset(r->bits, 0, (r->cap_mask + 1) / 8); /* the marks ring is empty: m_len 0 */
}

void replay_share(struct replay *r, struct key_shared *ks, void *block, uint32_t size,
                  double time_window)
{
    memset(r, 0, sizeof(*r));
    r->size = size;
    r->time_window = time_window;
    r->cap_mask = window_cap(size) - 1;
    r->st = block;
    r->m_cap = ks->m_cap;
    r->marks = (struct mark *)(r->st + 1);
    r->bits = (uint64_t *)(r->marks + ks->m_cap);
    r->lock = &ks->lock;
    r->last_rx = &ks->last_rx;
}

size_t key_shared_size(uint32_t size, double time_window)
{
    size_t own = replay_block_size(size, time_window);
    size_t epoch = epoch_shared_size(size, time_window);
    return KEY_SHARED_HEAD + (own > epoch ? own : epoch);
}

int key_shared_open(struct key_shared *ks, double time_window)
{
    uint32_t fresh = 0;
    pthread_mutexattr_t attr;
    int err;
    if (!__atomic_compare_exchange_n(&ks->ready, &fresh, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED)) {
        while (__atomic_load_n(&ks->ready, __ATOMIC_ACQUIRE) != 2) /* set up by another */
            sched_yield();
        return 0;
    }
    err = pthread_mutexattr_init(&attr)
          || pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)
          || pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)
          || pthread_mutex_init(&ks->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (err) {
        __atomic_store_n(&ks->ready, 0, __ATOMIC_RELEASE);
        return -1;
    }
    ks->m_cap = shared_marks(time_window);
    return 1;
}

void key_shared_ready(struct key_shared *ks)
{
    __atomic_store_n(&ks->ready, 2, __ATOMIC_RELEASE);
}

int key_shared_attach(struct replay *r, struct sender *s, void *slot, uint32_t size,
                      double time_window)
{
    struct key_shared *ks = slot;
    void *block = (char *)slot + KEY_SHARED_HEAD;
    int first = key_shared_open(ks, time_window);
    if (first < 0)
        return -1;
    if (first) {
        state_init(block); /* the bits are zero: the control plane zeroed the slot */
        key_shared_ready(ks);
    }
    replay_share(r, ks, block, size, time_window);
    s->ledger = NULL;
    s->live = &ks->live;
    s->last = __atomic_load_n(&ks->live, __ATOMIC_RELAXED);
    s->reserved = PACKET_ID_MAX;
    return 0;
}

/* -- sending ------------------------------------------------------------------------------ */

void sender_init(struct sender *s, uint32_t *ledger)
{
    s->ledger = ledger;
    s->live = NULL;
    if (ledger) {
        s->last = s->reserved = __atomic_load_n(ledger, __ATOMIC_RELAXED);
    } else {
        s->last = 0;
        s->reserved = PACKET_ID_MAX;
    }
}

int sender_take(struct sender *s, uint32_t count, uint64_t *first)
{
    uint64_t last;
    if (s->live) { /* one add a run, whichever worker sends: no id twice */
        uint64_t before = __atomic_fetch_add(s->live, count, __ATOMIC_RELAXED);
        if (before + count > PACKET_ID_MAX)
            return -1;
        *first = before + 1;
        s->last = before + count;
        return 0;
    }
    last = s->last + count;
    if (last > s->reserved) {
        if (last > PACKET_ID_MAX)
            return -1;
        /* Reserve ahead in the ledger before handing the ids out: a restarted worker
         * goes on above what this one may have used. */
        s->reserved = last + PID_BLOCK < PACKET_ID_MAX ? last + PID_BLOCK : PACKET_ID_MAX;
        if (s->ledger)
            __atomic_store_n(s->ledger, (uint32_t)s->reserved, __ATOMIC_RELEASE);
    }
    *first = s->last + 1;
    s->last = last;
    return 0;
}
