/* The vnet_hdr TUN's offloads, both ways.
 *
 * Receive: GRO for a vnet_hdr TUN (dataplane/offload.py TcpCoalescer): the decrypted TCP segments of
 * one RX batch that Linux's tcp_gro_receive would merge go to the TUN as one GSO
 * super-packet, one writev straight from the UMEM frames. A run shares addresses, ports,
 * TOS, ACK number and TCP options; flags are ACK (PSH ends it); sequence numbers are
 * contiguous; every segment but the last is exactly gso_size long. */
#include <errno.h>
#include <unistd.h>

#include "engine.h"

#define TCP_ACK 0x10
#define TCP_PSH 0x08

struct seg {
    uint32_t tos, seq, ack, hlen;
    uint8_t flags;
    const uint8_t *flow, *opts;
    uint8_t flow_len, opts_len;
};

/* The headers of an IPv4 (no options) or IPv6 TCP segment; hlen 0 when it is not one. */
static void headers(const uint8_t *p, uint32_t n, struct seg *s)
{
    uint32_t optoff;
    s->hlen = 0;
    if (p[0] == 0x45 && n >= 40) {
        if (p[9] != PROTO_TCP || be16(p + 6) & 0x3FFF)
            return;
        s->tos = p[1];
        s->flow = p + 12;
        s->flow_len = 12;
        s->seq = be32(p + 24);
        s->ack = be32(p + 28);
        s->flags = p[33];
        s->hlen = 20 + (p[32] >> 4) * 4;
        optoff = 40;
    } else if (p[0] >> 4 == 6 && n >= 60) {
        if (p[6] != PROTO_TCP)
            return;
        s->tos = be32(p);
        s->flow = p + 8;
        s->flow_len = 36;
        s->seq = be32(p + 44);
        s->ack = be32(p + 48);
        s->flags = p[53];
        s->hlen = 40 + (p[52] >> 4) * 4;
        optoff = 60;
    } else {
        return;
    }
    s->opts = p + optoff;
    s->opts_len = s->hlen > optoff ? s->hlen - optoff : 0;
}

static int same_run(const struct coalescer *c, const struct seg *s, const struct peer *peer)
{
    return c->first && c->peer == peer && c->k_tos == s->tos && c->k_ack == s->ack
        && c->k_hlen == s->hlen && c->k_flow_len == s->flow_len
        && c->k_opts_len == s->opts_len && !memcmp(c->k_flow, s->flow, s->flow_len)
        && !memcmp(c->k_opts, s->opts, s->opts_len);
}

static void write_single(struct engine *e, uint8_t *pkt, uint32_t n, struct peer *peer)
{
    memset(pkt - VNET_HDR_LEN, 0, VNET_HDR_LEN);
    if (write(e->tun_fd, pkt - VNET_HDR_LEN, n + VNET_HDR_LEN) < 0) {
        peer_drop(peer, D_TUN_WRITE);
        return;
    }
    e->co.writes++;
    peer->st.rx_packets++;
    peer->st.rx_bytes += n;
}

/* pkt[0:n] is a decrypted packet with VNET_HDR_LEN bytes of scratch before it; it must stay
 * untouched until coalesce_flush. */
void coalesce_add(struct engine *e, uint8_t *pkt, uint32_t n, struct peer *peer)
{
    struct coalescer *c = &e->co;
    struct seg s;
    uint32_t plen;
    headers(pkt, n, &s);
    if (!s.hlen || (s.flags & ~TCP_PSH) != TCP_ACK || n <= s.hlen) {
        coalesce_flush(e);
        write_single(e, pkt, n, peer);
        return;
    }
    plen = n - s.hlen;
    if (s.seq == c->next_seq && same_run(c, &s, peer) && c->last == c->mss && c->mss >= plen
        && c->len + plen <= 0xFFFF && c->count < COALESCE_MAX_RUN) {
        c->iov[c->count++] = (struct iovec){pkt + s.hlen, plen};
        c->last = plen;
        c->len += plen;
        if (s.flags & TCP_PSH) /* the super-packet carries the last segment's PSH */
            c->first[VNET_HDR_LEN + (c->v6 ? 40 : 20) + 13] |= TCP_PSH;
    } else {
        coalesce_flush(e);
        c->first = pkt - VNET_HDR_LEN;
        c->iov[0] = (struct iovec){c->first, n + VNET_HDR_LEN};
        c->count = 1;
        c->peer = peer;
        c->v6 = pkt[0] >> 4 == 6;
        c->hlen = s.hlen;
        c->k_tos = s.tos;
        c->k_ack = s.ack;
        c->k_hlen = s.hlen;
        c->k_flow_len = s.flow_len;
        c->k_opts_len = s.opts_len;
        memcpy(c->k_flow, s.flow, s.flow_len);
        memcpy(c->k_opts, s.opts, s.opts_len);
        c->mss = c->last = plen;
        c->len = n;
    }
    c->next_seq = s.seq + plen;
    if (s.flags & TCP_PSH)
        coalesce_flush(e);
}

static uint32_t fold(uint32_t total)
{
    while (total >> 16)
        total = (total & 0xFFFF) + (total >> 16);
    return total;
}

static uint32_t sum16(const uint8_t *p, int words)
{
    uint32_t total = 0;
    for (int i = 0; i < words; i++)
        total += be16(p + 2 * i);
    return total;
}

/* The first segment's headers become the super-packet's, behind a GSO vnet header. */
static void finish_header(struct coalescer *c)
{
    uint8_t *ip = c->first + VNET_HDR_LEN, *tcp;
    uint32_t pseudo;
    uint16_t hdr[5];
    uint8_t gso;
    if (c->v6) {
        tcp = ip + 40;
        put16(ip + 4, (uint16_t)(c->len - 40));
        pseudo = sum16(ip + 8, 16) + (c->len - 40) + PROTO_TCP;
        gso = VNET_GSO_TCPV6;
    } else {
        tcp = ip + 20;
        put16(ip + 2, (uint16_t)c->len);
        put16(ip + 10, 0);
        put16(ip + 10, (uint16_t)~fold(sum16(ip, 10)));
        pseudo = sum16(ip + 12, 4) + (c->len - 20) + PROTO_TCP;
        gso = VNET_GSO_TCPV4;
    }
    put16(tcp + 16, (uint16_t)fold(pseudo));
    /* struct virtio_net_hdr, native byte order: flags, gso_type, hdr_len, gso_size,
     * csum_start, csum_offset */
    c->first[0] = VNET_NEEDS_CSUM;
    c->first[1] = gso;
    hdr[0] = (uint16_t)c->hlen;
    hdr[1] = (uint16_t)c->mss;
    hdr[2] = (uint16_t)(tcp - ip);
    hdr[3] = 16;
    memcpy(c->first + 2, hdr, 8);
}

void coalesce_flush(struct engine *e)
{
    struct coalescer *c = &e->co;
    int count = c->count;
    if (!c->first)
        return;
    if (count == 1)
        memset(c->first, 0, VNET_HDR_LEN);
    else
        finish_header(c);
    c->first = NULL;
    c->count = 0;
    if (writev(e->tun_fd, c->iov, count) < 0) {
        peer_drop(c->peer, D_TUN_WRITE);
        return;
    }
    c->writes++;
    if (count > 1)
        c->merged += count;
    c->peer->st.rx_packets += count;
    c->peer->st.rx_bytes += c->len + (uint64_t)(count - 1) * c->hlen;
}

/* -- transmit: TSO super-packets and partial checksums read from the TUN ----------------- */

#define VNET_GSO_ECN 0x80
#define TCP_FIN 0x01
#define TCP_CWR 0x80

/* Ones' complement sum of p[0:len] (big-endian words, an odd byte padded). */
static uint64_t sum_bytes(const uint8_t *p, uint32_t len, uint64_t total)
{
    uint32_t i = 0;
    for (; i + 4 <= len; i += 4)
        total += be32(p + i);
    for (; i + 2 <= len; i += 2)
        total += be16(p + i);
    if (i < len)
        total += (uint32_t)p[i] << 8;
    return total;
}

static uint16_t fold64(uint64_t total)
{
    while (total >> 16)
        total = (total & 0xFFFF) + (total >> 16);
    return (uint16_t)total;
}

enum vnet_kind vnet_read(const uint8_t *hdr, uint8_t *pkt, uint32_t n, struct tso *t)
{
    uint16_t w[4];
    uint8_t gso = hdr[1] & ~VNET_GSO_ECN;
    memcpy(w, hdr + 2, sizeof(w)); /* hdr_len, gso_size, csum_start, csum_offset (native) */
    if (gso == VNET_GSO_TCPV4 || gso == VNET_GSO_TCPV6) {
        uint32_t ip, doff;
        t->v6 = gso == VNET_GSO_TCPV6;
        if (t->v6) {
            if (n < IPV6_HLEN + 20 || pkt[0] >> 4 != 6 || pkt[6] != PROTO_TCP)
                return VNET_BAD;
            ip = IPV6_HLEN;
        } else {
            if (n < IPV4_HLEN + 20 || pkt[0] >> 4 != 4 || pkt[9] != PROTO_TCP)
                return VNET_BAD;
            ip = (pkt[0] & 0x0F) * 4;
            if (ip < IPV4_HLEN || ip + 20 > n)
                return VNET_BAD;
        }
        doff = (pkt[ip + 12] >> 4) * 4;
        t->hlen = ip + doff;
        t->mss = w[1];
        if (doff < 20 || t->hlen >= n || !t->mss)
            return VNET_BAD;
        return VNET_SUPER;
    }
    if (gso != 0)
        return VNET_BAD; /* UDP and others: never asked for */
    if (hdr[0] & VNET_NEEDS_CSUM) { /* the sum the kernel left to the device */
        uint32_t start = w[2], field = w[2] + w[3];
        uint16_t csum;
        if (start >= n || field + 2 > n)
            return VNET_BAD;
        csum = (uint16_t)~fold64(sum_bytes(pkt + start, n - start, 0));
        put16(pkt + field, csum ? csum : 0xFFFF);
    }
    return VNET_PLAIN;
}

/* Segment i of a TCP super-packet written to out (as Linux's tcp_gso_segment): the headers
 * with the length, IPv4 id + i, sequence number + i * mss, FIN and PSH on the last segment
 * only, CWR on the first only, both checksums computed. Returns the segment's length. */
uint32_t tso_segment(const struct tso *t, const uint8_t *super, uint32_t n, uint32_t i,
                     uint8_t *out)
{
    uint32_t payload = n - t->hlen, off = i * t->mss;
    uint32_t chunk = payload - off < t->mss ? payload - off : t->mss, len = t->hlen + chunk;
    uint32_t ip = t->v6 ? IPV6_HLEN : (super[0] & 0x0F) * 4, tcp_len = len - ip;
    uint8_t *tcp = out + ip;
    uint64_t sum;
    memcpy(out, super, t->hlen);
    memcpy(out + t->hlen, super + t->hlen + off, chunk);
    if (t->v6) {
        put16(out + 4, (uint16_t)tcp_len);
        sum = sum_bytes(out + 8, 32, 0) + tcp_len + PROTO_TCP;
    } else {
        put16(out + 2, (uint16_t)len);
        put16(out + 4, (uint16_t)(be16(super + 4) + i));
        put16(out + 10, 0);
        put16(out + 10, (uint16_t)~fold64(sum_bytes(out, ip, 0)));
        sum = sum_bytes(out + 12, 8, 0) + tcp_len + PROTO_TCP;
    }
    put32(tcp + 4, be32(super + ip + 4) + off);
    if (i)
        tcp[13] &= ~TCP_CWR;
    if (off + chunk < payload)
        tcp[13] &= ~(TCP_FIN | TCP_PSH);
    put16(tcp + 16, 0);
    put16(tcp + 16, (uint16_t)~fold64(sum_bytes(tcp, tcp_len, sum)));
    return len;
}
