"""The XDP data path in `xdp-ovpn run` against a real openvpn 2.6: robustness and cost.

- a worker killed with SIGKILL mid-transfer is replaced, its peer re-installed, and the
  transfer goes on (the packet-id ledger keeps the openvpn peer's replay check happy);
- renegotiation under a running TCP transfer costs no data-plane drops;
- the control-plane process makes no per-packet system calls (strace -c);
- an idle peer costs the worker a bounded amount of resident memory.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "control"))
from tests.support.interop import (
    channels,
    iperf3,
    ping,
    redirected,
    squat,
    underlay,
    verdicts,
)
from tests.support.interop import drops as _drops
from tests.support.interop import status as _status
from tests.support.nsfork import in_netns
from xdp_ovpn.capabilities import CAP_BPF
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.openvpn]


VNET_RUN = str(Path(__file__).parents[1] / "support" / "vnet_run.py")


def _xdp_server(lab, extra=(), client_extra=(), vnet_hdr: bool = False, family: int = 4,
                rx_queues: int | None = None, data_path: str = "xdp"):
    net = underlay(lab, family, rx_queues)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn", extra=extra)
    base = server.command
    if vnet_hdr:  # python vnet_run.py run --config ...
        server.command = lambda: [base()[0], VNET_RUN, *base()[3:], "--data-path", data_path]
    else:
        server.command = lambda: [*base(), "--data-path", data_path]
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, extra=client_extra)
    return net, server, client


def _iperf3(net, server, seconds: int) -> subprocess.Popen:
    """Start `iperf3 -c` (JSON out) from the client namespace to the server's tunnel address."""
    listener = net.server_ns.popen(["iperf3", "-s", "-1", "-B", server.tunnel_ipv4],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if "5201" in net.server_ns.run(["ss", "-ltn"]).stdout:
            break
        time.sleep(0.1)
    sender = net.client_ns.popen(["iperf3", "-c", server.tunnel_ipv4, "-t", str(seconds), "-J"],
                                 stdout=subprocess.PIPE, text=True)
    sender.listener = listener  # type: ignore[attr-defined]
    return sender


def _finish(sender: subprocess.Popen) -> dict:
    out, _ = sender.communicate(timeout=60)
    sender.listener.wait(timeout=10)  # type: ignore[attr-defined]
    return json.loads(out)


def test_killed_worker_is_replaced_and_the_transfer_goes_on(lab) -> None:
    net, server, client = _xdp_server(lab)
    with started(server), started(client):
        worker = int(server.wait_for_log(r"worker pid (\d+)").group(1))
        sender = _iperf3(net, server, 8)
        time.sleep(3)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        restarted = server.wait_for_log(r"worker died: restarted as pid (\d+) with 1 peer")
        net.client_ns.run(["ping", "-c", "1", "-W", "5", server.tunnel_ipv4])
        print(f"tunnel answered again {time.monotonic() - killed:.2f} s after the SIGKILL")
        result = _finish(sender)
        assert int(restarted.group(1)) != worker
    after = [iv["sum"]["bytes"] for iv in result["intervals"][5:]]
    assert all(after), f"the transfer stalled after the worker was replaced: {after}"


def _credentials(pid: int) -> tuple[int, int, int]:
    """A process's effective uid, permitted and effective capability masks."""
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.M).group(1))
    caps = [int(re.search(rf"^{name}:\s+(\w+)", status, re.M).group(1), 16)
            for name in ("CapPrm", "CapEff")]
    return uid, caps[0], caps[1]


def test_with_user_nobody_the_worker_drops_root_and_its_replacement_keeps_af_xdp(lab) -> None:
    net, server, client = _xdp_server(lab, extra=["user nobody", "group nogroup"])
    # Nobody, with CAP_BPF alone (the peers map mirror): it parses every packet off the wire.
    unprivileged = (pwd.getpwnam("nobody").pw_uid, 1 << CAP_BPF, 1 << CAP_BPF)
    with started(server), started(client):
        worker = int(server.wait_for_log(r"worker pid (\d+)").group(1))
        server.wait_for_log(r"Initialization Sequence Completed")
        assert _credentials(worker) == unprivileged
        os.kill(worker, signal.SIGKILL)
        new = int(server.wait_for_log(r"worker died: restarted as pid (\d+)").group(1))
        before = redirected(net.server_ns)
        result = _finish(_iperf3(net, server, 2))
        steered = redirected(net.server_ns) - before
        assert _credentials(new) == unprivileged
        log = server.log()
    assert "without AF_XDP" not in log, log
    assert result["end"]["sum_received"]["bytes"] > 0
    assert steered > 200, f"the replacement worker is not on AF_XDP: {steered} redirected"


@pytest.mark.parametrize("family", [4, 6])
def test_vnet_hdr_tun_takes_tcp_runs_as_super_packets(lab, family: int) -> None:
    net, server, client = _xdp_server(lab, vnet_hdr=True, family=family)
    with started(server), started(client):
        net.client_ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", server.tunnel_ipv6])
        before = redirected(net.server_ns)
        result = _finish(_iperf3(net, server, 2))
        steered = redirected(net.server_ns) - before
        status = _status(server)
        tun_rx = int(net.server_ns.run(["cat", "/sys/class/net/tun0/statistics/rx_packets"],
                                       check=False).stdout or 0)
    rx = int(re.search(r" rx_packets=(\d+)", status).group(1))
    print(f"{rx} packets decrypted, {tun_rx} TUN writes")
    assert result["end"]["sum_received"]["bytes"] > 0
    assert _drops(status) == {}, status
    # Runs form on AF_XDP only.
    assert steered > 200, f"only {steered} DATA_V2 went to AF_XDP: {verdicts(net.server_ns)}"
    # Segments were coalesced; how many per write depends on batch sizes, i.e. on load.
    assert 0 < tun_rx < rx


def test_every_rx_queue_of_the_underlay_gets_an_af_xdp_socket(lab) -> None:
    a, b = lab.add_namespace("s"), lab.add_namespace("c")
    lab.link(a, b, addrs=("10.1.0.1/24", "10.1.0.2/24"), rx_queues=4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto="udp4")
    # One flow can land on several queues of a veth (the sender's TX queue picks it): their
    # rings are read in turns, so a window wider than openvpn's 64 takes the reordering.
    server = OpenVPNServer(a, spec, program="xdp-ovpn", extra=["replay-window 65536"])
    base = server.command
    server.command = lambda: [*base(), "--data-path", "xdp"]  # type: ignore[method-assign]
    client = OpenVPNClient(b, server, remote="10.1.0.1")
    with started(server), started(client):
        server.wait_for_log(r"XDP classifier attached to veth0 \(\w+, 4 RX queues\)")
        b.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", server.tunnel_ipv4])
        listener = a.popen(["iperf3", "-s", "-1", "-B", server.tunnel_ipv4],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.wait_for(lambda: ":5201" in a.run(["ss", "-ltn"], check=False).stdout)
        out = b.run(["iperf3", "-c", server.tunnel_ipv4, "-t", "2", "-P", "4", "-J"]).stdout
        listener.wait(timeout=10)
        status = _status(server)
    assert json.loads(out)["end"]["sum_received"]["bytes"] > 1 << 20
    assert _drops(status) == {}, status


@pytest.mark.realtime("zero drops across a key switch: openvpn sends on a new key once it has "
                      "our key-method 2, we install it when its ACK is back (as openvpn with "
                      "DCO does), and an emulated CPU widens that window")
def test_renegotiation_under_tcp_costs_no_data_plane_drops(lab) -> None:
    net, server, client = _xdp_server(lab, extra=["reneg-sec 3"], client_extra=["reneg-sec 3"])
    with started(server), started(client):
        result = _finish(_iperf3(net, server, 10))
        status = _status(server)
        key_ids = set(re.findall(r"Data Channel: cipher .* key-id (\d+)", server.log()))
    assert {"0", "1", "2"} <= key_ids, key_ids
    assert _drops(status) == {}, status
    assert result["end"]["sum_received"]["bytes"] > 0


def test_control_plane_makes_no_per_packet_syscalls(lab, tmp_path) -> None:
    net, server, client = _xdp_server(lab)
    out = tmp_path / "strace.txt"
    with started(server), started(client):
        strace = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p",
                                   str(server.proc.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1)  # attached
        result = _finish(_iperf3(net, server, 3))
        status = _status(server)  # a verb and a log line: proves strace saw the process
        strace.send_signal(signal.SIGINT)
        strace.wait(timeout=10)
    summary = out.read_text()
    packets = int(re.search(r"link_rx_packets=(\d+)", status).group(1))
    calls = int(re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", summary, re.M).group(1))
    print(f"control plane: {calls} syscalls while the data plane took {packets} packets")
    print(summary)
    assert result["end"]["sum_received"]["bytes"] > 0
    # The control plane's syscalls go with time (timers, the stats poll), not packets: an
    # emulated CPU carries a tenth of the packets in the same seconds, hence the margin.
    assert packets > 2000 and calls < packets // 50, summary


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Rss:\s+(\d+) kB", text, re.M).group(1))


def _peer_memory(epoch: bool) -> dict:
    from xdp_ovpn.dataplane.api import KeySlot
    from xdp_ovpn.dataplane.xdppath import XdpDataPlane

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("10.1.0.1", 1194))
    dp = XdpDataPlane(sock)
    try:
        rss = {}
        for n in range(1, 1001):
            dp.new_peer(n, ("10.1.0.2", 40000 + n), vpn_ipv4=f"10.8.{n >> 8}.{n & 255}")
            dp.set_peer(n, keepalive_interval=10, keepalive_timeout=60)
            tail = b"" if epoch else os.urandom(8)  # epoch keys: E_1 secrets, no tails
            for slot in (KeySlot.PRIMARY, KeySlot.SECONDARY):
                dp.new_key(n, slot, int(slot), "AES-256-GCM", os.urandom(32), tail,
                           os.urandom(32), tail, epoch=epoch)
            if n in (1, 1000):
                rss[n] = _rss_kib(dp.pid)
        return rss
    finally:
        dp.close()
        sock.close()


@pytest.mark.parametrize("epoch", [False, True], ids=["2.6-format", "epoch-format"])
def test_an_idle_peer_costs_the_worker_at_most_16_kib(lab, epoch: bool) -> None:
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=("10.1.0.1/24", "10.1.0.2/24"))
    rss = in_netns(a.name, _peer_memory, epoch, timeout=120)
    per_peer = (rss[1000] - rss[1]) / 999
    print(f"worker RSS {rss[1]} KiB with 1 peer, {rss[1000]} KiB with 1000: {per_peer:.1f} KiB")
    assert per_peer <= 16


def _fallback_case(b_name: str) -> dict:
    import select

    from tests.support.nsfork import Sender
    from tests.support.packets import udp4
    from xdp_ovpn.dataplane.api import KeySlot
    from xdp_ovpn.dataplane.tun import Tun
    from xdp_ovpn.dataplane.xdppath import XdpDataPlane
    from xdp_ovpn.dataplane.xsk import XskSocket
    from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, endpoint_key
    from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey

    c2s = DataKey("AES-256-GCM", bytes(range(32)), bytes(range(100, 108)))
    s2c = DataKey("AES-256-GCM", bytes(range(32, 64)), bytes(range(200, 208)))
    peer = DataChannelCrypto(0, 7, encrypt=c2s, decrypt=s2c)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("10.1.0.1", 1194))
    with Tun(mtu=1400) as tun, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inner:
        tun.add_address("10.8.0.1/24")
        tun.up()
        inner.bind(("10.8.0.1", 6000))
        dp = XdpDataPlane(sock)
        maps = dp.maps("veth0")

        def shedding() -> tuple:
            """What the classifier is told: authority, connected remotes, control limits."""
            remotes = sorted(maps.remotes.walk())
            known = {endpoint_key("10.1.0.2", 40000): "peer", endpoint_key("10.1.0.2", 40001):
                     "floated"}
            return (maps.authoritative, [known.get(k, "?") for k in remotes],
                    maps.control_limits == DEFAULT_CONTROL_LIMITS)

        def replaced(old: int) -> None:
            while dp.pid == old:
                select.select([dp.notification_fd()], [], [], 5)
                dp.notifications()

        try:
            states = {"started": shedding()}
            dp.new_peer(7, ("10.1.0.2", 40000), vpn_ipv4="10.8.0.2")
            dp.new_key(7, KeySlot.PRIMARY, 0, "AES-256-GCM", s2c.key, s2c.nonce_tail,
                       c2s.key, c2s.nonce_tail)
            dp.attach_tun(tun.fileno(), 1400)
            states["peer"] = shedding()
            dp.set_peer(7, remote=("10.1.0.2", 40001))
            states["floated"] = shedding()
            dp.set_peer(7, remote=("10.1.0.2", 40000))
            first = dp.pid
            os.kill(first, signal.SIGKILL)
            # Someone else takes the RX queue: the new worker cannot have AF_XDP.
            with XskSocket("veth0", 0, tx_size=0) as squatter:
                replaced(first)
                states["fallback"] = shedding()
                with Sender(b_name, "10.1.0.1", 1194, 40000) as sender:
                    sender.send(peer.encrypt(udp4("10.8.0.2", "10.8.0.1", 5000, 6000, b"hi"), 0))
                    got = inner.recv(100) if select.select([inner], [], [], 5)[0] else None
                squatter.close()
            result = {"got": got, "restarts": dp.restarts, "peers": dp.peers(),
                      "rx": dp.get_peer(7).rx_packets}
            time.sleep(0.5)  # the kernel frees the squatter's AF_XDP pool asynchronously
            second = dp.pid
            os.kill(second, signal.SIGKILL)
            replaced(second)
            states["back on AF_XDP"] = shedding()
            return result | {"states": states}
        finally:
            dp.close()
            sock.close()


def test_a_worker_that_cannot_get_af_xdp_back_keeps_the_tunnel_on_the_socket(lab) -> None:
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=("10.1.0.1/24", "10.1.0.2/24"))
    r = in_netns(a.name, _fallback_case, b.name, timeout=60)
    assert r["restarts"] == 1 and r["peers"] == [7]
    assert r["got"] == b"hi" and r["rx"] == 1
    # A server's worker on AF_XDP is authoritative and mirrors its peers' addresses; on the
    # socket alone nothing is dropped or limited, until a worker on AF_XDP says so again.
    assert r["states"] == {
        "started": (True, [], True),
        "peer": (True, ["peer"], True),
        "floated": (True, ["floated"], True),
        "fallback": (False, [], False),
        "back on AF_XDP": (True, ["peer"], True),
    }


_SCRAPE = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


def test_a_queue_that_cannot_be_bound_leaves_the_others_on_af_xdp(lab) -> None:
    net, server, client = _xdp_server(lab, rx_queues=2)
    base = server.command
    server.command = lambda: [*base(), "--metrics", "127.0.0.1:9544"]
    channels(net.client_ns, 1)  # the client sends on its queue 0: our RX queue 0
    squat(net.server_ns, 1)
    with started(server), started(client):
        server.wait_for_log(r"WARNING: no AF_XDP socket on veth0 queue 1: .*busy")
        server.wait_for_log(r"Data path: xdp")
        ping(net.client_ns, server.tunnel_ipv4)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(net.server_ns) > 200
        metrics = net.server_ns.run([sys.executable, "-c", _SCRAPE,
                                     "http://127.0.0.1:9544/metrics"]).stdout
    assert 'xdp_ovpn_worker_af_xdp_queues{worker="xdp"} 1' in metrics, metrics
    assert 'xdp_ovpn_worker_af_xdp_queues_unbound{worker="xdp"} 1' in metrics
    assert "xdp_ovpn_dco_enabled 1" in metrics


def test_auto_falling_back_to_the_socket_warns_and_reports_no_dco(lab, tmp_path) -> None:
    status = tmp_path / "status.txt"
    net, server, client = _xdp_server(lab, extra=[f"status {status} 1", "status-version 2"],
                                      data_path="auto")
    squat(net.server_ns, 0)  # the plain veth's only queue in use: AF_XDP cannot be had
    with started(server), started(client):
        server.wait_for_log(r"WARNING: Data path: socket \(XDP unavailable: .*queue 0")
        ping(net.client_ns, server.tunnel_ipv4)
        assert lab.wait_for(lambda: "CLIENT_LIST,client" in status.read_text(), timeout=5)
    lines = status.read_text().splitlines()
    assert "GLOBAL_STATS,dco_enabled,0" in lines
    assert "[DCO]" not in lines[0]
