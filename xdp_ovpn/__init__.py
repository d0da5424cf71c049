"""xdp-ovpn: an OpenVPN 2.6 endpoint whose data channel runs on XDP + AF_XDP."""

__version__ = "0.1.0"
