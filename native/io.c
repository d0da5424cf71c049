/* The packet loops (dataplane/io.py Ingress/Egress, socketpath.py's worker; ovpn's io.c):
 *   rx_xsk     AF_XDP RX ring -> frame checks -> peer, key -> replay -> decrypt in place in
 *              the UMEM -> pings, OCC exit, floats, MSS, source check -> TUN (coalesced)
 *              -> frames back to the fill ring;
 *   rx_socket  UDP socket (recvmmsg) -> DATA_V2 decrypted -> TUN; the rest handed up;
 *   tx_tun     TUN (TSO super-packets cut in offload.c) -> peer by destination -> sealed
 *              in place -> UDP_SEGMENT runs, several peers' runs a sendmmsg (gso), or a
 *              datagram a packet.
 * Every length from the wire is checked before use; nothing is allocated per packet. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"

#define XDP_RING_NEED_WAKEUP 1

int engine_init(struct engine *e)
{
    e->tun_fd = -1;
    e->epfd = -1;
    e->gso_ok = 1;
    e->gso_max_seg = MAX_IP;
    e->head = DATA_V2_HEADER_LEN;
    /* A run is at most GSO_MAX_BYTES, or one packet as big as IP allows; the next read
     * lands after it with room for a whole packet (or TSO super-packet) and its tag. */
    e->pool = malloc((size_t)SEND_QUEUE * OUT_SIZE);
    e->out = e->pool;
    return e->pool ? 0 : -1;
}

void engine_free(struct engine *e)
{
    table_free(&e->peers, e->release);
    serve_close(e);
    free(e->pool);
    free(e->sock_bufs);
    free(e->tso_buf);
    e->pool = e->out = e->sock_bufs = e->tso_buf = NULL;
}

static void count(struct engine *e, enum drop reason) { e->drops[reason]++; }

static void emit(struct engine *e, const struct event *ev)
{
    e->emitted++;
    e->emit(e->emit_ctx, ev);
}

void remove_peer(struct engine *e, struct peer *p)
{
    if (e->co.first && e->co.peer == p)
        coalesce_flush(e); /* what it wrote so far goes out as it would have */
    if (e->run_peer == p)
        e->run_peer = NULL, e->run_key = NULL, e->run_len = e->run_count = 0;
    table_remove(&e->peers, p, e->release);
}

/* -- opening a DATA_V2 packet ------------------------------------------------------------ */

static struct key *key_for(struct peer *p, uint8_t key_id)
{
    for (int slot = 0; slot < 2; slot++)
        if (p->keys[slot] && p->keys[slot]->key_id == key_id)
            return p->keys[slot];
    return NULL;
}

/* pkt[0:len] in a buffer with `room` bytes from pkt (the XSK frame's end of chunk): checks,
 * replay window, decryption in place; D_PEER_COUNT when it opened. The checks and their
 * order are datachannel.decrypt_frame's (decrypt_into's with unbounded room). */
static int key_open(struct key *k, uint8_t *pkt, uint32_t len, uint64_t room, double now)
{
    uint8_t op;
    uint64_t pid;
    if (k->epoch)
        return epoch_open(k->epoch, k->op, pkt, len, now);
    if (len < MIN_PACKET_LEN || len > MAX_PAYLOAD + DATA_V2_HEADER_LEN)
        return D_PARSE;
    op = pkt[0];
    pid = be32(pkt + 4);
    if (op != k->op)
        return op >> OPCODE_SHIFT != OP_DATA_V2 ? D_PARSE : D_KEYERR;
    if (!replay_admit(&k->replay, pid, now))
        return D_REPLAY;
    if (room < (uint64_t)len + AEAD_TAG_LEN)
        return D_PARSE; /* no room to move the tag */
    if (aead_open(&k->dec, (uint32_t)pid, pkt, pkt + DATA_V2_HEADER_LEN,
                  (int)(len - DATA_V2_HEADER_LEN), pkt + DATA_V2_AAD_LEN) < 0)
        return D_AUTH;
    switch (replay_commit(&k->replay, pid, now)) {
    case 0:
        return D_REPLAY; /* another worker took the same id while this one decrypted */
    case -1:
        return D_PARSE; /* out of memory for a time mark: refuse rather than guess */
    }
    return D_PEER_COUNT;
}

/* The receive step both loops share: the key the packet names, opened (key_open), the
 * link counters and the peer's last receive time; the key (its format says where the
 * plaintext is), NULL when dropped (counted on p). */
static const struct key *peer_open(struct peer *p, uint8_t *pkt, uint32_t len, uint64_t room,
                                   double now)
{
    struct key *k = key_for(p, pkt[0] & KEY_ID_MASK);
    int res;
    if (!k) {
        peer_drop(p, D_NO_KEY);
        return NULL;
    }
    res = key_open(k, pkt, len, room, now);
    if (res != D_PEER_COUNT) {
        peer_drop(p, res);
        return NULL;
    }
    p->st.link_rx_packets++;
    p->st.link_rx_bytes += len;
    p->last_rx = now;
    return k;
}

/* The server's anti-spoofing rule (peers.py owns_source): the inner source must be one the
 * transmit path's lookup gives to this peer. A refused packet is counted, its source kept;
 * an IPv6 link-local source (clients' router solicitations) is counted apart. */
static int source_ok(struct engine *e, struct peer *p, const uint8_t *pkt, uint32_t n)
{
    const uint8_t *src = NULL;
    int fam = 0;
    if (n >= IPV4_HLEN && pkt[0] >> 4 == 4)
        src = pkt + 12, fam = 4;
    else if (n >= IPV6_HLEN && pkt[0] >> 4 == 6)
        src = pkt + 8, fam = 6;
    if (src && table_by_destination(&e->peers, fam, src) == p)
        return 1;
    if (fam == 6 && src[0] == 0xFE && (src[1] & 0xC0) == 0x80) {
        peer_drop(p, D_LINK_LOCAL);
        return 0;
    }
    peer_drop(p, D_BAD_SOURCE);
    p->bad_source_len = fam == 4 ? 4 : fam == 6 ? 16 : 0;
    if (src)
        memcpy(p->bad_source, src, p->bad_source_len);
    return 0;
}

/* The MSS for SYNs of a peer whose key is k: its data format's. */
static int key_mss(const struct engine *e, const struct key *k)
{
    return k->epoch ? e->mss_epoch : e->mss;
}

/* Pings and OCC exit are consumed (1; the peer may be gone), SYNs clamped to `mss`. */
static int short_packet(struct engine *e, struct peer *p, uint8_t *plain, uint32_t n, int mss)
{
    if (n == PING_LEN && !memcmp(plain, PING_PAYLOAD, PING_LEN))
        return 1;
    if (n == OCC_EXIT_LEN && !memcmp(plain, OCC_EXIT_PAYLOAD, OCC_EXIT_LEN)) {
        struct event ev = {.kind = EV_EXPIRED, .peer_id = p->id};
        remove_peer(e, p);
        emit(e, &ev);
        return 1;
    }
    if (mss)
        clamp_mss(plain, n, mss);
    return 0;
}

/* -- AF_XDP ----------------------------------------------------------------------------- */

struct xdp_desc { uint64_t addr; uint32_t len, options; };

static int remote_is(const struct remote *r, int fam, const uint8_t *src, uint16_t port)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (r->port != port)
        return 0;
    if (fam == 4) {
        if (r->fam == 4)
            return !memcmp(r->addr, src, 4);
        return r->fam == 6 && !memcmp(r->addr, mapped, 12) && !memcmp(r->addr + 12, src, 4);
    }
    return r->fam == 6 && memcmp(r->addr, mapped, 12) && !memcmp(r->addr, src, 16);
}

static void xsk_float(struct engine *e, struct peer *p, int fam, const uint8_t *src,
                      uint16_t port)
{
    struct event ev = {.kind = EV_FLOAT, .peer_id = p->id};
    struct remote *r = &p->remote;
    memset(r, 0, sizeof(*r));
    if (fam == 4 && e->mapped_v4) { /* an IPv6 socket sends to it by its mapped address */
        r->fam = 6;
        r->addr[10] = r->addr[11] = 0xFF;
        memcpy(r->addr + 12, src, 4);
    } else {
        r->fam = fam;
        memcpy(r->addr, src, fam == 4 ? 4 : 16);
    }
    r->port = port;
    r->canonical = 1;
    ev.addr = *r;
    ev.addr.fam = fam; /* reported as seen; the owner maps IPv4 for an IPv6 socket */
    memset(ev.addr.addr, 0, 16);
    memcpy(ev.addr.addr, src, fam == 4 ? 4 : 16);
    emit(e, &ev);
}

static void xsk_frame(struct engine *e, struct xsk *x, uint64_t addr, uint32_t length,
                      double now)
{
    uint8_t *f = x->umem + addr, *pay, *plain;
    const uint8_t *src;
    uint32_t payload = 0, plen, word, n;
    uint64_t chunk_end, room;
    const struct key *k;
    uint16_t sport, ulen;
    int fam = 4;
    struct peer *p;

    if (addr > x->umem_size || length > x->umem_size - addr) {
        count(e, D_SHORT_FRAME); /* a descriptor outside the UMEM: never from a kernel */
        return;
    }
    /* Ethernet, IP, UDP, the DATA_V2 word: the usual frame first */
    if (length >= 66) {
        uint16_t ethertype = be16(f + 12);
        if (ethertype == ETHERTYPE_IP && f[14] == 0x45 && f[23] == PROTO_UDP
            && !(be16(f + 20) & 0x3FFF)) {
            payload = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
            src = f + 26;
        } else if (ethertype == ETHERTYPE_IPV6 && f[20] == PROTO_UDP) {
            payload = ETH_HLEN + IPV6_HLEN + UDP_HLEN;
            src = f + 22;
            fam = 6;
        }
    }
    if (!payload) { /* IP options, a short frame, or not UDP: the careful way */
        uint32_t l4;
        uint16_t ethertype;
        if (length < ETH_HLEN + IPV4_HLEN + UDP_HLEN) {
            count(e, D_SHORT_FRAME);
            return;
        }
        ethertype = be16(f + 12);
        if (ethertype == ETHERTYPE_IP) {
            uint8_t vihl = f[14];
            l4 = ETH_HLEN + (vihl & 0x0F) * 4;
            if (vihl >> 4 != 4 || (vihl & 0x0F) < 5 || f[23] != PROTO_UDP) {
                count(e, D_NOT_UDP);
                return;
            }
            if (be16(f + 20) & 0x3FFF) {
                count(e, D_IP_FRAGMENT);
                return;
            }
            src = f + 26;
        } else if (ethertype == ETHERTYPE_IPV6) {
            l4 = ETH_HLEN + IPV6_HLEN;
            if (f[20] != PROTO_UDP) { /* extension headers: XDP passes those up */
                count(e, D_NOT_UDP);
                return;
            }
            src = f + 22;
            fam = 6;
        } else {
            count(e, D_NOT_IP);
            return;
        }
        if (l4 + UDP_HLEN + 4 > length) {
            count(e, D_SHORT_FRAME);
            return;
        }
        payload = l4 + UDP_HLEN;
    }
    sport = be16(f + payload - 8);
    ulen = be16(f + payload - 4);
    word = be32(f + payload);
    if (ulen < UDP_HLEN + 4 || payload + (ulen - UDP_HLEN) > length) {
        count(e, D_BAD_UDP_LEN); /* the UDP length also trims Ethernet padding */
        return;
    }
    plen = ulen - UDP_HLEN;
    pay = f + payload;
    if (word >> (24 + OPCODE_SHIFT) != OP_DATA_V2) { /* not for us: the control plane's */
        struct event ev = {.kind = EV_CONTROL, .data = pay, .len = plen};
        ev.addr.fam = fam;
        ev.addr.port = sport;
        memcpy(ev.addr.addr, src, fam == 4 ? 4 : 16);
        emit(e, &ev);
        return;
    }
    p = table_by_id(&e->peers, word & 0xFFFFFF);
    if (!p) {
        count(e, D_UNKNOWN_PEER);
        return;
    }
    chunk_end = (addr & ~(uint64_t)(x->frame_size - 1)) + x->frame_size;
    if (chunk_end > x->umem_size)
        chunk_end = x->umem_size;
    room = chunk_end - (addr + payload);
    if (!(k = peer_open(p, pay, plen, room, now)))
        return;
    if (!remote_is(&p->remote, fam, src, sport))
        xsk_float(e, p, fam, src, sport);
    n = plen - k->overhead;
    plain = pay + k->plain_off;
    if (n < SYN_MAX_LEN && short_packet(e, p, plain, n, key_mss(e, k)))
        return;
    if (e->check_source && !source_ok(e, p, plain, n)) /* counted there */
        return;
    if (e->vnet_hdr && e->tun_fd >= 0) { /* counts rx (or the drop) when it writes */
        coalesce_add(e, plain, n, p);
        return;
    }
    if (write(e->tun_fd, plain, n) < 0) {
        peer_drop(p, D_TUN_WRITE);
        return;
    }
    p->st.rx_packets++;
    p->st.rx_bytes += n;
}

int rx_xsk(struct engine *e, int index, int budget, double now)
{
    struct xsk *x = &e->xsks[index];
    struct xdp_desc *descs = x->rx.desc;
    uint64_t *fill = x->fill.desc, addrs[RX_MAX];
    uint32_t lens[RX_MAX], cons, prod, n, free_slots, i;

    if (budget > RX_MAX)
        budget = RX_MAX;
    if (budget <= 0)
        return 0;
    /* the kernel writes descriptors, then the producer: acquire before reading them */
    prod = __atomic_load_n(x->rx.producer, __ATOMIC_ACQUIRE);
    cons = __atomic_load_n(x->rx.consumer, __ATOMIC_RELAXED);
    n = prod - cons;
    if (n > (uint32_t)budget)
        n = budget;
    if (!n)
        return 0;
    for (i = 0; i < n; i++) {
        const struct xdp_desc *d = &descs[(cons + i) & x->rx.mask];
        addrs[i] = d->addr;
        lens[i] = d->len;
    }
    __atomic_store_n(x->rx.consumer, cons + n, __ATOMIC_RELEASE);
    for (i = 0; i < n; i++)
        xsk_frame(e, x, addrs[i], lens[i], now);
    coalesce_flush(e); /* before the frames go back to the kernel */
    /* frames back to the fill ring (xsk.fill: as many as fit) */
    prod = __atomic_load_n(x->fill.producer, __ATOMIC_RELAXED);
    cons = __atomic_load_n(x->fill.consumer, __ATOMIC_ACQUIRE);
    free_slots = x->fill.size - (prod - cons);
    if (free_slots > n)
        free_slots = n;
    for (i = 0; i < free_slots; i++)
        fill[(prod + i) & x->fill.mask] = addrs[i];
    __atomic_store_n(x->fill.producer, prod + free_slots, __ATOMIC_RELEASE);
    if (__atomic_load_n(x->fill.flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP)
        recv(x->fd, NULL, 0, MSG_DONTWAIT); /* zero-copy drivers refill on a nudge */
    return (int)n;
}

/* -- the UDP socket --------------------------------------------------------------------- */

static void remote_from_sockaddr(struct remote *r, const struct sockaddr_storage *ss)
{
    memset(r, 0, sizeof(*r));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)ss;
        r->fam = 4;
        memcpy(r->addr, &s4->sin_addr, 4);
        r->port = ntohs(s4->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)ss;
        r->fam = 6;
        memcpy(r->addr, &s6->sin6_addr, 16);
        r->port = ntohs(s6->sin6_port);
    }
    r->canonical = 1;
}

static socklen_t sockaddr_of(const struct engine *e, const struct remote *r,
                             struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (e->sock_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (void *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(r->port);
        if (r->fam == 4) {
            s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xFF;
            memcpy(s6->sin6_addr.s6_addr + 12, r->addr, 4);
        } else {
            memcpy(s6->sin6_addr.s6_addr, r->addr, 16);
        }
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (void *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(r->port);
    memcpy(&s4->sin_addr, r->fam == 6 ? r->addr + 12 : r->addr, 4);
    return sizeof(*s4);
}

static void on_data(struct engine *e, uint8_t *pkt, uint32_t len,
                    const struct sockaddr_storage *from, double now)
{
    struct remote src;
    struct peer *p;
    const struct key *k;
    uint8_t *plain;
    uint32_t n;
    int res;
    if (len < 8) {
        count(e, D_SHORT_DATA);
        return;
    }
    p = table_by_id(&e->peers, be32(pkt) & 0xFFFFFF);
    if (!p) {
        count(e, D_UNKNOWN_PEER);
        return;
    }
    if (!(k = peer_open(p, pkt, len, UINT64_MAX, now)))
        return;
    remote_from_sockaddr(&src, from);
    /* the socket worker compares the address strings: equal only as recvfrom spells it */
    if (!p->remote.canonical || p->remote.fam != src.fam || p->remote.port != src.port
        || memcmp(p->remote.addr, src.addr, src.fam == 4 ? 4 : 16)) {
        struct event ev = {.kind = EV_FLOAT, .peer_id = p->id, .addr = src};
        p->remote = src;
        emit(e, &ev);
    }
    n = len - k->overhead;
    plain = pkt + k->plain_off;
    if (n == PING_LEN && !memcmp(plain, PING_PAYLOAD, PING_LEN))
        return;
    if (n == OCC_EXIT_LEN && !memcmp(plain, OCC_EXIT_PAYLOAD, OCC_EXIT_LEN)) {
        struct event ev = {.kind = EV_EXPIRED, .peer_id = p->id};
        remove_peer(e, p);
        emit(e, &ev);
        return;
    }
    if (e->check_source && !source_ok(e, p, plain, n)) /* counted there */
        return;
    if (e->tun_fd < 0) {
        peer_drop(p, D_NO_TUN);
        return;
    }
    if (key_mss(e, k) && n < SYN_MAX_LEN)
        clamp_mss(plain, n, key_mss(e, k));
    if (e->vnet_hdr) { /* a plain packet behind a zero vnet header */
        uint8_t zero[VNET_HDR_LEN] = {0};
        struct iovec iov[2] = {{zero, VNET_HDR_LEN}, {plain, n}};
        res = (int)writev(e->tun_fd, iov, 2);
    } else {
        res = (int)write(e->tun_fd, plain, n);
    }
    if (res < 0) {
        peer_drop(p, D_TUN_WRITE);
        return;
    }
    p->st.rx_packets++;
    p->st.rx_bytes += n;
}

int rx_socket(struct engine *e, int budget, double now)
{
    struct mmsghdr msgs[SOCK_BATCH];
    struct iovec iovs[SOCK_BATCH];
    struct sockaddr_storage from[SOCK_BATCH];
    int done = 0;
    if (!e->sock_bufs) {
        e->sock_bufs = malloc((size_t)SOCK_BATCH * SOCK_BUF);
        if (!e->sock_bufs)
            return 0;
    }
    while (done < budget) {
        int want = budget - done < SOCK_BATCH ? budget - done : SOCK_BATCH, got;
        for (int i = 0; i < want; i++) {
            iovs[i] = (struct iovec){e->sock_bufs + (size_t)i * SOCK_BUF, SOCK_BUF};
            memset(&msgs[i], 0, sizeof(msgs[i]));
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
        }
        got = recvmmsg(e->sock_fd, msgs, want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            count(e, D_SOCKET_ERROR); /* e.g. ICMP port unreachable reported late */
            done++;
            continue;
        }
        for (int i = 0; i < got; i++) {
            uint8_t *pkt = iovs[i].iov_base;
            uint32_t len = msgs[i].msg_len;
            int op;
            if (!len)
                continue;
            op = pkt[0] >> OPCODE_SHIFT;
            if (op == OP_DATA_V2) {
                on_data(e, pkt, len, &from[i], now);
            } else if (op == OP_DATA_V1) {
                count(e, D_DATA_V1);
            } else {
                struct event ev = {.kind = EV_CONTROL, .data = pkt, .len = len};
                remote_from_sockaddr(&ev.addr, &from[i]);
                emit(e, &ev);
            }
        }
        done += got;
        if (got < want)
            break;
    }
    return done;
}

/* -- sending ---------------------------------------------------------------------------- */

static void check_renewal(struct engine *e, struct peer *p, struct key *k)
{
    if (key_needs_renewal(k) && !(p->renewal_sent & 1u << k->key_id)) {
        struct event ev = {.kind = EV_RENEW, .peer_id = p->id, .key_id = k->key_id};
        p->renewal_sent |= 1u << k->key_id;
        emit(e, &ev);
    }
}

/* Seal `count` packets at buf[i*stride], plaintext k->plain_off bytes in (the last one
 * `last` long). */
static int seal_run(struct key *k, uint8_t *buf, uint32_t stride, uint32_t count,
                    uint32_t last)
{
    uint64_t pid;
    if (k->epoch) { /* rotation is checked per packet: a run may cross into the next epoch */
        for (uint32_t i = 0; i < count; i++)
            if (epoch_seal(k->epoch, k->head_word, buf + (size_t)i * stride,
                           i + 1 < count ? stride - DATA_V2_EPOCH_OVERHEAD : last) < 0)
                return -1;
        return 0;
    }
    if (sender_take(&k->sender, count, &pid) < 0)
        return -1;
    for (uint32_t i = 0; i < count; i++, pid++) {
        uint8_t *head = buf + (size_t)i * stride;
        uint32_t n = i + 1 < count ? stride - DATA_V2_HEADER_LEN : last;
        put32(head, k->head_word);
        put32(head + 4, (uint32_t)pid);
        if (aead_seal(&k->enc, (uint32_t)pid, head, head + DATA_V2_HEADER_LEN, (int)n,
                      head + DATA_V2_AAD_LEN) < 0)
            return -1;
    }
    return 0;
}

static ssize_t send_one_datagram(struct engine *e, const uint8_t *data, size_t len,
                                 const struct sockaddr_storage *to, socklen_t tolen)
{
    return sendto(e->sock_fd, data, len, 0, (const struct sockaddr *)to, tolen);
}

static void run_sent(struct engine *e, struct peer *p, uint32_t length, uint32_t seg)
{
    e->sends++;
    p->st.link_tx_packets += (length + seg - 1) / seg;
    p->st.link_tx_bytes += length;
}

/* A sealed run: one datagram, one UDP_SEGMENT sendmsg, or a datagram a segment. */
static void send_run(struct engine *e, struct peer *p, uint8_t *data, uint32_t length,
                     uint32_t seg, int retries)
{
    struct sockaddr_storage to;
    socklen_t tolen = sockaddr_of(e, &p->remote, &to);
    ssize_t res = 0;
    if (e->stub_packet) { /* bench: the run is the socket's, as far as the engine knows */
        e->stub_seg = seg;
        e->stub_run_len = length;
        e->stub_run = data;
    } else if (length == seg) {
        res = send_one_datagram(e, data, length, &to, tolen);
    } else if (e->gso_ok && seg <= e->gso_max_seg) {
        char control[CMSG_SPACE(sizeof(uint16_t))] = {0};
        struct iovec iov = {data, length};
        struct msghdr msg = {.msg_name = &to, .msg_namelen = tolen, .msg_iov = &iov,
                             .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof(control)};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        uint16_t size = (uint16_t)seg;
        cm->cmsg_level = SOL_UDP_LEVEL;
        cm->cmsg_type = UDP_SEGMENT_OPT;
        cm->cmsg_len = CMSG_LEN(sizeof(size));
        memcpy(CMSG_DATA(cm), &size, sizeof(size));
        res = sendmsg(e->sock_fd, &msg, 0);
    } else {
        for (uint32_t off = 0; off < length && res >= 0; off += seg)
            res = send_one_datagram(e, data + off, length - off < seg ? length - off : seg,
                                    &to, tolen);
    }
    if (res < 0) {
        int err = errno;
        if (e->gso_ok && length != seg && retries > 0
            && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
            if (err == EMSGSIZE) /* above the path MTU: only single datagrams get fragmented */
                e->gso_max_seg = seg - 1;
            else /* no checksum offload on this route, for good */
                e->gso_ok = 0;
            send_run(e, p, data, length, seg, retries - 1);
            return;
        }
        peer_send_error(p, err);
        return;
    }
    run_sent(e, p, length, seg);
}

/* One message for each of the queued runs from `first` that sendmmsg can take as they are
 * (a datagram, or a UDP_SEGMENT run while GSO works for its size); how many. */
static int queue_messages(struct engine *e, int first, struct mmsghdr *msgs,
                          struct iovec *iov, struct sockaddr_storage *to, char (*ctl)[CMSG_SPACE(2)])
{
    int n = 0;
    for (int i = first; i < e->queued; i++, n++) {
        const struct queued_run *q = &e->queue[i];
        int gso = q->len != q->seg;
        if (gso && !(e->gso_ok && q->seg <= e->gso_max_seg))
            break;
        memset(&msgs[n], 0, sizeof(msgs[n]));
        iov[n] = (struct iovec){q->data, q->len};
        msgs[n].msg_hdr.msg_iov = &iov[n];
        msgs[n].msg_hdr.msg_iovlen = 1;
        msgs[n].msg_hdr.msg_name = &to[n];
        msgs[n].msg_hdr.msg_namelen = sockaddr_of(e, &q->peer->remote, &to[n]);
        if (gso) {
            struct cmsghdr *cm;
            uint16_t size = (uint16_t)q->seg;
            memset(ctl[n], 0, CMSG_SPACE(2));
            msgs[n].msg_hdr.msg_control = ctl[n];
            msgs[n].msg_hdr.msg_controllen = CMSG_SPACE(2);
            cm = CMSG_FIRSTHDR(&msgs[n].msg_hdr);
            cm->cmsg_level = SOL_UDP_LEVEL;
            cm->cmsg_type = UDP_SEGMENT_OPT;
            cm->cmsg_len = CMSG_LEN(sizeof(size));
            memcpy(CMSG_DATA(cm), &size, sizeof(size));
        }
    }
    return n;
}

/* The sealed runs, in order: as many as possible per sendmmsg; one that fails (or that
 * needs the datagram-a-segment fallback) goes alone through send_run, which decides. */
static void send_queue(struct engine *e)
{
    struct mmsghdr msgs[SEND_QUEUE];
    struct iovec iov[SEND_QUEUE];
    struct sockaddr_storage to[SEND_QUEUE];
    char ctl[SEND_QUEUE][CMSG_SPACE(2)];
    int i = 0;
    while (i < e->queued) {
        int n = e->stub_packet ? 0 : queue_messages(e, i, msgs, iov, to, ctl), sent = 0;
        if (n > 0) {
            sent = sendmmsg(e->sock_fd, msgs, n, 0);
            if (sent < 0)
                sent = 0;
            for (int j = 0; j < sent; j++)
                run_sent(e, e->queue[i + j].peer, e->queue[i + j].len, e->queue[i + j].seg);
            i += sent;
        }
        if (i < e->queued && sent < n + (n == 0)) {
            const struct queued_run *q = &e->queue[i++];
            send_run(e, q->peer, q->data, q->len, q->seg, 2);
        }
    }
    e->queued = 0;
}

static void flush_run(struct engine *e, double now)
{
    struct peer *p = e->run_peer;
    struct key *k = e->run_key;
    uint32_t length = e->run_len, seg = e->run_seg, cnt = e->run_count;
    if (!length || !p || !k)
        return;
    e->run_len = e->run_count = 0;
    e->run_peer = NULL;
    e->run_key = NULL;
    if (seal_run(k, e->out, seg, cnt, length - (cnt - 1) * seg - k->overhead) < 0) {
        p->st.drops[D_KEYERR] += cnt;
        return;
    }
    p->st.tx_packets += cnt;
    p->st.tx_bytes += length - (uint64_t)cnt * k->overhead;
    p->last_tx = now;
    e->queue[e->queued++] = (struct queued_run){e->out, length, seg, p};
    if (e->queued == SEND_QUEUE) /* no buffer left to build the next run in */
        send_queue(e);
    e->out_index = (e->out_index + 1) % SEND_QUEUE;
    e->out = e->pool + (size_t)e->out_index * OUT_SIZE;
}

/* The packet read at out[pos:pos+n] joins the run, or the run goes first and it moves to
 * the front of the buffer (also to where its key's format wants it). */
static void run_add(struct engine *e, struct peer *p, uint32_t pos, uint32_t n, double now)
{
    struct key *k = p->keys[0];
    uint32_t wire, run_len = e->run_len;
    uint8_t *read_into = e->out;
    if (!k) {
        peer_drop(p, D_NO_KEY);
        return;
    }
    if (n < SYN_MAX_LEN && key_mss(e, k)) /* the MSS of the key's data format */
        clamp_mss(read_into + pos, n, key_mss(e, k));
    wire = n + k->overhead;
    if (run_len && (k != e->run_key || wire > e->run_seg || run_len + wire > GSO_MAX_BYTES
                    || e->run_count >= GSO_MAX_SEGMENTS)) {
        flush_run(e, now); /* the run is queued and the next one starts in another buffer */
        run_len = 0;
    }
    if (e->out != read_into || run_len + k->plain_off != pos)
        memmove(e->out + run_len + k->plain_off, read_into + pos, n);
    if (!run_len) {
        e->run_peer = p;
        e->run_key = k;
        e->run_seg = wire;
        e->run_count = 0;
        e->head = k->plain_off;
        check_renewal(e, p, k); /* once a run is plenty: 2^32 ids, 64 a run */
    }
    e->run_len = run_len + wire;
    e->run_count++;
    if (wire < e->run_seg)
        flush_run(e, now); /* a short segment can only be the last one of a run */
}

static struct peer *route(struct engine *e, const uint8_t *pkt, int n)
{
    int version = pkt[0] >> 4;
    struct peer *p;
    if (version == 4 && n >= IPV4_HLEN)
        p = table_by_destination(&e->peers, 4, pkt + 16);
    else if (version == 6 && n >= IPV6_HLEN)
        p = table_by_destination(&e->peers, 6, pkt + 24);
    else {
        count(e, D_NOT_IP);
        return NULL;
    }
    if (!p)
        count(e, D_NO_ROUTE);
    return p;
}

/* One plaintext at buf[24:24+n] (buf has a tag's room after it) sealed and sent alone. */
static int send_single(struct engine *e, struct peer *p, uint8_t *buf, uint32_t n, double now)
{
    struct key *k = p->keys[0];
    struct sockaddr_storage to;
    socklen_t tolen;
    if (!k) {
        peer_drop(p, D_NO_KEY);
        return 0;
    }
    if (k->plain_off != DATA_V2_HEADER_LEN) /* the epoch format's plaintext sits earlier */
        memmove(buf + k->plain_off, buf + DATA_V2_HEADER_LEN, n);
    if (seal_run(k, buf, n + k->overhead, 1, n) < 0) {
        peer_drop(p, D_KEYERR);
        return 0;
    }
    tolen = sockaddr_of(e, &p->remote, &to);
    if (send_one_datagram(e, buf, n + k->overhead, &to, tolen) < 0) {
        peer_send_error(p, errno);
        return 0;
    }
    p->last_tx = now;
    p->st.link_tx_packets++;
    p->st.link_tx_bytes += n + k->overhead;
    check_renewal(e, p, k);
    return 1;
}

int send_payload(struct engine *e, struct peer *p, const uint8_t *payload, uint32_t n,
                 double now)
{
    uint8_t buf[DATA_V2_HEADER_LEN + 256 + AEAD_TAG_LEN];
    if (n == 0 || n > 256) /* pings and OCC messages only */
        return -1;
    memcpy(buf + DATA_V2_HEADER_LEN, payload, n);
    return send_single(e, p, buf, n, now);
}

/* One plaintext read (or cut from a super-packet) at out[pos:pos+n]: clamped, routed, added
 * to the run. */
static void tx_packet(struct engine *e, struct peer *only, uint32_t pos, int n, double now)
{
    uint8_t *pkt = e->out + pos;
    int version;
    struct peer *p;
    if (n <= 0) {
        count(e, D_NOT_IP);
        return;
    }
    version = pkt[0] >> 4;
    if (only && (version == 4 || version == 6)) {
        run_add(e, only, pos, n, now);
        return;
    }
    p = route(e, pkt, n);
    if (p)
        run_add(e, p, pos, n, now);
}

/* A TSO super-packet read at out[pos:pos+n] (offload.c checked it): each segment is cut
 * straight to the end of the run, then handled as a read packet would be. */
static void tx_super_packet(struct engine *e, struct peer *only, uint32_t pos, int n,
                            const struct tso *t, double now)
{
    uint32_t segments = (n - t->hlen + t->mss - 1) / t->mss;
    if (!e->tso_buf && !(e->tso_buf = malloc(MAX_IP))) {
        count(e, D_NOT_IP);
        return;
    }
    memcpy(e->tso_buf, e->out + pos, n); /* the run's end moves over it as segments land */
    for (uint32_t i = 0; i < segments; i++) {
        uint32_t at = e->run_len + e->head;
        tx_packet(e, only, at, (int)tso_segment(t, e->tso_buf, n, i, e->out + at), now);
    }
}

static int tx_gso(struct engine *e, int budget, double now)
{
    uint8_t *out;
    int skip = e->vnet_hdr ? VNET_HDR_LEN : 0, n_read = 0;
    /* client and p2p: the one peer takes everything (verbs run between calls only) */
    struct peer *only = e->peers.single ? e->peers.head : NULL;
    while (n_read < budget) {
        uint32_t pos = e->run_len + e->head;
        ssize_t r;
        struct tso t;
        int n;
        out = e->out; /* flushing a run moves on to another buffer */
        if (e->stub_packet) {
            memcpy(out + pos - skip, e->stub_packet, e->stub_len);
            r = e->stub_len;
        } else {
            r = read(e->tun_fd, out + pos - skip, MAX_IP + skip);
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                count(e, D_TUN_READ);
            break;
        }
        n = (int)r - skip;
        n_read++;
        if (skip && n > 0) { /* the vnet header, read into this packet's DATA_V2 slot */
            switch (vnet_read(out + pos - skip, out + pos, (uint32_t)n, &t)) {
            case VNET_SUPER:
                tx_super_packet(e, only, pos, n, &t, now);
                continue;
            case VNET_BAD:
                count(e, D_NOT_IP);
                continue;
            default:
                break;
            }
        }
        tx_packet(e, only, pos, n, now);
    }
    flush_run(e, now);
    send_queue(e);
    return n_read;
}

static int tx_single(struct engine *e, int budget, double now)
{
    uint8_t *buf = e->out;
    int skip = e->vnet_hdr ? VNET_HDR_LEN : 0, n_read = 0;
    while (n_read < budget) {
        ssize_t r = read(e->tun_fd, buf + DATA_V2_HEADER_LEN - skip, MAX_IP + skip);
        int n;
        struct peer *p;
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                count(e, D_TUN_READ);
            break;
        }
        n = (int)r - skip;
        n_read++;
        if (n <= 0) {
            count(e, D_NOT_IP);
            continue;
        }
        p = route(e, buf + DATA_V2_HEADER_LEN, n);
        if (p && p->keys[0] && n < SYN_MAX_LEN && key_mss(e, p->keys[0]))
            clamp_mss(buf + DATA_V2_HEADER_LEN, n, key_mss(e, p->keys[0]));
        if (p && send_single(e, p, buf, n, now)) {
            p->st.tx_packets++;
            p->st.tx_bytes += n;
        }
    }
    return n_read;
}

int tx_tun(struct engine *e, int budget, double now)
{
    if (e->tun_fd < 0)
        return 0;
    return e->gso_cfg ? tx_gso(e, budget, now) : tx_single(e, budget, now);
}
