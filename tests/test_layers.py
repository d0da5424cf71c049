"""The layer order, read from every module's imports (`ast`, nothing is imported).

LAYERS is the one place the rule is written: a module may import from its own layer and
the layers listed before it, never from one listed after it. Lazy imports inside functions
and `if TYPE_CHECKING:` imports count too: a layer that needs a name from above it has a
seam in the wrong place.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xdp_ovpn"

# Lowest first. Each layer is a tuple of module prefixes; a module belongs to the layer of
# its longest matching prefix ("xdp_ovpn" alone matches only the package root).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("package root (__version__)", ("xdp_ovpn",)),
    ("protocol, sans-I/O", ("xdp_ovpn.proto",)),
    ("BPF loader", ("xdp_ovpn.loader",)),
    ("config file", ("xdp_ovpn.config",)),  # xdp-control-limit is the loader's ControlLimits
    ("process capabilities", ("xdp_ovpn.capabilities",)),
    ("data plane and engines", ("xdp_ovpn.dataplane", "xdp_ovpn._native")),
    ("control plane", ("xdp_ovpn.control",)),
    ("commands over the planes", ("xdp_ovpn.runcmd", "xdp_ovpn.xdpctl", "xdp_ovpn.optionscmd")),
    ("VM harness", ("xdp_ovpn.vm",)),
    ("lab library", ("xdp_ovpn.lab",)),
    ("applications", ("xdp_ovpn.doctor", "xdp_ovpn.bench", "xdp_ovpn.demo",
                      "xdp_ovpn.vm.guest")),
    ("CLI", ("xdp_ovpn.cli",)),
)
# The loader is the only code that knows bcc; from the rest of the package it takes just
# the wire constants, so it can be read (and reused) without the endpoint around it.
LOADER_MAY_IMPORT = ("xdp_ovpn.proto.constants",)
# Import names of what pyproject.toml depends on (pyOpenSSL is OpenSSL; bcc is Debian's
# python3-bpfcc; matplotlib the bench extra's). Anything else is a missing dependency or a
# stray top-level package.
DEPENDENCIES = ("OpenSSL", "bcc", "click", "cryptography", "matplotlib", "pyroute2")
# Dependencies only one layer may import: module prefixes allowed to, per import name.
CONFINED = {"bcc": ("xdp_ovpn.loader",)}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "xdp_ovpn"
                                           and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(module: str, path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Every xdp_ovpn module `module` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod when that is a module.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names
                              if _is_module(f"{base}.{alias.name}")]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] == "xdp_ovpn")


def _top_level(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Statements run at import time: the module body and its if/try blocks, not defs."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.Try):
            blocks = [stmt.body, stmt.orelse]
            if isinstance(stmt, ast.Try):
                blocks += [stmt.finalbody, *(h.body for h in stmt.handlers)]
            for block in blocks:
                yield from _top_level(block)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module, _ in modules() if layer_of(module) is None]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for module, path in modules():
        own = layer_of(module)
        assert own is not None
        for target in imports(module, path):
            theirs = layer_of(target)
            if theirs is None or theirs > own:
                where = "no layer" if theirs is None else LAYERS[theirs][0]
                upward.append(f"{module} ({LAYERS[own][0]}) imports {target} ({where})")
    assert not upward, "\n".join(upward)


def test_imports_are_the_standard_library_the_package_or_a_dependency_where_allowed() -> None:
    allowed = {*sys.stdlib_module_names, "xdp_ovpn", *DEPENDENCIES}
    strays = []
    for module, path in modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                confined = CONFINED.get(root)
                if root not in allowed or (confined and not module.startswith(confined)):
                    strays.append(f"{module} imports {name}")
    assert not strays, "\n".join(strays)


def test_loader_takes_only_the_wire_constants_from_the_package() -> None:
    outside = [f"{module} imports {target}" for module, path in modules()
               if module.startswith("xdp_ovpn.loader")
               for target in imports(module, path)
               if not target.startswith("xdp_ovpn.loader") and target != "xdp_ovpn"
               and target not in LOADER_MAY_IMPORT]
    assert not outside, "\n".join(outside)


def test_protocol_imports_nothing_outside_itself() -> None:
    outside = [f"{module} imports {target}" for module, path in modules()
               if module.startswith("xdp_ovpn.proto")
               for target in imports(module, path)
               if target != "xdp_ovpn" and not target.startswith("xdp_ovpn.proto")]
    assert not outside, "\n".join(outside)


def test_no_import_cycles() -> None:
    """At import time, counting `if TYPE_CHECKING:` blocks, no module reaches itself."""
    graph = {module: {t for t in imports(module, path, top_level_only=True) if t != module}
             for module, path in modules()}
    cycles = []
    for module, targets in graph.items():
        for target in targets:
            if module < target and module in _reachable(graph, target):
                cycles.append(f"{module} and {target} import each other (maybe through others)")
    assert not cycles, "\n".join(cycles)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
