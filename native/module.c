/* xdp_ovpn._native: the native engine as a Python type (nativeengine.py wraps it into the
 * engine.py contract). Addresses arrive parsed and packed; events leave as tuples appended to
 * the `events` list as they happen. The GIL stays held: one worker thread drives it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "engine.h"

const char *const DROP_NAMES[D_COUNT] = {
    [D_REPLAY] = "ReplayError", [D_AUTH] = "AuthError", [D_PARSE] = "ParseError",
    [D_KEYERR] = "KeyError_", [D_NO_KEY] = "no key", [D_NO_TUN] = "no tun",
    [D_TUN_WRITE] = "tun write", [D_BAD_SOURCE] = "bad source address",
    [D_LINK_LOCAL] = "IPv6 link-local source",
    [D_UNKNOWN_PEER] = "unknown peer-id", [D_SHORT_FRAME] = "short frame",
    [D_NOT_UDP] = "not UDP", [D_IP_FRAGMENT] = "IP fragment", [D_NOT_IP] = "not IP",
    [D_BAD_UDP_LEN] = "bad UDP length", [D_NOT_DATA_V2] = "not DATA_V2",
    [D_SHORT_DATA] = "short data packet", [D_DATA_V1] = "DATA_V1 unsupported",
    [D_SOCKET_ERROR] = "socket error", [D_TUN_READ] = "tun read",
    [D_NO_ROUTE] = "no route to peer",
};

#ifndef XO_SOURCES_DIGEST /* setup.py defines it (dataplane/nativesrc.py) */
#define XO_SOURCES_DIGEST "unknown"
#endif
#define XSK_BUFS 5 /* rx words, rx descriptors, fill words, fill addresses, UMEM */

typedef struct {
    PyObject_HEAD
    struct engine e;
    PyObject *events;
    PyObject *stub;  /* bench: the packet every TUN read returns (bytes), or NULL */
    Py_buffer xsk_bufs[MAX_XSK][XSK_BUFS];
    int closed;
} EngineObject;

static void release_ledger(void *ref)
{
    Py_buffer *view = ref;
    PyBuffer_Release(view);
    free(view);
}

static PyObject *remote_tuple(const struct remote *r)
{
    return Py_BuildValue("(iy#i)", r->fam, (const char *)r->addr,
                         (Py_ssize_t)(r->fam == 4 ? 4 : 16), r->port);
}

static void on_event(void *ctx, const struct event *ev)
{
    EngineObject *self = ctx;
    PyObject *item = NULL, *addr;
    switch (ev->kind) {
    case EV_CONTROL:
        addr = remote_tuple(&ev->addr);
        if (addr)
            item = Py_BuildValue("(sy#N)", "control", (const char *)ev->data,
                                 (Py_ssize_t)ev->len, addr);
        break;
    case EV_FLOAT:
        addr = remote_tuple(&ev->addr);
        if (addr)
            item = Py_BuildValue("(sIN)", "float", ev->peer_id, addr);
        break;
    case EV_EXPIRED:
        item = Py_BuildValue("(sI)", "exit", ev->peer_id);
        break;
    case EV_RENEW:
        item = Py_BuildValue("(sII)", "renew", ev->peer_id, ev->key_id);
        break;
    }
    if (!item || PyList_Append(self->events, item) < 0)
        PyErr_Clear(); /* out of memory: the event is lost, the loop goes on */
    Py_XDECREF(item);
}

static int check_open(EngineObject *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return -1;
    }
    return 0;
}

static struct peer *find_peer(EngineObject *self, unsigned int id)
{
    struct peer *p;
    if (check_open(self) < 0)
        return NULL;
    p = table_get(&self->e.peers, id);
    if (!p)
        PyErr_Format(PyExc_KeyError, "no peer with peer-id %u", id);
    return p;
}

static void engine_close(EngineObject *self)
{
    if (self->closed)
        return;
    self->closed = 1;
    engine_free(&self->e);
    for (int i = 0; i < self->e.nxsk; i++)
        for (int b = 0; b < XSK_BUFS; b++)
            PyBuffer_Release(&self->xsk_bufs[i][b]);
    self->e.nxsk = 0;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"sock_fd", "sock_family", "single", "replay_window",
                            "replay_time", "mss", "gso", "check_source", "mapped_v4",
                            "mss_epoch", NULL};
    int sock_fd, family, single, mss, gso, check_source, mapped, mss_epoch = -1;
    unsigned int window;
    double replay_time;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iipIdippp|i", names, &sock_fd, &family,
                                     &single, &window, &replay_time, &mss, &gso, &check_source,
                                     &mapped, &mss_epoch))
        return -1;
    if (window < 1 || window > 65536 || replay_time < 0 || replay_time > 600) {
        PyErr_SetString(PyExc_ValueError, "replay window 1..65536, time 0..600 s");
        return -1;
    }
    memset(&self->e, 0, sizeof(self->e));
    self->closed = 0;
    if (engine_init(&self->e) < 0 || table_init(&self->e.peers, single) < 0) {
        PyErr_NoMemory();
        self->closed = 1;
        return -1;
    }
    self->e.sock_fd = sock_fd;
    self->e.sock_family = family;
    self->e.replay_window = window;
    self->e.replay_time = replay_time;
    self->e.mss = mss;
    self->e.mss_epoch = mss_epoch < 0 ? mss : mss_epoch; /* -1: as mss */
    self->e.gso_cfg = gso;
    self->e.check_source = check_source;
    self->e.mapped_v4 = mapped;
    self->e.emit = on_event;
    self->e.emit_ctx = self;
    self->e.release = release_ledger;
    Py_XSETREF(self->events, PyList_New(0));
    return self->events ? 0 : -1;
}

static void Engine_dealloc(EngineObject *self)
{
    engine_close(self);
    Py_XDECREF(self->events);
    Py_XDECREF(self->stub);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* (fam, packed address, port, canonical) */
static int parse_remote(PyObject *obj, struct remote *r)
{
    int fam, port, canonical;
    const char *addr;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(obj, "iy#ip", &fam, &addr, &len, &port, &canonical))
        return -1;
    memset(r, 0, sizeof(*r));
    if (!((fam == 4 && len == 4) || (fam == 6 && len == 16) || fam == 0) || port < 0
        || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "bad remote");
        return -1;
    }
    r->fam = fam;
    r->port = port;
    r->canonical = canonical;
    memcpy(r->addr, addr, fam ? len : 0);
    return 0;
}

/* Addresses of a peer: vpn4 / vpn6 packed bytes (or None: keep), routes packed as 18-byte
 * records fam, prefix length, network (or None: keep). */
static int set_addresses(struct peer *p, PyObject *vpn4, PyObject *vpn6, PyObject *routes)
{
    char *buf;
    Py_ssize_t len;
    if (vpn4 != Py_None) {
        if (PyBytes_AsStringAndSize(vpn4, &buf, &len) < 0 || len != 4)
            goto bad;
        memcpy(p->vpn4, buf, 4);
        p->has_v4 = 1;
    }
    if (vpn6 != Py_None) {
        if (PyBytes_AsStringAndSize(vpn6, &buf, &len) < 0 || len != 16)
            goto bad;
        memcpy(p->vpn6, buf, 16);
        p->has_v6 = 1;
    }
    if (routes != Py_None) {
        struct route *r;
        if (PyBytes_AsStringAndSize(routes, &buf, &len) < 0 || len % 18)
            goto bad;
        r = malloc((len / 18 + 1) * sizeof(*r));
        if (!r) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < len / 18; i++) {
            const uint8_t *rec = (const uint8_t *)buf + i * 18;
            if (!((rec[0] == 4 && rec[1] <= 32) || (rec[0] == 6 && rec[1] <= 128))) {
                free(r);
                goto bad;
            }
            r[i].fam = rec[0];
            r[i].len = rec[1];
            memcpy(r[i].net, rec + 2, 16);
        }
        free(p->routes);
        p->routes = r;
        p->nroutes = (uint32_t)(len / 18);
    }
    return 0;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "bad peer addresses");
    return -1;
}

static PyObject *Engine_add_peer(EngineObject *self, PyObject *args)
{
    unsigned int id;
    PyObject *remote, *vpn4, *vpn6, *routes;
    double now;
    struct peer *p;
    if (!PyArg_ParseTuple(args, "IOOOOd", &id, &remote, &vpn4, &vpn6, &routes, &now)
        || check_open(self) < 0)
        return NULL;
    if (table_get(&self->e.peers, id)) {
        PyErr_Format(PyExc_ValueError, "peer-id %u already exists", id);
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return PyErr_NoMemory();
    p->id = id;
    p->last_rx = p->last_tx = now;
    p->bad_source_len = BAD_SOURCE_NONE;
    if (parse_remote(remote, &p->remote) < 0 || set_addresses(p, vpn4, vpn6, routes) < 0) {
        free(p->routes);
        free(p);
        return NULL;
    }
    if (table_add(&self->e.peers, p) < 0) {
        free(p->routes);
        free(p);
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_update_peer(EngineObject *self, PyObject *args)
{
    unsigned int id;
    PyObject *remote, *vpn4, *vpn6, *routes;
    struct remote r;
    struct peer *p;
    int rc;
    if (!PyArg_ParseTuple(args, "IOOOO", &id, &remote, &vpn4, &vpn6, &routes))
        return NULL;
    if (!(p = find_peer(self, id)))
        return NULL;
    if (remote != Py_None && parse_remote(remote, &r) < 0)
        return NULL;
    table_unindex(&self->e.peers, p);
    rc = set_addresses(p, vpn4, vpn6, routes);
    if (table_index(&self->e.peers, p) < 0 && rc == 0) {
        PyErr_NoMemory();
        rc = -1;
    }
    if (rc < 0)
        return NULL;
    if (remote != Py_None)
        p->remote = r;
    Py_RETURN_NONE;
}

static PyObject *Engine_remove_peer(EngineObject *self, PyObject *args)
{
    unsigned int id;
    struct peer *p;
    if (!PyArg_ParseTuple(args, "I", &id) || !(p = find_peer(self, id)))
        return NULL;
    remove_peer(&self->e, p);
    Py_RETURN_NONE;
}

static PyObject *Engine_peer_ids(EngineObject *self, PyObject *noargs)
{
    PyObject *list;
    if (check_open(self) < 0 || !(list = PyList_New(0)))
        return NULL;
    for (struct peer *p = self->e.peers.head; p; p = p->next) {
        PyObject *id = PyLong_FromUnsignedLong(p->id);
        if (!id || PyList_Append(list, id) < 0) {
            Py_XDECREF(id);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(id);
    }
    return list;
}

static PyObject *Engine_new_key(EngineObject *self, PyObject *args)
{
    unsigned int id, slot, key_id;
    int cipher;
    Py_buffer ek, en, dk, dn;
    PyObject *ledger, *shared = Py_None;
    Py_ssize_t index;
    int epoch = 0;
    struct peer *p;
    struct key *k = NULL;
    Py_buffer *view = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "IIIiy*y*y*y*On|Op", &id, &slot, &key_id, &cipher, &ek, &en,
                          &dk, &dn, &ledger, &index, &shared, &epoch))
        return NULL;
    if (!(p = find_peer(self, id)))
        goto out;
    /* 2.6: each direction's key and nonce tail; epoch: its E_1 secret, no tail */
    if (slot > 1 || key_id > KEY_ID_MASK || cipher_key_len(cipher) < 0
        || ek.len != (epoch ? EPOCH_KEY_LEN : cipher_key_len(cipher)) || dk.len != ek.len
        || en.len != (epoch ? 0 : AEAD_NONCE_TAIL_LEN) || dn.len != en.len) {
        PyErr_SetString(PyExc_ValueError, "bad key material");
        goto out;
    }
    k = calloc(1, sizeof(*k));
    if (!k) {
        PyErr_NoMemory();
        goto out;
    }
    if (ledger != Py_None && shared != Py_None) {
        PyErr_SetString(PyExc_ValueError, "a ledger or a shared slot, not both");
        goto fail;
    }
    if (ledger != Py_None || shared != Py_None) {
        /* the ledger, or the key's slot in memory the workers share */
        view = calloc(1, sizeof(*view));
        if (!view || PyObject_GetBuffer(shared != Py_None ? shared : ledger, view,
                                        PyBUF_WRITABLE) < 0) {
            free(view);
            view = NULL;
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            goto fail;
        }
        k->ledger_ref = view;
        if (shared != Py_None
            && ((size_t)view->len < key_shared_size(self->e.replay_window, self->e.replay_time)
                || (uintptr_t)view->buf % 64)) {
            PyErr_SetString(PyExc_ValueError, "shared key slot too small or misaligned");
            goto fail;
        }
        if (shared == Py_None && (index < 0 || (index + 1) * 4 > view->len)) {
            PyErr_SetString(PyExc_IndexError, "ledger index out of range");
            goto fail;
        }
    }
    k->key_id = key_id;
    k->op = OP_DATA_V2 << OPCODE_SHIFT | key_id;
    k->head_word = (uint32_t)k->op << 24 | (id & 0xFFFFFF);
    k->plain_off = k->overhead = DATA_V2_HEADER_LEN;
    if (epoch) {
        k->plain_off = DATA_V2_EPOCH_AAD_LEN;
        k->overhead = DATA_V2_EPOCH_OVERHEAD;
        /* several workers: its epochs and windows in the slot, which it shares with them */
        k->epoch = epoch_new(cipher, ek.buf, dk.buf, self->e.replay_window,
                             self->e.replay_time, shared != Py_None ? view->buf : NULL);
        if (!k->epoch) {
            PyErr_SetString(PyExc_ValueError, "epoch keys refused (OpenSSL, or the shared "
                                              "slot's lock)");
            goto fail;
        }
        if (shared != Py_None) {
            k->replay.last_rx = &((struct key_shared *)view->buf)->last_rx; /* peer_last_rx */
        } else if (view) { /* ledger.track_epochs: a replacement sends in the next epoch and
                     * receives in the one its predecessor had followed the peer to */
            uint32_t *used = (uint32_t *)view->buf + index;
            if (*used && (epoch_advance_send(k->epoch, (*used & 0xFFFF) + 1) < 0
                          || epoch_advance_receive(k->epoch, *used >> 16) < 0)) {
                PyErr_SetString(PyExc_ValueError, "the key's epochs are spent");
                goto fail;
            }
            k->epoch->ledger = used;
            *used = k->epoch->rx.d.epoch << 16 | k->epoch->tx.epoch;
        }
    } else if (aead_init(&k->enc, cipher, ek.buf, en.buf, 1) < 0
        || aead_init(&k->dec, cipher, dk.buf, dn.buf, 0) < 0) {
        PyErr_SetString(PyExc_ValueError, "cipher refused by OpenSSL");
        goto fail;
    }
    if (epoch) {
        /* its sender and windows are in k->epoch (and the slot) */
    } else if (shared != Py_None) {
        if (key_shared_attach(&k->replay, &k->sender, view->buf, self->e.replay_window,
                              self->e.replay_time) < 0) {
            PyErr_SetString(PyExc_OSError, "the shared key slot's lock refused");
            goto fail;
        }
    } else {
        if (replay_init(&k->replay, self->e.replay_window, self->e.replay_time) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        sender_init(&k->sender, view ? (uint32_t *)view->buf + index : NULL);
    }
    if (self->e.run_key == p->keys[slot])
        self->e.run_key = NULL;
    key_free(p->keys[slot], release_ledger);
    p->keys[slot] = k;
    result = Py_None;
    Py_INCREF(result);
    goto out;
fail:
    key_free(k, release_ledger);
out:
    PyBuffer_Release(&ek);
    PyBuffer_Release(&en);
    PyBuffer_Release(&dk);
    PyBuffer_Release(&dn);
    return result;
}

static PyObject *Engine_swap_keys(EngineObject *self, PyObject *args)
{
    unsigned int id;
    struct peer *p;
    struct key *k;
    if (!PyArg_ParseTuple(args, "I", &id) || !(p = find_peer(self, id)))
        return NULL;
    k = p->keys[0];
    p->keys[0] = p->keys[1];
    p->keys[1] = k;
    Py_RETURN_NONE;
}

static PyObject *Engine_del_key(EngineObject *self, PyObject *args)
{
    unsigned int id, slot;
    struct peer *p;
    if (!PyArg_ParseTuple(args, "II", &id, &slot) || !(p = find_peer(self, id)))
        return NULL;
    if (slot > 1) {
        PyErr_SetString(PyExc_ValueError, "key slot is 0 or 1");
        return NULL;
    }
    key_free(p->keys[slot], release_ledger);
    p->keys[slot] = NULL;
    Py_RETURN_NONE;
}

static PyObject *key_id_or_none(const struct key *k)
{
    if (!k)
        Py_RETURN_NONE;
    return PyLong_FromLong(k->key_id);
}

static PyObject *Engine_key_ids(EngineObject *self, PyObject *args)
{
    unsigned int id;
    struct peer *p;
    if (!PyArg_ParseTuple(args, "I", &id) || !(p = find_peer(self, id)))
        return NULL;
    return Py_BuildValue("(NN)", key_id_or_none(p->keys[0]), key_id_or_none(p->keys[1]));
}

/* One ring's pointers from the buffers of xsk._Ring: its u32 words and its descriptor table. */
static int ring_from(Py_buffer *words, Py_buffer *table, unsigned int size, Py_ssize_t prod,
                     Py_ssize_t cons, Py_ssize_t flags, size_t entry, struct ring *r)
{
    Py_ssize_t nwords = words->len / 4;
    if (!size || size & (size - 1) || prod < 0 || cons < 0 || flags < 0 || prod >= nwords
        || cons >= nwords || flags >= nwords || (size_t)table->len < size * entry) {
        PyErr_SetString(PyExc_ValueError, "ring layout does not fit its mapping");
        return -1;
    }
    r->producer = (uint32_t *)words->buf + prod;
    r->consumer = (uint32_t *)words->buf + cons;
    r->flags = (uint32_t *)words->buf + flags;
    r->desc = table->buf;
    r->size = size;
    r->mask = size - 1;
    return 0;
}

static PyObject *Engine_add_xsk(EngineObject *self, PyObject *args)
{
    PyObject *objs[XSK_BUFS];
    unsigned int rx_size, fill_size, frame_size;
    Py_ssize_t rx_prod, rx_cons, rx_flags, fill_prod, fill_cons, fill_flags;
    int fd, i = self->e.nxsk, got = 0;
    Py_buffer *bufs;
    struct xsk *x;
    if (!PyArg_ParseTuple(args, "OOInnnOOInnnOIi", &objs[0], &objs[1], &rx_size, &rx_prod,
                          &rx_cons, &rx_flags, &objs[2], &objs[3], &fill_size, &fill_prod,
                          &fill_cons, &fill_flags, &objs[4], &frame_size, &fd)
        || check_open(self) < 0)
        return NULL;
    if (i >= MAX_XSK) {
        PyErr_SetString(PyExc_ValueError, "too many AF_XDP sockets");
        return NULL;
    }
    if (frame_size < 2048 || frame_size & (frame_size - 1)) {
        PyErr_SetString(PyExc_ValueError, "frame size must be a power of two >= 2048");
        return NULL;
    }
    bufs = self->xsk_bufs[i];
    for (; got < XSK_BUFS; got++)
        if (PyObject_GetBuffer(objs[got], &bufs[got], PyBUF_WRITABLE) < 0)
            goto fail;
    x = &self->e.xsks[i];
    memset(x, 0, sizeof(*x));
    if (ring_from(&bufs[0], &bufs[1], rx_size, rx_prod, rx_cons, rx_flags, 16, &x->rx) < 0
        || ring_from(&bufs[2], &bufs[3], fill_size, fill_prod, fill_cons, fill_flags, 8,
                     &x->fill) < 0)
        goto fail;
    x->umem = bufs[4].buf;
    x->umem_size = (uint64_t)bufs[4].len;
    x->frame_size = frame_size;
    x->fd = fd;
    self->e.nxsk++;
    return PyLong_FromLong(i);
fail:
    while (got-- > 0)
        PyBuffer_Release(&bufs[got]);
    return NULL;
}

static PyObject *Engine_set_tun(EngineObject *self, PyObject *args)
{
    int fd, vnet;
    if (!PyArg_ParseTuple(args, "ip", &fd, &vnet) || check_open(self) < 0)
        return NULL;
    coalesce_flush(&self->e);
    serve_close(&self->e); /* a new TUN may reuse the old one's number: a new epoll set */
    self->e.tun_fd = fd;
    self->e.vnet_hdr = vnet;
    Py_RETURN_NONE;
}

static PyObject *Engine_rx_xsk(EngineObject *self, PyObject *args)
{
    int index, budget;
    double now;
    if (!PyArg_ParseTuple(args, "iid", &index, &budget, &now) || check_open(self) < 0)
        return NULL;
    if (index < 0 || index >= self->e.nxsk) {
        PyErr_SetString(PyExc_IndexError, "no such AF_XDP socket");
        return NULL;
    }
    return PyLong_FromLong(rx_xsk(&self->e, index, budget, now));
}

static PyObject *Engine_rx_socket(EngineObject *self, PyObject *args)
{
    int budget;
    double now;
    if (!PyArg_ParseTuple(args, "id", &budget, &now) || check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(rx_socket(&self->e, budget, now));
}

static PyObject *Engine_tx(EngineObject *self, PyObject *args)
{
    int budget;
    double now;
    if (!PyArg_ParseTuple(args, "id", &budget, &now) || check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(tx_tun(&self->e, budget, now));
}

static void release_gil(void *ctx) { *(PyThreadState **)ctx = PyEval_SaveThread(); }
static void take_gil(void *ctx) { PyEval_RestoreThread(*(PyThreadState **)ctx); }

static PyObject *Engine_serve(EngineObject *self, PyObject *args)
{
    PyObject *wake;
    double timeout;
    struct serve s = {0};
    PyThreadState *state = NULL;
    enum serve_end end;
    if (!PyArg_ParseTuple(args, "O!dppiii", &PyTuple_Type, &wake, &timeout, &s.read_socket,
                          &s.read_tun, &s.rx_batch, &s.rx_rounds, &s.batch)
        || check_open(self) < 0)
        return NULL;
    if (PyTuple_GET_SIZE(wake) > SERVE_MAX_WAKE) {
        PyErr_Format(PyExc_ValueError, "at most %d wake fds", SERVE_MAX_WAKE);
        return NULL;
    }
    s.nwake = (int)PyTuple_GET_SIZE(wake);
    for (int i = 0; i < s.nwake; i++) {
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(wake, i));
        if (fd == -1 && PyErr_Occurred())
            return NULL;
        if (fd < 0 || fd > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "not a file descriptor");
            return NULL;
        }
        s.wake[i] = (int)fd;
    }
    end = serve(&self->e, &s, timeout, release_gil, take_gil, &state);
    if (end == SERVE_ERROR)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (end == SERVE_INTERRUPTED && PyErr_CheckSignals() < 0)
        return NULL;
    return PyLong_FromLong(end);
}

static PyObject *Engine_send(EngineObject *self, PyObject *args)
{
    unsigned int id;
    Py_buffer payload;
    double now;
    struct peer *p;
    int rc;
    if (!PyArg_ParseTuple(args, "Iy*d", &id, &payload, &now))
        return NULL;
    if (!(p = find_peer(self, id))) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    rc = send_payload(&self->e, p, payload.buf, (uint32_t)payload.len, now);
    PyBuffer_Release(&payload);
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "payload must be 1..256 bytes");
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *drops_dict(const uint64_t *counts, int from, int to)
{
    PyObject *d = PyDict_New();
    for (int i = from; d && i < to; i++) {
        PyObject *v;
        if (!counts[i])
            continue;
        v = PyLong_FromUnsignedLongLong(counts[i]);
        if (!v || PyDict_SetItemString(d, DROP_NAMES[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

/* (rx, rx bytes, tx, tx bytes, link rx, link rx bytes, link tx, link tx bytes, drops,
 *  {errno: count} of send errors, last rx, last tx, primary key-id, secondary key-id,
 *  the last bad source or None) */
/* The last packet this worker took from the peer, or another worker with a shared key. */
static double peer_last_rx(const struct peer *p)
{
    double last = p->last_rx;
    for (int slot = 0; slot < 2; slot++) {
        const struct key *k = p->keys[slot];
        if (k && k->replay.last_rx) {
            double shared = *(volatile double *)k->replay.last_rx; /* another may write */
            if (shared > last)
                last = shared;
        }
    }
    return last;
}

static PyObject *Engine_stats(EngineObject *self, PyObject *args)
{
    unsigned int id;
    struct peer *p;
    PyObject *errs;
    const struct peer_stats *s;
    if (!PyArg_ParseTuple(args, "I", &id) || !(p = find_peer(self, id)))
        return NULL;
    s = &p->st;
    if (!(errs = PyDict_New()))
        return NULL;
    for (int i = 0; i < SEND_ERR_SLOTS && s->send_err[i].count; i++) {
        PyObject *k = PyLong_FromLong(s->send_err[i].err);
        PyObject *v = PyLong_FromUnsignedLongLong(s->send_err[i].count);
        if (!k || !v || PyDict_SetItem(errs, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(errs);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    PyObject *bad;
    if (p->bad_source_len == BAD_SOURCE_NONE) {
        bad = Py_None;
        Py_INCREF(bad);
    } else {
        bad = PyBytes_FromStringAndSize((const char *)p->bad_source, p->bad_source_len);
    }
    return Py_BuildValue("(KKKKKKKKNNddNNN)", s->rx_packets, s->rx_bytes, s->tx_packets,
                         s->tx_bytes, s->link_rx_packets, s->link_rx_bytes,
                         s->link_tx_packets, s->link_tx_bytes,
                         drops_dict(s->drops, 0, D_PEER_COUNT), errs, peer_last_rx(p), p->last_tx,
                         key_id_or_none(p->keys[0]), key_id_or_none(p->keys[1]), bad);
}

static PyObject *Engine_activity(EngineObject *self, PyObject *noargs)
{
    PyObject *list;
    if (check_open(self) < 0 || !(list = PyList_New(0)))
        return NULL;
    for (struct peer *p = self->e.peers.head; p; p = p->next) {
        PyObject *item = Py_BuildValue("(Idd)", p->id, peer_last_rx(p), p->last_tx);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyObject *Engine_drops(EngineObject *self, PyObject *noargs)
{
    if (check_open(self) < 0)
        return NULL;
    return drops_dict(self->e.drops, D_PEER_COUNT, D_COUNT);
}

/* The transmit path's lookup (VPN address, then the longest iroute), for tests. */
static PyObject *Engine_route(EngineObject *self, PyObject *args)
{
    const char *addr;
    Py_ssize_t len;
    struct peer *p;
    if (!PyArg_ParseTuple(args, "y#", &addr, &len) || check_open(self) < 0)
        return NULL;
    if (len != 4 && len != 16) {
        PyErr_SetString(PyExc_ValueError, "an address is 4 or 16 bytes");
        return NULL;
    }
    p = table_by_destination(&self->e.peers, len == 4 ? 4 : 6, (const uint8_t *)addr);
    if (!p)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(p->id);
}

/* (sendmsg calls, TUN writes of the coalescer, segments merged) */
static PyObject *Engine_io_counts(EngineObject *self, PyObject *noargs)
{
    return Py_BuildValue("(KKK)", self->e.sends, self->e.co.writes, self->e.co.merged);
}

/* bench_io(packet): from now on every TUN read returns `packet` (vnet header included when
 * the TUN has one) and runs are sealed but not sent; bench_io(None) restores real I/O. */
static PyObject *Engine_bench_io(EngineObject *self, PyObject *args)
{
    PyObject *packet;
    if (!PyArg_ParseTuple(args, "O", &packet) || check_open(self) < 0)
        return NULL;
    if (packet != Py_None && (!PyBytes_Check(packet) || PyBytes_GET_SIZE(packet) < 1
                              || PyBytes_GET_SIZE(packet) > MAX_IP)) {
        PyErr_SetString(PyExc_ValueError, "a packet of 1..65535 bytes, or None");
        return NULL;
    }
    Py_XSETREF(self->stub, packet == Py_None ? NULL : Py_NewRef(packet));
    self->e.stub_packet = self->stub ? (const uint8_t *)PyBytes_AS_STRING(self->stub) : NULL;
    self->e.stub_len = self->stub ? (uint32_t)PyBytes_GET_SIZE(self->stub) : 0;
    Py_RETURN_NONE;
}

/* The last run bench_io let through: (its bytes, segment size). */
static PyObject *Engine_bench_last(EngineObject *self, PyObject *noargs)
{
    if (check_open(self) < 0)
        return NULL;
    if (!self->e.stub_run)
        return Py_BuildValue("(yI)", "", 0);
    return Py_BuildValue("(y#I)", (const char *)self->e.stub_run,
                         (Py_ssize_t)self->e.stub_run_len, self->e.stub_seg);
}

static PyObject *Engine_close(EngineObject *self, PyObject *noargs)
{
    engine_close(self);
    Py_RETURN_NONE;
}

static PyMethodDef Engine_methods[] = {
    {"add_peer", (PyCFunction)Engine_add_peer, METH_VARARGS, NULL},
    {"update_peer", (PyCFunction)Engine_update_peer, METH_VARARGS, NULL},
    {"remove_peer", (PyCFunction)Engine_remove_peer, METH_VARARGS, NULL},
    {"peer_ids", (PyCFunction)Engine_peer_ids, METH_NOARGS, NULL},
    {"new_key", (PyCFunction)Engine_new_key, METH_VARARGS, NULL},
    {"swap_keys", (PyCFunction)Engine_swap_keys, METH_VARARGS, NULL},
    {"del_key", (PyCFunction)Engine_del_key, METH_VARARGS, NULL},
    {"key_ids", (PyCFunction)Engine_key_ids, METH_VARARGS, NULL},
    {"add_xsk", (PyCFunction)Engine_add_xsk, METH_VARARGS, NULL},
    {"set_tun", (PyCFunction)Engine_set_tun, METH_VARARGS, NULL},
    {"rx_xsk", (PyCFunction)Engine_rx_xsk, METH_VARARGS, NULL},
    {"rx_socket", (PyCFunction)Engine_rx_socket, METH_VARARGS, NULL},
    {"tx", (PyCFunction)Engine_tx, METH_VARARGS, NULL},
    {"serve", (PyCFunction)Engine_serve, METH_VARARGS, NULL},
    {"send", (PyCFunction)Engine_send, METH_VARARGS, NULL},
    {"stats", (PyCFunction)Engine_stats, METH_VARARGS, NULL},
    {"activity", (PyCFunction)Engine_activity, METH_NOARGS, NULL},
    {"drops", (PyCFunction)Engine_drops, METH_NOARGS, NULL},
    {"route", (PyCFunction)Engine_route, METH_VARARGS, NULL},
    {"io_counts", (PyCFunction)Engine_io_counts, METH_NOARGS, NULL},
    {"bench_io", (PyCFunction)Engine_bench_io, METH_VARARGS, NULL},
    {"bench_last", (PyCFunction)Engine_bench_last, METH_NOARGS, NULL},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Engine_members[] = {
    {"events", T_OBJECT_EX, offsetof(EngineObject, events), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xdp_ovpn._native.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native per-packet engine (see xdp_ovpn/dataplane/nativeengine.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_members = Engine_members,
};

/* -- test hooks: the replay window and the AEAD on their own --------------------------- */

typedef struct {
    PyObject_HEAD
    struct replay r;
    int ready;
} ReplayObject;

static int Replay_init(ReplayObject *self, PyObject *args, PyObject *kw)
{
    unsigned int size;
    double t;
    if (!PyArg_ParseTuple(args, "Id", &size, &t))
        return -1;
    if (size < 1 || size > 65536 || t < 0 || t > 600) {
        PyErr_SetString(PyExc_ValueError, "replay window 1..65536, time 0..600 s");
        return -1;
    }
    if (self->ready)
        replay_free(&self->r);
    if (replay_init(&self->r, size, t) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Replay_dealloc(ReplayObject *self)
{
    if (self->ready)
        replay_free(&self->r);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Replay_check(ReplayObject *self, PyObject *args)
{
    unsigned long long pid;
    double now;
    if (!PyArg_ParseTuple(args, "Kd", &pid, &now))
        return NULL;
    return PyBool_FromLong(replay_check(&self->r, pid, now));
}

static PyObject *Replay_update(ReplayObject *self, PyObject *args)
{
    unsigned long long pid;
    double now;
    if (!PyArg_ParseTuple(args, "Kd", &pid, &now))
        return NULL;
    if (replay_update(&self->r, pid, now) < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* (highest, invalid, replayed, too_old, expired) */
static PyObject *Replay_state(ReplayObject *self, PyObject *noargs)
{
    const struct replay_state *st = self->r.st;
    return Py_BuildValue("(KKKKK)", st->highest, st->invalid, st->replayed, st->too_old,
                         st->expired);
}

static PyMethodDef Replay_methods[] = {
    {"check", (PyCFunction)Replay_check, METH_VARARGS, NULL},
    {"update", (PyCFunction)Replay_update, METH_VARARGS, NULL},
    {"state", (PyCFunction)Replay_state, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReplayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "xdp_ovpn._native.ReplayWindow",
    .tp_basicsize = sizeof(ReplayObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "pktid.c's replay window on its own (tests).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Replay_init,
    .tp_dealloc = (destructor)Replay_dealloc,
    .tp_methods = Replay_methods,
};

/* seal(cipher, key, nonce_tail, head_word, pid, plaintext) -> DATA_V2 packet */
static PyObject *mod_seal(PyObject *mod, PyObject *args)
{
    int cipher;
    Py_buffer key, tail, plain;
    unsigned int word, pid;
    struct aead_dir d = {0};
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "iy*y*IIy*", &cipher, &key, &tail, &word, &pid, &plain))
        return NULL;
    if (cipher_key_len(cipher) != key.len || tail.len != AEAD_NONCE_TAIL_LEN
        || aead_init(&d, cipher, key.buf, tail.buf, 1) < 0) {
        PyErr_SetString(PyExc_ValueError, "bad cipher, key or nonce tail");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, DATA_V2_HEADER_LEN + plain.len);
    if (out) {
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
        put32(p, word);
        put32(p + 4, pid);
        memcpy(p + DATA_V2_HEADER_LEN, plain.buf, plain.len);
        if (aead_seal(&d, pid, p, p + DATA_V2_HEADER_LEN, (int)plain.len,
                      p + DATA_V2_AAD_LEN) < 0) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, "seal failed");
        }
    }
done:
    aead_free(&d);
    PyBuffer_Release(&key);
    PyBuffer_Release(&tail);
    PyBuffer_Release(&plain);
    return out;
}

/* open(cipher, key, nonce_tail, packet) -> plaintext, or None when it does not authenticate */
static PyObject *mod_open(PyObject *mod, PyObject *args)
{
    int cipher;
    Py_buffer key, tail, packet;
    struct aead_dir d = {0};
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "iy*y*y*", &cipher, &key, &tail, &packet))
        return NULL;
    if (cipher_key_len(cipher) != key.len || tail.len != AEAD_NONCE_TAIL_LEN
        || packet.len < DATA_V2_HEADER_LEN || aead_init(&d, cipher, key.buf, tail.buf, 0) < 0) {
        PyErr_SetString(PyExc_ValueError, "bad cipher, key, nonce tail or packet");
        goto done;
    }
    out = PyBytes_FromStringAndSize(packet.buf, packet.len);
    if (out) {
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
        if (aead_open(&d, be32(p + 4), p, p + DATA_V2_HEADER_LEN,
                      (int)(packet.len - DATA_V2_HEADER_LEN), p + DATA_V2_AAD_LEN) < 0) {
            Py_DECREF(out);
            out = Py_None;
            Py_INCREF(out);
        } else {
            Py_SETREF(out, PyBytes_FromStringAndSize((char *)p + DATA_V2_HEADER_LEN,
                                                     packet.len - DATA_V2_HEADER_LEN));
        }
    }
done:
    aead_free(&d);
    PyBuffer_Release(&key);
    PyBuffer_Release(&tail);
    PyBuffer_Release(&packet);
    return out;
}

/* Bytes of one key's shared slot (pktid.c key_shared) for this replay window, a multiple
 * of 64: the control plane lays the slots out. */
static PyObject *mod_key_shared_size(PyObject *mod, PyObject *args)
{
    unsigned int size;
    double t;
    if (!PyArg_ParseTuple(args, "Id", &size, &t))
        return NULL;
    if (size < 1 || size > 65536 || t < 0 || t > 600) {
        PyErr_SetString(PyExc_ValueError, "replay window 1..65536, time 0..600 s");
        return NULL;
    }
    return PyLong_FromSize_t(key_shared_size(size, t));
}

/* seal_many(cipher, size, count): `count` AEAD seals of `size` bytes in place with one
 * context, nonce and AAD per call as the loops do (bench: the native AEAD floor). */
static PyObject *mod_seal_many(PyObject *mod, PyObject *args)
{
    int cipher, size, count;
    uint8_t key[32] = {0}, tail[AEAD_NONCE_TAIL_LEN] = {0}, *buf;
    struct aead_dir d = {0};
    int rc = 0;
    if (!PyArg_ParseTuple(args, "iii", &cipher, &size, &count))
        return NULL;
    if (cipher_key_len(cipher) < 0 || size < 1 || size > MAX_PAYLOAD || count < 0) {
        PyErr_SetString(PyExc_ValueError, "bad cipher, size or count");
        return NULL;
    }
    buf = calloc(1, (size_t)size + DATA_V2_HEADER_LEN);
    if (!buf)
        return PyErr_NoMemory();
    if (aead_init(&d, cipher, key, tail, 1) < 0)
        rc = -1;
    for (int i = 0; rc == 0 && i < count; i++)
        rc = aead_seal(&d, (uint32_t)i + 1, buf, buf + DATA_V2_HEADER_LEN, size,
                       buf + DATA_V2_AAD_LEN);
    aead_free(&d);
    free(buf);
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "seal failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"key_shared_size", mod_key_shared_size, METH_VARARGS,
     "Bytes of one key's slot shared by the workers (packet-id counter, replay window)."},
    {"seal_many", mod_seal_many, METH_VARARGS, "Time AEAD seals in C (bench)."},
    {"seal", mod_seal, METH_VARARGS, "AEAD-seal one DATA_V2 packet (tests)."},
    {"open", mod_open, METH_VARARGS, "AEAD-open one DATA_V2 packet (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "xdp_ovpn._native",
    "The native batch engine: the data plane's per-packet loops in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m;
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ReplayType) < 0)
        return NULL;
    m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
    Py_INCREF(&EngineType);
    Py_INCREF(&ReplayType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0
        || PyModule_AddObject(m, "ReplayWindow", (PyObject *)&ReplayType) < 0
        || PyModule_AddIntConstant(m, "AES_128_GCM", C_AES_128_GCM) < 0
        || PyModule_AddIntConstant(m, "AES_192_GCM", C_AES_192_GCM) < 0
        || PyModule_AddIntConstant(m, "AES_256_GCM", C_AES_256_GCM) < 0
        || PyModule_AddIntConstant(m, "CHACHA20_POLY1305", C_CHACHA20_POLY1305) < 0
        || PyModule_AddStringConstant(m, "SOURCES_DIGEST", XO_SOURCES_DIGEST) < 0
        /* a test hook: where an epoch key's send word (epoch << 48 | counter) is in its
         * slot, to take a key near its counter's end without sending 2^48 packets */
        || PyModule_AddIntConstant(m, "EPOCH_SEND_WORD", KEY_SHARED_HEAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
