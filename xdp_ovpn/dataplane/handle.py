"""The control-plane end of a data-plane worker, shared by both data paths.

`WorkerHandle` holds the three socketpairs to the worker (worker.py): commands (one
pickled call, one reply), control datagrams coming up, notifications. It frames the
calls, sends every DataPlane verb, reads the notifications and control datagrams, and
stops the worker. A data path subclasses it to fork its worker (setting `_cmd` and
`_pid`) and adds what it keeps besides (the XDP path: classifiers, peer records for a
restarted worker, supervision).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeySlot,
    Notification,
    PeerStats,
    Privileged,
)
from xdp_ovpn.dataplane.worker import BUF, drain, seqpacket_pair, unpack_datagram

CALL_TIMEOUT = 5.0  # seconds a verb waits for the worker's reply
_STOP_WAIT = 100  # polls of 10 ms for a worker to exit on EOF before it is killed


class WorkerHandle:
    """Implements api.DataPlane over a worker process; subclasses start the worker."""

    name: str
    engine: str
    tun_vnet_hdr: bool
    restart_capabilities: frozenset[int]

    def __init__(self) -> None:
        self._closed = False
        self._cmd: socket.socket | None = None
        self._pid = 0
        self.restarts = 0  # workers replaced after dying (only the XDP path restarts one)
        self.af_xdp_queues = 0  # RX queues the current worker holds an AF_XDP socket on
        self.unbound: list[str] = []  # "IF queue N: why" of the queues it could not bind
        # The ends the worker writes are kept here too (the XDP path hands them to a
        # restarted worker); the socket path closes them once its worker is forked.
        self._ctl, self._worker_ctl = seqpacket_pair()
        self._ntf, self._worker_ntf = seqpacket_pair()
        self._ctl.setblocking(False)
        self._ntf.setblocking(False)

    # -- what the control plane reads -----------------------------------------------------

    @property
    def pid(self) -> int:
        """The current worker's pid (0: none running)."""
        return self._pid

    @property
    def interfaces(self) -> list[str]:
        """Interfaces the XDP classifier is attached to; none on the socket path."""
        return []

    def maps(self, ifname: str) -> Any:
        """The classifier maps on ifname (xdp_ovpn.loader.maps.ClassifierMaps)."""
        raise DataPlaneError(f"no XDP classifier on {ifname}")

    # -- the call framing -----------------------------------------------------------------

    def _call(self, verb: str, *args: Any, fds: Sequence[int] = (), **kw: Any) -> Any:
        if self._closed:
            raise DataPlaneError("data plane is closed")
        ok, value = pickle.loads(self._request(pickle.dumps((verb, args, kw)), fds))
        if not ok:
            raise DataPlaneError(value)
        return value

    def _request(self, message: bytes, fds: Sequence[int]) -> bytes:
        """The worker's reply to one call; the XDP path retries on a restarted worker."""
        return self._exchange(message, fds)

    def _exchange(self, message: bytes, fds: Sequence[int]) -> bytes:
        if self._cmd is None:
            raise DataPlaneError("data-plane worker not running")
        try:
            if fds:
                socket.send_fds(self._cmd, [message], list(fds))
            else:
                self._cmd.send(message)
            reply = self._cmd.recv(BUF)
        except OSError as exc:
            raise DataPlaneError(f"data-plane worker not answering: {exc}") from None
        if not reply:
            raise DataPlaneError("data-plane worker exited")
        return reply

    # -- the verbs (api.DataPlane) --------------------------------------------------------

    def new_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None = None,
                 vpn_ipv6: str | None = None, iroutes: Sequence[str] = ()) -> None:
        self._call("new_peer", peer_id, (remote[0], remote[1]), vpn_ipv4, vpn_ipv6,
                   tuple(iroutes))

    def set_peer(self, peer_id: int, **kw: Any) -> None:
        self._call("set_peer", peer_id, **kw)

    def del_peer(self, peer_id: int, reason: str = "userspace") -> None:
        self._call("del_peer", peer_id, reason)

    def new_key(self, peer_id: int, slot: KeySlot, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes,
                decrypt_key: bytes, decrypt_nonce_tail: bytes, epoch: bool = False) -> None:
        self._call("new_key", peer_id, int(slot), key_id, cipher, bytes(encrypt_key),
                   bytes(encrypt_nonce_tail), bytes(decrypt_key), bytes(decrypt_nonce_tail),
                   epoch)

    def swap_keys(self, peer_id: int) -> None:
        self._call("swap_keys", peer_id)

    def del_key(self, peer_id: int, slot: KeySlot) -> None:
        self._call("del_key", peer_id, int(slot))

    def get_peer(self, peer_id: int) -> PeerStats:
        return self._call("get_peer", peer_id)

    def peers(self) -> list[int]:
        """Peer-ids the data plane currently holds."""
        return self._call("peers")

    def drops(self) -> dict[str, int]:
        """Drops no peer can be blamed for, by reason."""
        return self._call("drops")

    def attach_tun(self, tun_fd: int, mtu: int) -> None:
        self._call("attach_tun", mtu, fds=[tun_fd])

    def drop_privileges(self, uid: int, gid: int, privileged: Privileged) -> None:
        self._call("drop_privileges", uid, gid)

    def send_exit(self, peer_id: int) -> None:
        """Send an OCC exit on the data channel (for peers without control-channel EXIT)."""
        self._call("send_exit", peer_id)

    # -- notifications and control datagrams ----------------------------------------------

    def notification_fd(self) -> int:
        return self._ntf.fileno()

    def notifications(self) -> list[Notification]:
        return [pickle.loads(frame) for frame in drain(self._ntf)]

    def control_fd(self) -> int:
        return self._ctl.fileno()

    def read_control(self) -> list[tuple[bytes, Address]]:
        return [unpack_datagram(frame) for frame in drain(self._ctl)]

    # -- lifetime -------------------------------------------------------------------------

    def _stop_worker(self) -> None:
        """Close the command socket (the worker exits on EOF), wait a moment, then kill;
        the worker is reaped either way."""
        pid, self._pid = self._pid, 0
        if self._cmd is not None:
            self._cmd.close()
            self._cmd = None
            for _ in range(_STOP_WAIT if pid else 0):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.01)
        self._kill(pid)

    @staticmethod
    def _kill(pid: int) -> None:
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _close_channels(self) -> None:
        for s in (self._ctl, self._worker_ctl, self._ntf, self._worker_ntf):
            s.close()

    def close(self) -> None:
        """Stop the worker and reap it."""
        if self._closed:
            return
        self._closed = True
        self._stop_worker()
        self._close_channels()
