"""Status reports: openvpn 2.6's exact text for versions 1-3, and the file that carries it.

The expected texts are what openvpn 2.6.14 itself printed (management `status 1/2/3` of a
server in the lab, one client with username "good", TZ=UTC), with only the title line and
the two GLOBAL_STATS values that differ by design (no bcast queue, DCO-style data path).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from xdp_ovpn.control.status import (
    BAD_SOURCE_STAT,
    ClientSnapshot,
    StatusError,
    StatusFile,
    StatusSnapshot,
    real_address,
    render,
    render_text,
    title,
)

# From openvpn 2.6.14 (`status 2` over its management interface), see the module docstring.
OPENVPN_V2 = """\
TITLE,OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [MH/PKTINFO] [AEAD] [DCO]
TIME,2026-11-21 13:49:13,1795268953
HEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,Bytes Received,Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,Peer ID,Data Channel Cipher
CLIENT_LIST,client,10.1.0.2:50429,10.8.0.2,fd00:8::1000,2103,2198,2026-11-21 13:49:00,1795268940,good,0,0,AES-256-GCM
HEADER,ROUTING_TABLE,Virtual Address,Common Name,Real Address,Last Ref,Last Ref (time_t)
ROUTING_TABLE,10.8.0.2,client,10.1.0.2:50429,2026-11-21 13:49:01,1795268941
ROUTING_TABLE,fd00:8::1000,client,10.1.0.2:50429,2026-11-21 13:49:01,1795268941
GLOBAL_STATS,Max bcast/mcast queue length,1
GLOBAL_STATS,dco_enabled,0
END
"""  # noqa: E501
# `status 1` of the same server (routing lines in our order: IPv4 first).
OPENVPN_V1 = """\
OpenVPN CLIENT LIST
Updated,2026-11-21 13:49:13
Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since
client,10.1.0.2:50429,2103,2198,2026-11-21 13:49:00
ROUTING TABLE
Virtual Address,Common Name,Real Address,Last Ref
10.8.0.2,client,10.1.0.2:50429,2026-11-21 13:49:01
fd00:8::1000,client,10.1.0.2:50429,2026-11-21 13:49:01
GLOBAL STATS
Max bcast/mcast queue length,1
END
"""


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def same_client() -> StatusSnapshot:
    client = ClientSnapshot(
        common_name="client", real_address=("10.1.0.2", 50429), peer_id=0,
        connected_since=1795268940, vpn_ipv4="10.8.0.2", vpn_ipv6="fd00:8::1000",
        bytes_received=2103, bytes_sent=2198, username="good", client_id=0,
        cipher="AES-256-GCM", last_ref=1795268941,
    )  # fmt: skip
    return StatusSnapshot([client], now=1795268953, dco=False)


def ours(text: str) -> str:
    """openvpn's text with what differs by design replaced by our values."""
    lines = text.splitlines()
    sep = "\t" if "\t" in lines[-2] else ","
    out = []
    for line in lines:
        if line.startswith("TITLE"):
            line = f"TITLE{sep}{title(False)}"
        elif line.startswith(("GLOBAL_STATS", "Max bcast")) and "queue length" in line:
            line = line[: line.rindex(sep) + 1] + "0"
        out.append(line)
    return "\n".join(out) + "\n"


def test_version_2_is_openvpns_text():
    assert render_text(same_client(), 2) == ours(OPENVPN_V2)


def test_version_3_is_version_2_with_tabs():
    expected = ours(OPENVPN_V2.replace(",", "\t"))
    assert render_text(same_client(), 3) == expected


def test_version_1_is_openvpns_text():
    assert render_text(same_client(), 1) == ours(OPENVPN_V1)


def test_no_username_prints_undef():
    snap = same_client()
    snap.clients[0].username = None
    assert render(snap, 2)[3].split(",")[9] == "UNDEF"


@pytest.mark.parametrize("dco", [True, False])
def test_dco_enabled_and_the_title_flag_follow_the_data_path(dco: bool):
    snap = same_client()
    snap.dco = dco
    lines = render(snap, 2)
    assert f"GLOBAL_STATS,dco_enabled,{int(dco)}" in lines
    assert ("[DCO]" in lines[0]) == dco
    assert ("[DCO]" in render(StatusSnapshot(), 3)[0]) is False  # unless told, not offloaded


def test_the_title_names_the_engine_after_the_openvpn_release():
    snap = same_client()
    snap.engine = "python"
    line = render(snap, 2)[0]
    assert line.startswith("TITLE,OpenVPN 2.6.14 ") and line.endswith(" engine python]")


def test_iroutes_appear_in_the_routing_table_with_prefix_length():
    snap = same_client()
    snap.clients[0].iroutes = ("192.168.50.0/24", "10.77.0.5/32", "fd00:77::/64")
    routes = [line.split(",")[1] for line in render(snap, 2) if line.startswith("ROUTING_TABLE")]
    assert routes == ["10.8.0.2", "fd00:8::1000", "192.168.50.0/24", "10.77.0.5/32", "fd00:77::/64"]


def test_real_address_forms():
    assert real_address(("10.1.0.2", 1194)) == "10.1.0.2:1194"
    assert real_address(("::ffff:10.1.0.2", 1194)) == "10.1.0.2:1194"  # dual-stack socket
    assert real_address(("fd00:1::2", 1194)) == "fd00:1::2"  # openvpn prints no port for v6


def test_empty_server_and_bad_version():
    lines = render(StatusSnapshot(now=1795268953), 3)
    assert lines[2].startswith("HEADER\tCLIENT_LIST") and lines[3].startswith("HEADER\tROUTING")
    assert lines[-1] == "END"
    with pytest.raises(StatusError, match="1, 2 or 3"):
        render(StatusSnapshot(), 4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_openvpn_monitor_parses_version_3():
    collector = pytest.importorskip("tests.support.opsmonitor").collector()
    snap = same_client()
    snap.clients.append(ClientSnapshot("second", ("10.1.0.3", 40000), 1, 1795268950,
                                       vpn_ipv4="10.8.0.3", cipher="AES-256-GCM"))
    sessions = collector.parse_status("\r\n".join(render(snap, 3)) + "\r\n",
                                      collector.version_info("2.6.14"), None)
    assert set(sessions) == {"fd00:8::1000", "10.8.0.3"}  # keyed by the last VPN address
    assert sessions["fd00:8::1000"]["username"] == "good"
    assert sessions["fd00:8::1000"]["bytes_recv"] == 2103
    assert sessions["10.8.0.3"]["username"] == "second"  # UNDEF falls back to the CN
    assert sessions["10.8.0.3"]["peer_id"] == "1"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bad_source_drops_are_one_global_stat_once_there_are_any():
    snap = same_client()
    snap.bad_source_drops = 7
    v1, v2, v3 = (render(snap, v) for v in (1, 2, 3))
    assert v1[-3:] == ["Max bcast/mcast queue length,0", f"{BAD_SOURCE_STAT},7", "END"]
    assert v2[-3:] == ["GLOBAL_STATS,dco_enabled,0", f"GLOBAL_STATS,{BAD_SOURCE_STAT},7", "END"]
    assert v3[-2] == f"GLOBAL_STATS\t{BAD_SOURCE_STAT}\t7"
    snap.bad_source_drops = 0
    assert not any(BAD_SOURCE_STAT in line for v in (1, 2, 3) for line in render(snap, v))
    collector = pytest.importorskip("tests.support.opsmonitor").collector()
    sessions = collector.parse_status("\r\n".join(v3) + "\r\n",
                                      collector.version_info("2.6.14"), None)
    assert sessions["fd00:8::1000"]["bytes_recv"] == 2103  # the line does not bother it


def test_status_file_is_written_now_periodically_and_at_close(tmp_path):
    path = tmp_path / "status.log"
    snap = same_client()

    async def run() -> list[str]:
        seen = []
        sf = StatusFile(path, 2, 0.05, lambda: snap)
        sf.start()
        seen.append(path.read_text())
        snap.clients[0].bytes_received = 999
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "999" in path.read_text():
                break
        seen.append(path.read_text())
        snap.clients.clear()
        sf.close()
        seen.append(path.read_text())
        return seen

    first, updated, last = asyncio.run(run())
    assert first == render_text(same_client(), 2)
    assert ",999," in updated
    assert "CLIENT_LIST,client" not in last and last.endswith("END\n")
    assert [p.name for p in tmp_path.iterdir()] == ["status.log"]  # no temporary left over
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.root
def test_status_file_rewritten_in_place_after_privileges_are_dropped(tmp_path):
    """A root-owned directory the dropped user cannot write: openvpn's in-place rewrite."""
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "status.log"
    code = f"""
import os
from xdp_ovpn.control.status import StatusFile, StatusSnapshot, ClientSnapshot
from xdp_ovpn.control.privdrop import drop_privileges
snap = StatusSnapshot([ClientSnapshot("before", ("10.1.0.2", 1), 0, 0)])
sf = StatusFile({str(path)!r}, 1, 0, lambda: snap)
sf.write()
drop_privileges("nobody", "nogroup")
assert os.getuid() != 0
snap.clients[0].common_name = "after"
sf.write()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "\nafter,10.1.0.2:1," in path.read_text()
    assert path.stat().st_uid == 0
