"""`--metrics ADDR:PORT`: a Prometheus text-format endpoint (GET /metrics), no dependency.

Per-peer link bytes, data packets and drops by reason (e.g. "bad source address": sent
from an address not the client's), the server's handshake counters, the XDP
classifier's verdict counters (read from its BPF maps when attached) and data-plane
worker health. Everything is read at scrape time from callables the server supplies,
so a scrape never sees numbers older than the request. A client or p2p endpoint shows
the same families for its one peer, with `up` in place of `clients`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from xdp_ovpn import config
from xdp_ovpn.control.log import get_logger
from xdp_ovpn.control.status import StatusSnapshot, real_address

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "xdp_ovpn"
_MAX_REQUEST = 8192


class MetricsError(Exception):
    """The endpoint cannot listen (bad address, port in use): one line."""


@dataclass(frozen=True)
class WorkerHealth:
    """One data-plane worker as the supervisor sees it."""

    name: str  # e.g. "rxq0"
    alive: bool
    restarts: int = 0
    extra: Mapping[str, float] = field(default_factory=dict)  # more gauges, by name


@dataclass
class MetricsSources:
    """Where the numbers come from; all optional but the snapshot."""

    snapshot: Callable[[], StatusSnapshot]
    # Monotonic counters by name, e.g. {"handshakes_total": 12, "auth_failures_total": 1}.
    counters: Callable[[], Mapping[str, int]] | None = None
    # XDP verdict -> packets, e.g. from ClassifierMaps.verdict_counts (see xdp_verdicts).
    verdicts: Callable[[], Mapping[str, int]] | None = None
    workers: Callable[[], Sequence[WorkerHealth]] | None = None
    single_peer: bool = False  # a client or p2p endpoint: the snapshot holds its peer


def xdp_verdicts(maps) -> Callable[[], dict[str, int]]:
    """A verdicts source over the loader's ClassifierMaps (names lower-case: redirect, ...)."""
    return lambda: {v.name.lower(): n for v, n in maps.verdict_counts().items()}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, object], float]]) -> None:
        full = f"{PREFIX}_{name}"
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {value:g}" if isinstance(value, float)
                              else f"{full}{_labels(labels)} {value}")


def render(sources: MetricsSources) -> str:
    """The exposition text for one scrape."""
    w = _Writer()
    snapshot = sources.snapshot()
    clients = snapshot.clients
    who = "the peer" if sources.single_peer else "the client"
    if sources.single_peer:
        w.family("up", "gauge", "1 while connected to the peer (keys installed, TUN up).",
                 [({}, int(bool(clients)))])
    else:
        w.family("clients", "gauge", "Connected clients.", [({}, len(clients))])
    w.family("dco_enabled", "gauge", "1 while the data channel is offloaded to XDP and "
             "AF_XDP (openvpn's dco_enabled), 0 on the socket path.",
             [({}, int(snapshot.dco))])
    if snapshot.engine:
        w.family("engine_info", "gauge", "The data plane's per-packet engine (label), always 1.",
                 [({"engine": snapshot.engine}, 1)])

    def peer(c) -> dict[str, object]:
        return {"common_name": c.common_name, "peer_id": c.peer_id,
                "real_address": real_address(c.real_address), "vpn_ipv4": c.vpn_ipv4 or ""}

    for name, attr, help_text in (
        ("peer_received_bytes_total", "bytes_received", f"Link bytes received from {who}."),
        ("peer_sent_bytes_total", "bytes_sent", f"Link bytes sent to {who}."),
        ("peer_received_packets_total", "packets_received", f"Data packets from {who}."),
        ("peer_sent_packets_total", "packets_sent", f"Data packets to {who}."),
    ):
        w.family(name, "counter", help_text, [(peer(c), getattr(c, attr)) for c in clients])
    w.family("peer_connected_since_seconds", "gauge", f"Unix time {who} connected.",
             [(peer(c), int(c.connected_since)) for c in clients])
    w.family("peer_dropped_packets_total", "counter",
             f"Packets from {who} the data plane dropped, by reason.",
             [({**peer(c), "reason": reason}, n) for c in clients
              for reason, n in sorted(c.drops.items())])
    if sources.counters is not None:
        for name, value in sorted(sources.counters().items()):
            kind = "counter" if name.endswith("_total") else "gauge"
            owner = "Connection" if sources.single_peer else "Server"
            w.family(name, kind, f"{owner} {name.replace('_', ' ')}.", [({}, value)])
    if sources.verdicts is not None:
        w.family("xdp_verdicts_total", "counter", "Packets by XDP classifier verdict.",
                 [({"verdict": v}, n) for v, n in sorted(sources.verdicts().items())])
    if sources.workers is not None:
        workers = list(sources.workers())
        w.family("worker_up", "gauge", "1 when the data-plane worker is running.",
                 [({"worker": h.name}, int(h.alive)) for h in workers])
        w.family("worker_restarts_total", "counter", "Data-plane worker restarts.",
                 [({"worker": h.name}, h.restarts) for h in workers])
        extra = sorted({k for h in workers for k in h.extra})
        for key in extra:
            w.family(f"worker_{key}", "gauge", f"Data-plane worker {key.replace('_', ' ')}.",
                     [({"worker": h.name}, float(h.extra[key])) for h in workers
                      if key in h.extra])
    return "\n".join(w.lines) + "\n"


def parse_listen(text: str) -> tuple[str, int]:
    """`--metrics ADDR:PORT` or `[V6ADDR]:PORT` as (host, port); a one-line error otherwise."""
    try:
        return config.parse_listen(text)
    except ValueError as exc:
        raise MetricsError(f"--metrics: {exc}") from None


class MetricsServer:
    """A tiny HTTP/1.0-style server: GET /metrics, one response, close."""

    def __init__(self, sources: MetricsSources) -> None:
        self.sources = sources
        self.log = get_logger()
        self._server: asyncio.AbstractServer | None = None
        self.address: tuple | None = None

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise MetricsError(f"--metrics: cannot listen on {host}:{port}: "
                               f"{exc.strerror}") from exc
        self.address = self._server.sockets[0].getsockname()
        self.log.info("Metrics endpoint listening on http://%s:%d/metrics", *self.address[:2])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, body = self._respond(head[:_MAX_REQUEST])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            status, body = "400 Bad Request", "bad request\n"
        data = body.encode()
        ctype = CONTENT_TYPE if status.startswith("200") else "text/plain; charset=utf-8"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _respond(self, head: bytes) -> tuple[str, str]:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return "400 Bad Request", "bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "only GET\n"
        if target not in ("/metrics", "/"):
            return "404 Not Found", "try /metrics\n"
        try:
            return "200 OK", render(self.sources)
        except Exception as exc:  # a failing source must not take the endpoint down
            self.log.warning("metrics: %s", exc)
            return "500 Internal Server Error", "metrics unavailable\n"
