"""`xdp-ovpn` with its TUN opened IFF_VNET_HDR, as the control plane does once it honours
XdpDataPlane.tun_vnet_hdr (test helper: `python vnet_run.py run --config ...`)."""

from __future__ import annotations

import sys

from xdp_ovpn.dataplane import tun

_open = tun.Tun.__init__


def _vnet_tun(self, name: str = "tun%d", **kw) -> None:
    _open(self, name, **{**kw, "vnet_hdr": True, "offload": 0})


tun.Tun.__init__ = _vnet_tun  # type: ignore[method-assign]

if __name__ == "__main__":
    from xdp_ovpn.cli import main

    sys.argv = ["xdp-ovpn", *sys.argv[1:]]
    main()
