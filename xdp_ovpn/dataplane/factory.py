"""The one place that picks a data path: `--data-path auto|xdp|socket`.

`auto` takes XDP when this machine can run it (root, bcc, kernel headers, AF_XDP) and
the classifier attaches, else the socket path, and says which in the log. Both paths sit
behind the same DataPlane API.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from xdp_ovpn.config import XDP_MODES
from xdp_ovpn.dataplane.api import DataPlane, DataPlaneError
from xdp_ovpn.dataplane.engine import check_workers, resolve
from xdp_ovpn.dataplane.socketpath import SocketDataPlane
from xdp_ovpn.dataplane.xsk import AF_XDP
from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits

DATA_PATHS = ("auto", "xdp", "socket")


def xdp_unavailable() -> str | None:
    """Why the XDP data path cannot run here, or None when it can (cheap checks only)."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_BPF)"
    from xdp_ovpn.loader.compile import import_bcc
    from xdp_ovpn.loader.errors import CompileError, HeadersNotFound
    from xdp_ovpn.loader.headers import find_kernel_headers

    try:
        import_bcc()
    except CompileError:
        return "bcc is not installed (Debian's python3-bpfcc)"

    try:
        find_kernel_headers()
    except HeadersNotFound as exc:
        return str(exc)
    try:
        socket.socket(AF_XDP, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        return f"no AF_XDP sockets in this kernel: {exc.strerror}"
    return None


def open_dataplane(
    kind: str,
    sock: socket.socket,
    *,
    single_peer: bool,
    replay_window: int,
    replay_time: float,
    log: logging.Logger,
    engine: str = "auto",
    interfaces: Sequence[str] = (),
    xdp_mode: str | None = None,
    control_limits: ControlLimits | None = DEFAULT_CONTROL_LIMITS,
    mss: int | None = None,
    workers: int | None = None,
    mss_epoch: int | None = None,
) -> DataPlane:
    """Start the chosen data path, with the chosen engine, on the bound UDP socket; XDP on
    `interfaces` (default: every interface the socket's traffic can use) in `xdp_mode`
    (auto|native|generic); `control_limits` are the XDP classifier's (the socket path has
    no classifier: it says so when they were set); `mss` is mssfix's IPv4 MSS (0: no
    clamping; None: the XDP path fits the smallest underlay, the socket path leaves SYNs
    alone), `mss_epoch` the same for keys in the epoch format (None: as mss, or what
    fits the underlay); `workers`: the XDP path's worker processes (default: one per RX
    queue in use, at most the CPUs)."""
    if kind not in DATA_PATHS:
        raise DataPlaneError(f"unknown data path {kind!r} (auto, xdp or socket)")
    if xdp_mode not in (None, *XDP_MODES):
        raise DataPlaneError(f"unknown XDP mode {xdp_mode!r} ({', '.join(XDP_MODES)})")
    if kind == "socket" and (interfaces or xdp_mode):
        raise DataPlaneError("xdp-interface and xdp-mode need XDP, not --data-path socket")
    engine = resolve(engine)
    if workers is not None:
        check_workers(workers, engine)
        if kind == "socket" and workers > 1:
            raise DataPlaneError(f"--workers {workers} needs XDP, not --data-path socket")
    if kind in ("auto", "xdp"):
        reason = xdp_unavailable()
        if kind == "xdp" and reason:
            raise DataPlaneError(f"--data-path xdp: {reason}")
        if not reason:
            from xdp_ovpn.dataplane.xdppath import XdpDataPlane

            try:
                dataplane = XdpDataPlane(sock, single_peer=single_peer,
                                         replay_window=replay_window,
                                         replay_time=replay_time, log=log,
                                         interfaces=interfaces or None,
                                         xdp_mode=None if xdp_mode == "auto" else xdp_mode,
                                         control_limits=control_limits, engine=engine,
                                         mss=mss, mss_epoch=mss_epoch, workers=workers)
            except DataPlaneError as exc:
                if kind == "xdp":
                    raise DataPlaneError(f"--data-path xdp: {exc}") from None
                reason = str(exc)
            else:
                pids = dataplane.pids
                more = f"; {len(pids)} workers, pids {' '.join(map(str, pids))}" if len(
                    pids) > 1 else ""
                log.info("Data path: xdp (AF_XDP ingress on %s, worker pid %d%s), engine %s",
                         ", ".join(dataplane.interfaces), dataplane.pid, more, engine)
                return dataplane
        if workers is not None and workers > 1:
            raise DataPlaneError(f"--workers {workers} needs XDP, unavailable here: {reason}")
        log.warning("WARNING: Data path: socket (XDP unavailable: %s), engine %s", reason,
                    engine)
    else:
        log.info("Data path: socket (as requested), engine %s", engine)
    if control_limits is not DEFAULT_CONTROL_LIMITS:
        log.info("WARNING: xdp-control-limit has no effect on the socket data path")
    return SocketDataPlane(sock, single_peer=single_peer, replay_window=replay_window,
                           replay_time=replay_time, engine=engine, mss=mss or 0,
                           mss_epoch=mss_epoch)


def offloaded(dataplane: DataPlane) -> bool:
    """True while DATA_V2 is steered to AF_XDP (what `dco_enabled` and `[DCO]` report):
    the XDP path with at least one RX queue bound, not the socket path nor its fallback."""
    return dataplane.af_xdp_queues > 0
