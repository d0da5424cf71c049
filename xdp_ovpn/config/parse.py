"""Entry points: a config file, config text, directives or an openvpn-style command line
to a checked Config."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from xdp_ovpn.config.finish import finish
from xdp_ovpn.config.lexer import Directive, directives_from_args, read_directives
from xdp_ovpn.config.model import Config, ConfigError, Location, raise_errors
from xdp_ovpn.config.registry import Parser

# ---------------------------------------------------------------- entry points


def parse_text(
    text: str, source: str = "<config>", directory: str | os.PathLike | None = None
) -> Config:
    """Parse config text; relative paths resolve against `directory` (default: cwd)."""
    errors: list[ConfigError] = []
    directives = read_directives(text, source, errors)
    return parse_directives(directives, source, directory, errors)


def parse_directives(
    directives: Iterable[Directive],
    source: str = "<config>",
    directory: str | os.PathLike | None = None,
    errors: Sequence[ConfigError] = (),
) -> Config:
    """Apply directives and check the whole; every error found is raised together
    (ConfigErrors). The whole-config checks run only when every line was read."""
    cfg = Config(source=source, directory=Path(directory) if directory else Path.cwd())
    parser = Parser(cfg)
    parser.errors += errors
    parser.run(directives)
    if not parser.errors:
        try:
            finish(parser)
        except ConfigError as exc:
            parser.errors.append(exc)
    raise_errors(parser.errors)
    return cfg


def load(path: str | os.PathLike, extra_args: Sequence[str] = ()) -> Config:
    """Parse a config file (relative paths against its directory), then `--option` args."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror}", where=Location(str(p))
        ) from None
    errors: list[ConfigError] = []
    directives = read_directives(text, str(p), errors) + directives_from_args(extra_args)
    return parse_directives(directives, str(p), p.resolve().parent, errors)


def parse_args(argv: Sequence[str]) -> Config:
    """openvpn-style command line: `--config FILE --verb 4 ...` (later options win)."""
    return parse_directives(directives_from_args(argv), "command line")
