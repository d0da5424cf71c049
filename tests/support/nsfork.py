"""Run a test body inside a lab namespace, in a forked child.

TUN devices and AF_XDP sockets belong to the namespace of the process that
creates them, so the body runs in a child that has entered the namespace; its
return value (or its exception, as text) comes back through a pipe.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pyroute2 import netns


class ChildFailed(AssertionError):
    """The body raised inside the namespace; the message carries its traceback."""


def in_netns(name: str, fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
    """Call fn(*args) inside namespace `name`; return its (picklable) result."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        status = 0
        try:
            netns.setns(name)
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException:
            payload = pickle.dumps(("error", traceback.format_exc()))
            status = 1
        try:
            with os.fdopen(wfd, "wb") as out:
                out.write(payload)
        finally:
            os._exit(status)
    os.close(wfd)
    try:
        data = _read_all(rfd, timeout)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not data:
        raise ChildFailed("child died without a result")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise ChildFailed(f"in namespace {name}:\n{value}")
    return value


def _read_all(fd: int, timeout: float) -> bytes:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError(f"child still running after {timeout} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def popen_in(name: str, script: str, *args: object, **kw: Any) -> subprocess.Popen:
    """Start `python -c script args...` inside namespace `name` (text mode pipes)."""
    cmd = ["ip", "netns", "exec", name, sys.executable, "-c", script, *map(str, args)]
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(cmd, text=True, **kw)


class Sender:
    """A SENDER process: `send(data)` puts one datagram on the wire from (ns, sport)."""

    def __init__(self, name: str, dst: str, dport: int, sport: int) -> None:
        from tests.support.packets import SENDER

        self.proc = popen_in(name, SENDER, dst, dport, sport, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)  # fmt: skip

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data.hex() + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
