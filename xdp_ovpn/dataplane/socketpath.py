"""The socket data path: TUN + the UDP socket, in its own worker process.

The reference data path and the fallback when XDP is unavailable. The control plane
opens the UDP socket, then `SocketDataPlane(sock)` forks a worker that:

- reads the UDP socket: its engine (engine.py) decrypts DATA_V2 (replay window, float
  detection, keepalive pings and OCC exit consumed, on a server the inner source address
  checked) and writes it to the TUN; every other datagram goes up to the control plane
  over a socketpair (`control_fd` / `read_control`);
- reads the TUN: the engine picks the peer by destination address (peers.py), the
  primary key encrypts, the UDP socket sends;
- runs keepalive (ping when idle, expire when silent) as DCO does;
- answers the API verbs, which the control-plane handle sends as pickled calls over a
  command socketpair (one call, one reply: verbs are rare, ordering is kept).

The worker's loop is worker.py's, the handle's framing and verbs handle.py's: this module
only forks the one and starts the other.
"""

from __future__ import annotations

import os
import socket

from xdp_ovpn.dataplane.engine import EngineConfig, epoch_format, make_engine, resolve
from xdp_ovpn.dataplane.handle import CALL_TIMEOUT, WorkerHandle
from xdp_ovpn.dataplane.worker import Worker, seqpacket_pair
from xdp_ovpn.proto.constants import DEFAULT_REPLAY_TIME, DEFAULT_REPLAY_WINDOW


class SocketDataPlane(WorkerHandle):
    """Control-plane handle of the socket data path (implements api.DataPlane)."""

    name = "socket"
    tun_vnet_hdr = False
    restart_capabilities: frozenset[int] = frozenset()  # its worker is never replaced

    def __init__(
        self,
        sock: socket.socket,
        *,
        single_peer: bool = False,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        engine: str = "auto",
        mss: int = 0,
        mss_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = resolve(engine)  # the engine's name, for the log and reports
        self.epoch_format = epoch_format(self.engine)
        config = EngineConfig(single_peer, replay_window, replay_time, mss=mss,
                              mss_epoch=mss_epoch,
                              check_source=not single_peer)
        cmd, worker_cmd = seqpacket_pair()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            status = 0
            try:
                for s in (cmd, self._ctl, self._ntf):
                    s.close()
                worker = Worker(sock, worker_cmd, self._worker_ctl, self._worker_ntf,
                                make_engine(self.engine, sock, config))
                worker.run()
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        for s in (worker_cmd, self._worker_ctl, self._worker_ntf):
            s.close()
        cmd.settimeout(CALL_TIMEOUT)
        self._cmd, self._pid = cmd, pid
