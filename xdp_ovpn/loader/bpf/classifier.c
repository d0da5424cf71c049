/* XDP classifier for the OpenVPN underlay (compiled by loader/ with bcc).
 *
 * DATA_V2 for a peer-id/key-id the data plane holds keys for goes to the AF_XDP socket of
 * this RX queue; everything else the fast path does not own goes up the stack untouched,
 * except what userspace would only throw away:
 * - packets to a listener that cannot be OpenVPN (too short, no such opcode);
 * - while the data plane is authoritative for `peers` (a worker holds it): DATA_V2 for a
 *   peer-id it does not hold, and DATA_V1, which it never takes;
 * - control packets from a source that is not a connected peer's address, beyond a token
 *   bucket per source (address and port: clients behind one NAT are not one source) and
 *   one for all such sources together.
 *
 * The loader passes the wire constants (OP_*, MIN_*) and verdict indices (V_*) with -D, so
 * they are spelled out once, in Python.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NEXTHDR_FRAGMENT 44
#define CFG_OBSERVE 1
#define CFG_CONTROL_LIMIT 2
#define NSEC 1000000000ULL
#define MAX_REFILL_NS (10 * NSEC) /* caps elapsed * rate against u64 overflow */

/* A UDP endpoint: a listener (addr all zero: any address of that family) or a peer's remote. */
struct endpoint {
    u32 family; /* 4 or 6 */
    u16 port;   /* network byte order */
    u16 pad;
    u8 addr[16];
};

struct peer_keys {
    u8 key_mask; /* bit k set: the data plane holds a key with key-id k */
};

struct peer_counters {
    u64 packets;
    u64 bytes;
};

struct config {
    u32 flags;        /* CFG_* */
    u32 source_rate;  /* control packets a second from one address:port (not a peer's) */
    u32 source_burst; /* its bucket size */
    u32 global_rate;  /* the same for all such sources together */
    u32 global_burst;
    u32 pad;
};

struct bucket {
    u64 stamp_ns;
    u64 credit; /* tokens * NSEC, so refills need no division */
};

BPF_HASH(listeners, struct endpoint, u8, 16);
BPF_HASH(peers, u32, struct peer_keys, 65536);
BPF_HASH(remotes, struct endpoint, u8, 65536); /* connected peers' addresses */
BPF_ARRAY(authority, u32, 1); /* nonzero: `peers` is all the data plane serves */
BPF_PERCPU_HASH(peer_stats, u32, struct peer_counters, 65536);
BPF_PERCPU_ARRAY(opcode_stats, u64, 32);
BPF_PERCPU_ARRAY(verdict_stats, u64, V_COUNT);
BPF_ARRAY(config, struct config, 1);
/* LRU: a spoofed flood evicts old sources instead of growing the map. */
BPF_TABLE("lru_hash", struct endpoint, struct bucket, source_buckets, 65536);
/* [ALL]: every control packet from a non-peer; [NEW]: first contacts, an eighth of that:
 * a handshake is about ten control packets from the client, its first is one of them. */
#define ALL 0
#define NEW 1
#define NEW_SHARE_SHIFT 3
BPF_ARRAY(global_bucket, struct bucket, 2);
BPF_XSKMAP(xsks, 64);

static __always_inline int verdict(u32 v, int action, struct config *cfg)
{
    u64 *n = verdict_stats.lookup(&v);
    if (n)
        *n += 1;
    /* Observe mode counts what would have happened and steers nothing. */
    if (cfg && (cfg->flags & CFG_OBSERVE))
        return XDP_PASS;
    return action;
}

/* Refill a token bucket and spend one token if it has one.
 * Racing CPUs may both spend a token: harmless. */
static __always_inline int take_token(struct bucket *b, u64 now, u32 rate, u32 burst)
{
    u64 elapsed = now > b->stamp_ns ? now - b->stamp_ns : 0;
    if (elapsed > MAX_REFILL_NS)
        elapsed = MAX_REFILL_NS;
    u64 cap = (u64)burst * NSEC;
    u64 credit = b->credit + elapsed * rate;
    if (credit > cap)
        credit = cap;
    b->stamp_ns = now;
    if (credit < NSEC) {
        b->credit = credit;
        return 0;
    }
    b->credit = credit - NSEC;
    return 1;
}

static __always_inline int take_global(u32 which, u64 now, struct config *cfg)
{
    struct bucket *g = global_bucket.lookup(&which);
    if (!g)
        return 1;
    u32 rate = cfg->global_rate, burst = cfg->global_burst;
    if (which == NEW) {
        rate = (rate >> NEW_SHARE_SHIFT) ?: 1;
        burst = (burst >> NEW_SHARE_SHIFT) ?: 1;
    }
    return take_token(g, now, rate, burst);
}

/* The verdict on a control packet. A connected peer's (renegotiation, EXIT) always passes.
 * Any other source pays a token of its own bucket and one of the global bucket. A first
 * contact (no bucket of its own yet: what a spoofed flood is made of) also pays one of the
 * smaller NEW bucket, so a flood of them cannot take the global bucket from the sources
 * seen before, and a client whose first HARD_RESET was shed gets in with its retry. */
static __always_inline u32 admit_control(struct endpoint *from, struct config *cfg)
{
    if (!cfg || !(cfg->flags & CFG_CONTROL_LIMIT) || remotes.lookup(from))
        return V_PASS_CONTROL;
    u64 now = bpf_ktime_get_ns();
    struct bucket *b = source_buckets.lookup(from);
    if (!b) {
        int ok = take_global(NEW, now, cfg) && take_global(ALL, now, cfg);
        u64 full = (u64)cfg->source_burst * NSEC;
        struct bucket fresh = {.stamp_ns = now, .credit = ok && full ? full - NSEC : full};
        source_buckets.update(from, &fresh);
        return ok ? V_PASS_CONTROL : V_DROP_CONTROL_GLOBAL;
    }
    if (!take_token(b, now, cfg->source_rate, cfg->source_burst))
        return V_DROP_CONTROL_SOURCE;
    if (!take_global(ALL, now, cfg))
        return V_DROP_CONTROL_GLOBAL;
    return V_PASS_CONTROL;
}

static __always_inline int authoritative(void)
{
    u32 zero = 0;
    u32 *on = authority.lookup(&zero);
    return on && *on;
}

int xdp_classify(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    u32 zero = 0;
    struct config *cfg = config.lookup(&zero);
    struct endpoint lk = {};
    struct endpoint from = {}; /* the sender: `remotes` and `source_buckets` key */

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) /* verifier: every header read is bounds-checked */
        return verdict(V_PASS_OTHER, XDP_PASS, cfg);
    u16 proto = eth->h_proto;
    void *l3 = eth + 1;
    if (proto == htons(ETH_P_8021Q) || proto == htons(ETH_P_8021AD)) {
        /* One VLAN tag: 2 bytes TCI, then the inner ethertype. */
        if (l3 + 4 > end)
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
        proto = *(u16 *)(l3 + 2);
        l3 += 4;
    }

    struct udphdr *udp;
    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
        if (ip->frag_off & htons(IP_MF | IP_OFFSET))
            return verdict(V_PASS_FRAGMENT, XDP_PASS, cfg);
        u32 ihl = ip->ihl * 4; /* options make the header longer than struct iphdr */
        if (ihl < sizeof(*ip))
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
        udp = l3 + ihl;
        lk.family = from.family = 4;
        __builtin_memcpy(lk.addr, &ip->daddr, 4);
        __builtin_memcpy(from.addr, &ip->saddr, 4);
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
        if (ip6->nexthdr == NEXTHDR_FRAGMENT)
            return verdict(V_PASS_FRAGMENT, XDP_PASS, cfg);
        /* Other extension headers: not walked; such packets take the slow path. */
        if (ip6->nexthdr != IPPROTO_UDP)
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
        udp = (void *)(ip6 + 1);
        lk.family = from.family = 6;
        __builtin_memcpy(lk.addr, &ip6->daddr, 16);
        __builtin_memcpy(from.addr, &ip6->saddr, 16);
    } else {
        return verdict(V_PASS_OTHER, XDP_PASS, cfg);
    }

    if ((void *)(udp + 1) > end)
        return verdict(V_PASS_OTHER, XDP_PASS, cfg);
    lk.port = udp->dest;
    from.port = udp->source;
    if (!listeners.lookup(&lk)) {
        __builtin_memset(lk.addr, 0, sizeof(lk.addr));
        if (!listeners.lookup(&lk))
            return verdict(V_PASS_OTHER, XDP_PASS, cfg);
    }

    /* UDP length, not data_end: short frames carry Ethernet padding. */
    u32 len = ntohs(udp->len);
    /* Older verifiers (6.1 and 6.12 seen) lose the bound of a byte-swapped value: hide it
     * from the optimiser, then mask, so the pointer arithmetic below stays provably bounded. */
    asm volatile("" : "+r"(len));
    len &= 0xffff;
    u8 *p = (u8 *)(udp + 1);
    if (len < sizeof(*udp) || (void *)udp + len > end)
        return verdict(V_PASS_OTHER, XDP_PASS, cfg); /* malformed UDP: the stack's call */
    len -= sizeof(*udp);
    if (len < 1 || (void *)(p + 4) > end)
        return verdict(V_DROP_SHORT, XDP_DROP, cfg);

    u32 op = p[0] >> OPCODE_SHIFT;
    u32 kid = p[0] & KEY_ID_MASK;
    u64 *n = opcode_stats.lookup(&op);
    if (n)
        *n += 1;

    switch (op) {
    case OP_DATA_V2:
        break;
    case OP_DATA_V1:
        if (len < MIN_DATA_V1)
            return verdict(V_DROP_SHORT, XDP_DROP, cfg);
        if (authoritative()) /* the data plane never takes DATA_V1 */
            return verdict(V_DROP_DATA_V1, XDP_DROP, cfg);
        return verdict(V_PASS_DATA_V1, XDP_PASS, cfg);
    case OP_HARD_RESET_CLIENT_V1:
    case OP_HARD_RESET_SERVER_V1:
    case OP_SOFT_RESET_V1:
    case OP_CONTROL_V1:
    case OP_ACK_V1:
    case OP_HARD_RESET_CLIENT_V2:
    case OP_HARD_RESET_SERVER_V2:
    case OP_HARD_RESET_CLIENT_V3:
    case OP_CONTROL_WKC_V1: {
        if (len < MIN_CONTROL)
            return verdict(V_DROP_SHORT, XDP_DROP, cfg);
        u32 v = admit_control(&from, cfg);
        return verdict(v, v == V_PASS_CONTROL ? XDP_PASS : XDP_DROP, cfg);
    }
    default:
        return verdict(V_DROP_BAD_OPCODE, XDP_DROP, cfg);
    }

    if (len < MIN_DATA_V2)
        return verdict(V_DROP_SHORT, XDP_DROP, cfg);
    u32 peer_id = (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
    struct peer_keys *peer = peers.lookup(&peer_id);
    if (!peer) {
        if (authoritative()) /* nobody here could decrypt it */
            return verdict(V_DROP_UNKNOWN_PEER, XDP_DROP, cfg);
        return verdict(V_PASS_UNKNOWN_PEER, XDP_PASS, cfg);
    }
    if (!(peer->key_mask & (1 << kid)))
        return verdict(V_PASS_UNKNOWN_KEY, XDP_PASS, cfg);
    /* Our peers use AEAD only: anything shorter than its header cannot be theirs. */
    if (len < MIN_AEAD)
        return verdict(V_DROP_SHORT, XDP_DROP, cfg);

    struct peer_counters *pc = peer_stats.lookup(&peer_id);
    if (!pc) {
        struct peer_counters fresh = {};
        peer_stats.update(&peer_id, &fresh);
        pc = peer_stats.lookup(&peer_id);
    }
    if (pc) {
        pc->packets += 1;
        pc->bytes += len;
    }
    if (cfg && (cfg->flags & CFG_OBSERVE))
        return verdict(V_PASS_OBSERVE, XDP_PASS, cfg);
    /* Falls back to XDP_PASS when no AF_XDP socket is bound to this queue. */
    int action = xsks.redirect_map(ctx->rx_queue_index, XDP_PASS);
    if (action == XDP_REDIRECT)
        return verdict(V_REDIRECT, XDP_REDIRECT, cfg);
    return verdict(V_PASS_NO_SOCKET, XDP_PASS, cfg);
}
