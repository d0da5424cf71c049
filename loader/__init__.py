"""BPF loader: the only Python in the project that knows bcc exists.

Compiles bpf/*.c with bcc against discovered kernel headers, attaches XDP programs through
BPF links, and exposes their maps through typed accessors.
"""
