"""A tiny test-only XDP program: UDP/IPv4 to one port goes to the XSKMAP, the rest passes.

The project's real classifier lives in xdp_ovpn/loader/ (its C in xdp_ovpn/loader/bpf/); this
one only gives the AF_XDP socket tests a steering program they fully control.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any

from xdp_ovpn.loader.attach import attach
from xdp_ovpn.loader.compile import compile_bpf

SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>

BPF_XSKMAP(xsks, 8);

int redirect_udp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || udp->dest != htons(PORT))
        return XDP_PASS;
    return xsks.redirect_map(ctx->rx_queue_index, XDP_PASS);
}
"""


class Redirect:
    """The loaded program; `insert(queue, fd)` steers that RX queue to an AF_XDP socket."""

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    def insert(self, queue: int, fd: int) -> None:
        self.bpf["xsks"][ctypes.c_int(queue)] = ctypes.c_int(fd)


@contextlib.contextmanager
def redirect_udp(ifname: str, port: int, mode: str = "native") -> Iterator[Redirect]:
    """Compile (2-3 s), attach to ifname, detach on exit."""
    from bcc import BPF

    bpf = compile_bpf(SOURCE, cflags=[f"-DPORT={port}"])
    fn = bpf.load_func("redirect_udp", BPF.XDP)
    attachment = attach(fn.fd, ifname, mode)
    try:
        yield Redirect(bpf)
    finally:
        attachment.close()
        bpf.cleanup()
