"""xdp-ovpn on the XDP path against openvpn 2.7.8 (Debian sid, chrooted from the lab's
cached root): server, client and TLS p2p, both ways.

The default cases keep both ends' default data-ciphers, so they also show what 2.7
picks; the full product of roles x wrappings x ciphers is marked slow. We offer
IV_PROTO_DATA_EPOCH only when our data plane has the epoch data format (either engine, any
number of workers): 2.7 then uses it, its log showing the aead-epoch protocol flag (a client) or the
NCP result (p2p) and "Epoch Data key" lines (verb 4), ours "epoch data format"; otherwise
both keep the 2.6 format. A 2.6 peer never gets it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess

import pytest
from test_interop import CIPHERS, WRAPPINGS
from test_interop_xdp import use_xdp

from tests.support import multicore as mc
from tests.support.interop import fragments_passed, iperf3, ping, redirected, underlay
from xdp_ovpn.dataplane.engine import epoch_format, native_available, resolve
from xdp_ovpn.lab.openvpn import (
    Endpoint,
    OpenVPNClient,
    OpenVPNPeer,
    OpenVPNServer,
    TunnelSpec,
    started,
)
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn27, pytest.mark.bpf]

DEFAULT_CIPHER = "AES-256-GCM"  # the head of both sides' default data-ciphers
# verb 4 (openvpn takes the last one) logs each data key: "Outgoing Data Channel: Cipher"
# for the 2.6 format, "Outgoing Epoch Data key N" for the epoch format.
OURS = {"program": "xdp-ovpn"}
THEIRS = {"openvpn": "2.7", "extra": ("verb 4",)}
# Which end xdp-ovpn plays; openvpn 2.7 is the other one.
ROLES = ("server", "client", "p2p-server", "p2p-client")

# (role, wrapping, cipher or None for the defaults, underlay family)
REPRESENTATIVE = [
    ("server", "tls-crypt", None, 4),
    ("client", "tls-crypt", None, 6),
    ("p2p-server", "tls-crypt", None, 4),
]
FULL = [(role, wrapping, cipher, 4)
        for role, wrapping, cipher in itertools.product(ROLES, WRAPPINGS, CIPHERS)]
MATRIX = [pytest.param(*case, id="-".join(map(str, case))) for case in REPRESENTATIVE] + [
    pytest.param(*case, id="-".join(map(str, case)), marks=pytest.mark.slow) for case in FULL
]


def _tunnel(lab, role: str, wrapping: str, cipher: str | None, family: int,
            engine: str = "auto", theirs: dict = THEIRS, workers: int = 1,
            ours: dict = OURS) -> tuple:
    """(underlay, server, client, ours, theirs), ours on the XDP path with `engine` and
    `workers` (one RX queue in use for each)."""
    net = underlay(lab, family, rx_queues=workers) if workers > 1 else underlay(lab, family)
    spec = TunnelSpec(PKI(), wrapping=wrapping, cipher=cipher, proto=net.proto)
    ours_serves = role.endswith("server")
    server_side, client_side = (ours, theirs) if ours_serves else (theirs, ours)
    if role.startswith("p2p"):
        server = OpenVPNPeer(net.server_ns, spec, tls_server=True, **server_side)
        client = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                             **client_side)
    else:
        server = OpenVPNServer(net.server_ns, spec, **server_side)
        client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, **client_side)
    ours, theirs_end = (server, client) if ours_serves else (client, server)
    use_xdp(ours)
    base = ours.command
    ours.command = lambda: [  # type: ignore[method-assign]
        *base(), "--engine", engine, *(["--workers", str(workers)] if workers > 1 else [])]
    return net, server, client, ours, theirs_end


def _check_openvpn27_log(theirs: Endpoint, ours: Endpoint, role: str, cipher: str,
                         epoch: bool) -> None:
    """2.7 says it is 2.7 and took `cipher`, in the epoch data format or the 2.6 one."""
    log = theirs.log()
    assert "OpenVPN 2.7." in log
    # Client and server print "Data Channel: cipher 'X'"; p2p NCP "... epoch=N, cipher=X".
    ncp = f"epoch={int(epoch)}, cipher={cipher}"
    assert f"Data Channel: cipher '{cipher}'" in log or ncp in log, log
    # verb 4: each data key, "Outgoing Data Channel: Cipher" or "Outgoing Epoch Data key N".
    assert ("Epoch Data key 1" in log) == epoch, log
    assert (f"Outgoing Data Channel: Cipher '{cipher}'" in log) != epoch, log
    if role == "server":  # the 2.7 client took the pushed flag (init.c, verb 2)
        assert ("protocol-flags cc-exit tls-ekm aead-epoch" in log) == epoch, log
    elif not epoch:
        assert "aead-epoch" not in log
    assert ("epoch data format" in ours.log()) == epoch


def _traffic(lab, net, server, client, ours) -> None:
    ping(net.client_ns, server.tunnel_ipv4)
    ping(net.server_ns, str(client.tun_ipv4().ip))
    ping(net.client_ns, server.tunnel_ipv6)
    iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
    assert redirected(ours.ns) > 200  # DATA_V2 took the XDP path
    assert fragments_passed(ours.ns) == 0  # the MSS fits the data format's overhead


def _start(stack: contextlib.ExitStack, role: str, server, client) -> None:
    if role.startswith("p2p"):
        stack.enter_context(started(server, client))  # p2p peers wait for each other
    else:
        stack.enter_context(started(server))  # server first: no refused first try
        stack.enter_context(started(client))


@pytest.mark.parametrize(("role", "wrapping", "cipher", "family"), MATRIX)
def test_with_openvpn27(lab, role, wrapping, cipher, family) -> None:
    """Our default engine: the epoch format exactly when it has it."""
    net, server, client, ours, theirs = _tunnel(lab, role, wrapping, cipher, family)
    with contextlib.ExitStack() as stack:
        _start(stack, role, server, client)
        ours.wait_for_log(r"Data path: xdp")
        ours.wait_for_log(f"Data Channel: cipher '{cipher or DEFAULT_CIPHER}'")
        _traffic(lab, net, server, client, ours)
        _check_openvpn27_log(theirs, ours, role, cipher or DEFAULT_CIPHER,
                             epoch_format(resolve("auto")))


# (role, wrapping, cipher or None for the defaults): default cases, then the full product.
EPOCH_CASES = [
    pytest.param("server", "tls-crypt", None, id="server"),
    pytest.param("client", "tls-crypt", "CHACHA20-POLY1305", id="client-chacha"),
    pytest.param("p2p-server", "tls-crypt", None, id="p2p-server"),
] + [pytest.param(*case, id="-".join(map(str, case)), marks=pytest.mark.slow)
     for case in itertools.product(ROLES, WRAPPINGS, CIPHERS)]


@pytest.mark.parametrize(("role", "wrapping", "cipher"), EPOCH_CASES)
def test_epoch_format_with_openvpn27_python_engine(lab, role, wrapping, cipher) -> None:
    """The python engine on the XDP path has the epoch format: 2.7 negotiates it, both
    logs say so, and ping and iperf3 run through it."""
    net, server, client, ours, theirs = _tunnel(lab, role, wrapping, cipher, 4, "python")
    with contextlib.ExitStack() as stack:
        _start(stack, role, server, client)
        ours.wait_for_log(r"Data path: xdp .*engine python")
        ours.wait_for_log(r"Data Channel: cipher '[^']+', .*epoch data format")
        _traffic(lab, net, server, client, ours)
        _check_openvpn27_log(theirs, ours, role, cipher or DEFAULT_CIPHER, True)


@pytest.mark.parametrize("role", ["server", "p2p-server"])
def test_openvpn26_never_gets_the_epoch_format(lab, role) -> None:
    """Debian's openvpn 2.6 does not announce IV_PROTO_DATA_EPOCH: even with the python
    engine we keep the 2.6 format (no aead-epoch pushed, no epoch keys)."""
    net, server, client, ours, theirs = _tunnel(lab, role, "tls-crypt", None, 4, "python",
                                                theirs={"extra": ("verb 4",)})
    with contextlib.ExitStack() as stack:
        _start(stack, role, server, client)
        ours.wait_for_log(r"Data path: xdp .*engine python")
        ours.wait_for_log(f"Data Channel: cipher '{DEFAULT_CIPHER}'")
        ping(net.client_ns, server.tunnel_ipv4)
        log = theirs.log()
        assert "OpenVPN 2.6." in log and "aead-epoch" not in log and "Epoch" not in log
        assert f"Outgoing Data Channel: Cipher '{DEFAULT_CIPHER}'" in log
        assert "epoch data format" not in ours.log()


@pytest.mark.skipif(not native_available(), reason="the native engine is not built")
def test_several_native_workers_use_the_epoch_format(lab) -> None:
    """Two native workers share each epoch key through its slot, so the data plane offers the
    format and 2.7 takes it. The client is moved between CPUs 0 and 1, so between the RX
    queues and the workers (tests/support/multicore.py): 4 TCP streams run through both
    workers in the epoch format with no drop, no replay in particular.

    A move reorders the flow by the old worker's backlog; on a loaded machine (workers
    descheduled) that went beyond test_multicore's window of 4096 (seen: 346 drops, all of
    ids more than 4096 below the highest, none of an id taken twice): the widest window."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    net, server, client, ours, theirs = _tunnel(
        lab, "server", "tls-crypt", None, 4, "native", workers=2,
        ours={**OURS, "extra": ("replay-window 65536",)})  # moves reorder: see below
    mc.xps(net.client_ns)
    with contextlib.ExitStack() as stack:
        _start(stack, "server", server, client)
        ours.wait_for_log(r"Data path: xdp .*2 workers.*engine native")
        ours.wait_for_log(r"Data Channel: cipher '[^']+', .*epoch data format")
        ping(net.client_ns, server.tunnel_ipv4)
        sender = mc.iperf3_streams(net, server, 4)
        mc.wander(theirs.proc.pid, 4)
        try:
            out, _ = sender.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sender.kill()
            raise
        ping(net.server_ns, str(client.tun_ipv4().ip))
        status = mc.status(ours)
        _check_openvpn27_log(theirs, ours, "server", DEFAULT_CIPHER, True)
    assert re.search(r"SUM.*receiver", out), out
    per_worker = mc.per_worker(status)
    print(f"DATA_V2 packets taken per worker: {per_worker}")
    assert len(per_worker) == 2 and all(n > 100 for n in per_worker), status
    assert mc.drops(status) == {}, status  # no replay-window drops, nothing else either
    assert "may be a replay" not in theirs.log()  # 2.7 never saw a packet-id twice


@pytest.mark.parametrize("role", ["server", "client"])
def test_epoch_format_through_renegotiations_with_openvpn27(lab, role) -> None:
    """reneg-sec 4 on 2.7's side: each new key-id is in the epoch format too, and a ping
    every 0.1 s loses nothing across the key swaps (the lame duck still decrypts)."""
    theirs_opts = {"openvpn": "2.7", "extra": ("verb 4", "reneg-sec 4")}
    net, server, client, ours, theirs = _tunnel(lab, role, "tls-auth", None, 4,
                                                theirs=theirs_opts)
    with contextlib.ExitStack() as stack:
        _start(stack, role, server, client)
        ours.wait_for_log(r"Data Channel: cipher .*key-id 0 \(EKM, epoch data format\)")
        out = net.client_ns.run(
            ["ping", "-c", "100", "-i", "0.1", "-W", "2", server.tunnel_ipv4], timeout=60
        ).stdout
        assert " 0% packet loss" in out, out
        formats = re.findall(r"Data Channel: cipher .* key-id (\d+) \(EKM(.*)\)", ours.log())
        assert {"0", "1", "2"} <= {key_id for key_id, _ in formats}, formats
        assert {how for _, how in formats} == {", epoch data format"}
        assert theirs.log().count("Outgoing Epoch Data key 1") >= 3  # one per key-id


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_replaced_worker_goes_on_in_the_next_epoch(lab, engine) -> None:
    """SIGKILL the data-plane worker: the python engine's replacement sends in the next epoch
    (a fresh key and counter: no nonce twice), which the 2.7 client takes as a future key
    and follows; the native engine's goes on from the key's slot, in the same epoch above
    the last counter sent. Either way 2.7 sees no packet-id twice."""
    if engine == "native" and not native_available():
        pytest.skip("the native engine is not built")
    net, server, client, ours, theirs = _tunnel(lab, "server", "tls-crypt", None, 4, engine)
    with contextlib.ExitStack() as stack:
        _start(stack, "server", server, client)
        worker = int(ours.wait_for_log(r"Data path: xdp .*worker pid (\d+)").group(1))
        ours.wait_for_log(r"Data Channel: cipher .*epoch data format")
        ping(net.client_ns, server.tunnel_ipv4)
        os.kill(worker, signal.SIGKILL)
        ours.wait_for_log(r"worker died: restarted as pid (\d+) with 1 peer")
        net.client_ns.run(["ping", "-c", "1", "-W", "5", server.tunnel_ipv4])
        ping(net.client_ns, server.tunnel_ipv4)
        ping(net.server_ns, str(client.tun_ipv4().ip))
        if engine == "python":
            theirs.wait_for_log(r"Received data packet with new epoch 2")
        assert "may be a replay" not in theirs.log()


@pytest.mark.parametrize("role", ["server", "p2p-server"])
def test_xdp_ovpn_at_both_ends_uses_the_epoch_format(lab, role) -> None:
    """Our own ends agree on it too: the default engine on the XDP path against the python
    engine on the socket path (what the control plane negotiates, not what openvpn does)."""
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    if role == "p2p-server":
        server = OpenVPNPeer(net.server_ns, spec, tls_server=True, **OURS)
        client = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                             **OURS)
    else:
        server = OpenVPNServer(net.server_ns, spec, **OURS)
        client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, **OURS)
    use_xdp(server)
    base = client.command
    client.command = lambda: [  # type: ignore[method-assign]
        *base(), "--data-path", "socket", "--engine", "python"]
    with contextlib.ExitStack() as stack:
        _start(stack, role, server, client)
        for end in (server, client):
            end.wait_for_log(r"Data Channel: cipher .*epoch data format")
        ping(net.client_ns, server.tunnel_ipv4)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(server.ns) > 200
