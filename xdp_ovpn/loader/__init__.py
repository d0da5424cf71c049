"""BPF loader: the only Python in the project that knows bcc exists.

Compiles bpf/*.c with bcc against discovered kernel headers, attaches XDP programs through
BPF links, and exposes their maps through typed accessors.

It sits between the protocol and the data plane: from the rest of xdp_ovpn it imports only
the wire constants (xdp_ovpn.proto.constants), which the classifier's maps are keyed by.
"""
