"""What a session is and where it stands (its role and State), and the timings that
session.py, keystate.py and negotiation.py share."""

from __future__ import annotations

import enum

from .constants import Opcode

RESET_OPCODES = frozenset(
    {Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3, Opcode.HARD_RESET_SERVER_V2}
)
CLIENT_RESET_OPCODES = frozenset({Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3})
PUSH_REQUEST_INTERVAL = 5.0  # common.h
PUSH_REPLY_HOLDOFF = 30.0  # push.c: sent_push_reply_expiry
EXIT_LINGER = 5.0  # push.c receive_exit_message / schedule_exit


class SessionRole(enum.Enum):
    """What this end of the TLS session is (config.Role is the endpoint's mode)."""

    CLIENT = "client"  # tls-client + pull
    SERVER = "server"  # tls-server in mode server
    P2P_CLIENT = "p2p-client"  # tls-client, no pull (2.6 p2p NCP)
    P2P_SERVER = "p2p-server"  # tls-server, no mode server

    @property
    def tls_server(self) -> bool:
        return self in (SessionRole.SERVER, SessionRole.P2P_SERVER)

    @property
    def p2p(self) -> bool:
        return self in (SessionRole.P2P_CLIENT, SessionRole.P2P_SERVER)


class State(enum.Enum):
    HANDSHAKE = "handshake"  # first key not yet active
    AUTHENTICATING = "authenticating"  # server: waiting for accept_auth; client: PUSH_REPLY
    ESTABLISHED = "established"  # data keys for key-id 0 derived
    CLOSING = "closing"  # a final message (EXIT, AUTH_FAILED) is being delivered
    CLOSED = "closed"
    FAILED = "failed"
