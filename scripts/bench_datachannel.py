#!/usr/bin/env python3
"""Micro-benchmark of the DATA_V2 AEAD path (not a test): packets/s on one core.

    .venv/bin/python scripts/bench_datachannel.py [--size 1400] [--seconds 2] [--cipher ...]

Measures each entry point of xdp_ovpn.proto.datachannel the data plane may use:
encrypt_into (to a buffer with slack), encrypt_frame (in place), decrypt_into
(read-only packet -> buffer) and decrypt_frame (in place in a frame, the UMEM path).
Packets for the decrypt runs are prepared outside the timed loops. Time is this
thread's CPU time, so the figure is packets per CPU-second even on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import time

from xdp_ovpn.proto.constants import AEAD_CIPHERS, DATA_V2_HEADER_LEN
from xdp_ovpn.proto.datachannel import FRAME_SLACK, DataChannelCrypto, DataKey

FRAME = 2048
BATCH = 256


def pair(cipher: str) -> tuple[DataChannelCrypto, DataChannelCrypto]:
    n = AEAD_CIPHERS[cipher]
    k1 = DataKey(cipher, os.urandom(n), os.urandom(8))
    k2 = DataKey(cipher, os.urandom(n), os.urandom(8))
    return DataChannelCrypto(1, 5, k1, k2), DataChannelCrypto(1, 5, k2, k1)


def rate(fn, seconds: float) -> float:
    """Calls fn() -> packets until `seconds` of CPU time have been spent in it."""
    return _timed_with_setup(lambda: 0, fn, seconds)


def bench(cipher: str, size: int, seconds: float) -> dict[str, float]:
    tx, rx = pair(cipher)
    payload = os.urandom(size)
    out = bytearray(FRAME)
    out_view = memoryview(out)
    frames = bytearray(FRAME * BATCH)
    views = [memoryview(frames)[i * FRAME : (i + 1) * FRAME] for i in range(BATCH)]
    results: dict[str, float] = {}

    def enc_into() -> int:
        f, p, v = tx.encrypt_into, payload, out_view
        for _ in range(BATCH):
            f(v, p, 0.0)
        return BATCH

    def enc_frame() -> int:
        f = tx.encrypt_frame
        for v in views:
            f(v, size, 0.0)
        return BATCH

    # Floor for comparison: the bare AEAD call, fixed nonce, no header, tag or replay work.
    aead, nonce, aad = tx._enc, bytes(12), bytes(8)
    sealed = memoryview(bytearray(size + 16))

    def raw_aead() -> int:
        f, p = aead.encrypt_into, payload
        for _ in range(BATCH):
            f(nonce, p, aad, sealed)
        return BATCH

    results["bare AEAD"] = rate(raw_aead, seconds)
    results["encrypt_into"] = rate(enc_into, seconds)
    results["encrypt_frame"] = rate(enc_frame, seconds)

    # Fresh pair so the receiver sees packet-ids in order from 1.
    tx, rx = pair(cipher)
    assert DATA_V2_HEADER_LEN + size + FRAME_SLACK <= FRAME
    packets: list[bytes] = []

    def dec_into() -> int:
        packets[:] = [tx.encrypt(payload, 0.0) for _ in range(BATCH)]  # untimed below
        return 0

    def run_dec_into() -> int:
        f, v = rx.decrypt_into, out_view
        for pkt in packets:
            f(v, pkt, 0.0)
        return BATCH

    results["decrypt_into"] = _timed_with_setup(dec_into, run_dec_into, seconds)

    lengths = [0] * BATCH

    def fill_frames() -> int:
        for i, v in enumerate(views):
            v[DATA_V2_HEADER_LEN : DATA_V2_HEADER_LEN + size] = payload
            lengths[i] = tx.encrypt_frame(v, size, 0.0)
        return 0

    def run_dec_frame() -> int:
        f = rx.decrypt_frame
        for v, n in zip(views, lengths, strict=True):
            f(v, n, 0.0)
        return BATCH

    results["decrypt_frame"] = _timed_with_setup(fill_frames, run_dec_frame, seconds)
    return results


def _timed_with_setup(setup, run, seconds: float) -> float:
    done, spent = 0, 0.0
    while spent < seconds:
        setup()
        t0 = time.thread_time()
        done += run()
        spent += time.thread_time() - t0
    return done / spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1400, help="plaintext bytes per packet")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per entry point")
    ap.add_argument("--cipher", action="append", choices=sorted(AEAD_CIPHERS))
    args = ap.parse_args()
    for cipher in args.cipher or ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]:
        res = bench(cipher, args.size, args.seconds)
        line = "  ".join(f"{k} {v / 1e3:7.0f} k/s" for k, v in res.items())
        print(f"{cipher:18s} {args.size} B: {line}")


if __name__ == "__main__":
    main()
