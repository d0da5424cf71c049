"""PUSH_REQUEST/PUSH_REPLY and the other control-channel text messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.errors import ParseError, ProtocolError
from xdp_ovpn.proto.push import (
    PUSH_SAFE_CAP,
    AuthFailed,
    AuthPending,
    CrResponse,
    Exit,
    Info,
    MessageSplitter,
    PushReply,
    PushReplyAssembler,
    PushRequest,
    Restart,
    UnknownMessage,
    build_auth_failed,
    build_auth_pending,
    build_info,
    build_push_reply,
    build_restart,
    encode_message,
    parse_control_message,
    parse_push_reply,
)

# A push list and how Debian's openvpn 2.6.14 server split it: captured from the client's
# "PUSH: Received control message" log lines, server pushing 60 routes (lab namespaces).
ROUTES = [f"route 10.{100 + i}.0.0 255.255.0.0" for i in range(60)]
TAIL = [
    "tun-ipv6",
    "route-gateway 10.8.0.1",
    "topology subnet",
    "ping 10",
    "ping-restart 60",
    "ifconfig-ipv6 fd00:8::1000/64 fd00:8::1",
    "ifconfig 10.8.0.2 255.255.255.0",
    "peer-id 0",
    "cipher AES-256-GCM",
    "protocol-flags cc-exit tls-ekm dyn-tls-crypt",
    "tun-mtu 1500",
]
OPENVPN_SPLIT = [
    "PUSH_REPLY," + ",".join(ROUTES[:32]) + ",push-continuation 2",
    "PUSH_REPLY," + ",".join(ROUTES[32:] + TAIL[:6]) + ",push-continuation 2",
    "PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,"
    "protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500,push-continuation 1",
]


def test_build_splits_exactly_like_openvpn() -> None:
    assert [len(m) for m in OPENVPN_SPLIT] == [958, 954, 149]
    assert build_push_reply(ROUTES + TAIL) == OPENVPN_SPLIT


def test_assembler_reassembles_openvpn_continuations() -> None:
    asm = PushReplyAssembler()
    assert asm.feed(OPENVPN_SPLIT[0]) is None and asm.pending
    assert asm.feed(OPENVPN_SPLIT[1]) is None
    assert asm.feed(OPENVPN_SPLIT[2]) == ROUTES + TAIL
    assert not asm.pending


def test_short_reply_is_one_message_without_continuation() -> None:
    assert build_push_reply(["ping 10", "peer-id 3"]) == ["PUSH_REPLY,ping 10,peer-id 3"]
    assert build_push_reply([]) == ["PUSH_REPLY"]


@given(st.lists(st.from_regex(r"[a-z][a-z0-9 .:/-]{0,200}", fullmatch=True), max_size=60))
def test_build_parse_round_trip_and_size_bound(options: list[str]) -> None:
    options = [o.strip() for o in options if o.strip()]
    messages = build_push_reply(options)
    assert all(len(m) < PUSH_SAFE_CAP + len(",push-continuation 2") for m in messages)
    asm = PushReplyAssembler()
    results = [asm.feed(m) for m in messages]
    assert results[:-1] == [None] * (len(messages) - 1)
    assert results[-1] == options


@pytest.mark.parametrize("bad", ["route a,b", "x" * 1000, "dhcp-option\tDNS", "ünïcode"])
def test_build_rejects_unpushable_options(bad: str) -> None:
    with pytest.raises(ValueError):
        build_push_reply(["ping 10", bad])


def test_parse_details() -> None:
    assert parse_push_reply("PUSH_REPLY") == PushReply([], False)
    assert parse_push_reply("PUSH_REPLY,,route 1.2.3.0 255.255.255.0, ,ping 5") == PushReply(
        ["route 1.2.3.0 255.255.255.0", "ping 5"], False
    )
    assert parse_push_reply("PUSH_REPLY,ping 5,push-continuation 2").more
    # Quoted words stay inside their option line; words are split later.
    assert parse_push_reply('PUSH_REPLY,dhcp-option DOMAIN "a b"').options == [
        'dhcp-option DOMAIN "a b"'
    ]
    for bad in ("PUSH_REPLYX", "PUSH_REQUEST", "PUSH_REPLY,push-continuation 7"):
        with pytest.raises(ParseError):
            parse_push_reply(bad)


def test_message_framing() -> None:
    assert encode_message("PUSH_REQUEST") == b"PUSH_REQUEST\0"
    with pytest.raises(ValueError):
        encode_message("bad\nline")
    split = MessageSplitter()
    assert split.feed(b"PUSH_REQUEST\0EXIT\r\n\0PUSH_RE") == ["PUSH_REQUEST", "EXIT"]
    assert split.feed(b"PLY,ping 5\0\0") == ["PUSH_REPLY,ping 5"]
    assert split.feed(b"AUTH_FAILED,\xff\0INFO,ok\0") == ["INFO,ok"]
    assert split.dropped == 1
    assert split.feed(b"x" * 3000) == [] and split.dropped == 2  # runaway partial message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PUSH_REQUEST", PushRequest()),
        ("PUSH_REPLY,ping 5", PushReply(["ping 5"], False)),
        ("AUTH_FAILED", AuthFailed("")),
        ("AUTH_FAILED,TEMP[backoff 5]: busy", AuthFailed("TEMP[backoff 5]: busy")),
        ("RESTART", Restart(False, "")),
        ("RESTART,[P]:server restarting", Restart(False, "[P]:server restarting")),
        ("HALT,bye", Restart(True, "bye")),
        ("INFO_PRE,WEB_AUTH::https://x", Info("WEB_AUTH::https://x", pre=True)),
        ("INFO,hello", Info("hello")),
        ("CR_RESPONSE,aGk=", CrResponse("aGk=")),
        ("AUTH_PENDING", AuthPending(None, ())),
        ("AUTH_PENDING,timeout 30", AuthPending(30, ("timeout 30",))),
        ("EXIT", Exit()),
        ("PUSH_UPDATE,route x", UnknownMessage("PUSH_UPDATE,route x")),
    ],
)
def test_parse_control_message(text: str, expected: object) -> None:
    assert parse_control_message(text) == expected


def test_message_properties() -> None:
    assert AuthFailed("TEMP: try later").temporary and not AuthFailed("bad pw").temporary
    assert Restart(False, "[PN]:x").flags == "PN" and Restart().flags == ""


def test_builders_parse_back() -> None:
    assert parse_control_message(build_auth_failed("bad password")) == AuthFailed("bad password")
    assert parse_control_message(build_auth_failed()) == AuthFailed("")
    assert len(build_auth_failed("x" * 5000)) == 1023
    assert parse_control_message(build_restart("[N]")) == Restart(False, "[N]")
    assert parse_control_message(build_restart(halt=True)) == Restart(True, "")
    assert parse_control_message(build_auth_pending(60)).timeout == 60
    assert build_auth_pending() == "AUTH_PENDING"
    assert parse_control_message(build_info("x", pre=True)) == Info("x", pre=True)


@given(st.text(max_size=300))
def test_parsers_only_raise_protocol_errors(text: str) -> None:
    try:
        parse_control_message(text)
        parse_push_reply("PUSH_REPLY," + text)
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=80), max_size=10))
def test_splitter_never_raises(chunks: list[bytes]) -> None:
    split = MessageSplitter()
    for chunk in chunks:
        for message in split.feed(chunk):
            assert message.isascii() and "\0" not in message
