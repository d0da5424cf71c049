/* The native engine's state: everything hangs off one `struct engine` (no globals).
 * Files per concept as in Linux's ovpn driver: pktid.c (replay window, sender), crypto_aead.c
 * (EVP contexts), peer.c (tables), offload.c (GRO for the vnet_hdr TUN), mss.c, io.c (the
 * loops), module.c (the Python type). The Python engine (io.py, socketpath.py) is the
 * reference: same bytes, counters, drop reasons and events. */
#ifndef XOVPN_ENGINE_H
#define XOVPN_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/uio.h>
#include <openssl/evp.h>

#include "proto.h"

/* Drop reasons: the first D_PEER_COUNT are counted per peer, the rest engine-wide. The
 * strings are the contract's (engine.py); "send <errno>" is kept apart. */
enum drop {
    D_REPLAY, D_AUTH, D_PARSE, D_KEYERR, D_NO_KEY, D_NO_TUN, D_TUN_WRITE, D_BAD_SOURCE,
    D_LINK_LOCAL,
    D_PEER_COUNT,
    D_UNKNOWN_PEER = D_PEER_COUNT, D_SHORT_FRAME, D_NOT_UDP, D_IP_FRAGMENT, D_NOT_IP,
    D_BAD_UDP_LEN, D_NOT_DATA_V2, D_SHORT_DATA, D_DATA_V1, D_SOCKET_ERROR, D_TUN_READ,
    D_NO_ROUTE,
    D_COUNT
};
extern const char *const DROP_NAMES[D_COUNT];

/* -- pktid.c ---------------------------------------------------------------------------- */
struct mark { double t; uint64_t high; };

/* What the window changes per packet: in the key, or in memory the workers share. */
struct replay_state {
    uint64_t highest;
    double cur_start, cur_time;
    uint64_t cur_high;
    uint32_t m_head, m_len;  /* the ring of time marks, oldest first */
    uint64_t invalid, replayed, too_old, expired;
};

struct replay {
    uint32_t size;       /* ids below highest - size are too old */
    double time_window;  /* seconds; 0: no time limit */
    uint32_t cap_mask;   /* cap - 1, cap a power of two >= size */
    struct replay_state *st;  /* &own, or the shared slot's */
    struct replay_state own;
    uint64_t *bits;      /* circular: bit (id % cap) says whether id was seen */
    struct mark *marks;
    uint32_t m_cap;
    /* shared (several workers): the slot's robust process-shared lock, its last_rx */
    void *lock;
    double *last_rx;
};
int replay_init(struct replay *r, uint32_t size, double time_window);
void replay_free(struct replay *r);
int replay_check(struct replay *r, uint64_t pid, double now);
int replay_update(struct replay *r, uint64_t pid, double now); /* -1: out of memory */
/* The receive path: admit before decrypting (0: replayed, counted); commit after (1: taken,
 * 0: another worker took the same id meanwhile, counted; -1: out of memory). */
int replay_admit(struct replay *r, uint64_t pid, double now);
int replay_commit(struct replay *r, uint64_t pid, double now);

struct sender {
    uint64_t last, reserved;
    uint32_t *ledger; /* the shared ledger slot, or NULL */
    uint64_t *live;   /* the shared live counter (several workers), or NULL */
};
void sender_init(struct sender *s, uint32_t *ledger);
int sender_take(struct sender *s, uint32_t count, uint64_t *first); /* -1: exhausted */
static inline int sender_needs_renewal(const struct sender *s)
{
    return s->last >= PACKET_ID_RENEG_THRESHOLD;
}

/* A key's state shared by the workers of one data plane, in a slot of shared memory the
 * control plane zeroes before the first worker installs the key: the sender's live
 * packet-id counter (one atomic add per run: no id is handed out twice whichever worker
 * sends, a restarted worker goes on from it) and the replay window under a robust lock.
 * An epoch-format key keeps its epochs and windows in the same slot instead (epoch.c). */
struct key_shared {
    uint32_t ready;      /* 0: fresh (zeroed), 1: being set up, 2: ready */
    uint32_t m_cap;      /* marks each window of the slot has room for */
    uint64_t live;       /* a 2.6 key's last packet-id handed out */
    double last_rx;      /* the last packet any worker took with this key */
    pthread_mutex_t lock;
    /* then, at KEY_SHARED_HEAD: a 2.6 key's window block, or an epoch key's area */
};
#define SLOT_ALIGN 64 /* a cache line: two keys' slots never share one */
#define ALIGN_UP(n) (((n) + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN)
#define KEY_SHARED_HEAD ALIGN_UP(sizeof(struct key_shared))
/* Bytes of every key's slot: room for either format (a multiple of SLOT_ALIGN). */
size_t key_shared_size(uint32_t size, double time_window);
int key_shared_attach(struct replay *r, struct sender *s, void *slot, uint32_t size,
                      double time_window); /* -1: the lock refused */
/* The slot's set-up: 1 when the caller is the first and must set the format's part up,
 * then call key_shared_ready; 0: set up already; -1: the lock refused. */
int key_shared_open(struct key_shared *ks, double time_window);
void key_shared_ready(struct key_shared *ks);
void key_shared_lock(struct key_shared *ks);
void key_shared_unlock(struct key_shared *ks);
/* A window block in shared memory (its state, marks, bits): its size, a window `r` working
 * on it (replay_admit/commit take ks's lock; a caller holding it uses check/update), and
 * the window emptied (under the lock). */
size_t replay_block_size(uint32_t size, double time_window);
void replay_share(struct replay *r, struct key_shared *ks, void *block, uint32_t size,
                  double time_window);
void replay_reset(struct replay *r);

/* -- crypto_aead.c ---------------------------------------------------------------------- */
enum cipher { C_AES_128_GCM, C_AES_192_GCM, C_AES_256_GCM, C_CHACHA20_POLY1305, C_COUNT };
int cipher_key_len(int cipher);

struct aead_dir {
    EVP_CIPHER_CTX *ctx; /* key set once; per packet only the nonce and the AAD */
    uint8_t nonce[AEAD_NONCE_LEN];
};
int aead_init(struct aead_dir *d, int cipher, const uint8_t *key, const uint8_t *tail, int enc);
void aead_free(struct aead_dir *d);
/* In place: data[0:n] encrypted, its tag written to tag. 0 on success. */
int aead_seal(struct aead_dir *d, uint32_t pid, const uint8_t *aad, uint8_t *data, int n,
              uint8_t *tag);
/* In place: data[0:n] decrypted if tag authenticates it. 0 on success, -1: bad tag. */
int aead_open(struct aead_dir *d, uint32_t pid, const uint8_t *aad, uint8_t *data, int n,
              const uint8_t *tag);

/* The same AEAD calls for any nonce and AAD (the epoch format's). 0 on success. */
int aead_ctx_init(EVP_CIPHER_CTX **ctx, int cipher, const uint8_t *key, int enc);
int aead_ctx_seal(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                  uint8_t *data, int n, uint8_t *tag);
int aead_ctx_open(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                  uint8_t *data, int n, const uint8_t *tag);

/* -- epoch.c: 2.7's epoch data format ---------------------------------------------------- */
struct epoch_chain { uint32_t epoch; uint8_t secret[EPOCH_KEY_LEN]; }; /* E_n */
struct epoch_dir {        /* one epoch's key in one direction */
    uint32_t epoch;
    EVP_CIPHER_CTX *ctx;
    uint8_t iv[AEAD_NONCE_LEN];
    uint64_t blocks, failed; /* for the usage limit */
};
struct epoch_window;
struct epoch_recv {       /* d.epoch always; d's context and the window once `ready` */
    struct epoch_dir d;
    struct replay replay;     /* its own, or (shared) the slot's window of its epoch */
    struct epoch_window *w;   /* shared: that window's usage counters; NULL: d's */
    uint8_t secret[EPOCH_KEY_LEN];
    uint8_t live, ready;
};
struct epoch_state {
    int cipher;
    uint64_t limit;          /* AEAD usage limit; 0: none (ChaCha20-Poly1305) */
    uint32_t window;
    double window_time;
    struct epoch_chain send_chain, recv_chain; /* the send epoch; the newest receive one */
    struct epoch_dir tx;
    uint64_t tx_counter;     /* the last counter used in tx's epoch */
    struct epoch_recv rx, retiring, future[EPOCH_FUTURE_KEYS];
    uint32_t nfuture;
    uint32_t *ledger;        /* receive << 16 | send epoch, for a replacement worker */
    /* several workers: the key's slot, where the send word, the receive epochs and their
     * windows are; this worker's contexts follow them (NULL: all in this worker) */
    struct key_shared *ks;
    struct epoch_shared *sh;
    size_t window_stride;
};
/* `slot`: a key_shared slot the workers share (key_shared_size bytes), or NULL. */
struct epoch_state *epoch_new(int cipher, const uint8_t send[EPOCH_KEY_LEN],
                              const uint8_t recv[EPOCH_KEY_LEN], uint32_t window,
                              double window_time, void *slot);
size_t epoch_shared_size(uint32_t size, double time_window); /* its part of a slot */
void epoch_free(struct epoch_state *s);
int epoch_advance_send(struct epoch_state *s, uint32_t epoch); /* -1: chain spent */
/* The current receive key to `epoch` (forward only, the retiring one gone); -1: refused. */
int epoch_advance_receive(struct epoch_state *s, uint32_t epoch);
/* pkt[12:12+n] sealed in place, header written, tag at pkt[12+n]; -1: the key is spent. */
int epoch_seal(struct epoch_state *s, uint32_t head_word, uint8_t *pkt, uint32_t n);
/* pkt[0:len] opened in place (plaintext at pkt[12]); D_PEER_COUNT when it opened. */
int epoch_open(struct epoch_state *s, uint8_t op, uint8_t *pkt, uint32_t len, double now);

/* -- keys (module.c installs, peer.c frees) ---------------------------------------------- */
struct key {
    uint8_t key_id;
    uint8_t op;          /* DATA_V2 << 3 | key-id */
    uint32_t head_word;  /* op << 24 | peer-id */
    uint32_t plain_off;  /* where the plaintext sits in a packet: 24, or 12 (epoch) */
    uint32_t overhead;   /* bytes a packet adds to its plaintext: 24, or 28 (epoch) */
    struct aead_dir enc, dec;   /* the 2.6 format's */
    struct sender sender;
    struct replay replay;
    struct epoch_state *epoch;  /* the epoch format's state, or NULL */
    void *ledger_ref;    /* the ledger buffer's owner, released through engine.release */
};
static inline int key_needs_renewal(const struct key *k)
{
    return k->epoch ? k->epoch->send_chain.epoch >= EPOCH_RENEG_THRESHOLD
                    : sender_needs_renewal(&k->sender);
}

/* -- peer.c ----------------------------------------------------------------------------- */
struct remote {
    uint8_t fam;        /* 4, 6, or 0: not an address (never equal to a source) */
    uint8_t canonical;  /* the control plane's string is what recvfrom would give */
    uint16_t port;
    uint8_t addr[16];   /* 4 or 16 bytes used */
};

struct route { uint8_t fam, len; uint8_t net[16]; };

#define SEND_ERR_SLOTS 4
#define BAD_SOURCE_NONE 0xFF
struct peer_stats {
    uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
    uint64_t link_rx_packets, link_rx_bytes, link_tx_packets, link_tx_bytes;
    uint64_t drops[D_PEER_COUNT];
    struct { int err; uint64_t count; } send_err[SEND_ERR_SLOTS];
};

struct peer {
    uint32_t id;
    struct remote remote;
    uint8_t has_v4, has_v6;
    uint8_t vpn4[4], vpn6[16];
    struct route *routes;
    uint32_t nroutes;
    struct key *keys[2];  /* primary, secondary */
    double last_rx, last_tx;
    uint8_t renewal_sent; /* bit per key-id: KeyNeedsRenewal already reported */
    uint8_t bad_source_len;  /* the last D_BAD_SOURCE packet's source: 0, 4 or 16 bytes; */
    uint8_t bad_source[16];  /* BAD_SOURCE_NONE: no such drop yet */
    struct peer_stats st;
    struct peer *prev, *next; /* insertion order */
};

struct hent { uint8_t k[20]; uint8_t used; struct peer *v; };
struct hmap { struct hent *e; uint32_t cap, n; };

struct table {
    int single;
    struct peer *head, *tail;
    uint32_t count;
    struct hmap ids, vpn, routes;
    uint32_t len_count[2][129];  /* iroutes per prefix length, IPv4 and IPv6 */
    uint8_t lens[2][129];        /* lengths in use, longest first */
    int nlens[2];
};

int table_init(struct table *t, int single);
void table_free(struct table *t, void (*release)(void *));
struct peer *table_get(struct table *t, uint32_t id);
/* The receive path's peer: by id, or the single peer of a client. */
static inline struct peer *table_by_id(struct table *t, uint32_t id)
{
    struct peer *p = table_get(t, id);
    return p || !t->single ? p : t->head;
}
struct peer *table_by_destination(struct table *t, int fam, const uint8_t *addr);
int table_add(struct table *t, struct peer *p);   /* -1: out of memory */
int table_index(struct table *t, struct peer *p); /* after a change of addresses */
void table_unindex(struct table *t, struct peer *p);
void table_remove(struct table *t, struct peer *p, void (*release)(void *));
void key_free(struct key *k, void (*release)(void *));
void peer_drop(struct peer *p, enum drop reason);
void peer_send_error(struct peer *p, int err);

/* -- offload.c -------------------------------------------------------------------------- */
struct coalescer {
    struct iovec iov[COALESCE_MAX_RUN];
    int count;
    uint8_t *first;       /* the vnet header before the first segment, or NULL */
    struct peer *peer;
    int v6;
    uint32_t hlen, mss, last, next_seq, len;
    /* the run key: what every segment of the run must share */
    uint32_t k_tos, k_ack, k_hlen;
    uint8_t k_flow[36], k_opts[60];
    uint8_t k_flow_len, k_opts_len;
    uint64_t writes, merged;
};
struct engine;
void coalesce_add(struct engine *e, uint8_t *pkt, uint32_t n, struct peer *peer);
void coalesce_flush(struct engine *e);

/* TUN reads with offloads on (TUNSETOFFLOAD CSUM, TSO4/6): a packet whose checksum is left
 * to us, or a TCP super-packet to cut into segments as the kernel's GSO would. */
struct tso {
    uint32_t hlen, mss; /* IP + TCP headers; the segments' payload size */
    int v6;
};
enum vnet_kind { VNET_PLAIN, VNET_SUPER, VNET_BAD };
enum vnet_kind vnet_read(const uint8_t *hdr, uint8_t *pkt, uint32_t n, struct tso *t);
uint32_t tso_segment(const struct tso *t, const uint8_t *super, uint32_t n, uint32_t i,
                     uint8_t *out);

/* -- mss.c ------------------------------------------------------------------------------ */
int clamp_mss(uint8_t *pkt, uint32_t n, int mss_v4);

/* -- io.c ------------------------------------------------------------------------------- */
enum event_kind { EV_CONTROL, EV_FLOAT, EV_EXPIRED, EV_RENEW };
struct event {
    enum event_kind kind;
    uint32_t peer_id, key_id;
    struct remote addr;        /* EV_CONTROL: source; EV_FLOAT: the new remote */
    const uint8_t *data;       /* EV_CONTROL: the datagram */
    uint32_t len;
};

struct ring {
    uint32_t *producer, *consumer, *flags;
    void *desc;            /* struct xdp_desc[] (RX) or u64[] (fill) */
    uint32_t size, mask;
};

struct xsk {
    struct ring rx, fill;
    uint8_t *umem;
    uint64_t umem_size;
    uint32_t frame_size;
    int fd;
    void *refs;            /* the Python buffers the pointers come from (module.c) */
};

#define MAX_XSK 64
#define RX_MAX 256          /* descriptors taken a call at most */
#define SOCK_BATCH 16       /* datagrams a recvmmsg */
#define SOCK_BUF (65536 + 256)
#define MAX_RUN_LEN (MAX_IP + DATA_V2_HEADER_LEN > GSO_MAX_BYTES \
                     ? MAX_IP + DATA_V2_HEADER_LEN : GSO_MAX_BYTES)
#define OUT_SIZE (MAX_RUN_LEN + DATA_V2_HEADER_LEN + MAX_IP + AEAD_TAG_LEN)

#define SERVE_MAX_WAKE 8
#define SERVE_MAX_WATCHED (SERVE_MAX_WAKE + MAX_XSK + 2)

#define SEND_QUEUE 4 /* sealed runs a sendmmsg takes (across peers) */
struct queued_run {
    uint8_t *data;
    uint32_t len, seg;
    struct peer *peer;
};

struct engine {
    /* configuration */
    int check_source, gso_cfg, mss, mapped_v4, sock_fd, sock_family;
    int mss_epoch; /* the MSS for epoch-format keys' SYNs (their packets are 4 bytes longer) */
    uint32_t replay_window;
    double replay_time;
    int tun_fd, vnet_hdr;
    struct table peers;
    uint64_t drops[D_COUNT];
    /* events go to the owner (module.c) as they happen */
    void (*emit)(void *ctx, const struct event *ev);
    void *emit_ctx;
    void (*release)(void *ref);  /* drops a key's ledger reference */
    struct xsk xsks[MAX_XSK];
    int nxsk;
    struct coalescer co;
    /* egress: the pending run is built in `out`, one of SEND_QUEUE buffers; sealed runs
     * wait in `queue` (in the others) to go out with one sendmmsg */
    uint8_t *out, *pool;
    int out_index, queued;
    struct queued_run queue[SEND_QUEUE];
    struct peer *run_peer;
    struct key *run_key;
    uint32_t run_seg, run_len, run_count;
    uint32_t head; /* where a read's plaintext lands after the run: the last run key's
                    * plain_off, which the next packet nearly always shares */
    int gso_ok;
    uint32_t gso_max_seg;
    uint64_t sends;
    /* the socket path's receive buffers, made on first use */
    uint8_t *sock_bufs;
    /* stand-in I/O for `bench --per-packet` (as io.Egress's `reader`): TUN reads copy this
     * packet, sends are counted, not made */
    uint8_t *tso_buf; /* a super-packet being cut, made on first use */
    const uint8_t *stub_packet;
    uint32_t stub_len;
    uint32_t stub_seg, stub_run_len;  /* the last run "sent" */
    const uint8_t *stub_run;
    uint64_t emitted;  /* events handed to `emit` so far (loop.c returns on a change) */
    /* loop.c's epoll set and the fds it holds */
    int epfd, nwatched;
    struct watched { int fd, kind, index; } watched[SERVE_MAX_WATCHED];
};

int engine_init(struct engine *e);
void engine_free(struct engine *e);
int rx_xsk(struct engine *e, int index, int budget, double now);
int rx_socket(struct engine *e, int budget, double now);
int tx_tun(struct engine *e, int budget, double now);
int send_payload(struct engine *e, struct peer *p, const uint8_t *payload, uint32_t n,
                 double now);
void remove_peer(struct engine *e, struct peer *p);

/* -- loop.c ----------------------------------------------------------------------------- */
struct serve {
    int wake[SERVE_MAX_WAKE], nwake;  /* fds that give the owner control back */
    int read_socket, read_tun;        /* whether this worker reads them (the primary) */
    int rx_batch, rx_rounds, batch;   /* descriptors a call and calls an AF_XDP socket in
                                       * turn; datagrams or TUN reads a turn */
};
enum serve_end { SERVE_WAKE, SERVE_EVENT, SERVE_DEADLINE, SERVE_INTERRUPTED, SERVE_ERROR };
/* Poll and handle packets until the owner has work; the lock callbacks bracket the wait
 * (the owner's GIL). SERVE_ERROR: errno says why. */
enum serve_end serve(struct engine *e, const struct serve *s, double timeout,
                     void (*unlock)(void *), void (*relock)(void *), void *lock_ctx);
void serve_close(struct engine *e);  /* its epoll fd */

#endif
