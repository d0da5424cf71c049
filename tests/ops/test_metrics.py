"""The Prometheus endpoint, scraped over HTTP and read with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from xdp_ovpn.control.metrics import (
    MetricsError,
    MetricsServer,
    MetricsSources,
    WorkerHealth,
    parse_listen,
    render,
)
from xdp_ovpn.control.status import ClientSnapshot, StatusSnapshot


def sources(**kw) -> MetricsSources:
    clients = [
        ClientSnapshot("alice", ("10.1.0.2", 50429), 0, 1795268940, vpn_ipv4="10.8.0.2",
                       bytes_received=2103, bytes_sent=2198, packets_received=12,
                       packets_sent=13, drops={"bad source address": 4, "ReplayError": 1}),
        ClientSnapshot('we"ird\\cn', ("fd00:1::2", 1194), 1, 1795268945),
    ]  # fmt: skip
    return MetricsSources(lambda: StatusSnapshot(clients), **kw)


def families(text: str) -> dict[str, object]:
    parser = pytest.importorskip("prometheus_client.parser")
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(fams, name: str, **labels) -> float:
    for sample in fams[name].samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise KeyError((name, labels))


def test_render_parses_with_the_reference_parser():
    text = render(sources(
        counters=lambda: {"handshakes_total": 5, "handshake_failures_total": 1},
        verdicts=lambda: {"redirect": 1000, "pass_control": 7, "drop_short": 2},
        workers=lambda: [WorkerHealth("rxq0", True, extra={"rx_batch_avg": 12.5}),
                         WorkerHealth("rxq1", False, restarts=2)],
    ))
    fams = families(text)
    assert value(fams, "xdp_ovpn_clients") == 2
    assert value(fams, "xdp_ovpn_peer_received_bytes", common_name="alice") == 2103
    assert value(fams, "xdp_ovpn_peer_sent_packets", common_name="alice") == 13
    assert value(fams, "xdp_ovpn_peer_sent_bytes", common_name='we"ird\\cn',
                 real_address="fd00:1::2") == 0
    assert value(fams, "xdp_ovpn_handshakes") == 5
    assert value(fams, "xdp_ovpn_peer_dropped_packets", common_name="alice",
                 reason="bad source address") == 4
    assert value(fams, "xdp_ovpn_peer_dropped_packets", reason="ReplayError") == 1
    assert fams["xdp_ovpn_peer_dropped_packets"].type == "counter"
    assert len(fams["xdp_ovpn_peer_dropped_packets"].samples) == 2  # none for a clean peer
    assert fams["xdp_ovpn_handshakes"].type == "counter"
    assert value(fams, "xdp_ovpn_xdp_verdicts", verdict="redirect") == 1000
    assert value(fams, "xdp_ovpn_worker_up", worker="rxq1") == 0
    assert value(fams, "xdp_ovpn_worker_restarts", worker="rxq1") == 2
    assert value(fams, "xdp_ovpn_worker_rx_batch_avg", worker="rxq0") == 12.5


@pytest.mark.parametrize("dco", [True, False])
def test_dco_enabled_says_whether_the_data_channel_is_offloaded(dco: bool):
    fams = families(render(MetricsSources(lambda: StatusSnapshot(dco=dco))))
    assert value(fams, "xdp_ovpn_dco_enabled") == int(dco)


def test_the_engine_is_named_when_known():
    fams = families(render(MetricsSources(lambda: StatusSnapshot(engine="native"))))
    assert value(fams, "xdp_ovpn_engine_info", engine="native") == 1
    assert "xdp_ovpn_engine_info" not in families(render(MetricsSources(StatusSnapshot)))


def test_http_endpoint_serves_metrics_404_and_survives_a_failing_source():
    def broken():
        raise RuntimeError("maps gone")

    async def scrape() -> tuple[str, str, int, int]:
        good = MetricsServer(sources())
        await good.start("127.0.0.1", 0)
        bad = MetricsServer(sources(verdicts=broken))
        await bad.start("127.0.0.1", 0)
        try:
            def get(server, path):
                url = f"http://127.0.0.1:{server.address[1]}{path}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return r.status, r.headers["Content-Type"], r.read().decode()
                except urllib.error.HTTPError as exc:
                    return exc.code, "", ""
            ok = await asyncio.to_thread(get, good, "/metrics")
            missing = await asyncio.to_thread(get, good, "/nope")
            failing = await asyncio.to_thread(get, bad, "/metrics")
            return ok, missing[0], failing[0]
        finally:
            await good.close()
            await bad.close()

    (status, ctype, body), missing, failing = asyncio.run(scrape())
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "xdp_ovpn_clients 2" in body
    assert missing == 404 and failing == 500


def test_listen_address_forms():
    assert parse_listen("127.0.0.1:9176") == ("127.0.0.1", 9176)
    assert parse_listen("[::1]:9176") == ("::1", 9176)
    for bad in ("9176", "host:", "host:99999", ":80"):
        with pytest.raises(MetricsError, match="expected ADDR:PORT"):
            parse_listen(bad)


@pytest.mark.root
@pytest.mark.bpf
def test_verdicts_come_from_the_classifiers_maps():
    """The real classifier (run with BPF_PROG_TEST_RUN): its verdict counters are scraped."""
    from tests.support.packets import data_v2, frame, openvpn
    from xdp_ovpn.control.metrics import xdp_verdicts
    from xdp_ovpn.loader.classifier import Classifier
    from xdp_ovpn.loader.maps import ControlLimits
    from xdp_ovpn.proto.constants import Opcode

    with Classifier() as c:
        c.maps.add_listener("10.9.0.1", 1194)
        c.maps.set_control_limits(ControlLimits(1, 3, 100, 100))
        c.maps.set_authoritative(True)
        for _ in range(4):
            c.test_run(frame(openvpn(Opcode.CONTROL_V1)))
        assert c.test_run(frame(data_v2(7))) == "DROP"
        fams = families(render(sources(verdicts=xdp_verdicts(c.maps))))
    assert value(fams, "xdp_ovpn_xdp_verdicts", verdict="pass_control") == 3
    assert value(fams, "xdp_ovpn_xdp_verdicts", verdict="drop_control_source") == 1
    assert value(fams, "xdp_ovpn_xdp_verdicts", verdict="drop_unknown_peer") == 1
    assert value(fams, "xdp_ovpn_xdp_verdicts", verdict="redirect") == 0


def test_a_client_shows_up_and_its_one_peer():
    peer = ClientSnapshot("server", ("10.1.0.1", 1194), 0, 1795268940, vpn_ipv4="10.8.0.2",
                          bytes_received=500, bytes_sent=600)
    connected = MetricsSources(lambda: StatusSnapshot([peer]), single_peer=True,
                               counters=lambda: {"handshakes_total": 2})
    fams = families(render(connected))
    assert "xdp_ovpn_clients" not in fams
    assert value(fams, "xdp_ovpn_up") == 1
    assert value(fams, "xdp_ovpn_peer_received_bytes", common_name="server") == 500
    assert value(fams, "xdp_ovpn_handshakes") == 2
    down = families(render(MetricsSources(StatusSnapshot, single_peer=True)))
    assert value(down, "xdp_ovpn_up") == 0 and not down["xdp_ovpn_peer_sent_bytes"].samples
