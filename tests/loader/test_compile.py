"""bcc compile errors come back as one typed line, not clang's wall of text."""

from __future__ import annotations

import pytest

from xdp_ovpn.loader.compile import compile_bpf, load_xdp
from xdp_ovpn.loader.errors import CompileError

pytestmark = [pytest.mark.root, pytest.mark.bpf]


def test_syntax_error_is_one_line_with_the_compiler_reason():
    with pytest.raises(CompileError) as info:
        compile_bpf("int xdp_bad(struct xdp_md *ctx) { return XDP_PASS }")
    assert "error:" in str(info.value) and "\n" not in str(info.value)


def test_verifier_rejection_is_a_compile_error():
    # An unchecked packet read: clang accepts it, the verifier does not.
    src = "int xdp_oob(struct xdp_md *ctx) { return *(char *)(long)ctx->data; }"
    with pytest.raises(CompileError) as info:
        load_xdp(compile_bpf(src), "xdp_oob")
    assert "invalid access to packet" in str(info.value) and "\n" not in str(info.value)
