"""The OpenVPN XDP classifier (bpf/classifier.c): compile, attach, pin, run in tests."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from xdp_ovpn.loader import syscall
from xdp_ovpn.loader.attach import MODES, Attachment, attach, attached_prog_id, ifindex_of
from xdp_ovpn.loader.compile import BPF_DIR, compile_bpf, load_xdp
from xdp_ovpn.loader.errors import AttachError, MapError
from xdp_ovpn.loader.maps import MAP_NAMES, ClassifierMaps, Verdict
from xdp_ovpn.loader.probe import BPFFS, bpffs_mounted, mount_bpffs
from xdp_ovpn.proto.constants import (
    AEAD_TAG_LEN,
    DATA_V2_AAD_LEN,
    KEY_ID_MASK,
    OPCODE_SHIFT,
    PACKET_ID_LEN,
    SESSION_ID_LEN,
    Opcode,
)

SOURCE = BPF_DIR / "classifier.c"
ENV_BPFFS = "XDP_OVPN_BPFFS"
XDP_ACTIONS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

# Smallest packets each opcode class can be, with any wrapping (tls-auth/crypt only add).
MIN_CONTROL = 1 + SESSION_ID_LEN + 1  # opcode, session id, ack count
MIN_DATA_V1 = 1 + PACKET_ID_LEN
MIN_DATA_V2 = DATA_V2_AAD_LEN  # opcode, peer-id, packet-id
MIN_AEAD = DATA_V2_AAD_LEN + AEAD_TAG_LEN


def classifier_cflags() -> list[str]:
    """Every constant the C needs, from the one place it is defined."""
    defs = {f"OP_{op.name}": int(op) for op in Opcode}
    defs |= {f"V_{v.name}": int(v) for v in Verdict}
    defs |= {
        "V_COUNT": len(Verdict),
        "OPCODE_SHIFT": OPCODE_SHIFT,
        "KEY_ID_MASK": KEY_ID_MASK,
        "MIN_CONTROL": MIN_CONTROL,
        "MIN_DATA_V1": MIN_DATA_V1,
        "MIN_DATA_V2": MIN_DATA_V2,
        "MIN_AEAD": MIN_AEAD,
    }
    return [f"-D{k}={v}" for k, v in defs.items()]


def pin_dir(ifname: str) -> Path:
    """Where the maps for ifname in this network namespace are pinned.

    Interface names repeat across namespaces, so the namespace's inode is part of the path.
    """
    root = Path(os.environ.get(ENV_BPFFS, BPFFS))
    netns = os.stat("/proc/self/ns/net").st_ino
    return root / "xdp-ovpn" / str(netns) / ifname


class Classifier:
    """One compiled and loaded classifier; attach it to one interface at a time."""

    def __init__(self) -> None:
        self.bpf: Any = compile_bpf(SOURCE, classifier_cflags())
        self.prog_fd = load_xdp(self.bpf, "xdp_classify")
        self.maps = ClassifierMaps({n: self.bpf.get_table(n.encode()).map_fd for n in MAP_NAMES})
        self.attachment: Attachment | None = None
        self.pinned: Path | None = None

    def attach(self, ifname: str, mode: str | None = None, pin: bool = True) -> Attachment:
        """Attach native, falling back to generic (unless `mode` says which); pin the maps."""
        if self.attachment is not None:
            raise AttachError(f"classifier already attached to {self.attachment.ifname}")
        modes = [mode] if mode else list(MODES)
        errors = []
        for m in modes:
            try:
                self.attachment = attach(self.prog_fd, ifname, m)
                break
            except AttachError as exc:
                if exc.busy:
                    raise
                errors.append(str(exc))
        else:
            raise AttachError("; ".join(errors))
        if pin:
            try:
                self._pin(pin_dir(ifname))
            except MapError:
                self.detach()
                raise
        return self.attachment

    def detach(self) -> None:
        if self.attachment is not None:
            self.attachment.close()
            self.attachment = None
        if self.pinned is not None:
            remove_pins(self.pinned)
            self.pinned = None

    def close(self) -> None:
        self.detach()
        self.bpf.cleanup()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def test_run(self, frame: bytes) -> str:
        """Run the program once on an Ethernet frame (BPF_PROG_TEST_RUN); the XDP action."""
        action, _ = syscall.prog_test_run(self.prog_fd, frame, out_size=len(frame) + 256)
        return XDP_ACTIONS.get(action, str(action))

    def _pin(self, where: Path) -> None:
        if where.is_relative_to(BPFFS) and not bpffs_mounted():
            mount_bpffs()
        # Our link attached, so anything pinned here belongs to an owner that is gone.
        remove_pins(where)
        try:
            where.mkdir(parents=True, exist_ok=True)
            for name, fd in self.maps.fds.items():
                syscall.obj_pin(fd, str(where / name))
            syscall.obj_pin(self.prog_fd, str(where / "prog"))
        except OSError as exc:
            remove_pins(where)
            raise MapError(f"cannot pin maps under {where}: {exc.strerror}") from exc
        self.pinned = where


def remove_pins(where: Path) -> None:
    """Unlink pinned objects; the maps live on only while some fd still holds them."""
    if not where.is_dir():
        return
    for entry in where.iterdir():
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        where.rmdir()
        where.parent.rmdir()  # the namespace's dir, once its last interface is gone


def open_attached(ifname: str) -> ClassifierMaps:
    """The maps of the classifier attached to ifname, found through the kernel, not bpffs.

    Works from any process in the interface's network namespace, whatever its mount namespace
    (`ip netns exec` hides the host's /sys/fs/bpf). Raises MapError.
    """
    prog_id = attached_prog_id(ifindex_of(ifname))
    if not prog_id:
        raise MapError(f"no XDP program is attached to {ifname}")
    try:
        prog_fd = syscall.prog_fd_by_id(prog_id)
        try:
            fds = syscall.prog_maps(prog_fd)
        finally:
            os.close(prog_fd)
    except OSError as exc:
        raise MapError(f"cannot open the maps of program {prog_id}: {exc.strerror}") from exc
    ours = {name: fds.pop(name) for name in MAP_NAMES if name in fds}
    for fd in fds.values():
        os.close(fd)
    if len(ours) != len(MAP_NAMES):
        for fd in ours.values():
            os.close(fd)
        raise MapError(f"the XDP program on {ifname} is not the xdp-ovpn classifier")
    return ClassifierMaps(ours, owned=True)
