"""Typed VM-harness errors: each carries a one-line reason the CLI prints as is."""


class VMError(Exception):
    """Base class for everything the VM harness can refuse."""


class HostSetupError(VMError):
    """The host lacks a tool (qemu, debootstrap) and installing it failed."""


class BuildError(VMError):
    """Building the guest root, installing a kernel or its initramfs failed."""


class KernelNotFound(VMError):
    """No Debian kernel package matches the requested version."""


class GuestTimeout(VMError):
    """The guest did not finish in time and was killed."""
