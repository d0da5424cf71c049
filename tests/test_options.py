"""Every option the parser knows is supported, refused or ignored: never a fourth way.

Supported means it acts: the Config fields it is stored in are read outside the parser,
and a test outside tests/test_config.py names the option or one of its fields.
Refused means one line with the option, its line and the reason. Ignored means a short
documented reason, logged once at start.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from xdp_ovpn.config import (
    IGNORED_OPTIONS,
    PARSER_ONLY,
    Config,
    ConfigError,
    Outcome,
    ignored_notes,
    option_table,
    parse_text,
)
from xdp_ovpn.lab.pki import PKI

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xdp_ovpn"
TABLE = option_table()
SUPPORTED = [row for row in TABLE if row.outcome is Outcome.SUPPORTED]
REFUSED = [row for row in TABLE if row.outcome is Outcome.REFUSED]
IGNORED = [row for row in TABLE if row.outcome is Outcome.IGNORED]


def _sources(root: Path, skip: set[str]) -> str:
    """Every module under root but those named in skip or inside a package named there."""
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.py"))
                     if not skip & {p.name, *(q.name for q in p.relative_to(root).parents)})


CODE = _sources(PACKAGE, {"config"})  # the code outside the parser
TESTS = _sources(ROOT / "tests", {"test_config.py", "test_options.py"})


def test_each_option_has_exactly_one_outcome() -> None:
    names = [row.name for row in TABLE]
    assert len(names) == len(set(names))
    assert all(row.outcome in Outcome for row in TABLE)


@pytest.mark.parametrize("row", SUPPORTED, ids=[r.name for r in SUPPORTED])
def test_supported_option_is_read_and_tested(row) -> None:
    if row.name in PARSER_ONLY:
        return  # its whole effect is inside the parser (tests/test_config.py)
    fields = {f.name for f in dataclasses.fields(Config)}
    assert row.fields, f"{row.name}: no Config field named as its effect"
    for name in row.fields:
        assert name in fields, f"{row.name}: {name} is not a Config field"
        assert re.search(rf"\bcfg\.{name}\b", CODE), f"{row.name}: nothing reads cfg.{name}"
    words = [row.name, *row.fields]
    assert any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", TESTS) for w in words), (
        f"{row.name}: no test outside tests/test_config.py names it or its fields"
    )


@pytest.mark.parametrize("row", REFUSED, ids=[r.name for r in REFUSED])
def test_refused_option_is_one_line_with_its_line(row) -> None:
    text = "client\nremote h\n" + f"{row.name} 1\n"
    with pytest.raises(ConfigError) as info:
        parse_text(text, "r.conf")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"r.conf:3: {row.name}") and row.note in message


@pytest.mark.parametrize("row", IGNORED, ids=[r.name for r in IGNORED])
def test_ignored_option_has_a_reason(row) -> None:
    assert row.note and row.note == IGNORED_OPTIONS[row.name]


def test_ignored_options_are_listed_once_with_line_and_reason() -> None:
    pki = PKI()
    cred = pki.client("c")
    text = (f"client\nremote h\n<ca>\n{pki.ca_pem.decode()}</ca>\n"
            f"<cert>\n{cred.cert_pem.decode()}</cert>\n<key>\n{cred.key_pem.decode()}</key>\n")
    first = text.count("\n") + 1
    cfg = parse_text(text + "mute 10\nresolv-retry infinite\nmute 20\n", "i.conf")
    assert ignored_notes(cfg) == [
        f"i.conf:{first}: mute: ignored ({IGNORED_OPTIONS['mute']})",
        f"i.conf:{first + 1}: resolv-retry: ignored ({IGNORED_OPTIONS['resolv-retry']})",
    ]


def test_plugin_refusal_hints_at_the_replacement() -> None:
    with pytest.raises(ConfigError) as info:
        parse_text("plugin /usr/lib/openvpn/openvpn-plugin-auth-pam.so login\n", "p.conf")
    assert str(info.value) == (
        "p.conf:1: plugin: plugins are not supported; use 'auth-user-pass-verify' with a "
        "script that checks PAM"
    )


# ---------------------------------------------------------------- the README

README = (ROOT / "README.md").read_text()


def test_readme_option_table_is_the_generated_one() -> None:
    from xdp_ovpn.optionscmd import markdown_table

    start, end = "<!-- options-table -->\n", "<!-- /options-table -->"
    table = README[README.index(start) + len(start):README.index(end)]
    assert table == markdown_table(), "regenerate it: xdp-ovpn options --markdown"


def test_readme_example_configs_parse_as_server_and_client(tmp_path) -> None:
    from xdp_ovpn.config import Role
    from xdp_ovpn.control.sessionconfig import session_config
    from xdp_ovpn.lab.openvpn import genkey

    pki = PKI()
    pki.write(tmp_path, pki.server("server"))
    pki.write(tmp_path, pki.client("client"))
    (tmp_path / "ta.key").write_bytes(genkey("secret"))
    examples = re.findall(r"```conf\n(.*?)```", README, re.S)
    roles = []
    for text in examples:
        cfg = parse_text(text, "example.conf", tmp_path)
        session_config(cfg)
        roles.append(cfg.role)
    assert roles == [Role.SERVER, Role.CLIENT]
