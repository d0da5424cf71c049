"""Typed loader errors: each carries a one-line reason the CLI prints as is."""


class LoaderError(Exception):
    """Base class for everything the BPF loader can refuse."""


class HeadersNotFound(LoaderError):
    """No kernel header tree bcc can compile against."""


class CompileError(LoaderError):
    """bcc/clang rejected a BPF program."""


class AttachError(LoaderError):
    """The kernel refused to attach (or detach) an XDP program."""

    def __init__(self, reason: str, busy: bool = False) -> None:
        super().__init__(reason)
        self.busy = busy  # another program holds the interface: no point trying another mode


class MapError(LoaderError):
    """A BPF map could not be read, written, pinned or opened."""
