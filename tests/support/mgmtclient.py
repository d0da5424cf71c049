"""A line-oriented management-interface client, as scripts and monitors write them."""

from __future__ import annotations

import socket

CRLF = "\r\n"


class Client:
    """A line-oriented management client, as scripts and monitors write them."""

    def __init__(self, where) -> None:
        family = socket.AF_UNIX if isinstance(where, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(where if isinstance(where, str) else where[:2])
        self.buf = b""

    def read_until(self, end: str) -> str:
        while not self.buf.decode(errors="replace").endswith(end):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        text, self.buf = self.buf.decode(), b""
        return text

    def greeting(self) -> str:
        return self.read_until(CRLF)

    def ask(self, command: str, end: str = CRLF) -> str:
        self.sock.sendall(command.encode() + b"\n")
        return self.read_until(end)

    def close(self) -> None:
        self.sock.close()
