/* The peer table (dataplane/peers.py; ovpn's peer.c): by peer-id for the receive path, by
 * VPN address and then the longest iroute prefix for the transmit path. One open-addressing
 * hash map type serves all three indexes (20-byte keys); iroutes are probed per prefix length
 * in use, longest first. Later indexing of an address wins, as in the Python dicts. */
#include <stdlib.h>

#include "engine.h"

enum { K_ID = 1, K_VPN4, K_VPN6, K_ROUTE4, K_ROUTE6 };

static uint64_t hash20(const uint8_t *k)
{
    uint64_t a, b;
    uint32_t c;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    memcpy(&c, k + 16, 4);
    a = (a ^ (b * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)c << 29)) * 0xBF58476D1CE4E5B9ull;
    return a ^ (a >> 31);
}

static int hmap_init(struct hmap *m, uint32_t cap)
{
    m->e = calloc(cap, sizeof(*m->e));
    m->cap = cap;
    m->n = 0;
    return m->e ? 0 : -1;
}

static struct hent *hmap_slot(const struct hmap *m, const uint8_t *k)
{
    uint32_t i = hash20(k) & (m->cap - 1);
    while (m->e[i].used && memcmp(m->e[i].k, k, 20))
        i = (i + 1) & (m->cap - 1);
    return &m->e[i];
}

static struct peer *hmap_get(const struct hmap *m, const uint8_t *k)
{
    struct hent *h = hmap_slot(m, k);
    return h->used ? h->v : NULL;
}

static int hmap_put(struct hmap *m, const uint8_t *k, struct peer *v)
{
    struct hent *h;
    if ((m->n + 1) * 4 > m->cap * 3) { /* grow at 3/4 */
        struct hmap bigger;
        if (hmap_init(&bigger, m->cap * 2) < 0)
            return -1;
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->e[i].used) {
                *hmap_slot(&bigger, m->e[i].k) = m->e[i];
                bigger.n++;
            }
        free(m->e);
        *m = bigger;
    }
    h = hmap_slot(m, k);
    if (!h->used) {
        memcpy(h->k, k, 20);
        h->used = 1;
        m->n++;
    }
    h->v = v;
    return 0;
}

/* Backward-shift deletion keeps every probe chain whole without tombstones. */
static void hmap_del_at(struct hmap *m, uint32_t i)
{
    uint32_t j = i;
    m->e[i].used = 0;
    m->n--;
    for (;;) {
        uint32_t home;
        j = (j + 1) & (m->cap - 1);
        if (!m->e[j].used)
            return;
        home = hash20(m->e[j].k) & (m->cap - 1);
        /* move e[j] into the hole at i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            m->e[i] = m->e[j];
            m->e[j].used = 0;
            i = j;
        }
    }
}

static void hmap_del_value(struct hmap *m, const uint8_t *k, const struct peer *v)
{
    struct hent *h = hmap_slot(m, k);
    if (h->used && h->v == v)
        hmap_del_at(m, (uint32_t)(h - m->e));
}

static void key_of(uint8_t *k, int kind, int len, const uint8_t *addr, int alen)
{
    memset(k, 0, 20);
    k[0] = kind;
    k[1] = len;
    memcpy(k + 2, addr, alen);
}

static void id_key(uint8_t *k, uint32_t id)
{
    uint8_t b[4];
    put32(b, id);
    key_of(k, K_ID, 0, b, 4);
}

static void masked(uint8_t *out, const uint8_t *addr, int bytes, int len)
{
    for (int i = 0; i < bytes; i++) {
        int bits = len - i * 8;
        uint8_t mask = bits >= 8 ? 0xFF : bits <= 0 ? 0 : (uint8_t)(0xFF << (8 - bits));
        out[i] = addr[i] & mask;
    }
}

int table_init(struct table *t, int single)
{
    memset(t, 0, sizeof(*t));
    t->single = single;
    if (hmap_init(&t->ids, 16) < 0 || hmap_init(&t->vpn, 16) < 0 || hmap_init(&t->routes, 16) < 0)
        return -1;
    return 0;
}

void key_free(struct key *k, void (*release)(void *))
{
    if (!k)
        return;
    aead_free(&k->enc);
    aead_free(&k->dec);
    replay_free(&k->replay);
    epoch_free(k->epoch);
    if (k->ledger_ref && release)
        release(k->ledger_ref);
    free(k);
}

static void peer_free(struct peer *p, void (*release)(void *))
{
    key_free(p->keys[0], release);
    key_free(p->keys[1], release);
    free(p->routes);
    free(p);
}

void table_free(struct table *t, void (*release)(void *))
{
    struct peer *p = t->head;
    while (p) {
        struct peer *next = p->next;
        peer_free(p, release);
        p = next;
    }
    free(t->ids.e);
    free(t->vpn.e);
    free(t->routes.e);
    memset(t, 0, sizeof(*t));
}

struct peer *table_get(struct table *t, uint32_t id)
{
    uint8_t k[20];
    id_key(k, id);
    return hmap_get(&t->ids, k);
}

/* The iroute prefix lengths in use, longest first, recounted from the routes map. */
static void recount_lens(struct table *t)
{
    for (int f = 0; f < 2; f++)
        memset(t->len_count[f], 0, sizeof(t->len_count[f]));
    for (uint32_t i = 0; i < t->routes.cap; i++)
        if (t->routes.e[i].used)
            t->len_count[t->routes.e[i].k[0] == K_ROUTE6][t->routes.e[i].k[1]]++;
    for (int f = 0; f < 2; f++) {
        t->nlens[f] = 0;
        for (int len = f ? 128 : 32; len >= 0; len--)
            if (t->len_count[f][len])
                t->lens[f][t->nlens[f]++] = len;
    }
}

struct peer *table_by_destination(struct table *t, int fam, const uint8_t *addr)
{
    uint8_t k[20], net[16];
    int f = fam == 6, bytes = f ? 16 : 4;
    struct peer *p;
    if (t->single)
        return t->head;
    key_of(k, f ? K_VPN6 : K_VPN4, 0, addr, bytes);
    p = hmap_get(&t->vpn, k);
    if (p)
        return p;
    for (int i = 0; i < t->nlens[f]; i++) {
        int len = t->lens[f][i];
        masked(net, addr, bytes, len);
        key_of(k, f ? K_ROUTE6 : K_ROUTE4, len, net, bytes);
        p = hmap_get(&t->routes, k);
        if (p)
            return p;
    }
    return NULL;
}

int table_index(struct table *t, struct peer *p)
{
    uint8_t k[20];
    if (p->has_v4) {
        key_of(k, K_VPN4, 0, p->vpn4, 4);
        if (hmap_put(&t->vpn, k, p) < 0)
            return -1;
    }
    if (p->has_v6) {
        key_of(k, K_VPN6, 0, p->vpn6, 16);
        if (hmap_put(&t->vpn, k, p) < 0)
            return -1;
    }
    for (uint32_t i = 0; i < p->nroutes; i++) {
        const struct route *r = &p->routes[i];
        int f = r->fam == 6;
        uint8_t net[16];
        masked(net, r->net, f ? 16 : 4, r->len);
        key_of(k, f ? K_ROUTE6 : K_ROUTE4, r->len, net, f ? 16 : 4);
        if (hmap_put(&t->routes, k, p) < 0)
            return -1;
    }
    recount_lens(t);
    return 0;
}

static void del_by_value(struct hmap *m, const struct peer *p)
{
    for (uint32_t i = 0; i < m->cap;) {
        if (m->e[i].used && m->e[i].v == p)
            hmap_del_at(m, i); /* a shifted entry may land at i: look again */
        else
            i++;
    }
}

void table_unindex(struct table *t, struct peer *p)
{
    del_by_value(&t->vpn, p);
    del_by_value(&t->routes, p);
    recount_lens(t);
}

int table_add(struct table *t, struct peer *p)
{
    uint8_t k[20];
    id_key(k, p->id);
    if (hmap_put(&t->ids, k, p) < 0)
        return -1;
    if (table_index(t, p) < 0) {
        table_unindex(t, p);
        hmap_del_value(&t->ids, k, p);
        return -1;
    }
    p->prev = t->tail;
    p->next = NULL;
    if (t->tail)
        t->tail->next = p;
    else
        t->head = p;
    t->tail = p;
    t->count++;
    return 0;
}

void table_remove(struct table *t, struct peer *p, void (*release)(void *))
{
    uint8_t k[20];
    id_key(k, p->id);
    hmap_del_value(&t->ids, k, p);
    table_unindex(t, p);
    if (p->prev)
        p->prev->next = p->next;
    else
        t->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        t->tail = p->prev;
    t->count--;
    peer_free(p, release);
}

void peer_drop(struct peer *p, enum drop reason)
{
    p->st.drops[reason]++;
}

void peer_send_error(struct peer *p, int err)
{
    struct peer_stats *s = &p->st;
    int i;
    for (i = 0; i < SEND_ERR_SLOTS - 1 && s->send_err[i].count && s->send_err[i].err != err; i++)
        ;
    if (!s->send_err[i].count)
        s->send_err[i].err = err;
    s->send_err[i].count++; /* the last slot takes any further errno */
}
