"""proto/epoch against real openvpn 2.7.8 peers, which use the epoch format between them.

Two openvpn 2.7 processes run a tunnel in lab namespaces at verb 7, which logs each
side's E_1 send and receive secrets ("Master Encrypt/Decrypt (cipher ...)": the first 32
bytes of key2's cipher halves) and every epoch data key derived from them. With those:

- our key chain must derive the same data keys openvpn logs;
- every DATA_V2 packet captured on the underlay, both ways, must decrypt with
  EpochDataChannel (format, AAD, nonce, tag place);
- a packet we encrypt in epoch 2 and inject as if from the server must be accepted by
  the openvpn client, which then moves its own send key to epoch 2: its echo reply comes
  back in epoch 2 and our channel takes it through a future key.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI
from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.epoch import EpochDataChannel, unpack_packet_id
from xdp_ovpn.proto.epochkeys import EpochKey

pytestmark = [pytest.mark.root, pytest.mark.openvpn27]

CIPHER = "AES-256-GCM"  # its 32-byte key is the whole E_1 in openvpn's "Master" lines
SERVER, CLIENT = "10.1.0.1", "10.1.0.2"
SERVER_TUN, CLIENT_TUN = "10.8.0.1", "10.8.0.2"
PORT = 1194
ECHO_ID = 0x4242

_INJECT = """
import socket, sys
payload = bytes.fromhex(sys.argv[3])
udp_len = 8 + len(payload)
header = int(sys.argv[2]).to_bytes(2, "big")
udp = (1194).to_bytes(2, "big") + header + udp_len.to_bytes(2, "big") + bytes(2) + payload
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
    s.sendto(udp, (sys.argv[1], 0))
"""


def _hex_after(log: str, label: str) -> bytes:
    m = re.search(re.escape(label) + r"[^:]*: ([0-9a-f ]+)\n", log)
    assert m, f"no {label!r} line in the openvpn log"
    return bytes.fromhex(m.group(1).replace(" ", ""))


def _udp_payloads(pcap: Path) -> list[tuple[int, int, bytes]]:
    """(source port, destination port, payload) of each IPv4 UDP datagram in a pcap."""
    data = pcap.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1" and struct.unpack_from("<I", data, 20)[0] == 1
    out, offset = [], 24
    while offset + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, offset + 8)[0]
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        if frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_UDP:
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", frame, udp)
        out.append((sport, dport, frame[udp + 8 : udp + length]))
    return out


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) & 1)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(src: str, dst: str) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ECHO_ID, 1) + b"epoch from xdp-ovpn"
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + icmp


def _is_echo_reply(plain: bytes) -> bool:
    ihl = (plain[0] & 0x0F) * 4
    icmp_type, echo_id = plain[ihl], struct.unpack_from("!H", plain, ihl + 4)[0]
    return plain[9] == socket.IPPROTO_ICMP and icmp_type == 0 and echo_id == ECHO_ID


def _channel(header: bytes, send: bytes, receive: bytes) -> EpochDataChannel:
    """A channel for packets carrying `header` (op|key-id, peer-id), from two E_1 secrets."""
    peer_id = int.from_bytes(header[1:4], "big")
    return EpochDataChannel(header[0] & 7, peer_id, CIPHER, EpochKey(1, send), EpochKey(1, receive))


@pytest.fixture
def tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        pytest.skip("needs tcpdump")
    return path


def test_epoch_format_matches_openvpn27(lab, tmp_path, tcpdump) -> None:
    a, b = lab.add_namespace("s"), lab.add_namespace("c")
    lab.link(a, b, addrs=(f"{SERVER}/24", f"{CLIENT}/24"))
    spec = TunnelSpec(PKI(), cipher=CIPHER, proto="udp4", network6=None, verb=7)
    pcap = tmp_path / "underlay.pcap"
    # --immediate-mode: no 1 s batching; -Z root: writable test directory.
    errors = tmp_path / "tcpdump.err"
    with open(errors, "w") as err:
        dump = b.popen([tcpdump, "-i", "veth0", "-U", "--immediate-mode", "-n", "-Z", "root",
                        "-w", str(pcap), "udp", "port", str(PORT)],
                       stdout=subprocess.DEVNULL, stderr=err)
    assert lab.wait_for(lambda: "listening on" in errors.read_text(), timeout=10), "no tcpdump"
    server = OpenVPNServer(a, spec, openvpn="2.7")
    client = OpenVPNClient(b, server, remote=SERVER, openvpn="2.7")
    with started(server), started(client):
        b.run(["ping", "-c", "3", "-i", "0.2", "-W", "3", SERVER_TUN])
        log = client.log()
        assert "Outgoing Epoch Data key 1" in log  # 2.7 with 2.7: the epoch format

        # 1. Our key chain derives the data keys openvpn logged.
        e1_send = _hex_after(log, "Master Encrypt (cipher")
        e1_recv = _hex_after(log, "Master Decrypt (cipher")
        assert EpochKey(1, e1_send).data_key(CIPHER).key == _hex_after(
            log, "Outgoing Epoch Data key 1: CIPHER KEY")
        key = EpochKey(1, e1_recv)
        for epoch in range(1, 6):
            logged = _hex_after(log, f"Incoming Epoch Data key {epoch}: CIPHER KEY")
            assert key.data_key(CIPHER).key == logged, f"epoch {epoch}"
            key = key.next()

        # 2. Every captured data packet decrypts with our channel.
        def data_packets() -> list[tuple[int, int, bytes]]:
            return [(s, d, p) for s, d, p in _udp_payloads(pcap) if p[0] >> 3 == Opcode.DATA_V2]

        lab.wait_for(lambda: len(data_packets()) >= 6)  # three echoes, three replies
        packets = data_packets()
        up = [p for s, d, p in packets if d == PORT]
        down = [p for s, d, p in packets if s == PORT]
        assert len(up) >= 3 and len(down) >= 3
        client_port = next(s for s, d, p in packets if d == PORT)
        server_view = _channel(up[0], send=e1_recv, receive=e1_send)
        client_view = _channel(down[0], send=e1_send, receive=e1_recv)
        for packet in up:
            server_view.decrypt(packet, 0.0)
        for packet in down:
            client_view.decrypt(packet, 0.0)
        assert unpack_packet_id(up[-1][4:12])[0] == 1

        # 3. Our epoch-2 packet, injected as the server's, gets an epoch-2 reply.
        injector = _channel(down[0], send=e1_recv, receive=e1_send)
        injector.rotate_send()
        packet = injector.encrypt(_echo_request(SERVER_TUN, CLIENT_TUN), 0.0)
        seen = len(_udp_payloads(pcap))
        a.run([sys.executable, "-c", _INJECT, CLIENT, str(client_port), packet.hex()])
        assert lab.wait_for(lambda: any(
            d == PORT and p[0] >> 3 == Opcode.DATA_V2 and unpack_packet_id(p[4:12])[0] == 2
            for s, d, p in _udp_payloads(pcap)[seen:]), timeout=10), client.log_tail()
        replies = [p for s, d, p in _udp_payloads(pcap)[seen:]
                   if d == PORT and p[0] >> 3 == Opcode.DATA_V2]
        plain = [server_view.decrypt(p, 1.0) for p in replies]
        assert server_view.receive_epoch == 2 and server_view.retiring_epoch == 1
        assert any(_is_echo_reply(p) for p in plain)
    dump.terminate()
    dump.wait(timeout=5)
