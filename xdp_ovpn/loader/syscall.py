"""The few bpf(2) commands bcc 0.26 does not expose, called directly through ctypes.

XDP BPF links (Linux 5.9+) are the reason: a link created with BPF_LINK_CREATE detaches when
its last fd closes, so a program can never outlive the process that attached it.
Layouts follow `union bpf_attr` in include/uapi/linux/bpf.h.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
_libc = ctypes.CDLL(None, use_errno=True)
_ATTR_SIZE = 128  # larger than every layout used here; the kernel zero-checks the tail

# enum bpf_cmd
MAP_CREATE = 0
OBJ_PIN = 6
OBJ_GET = 7
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
MAP_GET_FD_BY_ID = 14
OBJ_GET_INFO_BY_FD = 15
LINK_CREATE = 28
LINK_GET_FD_BY_ID = 30
LINK_GET_NEXT_ID = 31
LINK_DETACH = 34
# enum bpf_attach_type / bpf_link_type
ATTACH_XDP = 37
LINK_TYPE_XDP = 6


def bpf(cmd: int, attr: ctypes.Array) -> int:
    """Raw bpf(cmd, attr); raises OSError with errno on failure."""
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def attr(fmt: str, *values: int) -> ctypes.Array:
    """A zeroed `union bpf_attr` with its leading fields packed from values."""
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def link_create_xdp(prog_fd: int, ifindex: int, xdp_flags: int) -> int:
    """Attach an XDP program through a link; returns the link fd."""
    return bpf(LINK_CREATE, attr("=IIII", prog_fd, ifindex, ATTACH_XDP, xdp_flags))


def link_detach(link_fd: int) -> None:
    """Force-detach a link even if other processes hold fds to it."""
    bpf(LINK_DETACH, attr("=I", link_fd))


def xdp_links() -> list[tuple[int, int, int]]:
    """(link id, prog id, ifindex) for every XDP link in the system, any namespace."""
    found = []
    link_id = 0
    while True:
        req = attr("=I", link_id)
        try:
            bpf(LINK_GET_NEXT_ID, req)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return found
            raise
        link_id = struct.unpack_from("=I", req, 4)[0]  # next_id follows start_id
        try:
            fd = bpf(LINK_GET_FD_BY_ID, attr("=I", link_id))
        except OSError:
            continue  # vanished meanwhile
        try:
            kind, lid, prog_id, ifindex = link_info(fd)
        finally:
            os.close(fd)
        if kind == LINK_TYPE_XDP:
            found.append((lid, prog_id, ifindex))


def link_info(fd: int) -> tuple[int, int, int, int]:
    """(type, id, prog id, first union word) of a link: for XDP links the word is ifindex."""
    info = ctypes.create_string_buffer(64)
    bpf(OBJ_GET_INFO_BY_FD, attr("=IIQ", fd, len(info), ctypes.addressof(info)))
    # The union holds u64 members, so it starts 8-aligned, at offset 16.
    return (*struct.unpack_from("=III", info), struct.unpack_from("=I", info, 16)[0])


def obj_id(fd: int) -> int:
    """The id of a program, map or link: every bpf_*_info starts with (type, id)."""
    return link_info(fd)[1]


def prog_fd_by_id(prog_id: int) -> int:
    return bpf(PROG_GET_FD_BY_ID, attr("=I", prog_id))


def prog_maps(prog_fd: int) -> dict[str, int]:
    """Name -> fd of every map a loaded program uses (caller closes the fds)."""
    ids = (ctypes.c_uint32 * 64)()
    info = ctypes.create_string_buffer(80)  # struct bpf_prog_info up to name[16]
    struct.pack_into("=IQ", info, 52, len(ids), ctypes.addressof(ids))  # nr_map_ids, map_ids
    bpf(OBJ_GET_INFO_BY_FD, attr("=IIQ", prog_fd, len(info), ctypes.addressof(info)))
    count = struct.unpack_from("=I", info, 52)[0]
    fds: dict[str, int] = {}
    for map_id in ids[: min(count, len(ids))]:
        fd = bpf(MAP_GET_FD_BY_ID, attr("=I", map_id))
        minfo = ctypes.create_string_buffer(40)  # struct bpf_map_info up to name[16]
        bpf(OBJ_GET_INFO_BY_FD, attr("=IIQ", fd, len(minfo), ctypes.addressof(minfo)))
        fds[minfo.raw[24:40].split(b"\0")[0].decode()] = fd
    return fds


def link_fd_by_id(link_id: int) -> int:
    return bpf(LINK_GET_FD_BY_ID, attr("=I", link_id))


def obj_pin(fd: int, path: str) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    bpf(OBJ_PIN, attr("=QI", ctypes.addressof(name), fd))


def obj_get(path: str) -> int:
    name = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(OBJ_GET, attr("=Q", ctypes.addressof(name)))


def prog_test_run(
    prog_fd: int, data: bytes, ctx: bytes = b"", out_size: int = 4096
) -> tuple[int, bytes]:
    """Run a program once on `data` (BPF_PROG_TEST_RUN); returns (verdict, output packet)."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(out_size)
    cin = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    req = attr(
        "=IIIIQQIIIIQQ",
        prog_fd, 0, len(data), out_size,
        ctypes.addressof(din), ctypes.addressof(dout),
        1, 0, len(ctx), 0,
        ctypes.addressof(cin) if cin is not None else 0, 0,
    )  # fmt: skip
    bpf(PROG_TEST_RUN, req)
    retval, _, size_out = struct.unpack_from("=III", req, 4)
    return retval, dout.raw[:size_out]
