"""Sans-I/O OpenVPN 2.6 wire protocol: bytes and a clock in, bytes and events out."""
