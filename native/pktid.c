/* Packet-ids (proto/pktid.py, openvpn's packet_id.c): the receiver's replay window with its
 * one-second time marks, and the sender with the shared ledger (xdppath.LedgerSender). */
#include <math.h>
#include <stdlib.h>

#include "engine.h"

#define MARK_INTERVAL 1.0

int replay_init(struct replay *r, uint32_t size, double time_window)
{
    uint32_t cap = 64;
    memset(r, 0, sizeof(*r));
    while (cap < size)
        cap <<= 1;
    r->bits = calloc(cap / 64, sizeof(uint64_t));
    if (!r->bits)
        return -1;
    r->size = size;
    r->time_window = time_window;
    r->cap_mask = cap - 1;
    r->cur_start = r->cur_time = -INFINITY;
    return 0;
}

void replay_free(struct replay *r)
{
    free(r->bits);
    free(r->marks);
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
    return &r->marks[(r->m_head + i) % r->m_cap];
}

/* Highest id that arrived before now - time_window: it and all below are stale. */
static uint64_t expired_below(const struct replay *r, double now)
{
    double cutoff = now - r->time_window;
    uint64_t stale = 0;
    if (r->cur_high && r->cur_time < cutoff)
        return r->cur_high;
    for (uint32_t i = 0; i < r->m_len; i++) {
        const struct mark *m = mark_at(r, i);
        if (m->t >= cutoff)
            break;
        stale = m->high;
    }
    return stale;
}

int replay_check(struct replay *r, uint64_t pid, double now)
{
    uint64_t diff;
    if (pid > r->highest)
        return 1;
    if (pid == 0) {
        r->invalid++;
        return 0;
    }
    diff = r->highest - pid;
    if (diff >= r->size) {
        r->too_old++;
        return 0;
    }
    if (bit_get(r, pid)) {
        r->replayed++;
        return 0;
    }
    if (r->time_window != 0.0 && pid <= expired_below(r, now)) {
        r->expired++;
        return 0;
    }
    return 1;
}

static int roll_mark(struct replay *r, double now)
{
    double cutoff;
    if (r->cur_high) {
        if (r->m_len == r->m_cap) { /* grows at most once a second, never per packet */
            uint32_t cap = r->m_cap ? r->m_cap * 2 : 4;
            struct mark *m = malloc(cap * sizeof(*m));
            if (!m)
                return -1;
            for (uint32_t i = 0; i < r->m_len; i++)
                m[i] = *mark_at(r, i);
            free(r->marks);
            r->marks = m;
            r->m_head = 0;
            r->m_cap = cap;
        }
        *mark_at(r, r->m_len) = (struct mark){r->cur_time, r->cur_high};
        r->m_len++;
    }
    r->cur_start = now;
    cutoff = now - r->time_window;
    /* Only the newest mark older than the cutoff matters: drop the ones before it. */
    while (r->m_len > 1 && mark_at(r, 1)->t < cutoff) {
        r->m_head = (r->m_head + 1) % r->m_cap;
        r->m_len--;
    }
    return 0;
}

int replay_update(struct replay *r, uint64_t pid, double now)
{
    if (pid > r->highest) {
        uint64_t shift = pid - r->highest;
        if (shift > r->cap_mask) {
            memset(r->bits, 0, (r->cap_mask + 1) / 8);
        } else {
            for (uint64_t id = r->highest + 1; id < pid; id++)
                bit_clear(r, id);
        }
        bit_set(r, pid);
        r->highest = pid;
        if (now - r->cur_start >= MARK_INTERVAL && roll_mark(r, now) < 0)
            return -1;
        r->cur_time = now;
        r->cur_high = pid;
    } else if (r->highest - pid < r->size) {
        bit_set(r, pid);
    }
    return 0;
}

void sender_init(struct sender *s, uint32_t *ledger)
{
    s->ledger = ledger;
    if (ledger) {
        s->last = s->reserved = __atomic_load_n(ledger, __ATOMIC_RELAXED);
    } else {
        s->last = 0;
        s->reserved = PACKET_ID_MAX;
    }
}

int sender_take(struct sender *s, uint32_t count, uint64_t *first)
{
    uint64_t last = s->last + count;
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
