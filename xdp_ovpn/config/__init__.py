"""OpenVPN configuration files: the supported subset, a one-line error for the rest.

Syntax, defaults and the `server`/`keepalive` expansions follow openvpn 2.6
(options.c: parse_line, init_options, add_option; helper.c). What the DCO-style
data path cannot do (tap, TCP, compression, fragment, non-AEAD ciphers, a
server without `topology subnet`) is refused with `file:line: option: reason`.

model: Config and its parts; lexer: text and command lines to directives; registry: every
option's outcome, its handler, the Parser; options_*: the handlers by area; finish: the
whole-config checks; parse: the entry points. Importing the package registers every
option, so `option_table()` and `SUPPORTED_OPTIONS` are complete.
"""

from __future__ import annotations

# Importing an options module registers its options.
from xdp_ovpn.config import options_addressing, options_crypto, options_transport  # noqa: F401
from xdp_ovpn.config.finish import effective_settings, ignored_notes
from xdp_ovpn.config.lexer import (
    INLINE_TAGS,
    Directive,
    directives_from_args,
    read_directives,
    split_line,
)
from xdp_ovpn.config.model import (
    OPENVPN_PORT,
    Config,
    ConfigError,
    ConfigErrors,
    Location,
    Management,
    Remote,
    Role,
    Route,
    TLSWrap,
    Wrapping,
    parse_listen,
    raise_errors,
)
from xdp_ovpn.config.options_server import XDP_MODES
from xdp_ovpn.config.parse import load, parse_args, parse_directives, parse_text
from xdp_ovpn.config.registry import (
    HANDLERS,
    IGNORED_OPTIONS,
    PARSER_ONLY,
    Handler,
    OptionEntry,
    Outcome,
    option_table,
)

SUPPORTED_OPTIONS = frozenset(HANDLERS)  # every option with an effect (see IGNORED_OPTIONS)

__all__ = [
    "IGNORED_OPTIONS",
    "INLINE_TAGS",
    "OPENVPN_PORT",
    "PARSER_ONLY",
    "SUPPORTED_OPTIONS",
    "XDP_MODES",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Directive",
    "Handler",
    "Location",
    "Management",
    "OptionEntry",
    "Outcome",
    "Remote",
    "Role",
    "Route",
    "TLSWrap",
    "Wrapping",
    "directives_from_args",
    "effective_settings",
    "ignored_notes",
    "load",
    "option_table",
    "parse_args",
    "parse_directives",
    "parse_listen",
    "parse_text",
    "raise_errors",
    "read_directives",
    "split_line",
]
