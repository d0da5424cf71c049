/* 2.7's epoch data format for one key slot (proto/epoch.py, proto/epochkeys.py; openvpn's
 * crypto_epoch.c): the two chains of epoch secrets, each epoch's AEAD context made once when
 * the epoch is derived, the send key's rotation, the receive keys (current, retiring, the
 * next `EPOCH_FUTURE_KEYS`) with a replay window each.
 *
 *   [op|kid 1][peer-id 3][epoch 2][counter 6][ciphertext n][tag 16]
 *   AAD = the first 12 bytes; nonce = (epoch << 48 | counter, 8 bytes BE, + 4 zero bytes)
 *   XOR the epoch's 12-byte implicit IV.
 *
 * The tag follows the ciphertext: sealing and opening work in place without slack. Every
 * check, counter and rotation rule is the Python class's, in its order.
 *
 * Several workers share a key through its slot (key_shared): what they must agree on is
 * there, and each worker keeps its own contexts, derived from the chains (deterministic),
 * following the slot's epochs forward:
 *   tx         epoch << 48 | the last counter used: a compare-and-swap a packet hands out an
 *              id no other worker uses, and moves the send epoch on for all of them;
 *   tx_blocks  epoch << 48 | blocks sealed in that epoch, for AES-GCM's usage limit;
 *   rx, retiring  the receive epochs, under the slot's lock;
 *   windows    EPOCH_WINDOWS replay windows, each tagged with its epoch: every live receive
 *              key (retiring, current, future) has one, so a packet one worker took is a
 *              replay for all, and a replacement worker goes on from all of it. */
#include <openssl/hmac.h>
#include <stdlib.h>

#include "engine.h"

#define EPOCH_WINDOWS (2 + EPOCH_FUTURE_KEYS)

struct epoch_shared { /* after the slot's struct key_shared */
    uint64_t tx, tx_blocks; /* atomic */
    uint32_t rx, retiring;  /* under the lock; retiring 0: none */
};

struct epoch_window {        /* then, at ALIGN_UP(sizeof(struct epoch_window)), its block */
    uint32_t epoch;          /* 0: free; a dead epoch's (not live()) is free too */
    uint64_t blocks, failed; /* all workers' (atomic), for the usage limits */
};

size_t epoch_shared_size(uint32_t size, double time_window)
{
    return ALIGN_UP(sizeof(struct epoch_shared))
           + EPOCH_WINDOWS * (ALIGN_UP(sizeof(struct epoch_window))
                              + replay_block_size(size, time_window));
}

/* -- OVPN-Expand-Label: TLS 1.3's HKDF-Expand-Label over SHA-256, prefix "ovpn " -------- */

static int expand_label(const uint8_t secret[EPOCH_KEY_LEN], const char *label, uint8_t *out,
                        uint32_t length)
{
    uint8_t info[2 + 1 + 5 + 32 + 1 + 1], block[32], prev[32];
    uint32_t label_len = (uint32_t)strlen(label), info_len, done = 0, plen = 0;
    uint8_t counter = 1;
    if (label_len > 32 || length > 255 * 32)
        return -1;
    put16(info, (uint16_t)length);
    info[2] = (uint8_t)(5 + label_len);
    memcpy(info + 3, "ovpn ", 5);
    memcpy(info + 8, label, label_len);
    info[8 + label_len] = 0; /* no context */
    info_len = 9 + label_len;
    while (done < length) {
        uint8_t msg[32 + sizeof(info) + 1];
        unsigned int md_len = 0;
        uint32_t take;
        memcpy(msg, prev, plen);
        memcpy(msg + plen, info, info_len);
        msg[plen + info_len] = counter++;
        if (!HMAC(EVP_sha256(), secret, EPOCH_KEY_LEN, msg, plen + info_len + 1, block, &md_len)
            || md_len != 32)
            return -1;
        take = length - done < 32 ? length - done : 32;
        memcpy(out + done, block, take);
        memcpy(prev, block, 32);
        plen = 32;
        done += take;
    }
    return 0;
}

/* E_n -> E_n+1 in place. */
static int chain_next(struct epoch_chain *c)
{
    uint8_t next[EPOCH_KEY_LEN];
    if (c->epoch >= EPOCH_MAX || expand_label(c->secret, "datakey upd", next, EPOCH_KEY_LEN) < 0)
        return -1;
    memcpy(c->secret, next, EPOCH_KEY_LEN);
    OPENSSL_cleanse(next, sizeof(next));
    c->epoch++;
    return 0;
}

static void dir_free(struct epoch_dir *d)
{
    if (d->ctx)
        EVP_CIPHER_CTX_free(d->ctx);
    memset(d, 0, sizeof(*d));
}

/* K_n and IV_n of the chain's current link, as an AEAD context (enc: sealing). */
static int dir_init(struct epoch_dir *d, const struct epoch_chain *c, int cipher, int enc)
{
    uint8_t key[32];
    int key_len = cipher_key_len(cipher);
    memset(d, 0, sizeof(*d));
    int res = key_len < 0 || expand_label(c->secret, "data_key", key, (uint32_t)key_len) < 0
              || expand_label(c->secret, "data_iv", d->iv, AEAD_NONCE_LEN) < 0
              || aead_ctx_init(&d->ctx, cipher, key, enc) < 0;
    OPENSSL_cleanse(key, sizeof(key));
    if (res) {
        dir_free(d);
        return -1;
    }
    d->epoch = c->epoch;
    return 0;
}

/* -- usage counters: this worker's, or all workers' in the slot ------------------------- */

static uint64_t recv_failed(const struct epoch_recv *r)
{
    return r->w ? __atomic_load_n(&r->w->failed, __ATOMIC_RELAXED) : r->d.failed;
}

static uint64_t recv_blocks(const struct epoch_recv *r)
{
    return r->w ? __atomic_load_n(&r->w->blocks, __ATOMIC_RELAXED) : r->d.blocks;
}

/* The blocks the slot's send epoch sealed; a packet of an older epoch is not counted. */
static uint64_t tx_blocks(const struct epoch_shared *sh, uint32_t epoch)
{
    uint64_t w = __atomic_load_n(&sh->tx_blocks, __ATOMIC_RELAXED);
    return (uint32_t)(w >> 48) == epoch ? w & EPOCH_COUNTER_MAX : 0;
}

static void count_tx_blocks(struct epoch_shared *sh, uint32_t epoch, uint64_t n)
{
    uint64_t w = __atomic_load_n(&sh->tx_blocks, __ATOMIC_RELAXED), next;
    do {
        uint32_t at = (uint32_t)(w >> 48);
        if (at > epoch)
            return;
        next = at == epoch ? w + n : (uint64_t)epoch << 48 | n;
    } while (!__atomic_compare_exchange_n(&sh->tx_blocks, &w, next, 0, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
}

/* -- the slot's receive windows (under its lock) ----------------------------------------- */

static struct epoch_window *window_at(const struct epoch_state *s, uint32_t i)
{
    return (struct epoch_window *)((char *)s->sh + ALIGN_UP(sizeof(struct epoch_shared))
                                   + i * s->window_stride);
}

/* Whether a receive key of `epoch` may still be used: epochs only go forward, so a dead
 * one's window is free for good. */
static int live(const struct epoch_shared *sh, uint32_t epoch)
{
    return epoch && (epoch == sh->retiring
                     || (epoch >= sh->rx && epoch - sh->rx <= EPOCH_FUTURE_KEYS));
}

/* r's window: its epoch's, or a dead one emptied for it. There are as many as live keys. */
static int window_claim(struct epoch_state *s, struct epoch_recv *r)
{
    struct epoch_window *w = NULL, *dead = NULL;
    for (uint32_t i = 0; i < EPOCH_WINDOWS && !w; i++) {
        struct epoch_window *at = window_at(s, i);
        if (at->epoch == r->d.epoch)
            w = at;
        else if (!dead && !live(s->sh, at->epoch))
            dead = at;
    }
    if (!w && !(w = dead))
        return -1;
    replay_share(&r->replay, s->ks, (char *)w + ALIGN_UP(sizeof(*w)), s->window,
                 s->window_time);
    if (w->epoch != r->d.epoch) {
        replay_reset(&r->replay);
        __atomic_store_n(&w->blocks, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&w->failed, 0, __ATOMIC_RELAXED);
        w->epoch = r->d.epoch; /* last: a worker killed before leaves it dead */
    }
    r->w = w;
    return 0;
}

static void recv_free(struct epoch_recv *r)
{
    if (r->ready) {
        dir_free(&r->d);
        replay_free(&r->replay);
    }
    OPENSSL_cleanse(r, sizeof(*r));
}

/* A receive key to another place: its own window's state pointer points into the key. */
static void recv_move(struct epoch_recv *dst, struct epoch_recv *src)
{
    *dst = *src;
    if (!dst->w)
        dst->replay.st = &dst->replay.own;
    memset(src, 0, sizeof(*src));
}

/* The receive key of the chain's current link: its secret only; the context and the window
 * come with its first packet (recv_ready), so the future keys cost little while unused. */
static void recv_init(struct epoch_state *s, struct epoch_recv *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->secret, s->recv_chain.secret, EPOCH_KEY_LEN);
    r->d.epoch = s->recv_chain.epoch;
    r->live = 1;
}

static int recv_ready(struct epoch_state *s, struct epoch_recv *r)
{
    struct epoch_chain c;
    int res;
    if (r->ready)
        return 0;
    c.epoch = r->d.epoch;
    memcpy(c.secret, r->secret, EPOCH_KEY_LEN);
    res = dir_init(&r->d, &c, s->cipher, 0);
    OPENSSL_cleanse(c.secret, sizeof(c.secret));
    if (res == 0 && (s->ks ? window_claim(s, r)
                           : replay_init(&r->replay, s->window, s->window_time)) < 0) {
        dir_free(&r->d);
        res = -1;
    }
    if (res < 0) {
        r->d.epoch = c.epoch; /* dir_free cleared it */
        return -1;
    }
    r->ready = 1;
    return 0;
}

/* Top the future keys up to `future_keys` epochs after the current one (_derive_future). */
static int derive_future(struct epoch_state *s)
{
    uint32_t want = s->rx.d.epoch + EPOCH_FUTURE_KEYS;
    if (want > EPOCH_MAX)
        want = EPOCH_MAX;
    while (s->recv_chain.epoch < want) {
        if (s->nfuture >= EPOCH_FUTURE_KEYS || chain_next(&s->recv_chain) < 0)
            return -1;
        recv_init(s, &s->future[s->nfuture++]);
    }
    return 0;
}

void epoch_free(struct epoch_state *s)
{
    if (!s)
        return;
    dir_free(&s->tx);
    recv_free(&s->rx);
    recv_free(&s->retiring);
    for (uint32_t i = 0; i < s->nfuture; i++)
        recv_free(&s->future[i]);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

static int follow(struct epoch_state *s);

/* The slot's part for an epoch key, set up by the first worker to install it: epoch 1 both
 * ways, nothing sent, no window taken. */
static int share(struct epoch_state *s, void *slot)
{
    int first = key_shared_open(slot, s->window_time);
    if (first < 0)
        return -1;
    s->ks = slot;
    s->sh = (struct epoch_shared *)((char *)slot + KEY_SHARED_HEAD);
    s->window_stride = ALIGN_UP(sizeof(struct epoch_window))
                       + replay_block_size(s->window, s->window_time);
    if (first) {
        s->sh->tx = 1ull << 48;
        s->sh->rx = 1;
        key_shared_ready(s->ks);
    }
    return 0;
}

struct epoch_state *epoch_new(int cipher, const uint8_t send[EPOCH_KEY_LEN],
                              const uint8_t recv[EPOCH_KEY_LEN], uint32_t window,
                              double window_time, void *slot)
{
    struct epoch_state *s = calloc(1, sizeof(*s));
    int res;
    if (!s)
        return NULL;
    s->cipher = cipher;
    s->limit = cipher == C_CHACHA20_POLY1305 ? 0 : AES_GCM_USAGE_LIMIT;
    s->window = window;
    s->window_time = window_time;
    s->send_chain.epoch = s->recv_chain.epoch = 1;
    memcpy(s->send_chain.secret, send, EPOCH_KEY_LEN);
    memcpy(s->recv_chain.secret, recv, EPOCH_KEY_LEN);
    recv_init(s, &s->rx);
    if (slot && share(s, slot) < 0) {
        epoch_free(s);
        return NULL;
    }
    if (s->ks) /* another worker's, or its predecessor's: take its epochs */
        key_shared_lock(s->ks);
    res = dir_init(&s->tx, &s->send_chain, cipher, 1) < 0 || derive_future(s) < 0
          || (s->ks && follow(s) < 0) || recv_ready(s, &s->rx) < 0
          || (s->ks && epoch_advance_send(s, (uint32_t)(__atomic_load_n(&s->sh->tx,
                                                                        __ATOMIC_ACQUIRE)
                                                        >> 48)) < 0);
    if (s->ks)
        key_shared_unlock(s->ks);
    if (res) {
        epoch_free(s);
        return NULL;
    }
    return s;
}

/* ledger.track_epochs: receive epoch << 16 | send epoch, for a replacement worker. */
static void record(struct epoch_state *s)
{
    if (s->ledger)
        *s->ledger = s->rx.d.epoch << 16 | s->tx.epoch;
}

/* -- sending ----------------------------------------------------------------------------- */

/* The send key to `epoch` (forward only): a new context, the counter from 0. */
static int send_to(struct epoch_state *s, uint32_t epoch)
{
    struct epoch_dir d;
    if (epoch > EPOCH_MAX)
        return -1;
    while (s->send_chain.epoch < epoch)
        if (chain_next(&s->send_chain) < 0)
            return -1;
    if (dir_init(&d, &s->send_chain, s->cipher, 1) < 0)
        return -1;
    dir_free(&s->tx);
    s->tx = d;
    s->tx_counter = 0;
    record(s);
    return 0;
}

int epoch_advance_send(struct epoch_state *s, uint32_t epoch)
{
    return epoch > s->send_chain.epoch ? send_to(s, epoch) : 0;
}

/* epoch_check_send_iterate's rules: whether the send key of `epoch`, having used `counter`
 * and sealed `blocks`, must move on before the next packet. */
static int send_worn(const struct epoch_state *s, uint32_t epoch, uint64_t counter,
                     uint64_t blocks)
{
    const struct epoch_recv *rx = &s->rx;
    if (epoch >= EPOCH_MAX)
        return 0;
    if (s->limit
        && (blocks + counter > s->limit
            || (epoch == rx->d.epoch /* the peer's key is worn */
                && (recv_blocks(rx) + __atomic_load_n(&rx->replay.st->highest,
                                                      __ATOMIC_RELAXED) > s->limit
                    || recv_failed(rx) > FAILED_VERIFY_WARN))))
        return 1;
    return counter >= EPOCH_COUNTER_MAX;
}

/* One worker: the next counter, the key moved on first when worn. */
static int take(struct epoch_state *s)
{
    if (send_worn(s, s->send_chain.epoch, s->tx_counter, s->tx.blocks)
        && send_to(s, s->send_chain.epoch + 1) < 0)
        return -1;
    if (s->tx_counter >= EPOCH_COUNTER_MAX)
        return -1; /* the chain is spent: the key must be renegotiated */
    s->tx_counter++;
    return 0;
}

/* Several workers: the next (epoch, counter) from the slot's word, which moves on to the
 * next epoch for all of them when the key is worn; this worker's key follows it. */
static int take_shared(struct epoch_state *s)
{
    uint64_t w = __atomic_load_n(&s->sh->tx, __ATOMIC_ACQUIRE), next;
    uint32_t epoch;
    do {
        uint64_t counter = w & EPOCH_COUNTER_MAX;
        epoch = (uint32_t)(w >> 48);
        if (send_worn(s, epoch, counter, tx_blocks(s->sh, epoch)))
            next = ((uint64_t)epoch + 1) << 48 | 1;
        else if (counter >= EPOCH_COUNTER_MAX)
            return -1; /* the chain is spent */
        else
            next = w + 1;
    } while (!__atomic_compare_exchange_n(&s->sh->tx, &w, next, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
    epoch = (uint32_t)(next >> 48);
    if (epoch != s->tx.epoch && send_to(s, epoch) < 0)
        return -1;
    s->tx_counter = next & EPOCH_COUNTER_MAX;
    return 0;
}

/* The send key to at least `epoch` (a peer moved on), in the slot for all workers too. */
static int send_follow(struct epoch_state *s, uint32_t epoch)
{
    if (s->sh) {
        uint64_t w = __atomic_load_n(&s->sh->tx, __ATOMIC_ACQUIRE);
        while ((uint32_t)(w >> 48) < epoch
               && !__atomic_compare_exchange_n(&s->sh->tx, &w, (uint64_t)epoch << 48, 0,
                                               __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            ;
    }
    return s->tx.epoch < epoch ? send_to(s, epoch) : 0;
}

int epoch_seal(struct epoch_state *s, uint32_t head_word, uint8_t *pkt, uint32_t n)
{
    uint64_t packet_id, blocks;
    uint8_t nonce[AEAD_NONCE_LEN];
    if ((s->sh ? take_shared(s) : take(s)) < 0)
        return -1; /* the chain is spent: the key must be renegotiated */
    packet_id = (uint64_t)s->tx.epoch << 48 | s->tx_counter;
    put32(pkt, head_word);
    put64(pkt + 4, packet_id);
    memcpy(nonce, s->tx.iv, AEAD_NONCE_LEN);
    for (int i = 0; i < 8; i++)
        nonce[i] ^= pkt[4 + i];
    if (aead_ctx_seal(s->tx.ctx, nonce, pkt, DATA_V2_EPOCH_AAD_LEN,
                      pkt + DATA_V2_EPOCH_AAD_LEN, (int)n, pkt + DATA_V2_EPOCH_AAD_LEN + n) < 0)
        return -1;
    /* the usage count covers what openvpn's work buffer holds: header, id, ciphertext */
    blocks = (DATA_V2_EPOCH_AAD_LEN + n + EPOCH_LIMIT_BLOCK - 1) / EPOCH_LIMIT_BLOCK;
    s->tx.blocks += blocks;
    if (s->sh && s->limit)
        count_tx_blocks(s->sh, s->tx.epoch, blocks);
    return 0;
}

/* -- receiving --------------------------------------------------------------------------- */

/* epoch_lookup_decrypt_key: current, retiring, or one of the future keys. */
static struct epoch_recv *lookup(struct epoch_state *s, uint32_t epoch)
{
    int64_t index;
    if (epoch == s->rx.d.epoch)
        return &s->rx;
    if (s->retiring.live && epoch == s->retiring.d.epoch)
        return &s->retiring;
    index = (int64_t)epoch - s->rx.d.epoch - 1;
    /* near the end of the chain a future key is refused, as openvpn does */
    if (index >= 0 && index < s->nfuture && epoch <= EPOCH_MAX - EPOCH_FUTURE_KEYS - 1)
        return &s->future[index];
    return NULL;
}

/* future[index] becomes the current receive key (whose place the caller emptied), the ones
 * before it go, the ones after it move up, and new ones are derived behind them. */
static int take_future(struct epoch_state *s, uint32_t index)
{
    recv_move(&s->rx, &s->future[index]);
    for (uint32_t i = 0; i < index; i++)
        recv_free(&s->future[i]);
    for (uint32_t i = index + 1; i < s->nfuture; i++)
        recv_move(&s->future[i - index - 1], &s->future[i]);
    s->nfuture -= index + 1;
    if (recv_ready(s, &s->rx) < 0 || derive_future(s) < 0)
        return -1;
    record(s);
    return 0;
}

/* The future key `r` authenticated a packet: it becomes current (epoch_replace_update_
 * recv_key); our send key follows when behind. Returns the current key, or NULL. */
static struct epoch_recv *move_receive_to(struct epoch_state *s, struct epoch_recv *r)
{
    uint32_t index = (uint32_t)(r - s->future), epoch = r->d.epoch;
    if (send_follow(s, epoch) < 0)
        return NULL;
    recv_free(&s->retiring);
    recv_move(&s->retiring, &s->rx);
    if (take_future(s, index) < 0)
        return NULL;
    if (s->sh) { /* for the other workers; retiring first: a worker killed between the two
                  * stores leaves the epochs as they were, with no window lost */
        s->sh->retiring = s->retiring.d.epoch;
        s->sh->rx = s->rx.d.epoch;
    }
    return &s->rx;
}

/* This worker's receive keys to the slot's epochs, forward only, under the lock: as
 * move_receive_to moved them when the retiring key is the one this worker had as current,
 * as epoch_advance_receive otherwise (the retiring key then not kept here). */
static int follow(struct epoch_state *s)
{
    uint32_t rx = s->sh->rx, retiring = s->sh->retiring;
    if (rx == s->rx.d.epoch)
        return 0;
    if (retiring > s->rx.d.epoch && epoch_advance_receive(s, retiring) < 0)
        return -1;
    if (retiring && retiring == s->rx.d.epoch && rx > retiring && rx <= s->recv_chain.epoch) {
        uint32_t index = rx - retiring - 1;
        recv_free(&s->retiring);
        recv_move(&s->retiring, &s->rx);
        return take_future(s, index);
    }
    return epoch_advance_receive(s, rx);
}

int epoch_advance_receive(struct epoch_state *s, uint32_t epoch)
{
    if (epoch > EPOCH_MAX)
        return -1;
    if (epoch <= s->rx.d.epoch)
        return 0;
    recv_free(&s->retiring);
    if (epoch <= s->recv_chain.epoch) { /* one of the future keys */
        uint32_t index = epoch - s->rx.d.epoch - 1;
        recv_free(&s->rx);
        return take_future(s, index);
    }
    recv_free(&s->rx);
    for (uint32_t i = 0; i < s->nfuture; i++)
        recv_free(&s->future[i]);
    s->nfuture = 0;
    while (s->recv_chain.epoch < epoch)
        if (chain_next(&s->recv_chain) < 0)
            return -1;
    recv_init(s, &s->rx);
    if (recv_ready(s, &s->rx) < 0 || derive_future(s) < 0)
        return -1;
    record(s);
    return 0;
}

/* The packet's nonce: the epoch's implicit IV XOR its id. */
static void nonce_of(const struct epoch_recv *r, const uint8_t *pkt, uint8_t *nonce)
{
    memcpy(nonce, r->d.iv, AEAD_NONCE_LEN);
    for (int i = 0; i < 8; i++)
        nonce[i] ^= pkt[4 + i];
}

/* Several workers: as epoch_open, with the epochs followed and the window checked under the
 * slot's lock before decrypting, and again after (another worker may have moved the epochs
 * or taken the id meanwhile). */
static int open_shared(struct epoch_state *s, uint8_t *pkt, uint32_t n, uint32_t epoch,
                       uint64_t counter, double now)
{
    uint8_t nonce[AEAD_NONCE_LEN];
    struct epoch_recv *r = NULL;
    int res = D_PEER_COUNT;
    key_shared_lock(s->ks);
    if (follow(s) < 0)
        res = D_PARSE;
    else if (!(r = lookup(s, epoch)))
        res = D_KEYERR;
    else if (recv_failed(r) > FAILED_VERIFY_LIMIT)
        res = D_AUTH;
    else if (recv_ready(s, r) < 0)
        res = D_PARSE;
    else if (!replay_check(&r->replay, counter, now))
        res = D_REPLAY;
    key_shared_unlock(s->ks);
    if (res != D_PEER_COUNT)
        return res;
    nonce_of(r, pkt, nonce); /* r stays: only this worker moves its keys, in follow */
    if (aead_ctx_open(r->d.ctx, nonce, pkt, DATA_V2_EPOCH_AAD_LEN,
                      pkt + DATA_V2_EPOCH_AAD_LEN, (int)n, pkt + DATA_V2_EPOCH_AAD_LEN + n) < 0) {
        __atomic_fetch_add(&r->w->failed, 1, __ATOMIC_RELAXED); /* r is ready */
        return D_AUTH;
    }
    key_shared_lock(s->ks);
    if (follow(s) < 0)
        res = D_PARSE;
    else if (!(r = lookup(s, epoch)))
        res = D_KEYERR; /* its epoch retired meanwhile */
    else if (recv_ready(s, r) < 0
             || (r != &s->rx && r != &s->retiring && !(r = move_receive_to(s, r))))
        res = D_PARSE;
    else if (!replay_check(&r->replay, counter, now))
        res = D_REPLAY;
    else if (replay_update(&r->replay, counter, now) < 0)
        res = D_PARSE;
    else if (now > s->ks->last_rx)
        s->ks->last_rx = now;
    key_shared_unlock(s->ks);
    if (res == D_PEER_COUNT)
        __atomic_fetch_add(&r->w->blocks, (n + EPOCH_LIMIT_BLOCK - 1) / EPOCH_LIMIT_BLOCK,
                           __ATOMIC_RELAXED);
    return res;
}

int epoch_open(struct epoch_state *s, uint8_t op, uint8_t *pkt, uint32_t len, double now)
{
    uint64_t packet_id, counter;
    uint32_t epoch, n;
    uint8_t nonce[AEAD_NONCE_LEN];
    struct epoch_recv *r;
    if (len < DATA_V2_EPOCH_OVERHEAD + 1 || len > MAX_PAYLOAD + DATA_V2_EPOCH_OVERHEAD)
        return D_PARSE;
    packet_id = be64(pkt + 4);
    counter = packet_id & EPOCH_COUNTER_MAX;
    epoch = (uint32_t)(packet_id >> 48);
    n = len - DATA_V2_EPOCH_OVERHEAD;
    if (pkt[0] != op)
        return pkt[0] >> OPCODE_SHIFT != OP_DATA_V2 ? D_PARSE : D_KEYERR;
    if (epoch == 0)
        return D_PARSE; /* never sent */
    if (s->ks)
        return open_shared(s, pkt, n, epoch, counter, now);
    if (!(r = lookup(s, epoch)))
        return D_KEYERR;
    if (r->d.failed > FAILED_VERIFY_LIMIT)
        return D_AUTH;
    if (recv_ready(s, r) < 0)
        return D_PARSE; /* out of memory: refuse rather than guess */
    if (!replay_admit(&r->replay, counter, now))
        return D_REPLAY;
    nonce_of(r, pkt, nonce);
    if (aead_ctx_open(r->d.ctx, nonce, pkt, DATA_V2_EPOCH_AAD_LEN,
                      pkt + DATA_V2_EPOCH_AAD_LEN, (int)n, pkt + DATA_V2_EPOCH_AAD_LEN + n) < 0) {
        r->d.failed++;
        return D_AUTH;
    }
    if (r != &s->rx && r != &s->retiring && !(r = move_receive_to(s, r)))
        return D_PARSE; /* out of memory deriving keys: refuse rather than guess */
    if (replay_commit(&r->replay, counter, now) < 0)
        return D_PARSE;
    r->d.blocks += (n + EPOCH_LIMIT_BLOCK - 1) / EPOCH_LIMIT_BLOCK;
    return D_PEER_COUNT;
}
