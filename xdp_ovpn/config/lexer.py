"""Config text and command lines to `Directive`s: quoting, comments, inline blocks
(openvpn 2.6 options.c parse_line), `--option` arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdp_ovpn.config.model import ConfigError, Location

INLINE_TAGS = frozenset(
    {
        "ca",
        "cert",
        "key",
        "dh",
        "tls-auth",
        "tls-crypt",
        "tls-crypt-v2",
        "crl-verify",
        "peer-fingerprint",
        "auth-user-pass",
        "extra-certs",
        "secret",
        "pkcs12",
        "http-proxy-user-pass",
        "connection",
    }
)
MAX_INCLUDE_DEPTH = 10
# ---------------------------------------------------------------- tokenizing


@dataclass(frozen=True)
class Directive:
    """One option with its arguments; `inline` holds a <tag> block's text."""

    name: str
    args: tuple[str, ...]
    where: Location
    inline: bool = False


def split_line(line: str, where: Location) -> list[str]:
    """Split one config line into words like openvpn's parse_line: quotes, backslashes,
    comments (`#` or `;` where a word would start)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""  # '"' or "'" while inside quotes
    in_word = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt not in '\\" \t':
                raise ConfigError("bad backslash usage (write \\\\ for a backslash)", where=where)
            word.append(nxt)
            in_word = True
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
                words.append("".join(word))
                word, in_word = [], False
            else:
                word.append(ch)
        elif ch.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif not in_word and ch in "#;":
            break
        elif not in_word and ch in "\"'":
            quote = ch
        else:
            word.append(ch)
            in_word = True
        i += 1
    if quote == '"':
        raise ConfigError('no closing quotation (")', where=where)
    if quote or in_word:
        words.append("".join(word))
    return words


def read_directives(
    text: str, file: str, errors: list[ConfigError] | None = None
) -> list[Directive]:
    """Turn config text into directives, collecting <tag>...</tag> inline blocks.

    With `errors`, a line that cannot be split is kept there and reading goes on."""
    out: list[Directive] = []
    lines = text.removeprefix("\ufeff").splitlines()
    n = 0
    while n < len(lines):
        raw = lines[n]
        n += 1
        where = Location(file, n)
        stripped = raw.strip()
        if stripped.startswith("<") and stripped.endswith(">") and not stripped.startswith("</"):
            tag = stripped[1:-1]
            end = f"</{tag}>"
            body: list[str] = []
            while n < len(lines) and lines[n].strip() != end:
                body.append(lines[n])
                n += 1
            if n >= len(lines):
                unclosed = ConfigError(f"inline block <{tag}> has no {end}", tag, where)
                if errors is None:
                    raise unclosed
                errors.append(unclosed)
                break
            n += 1
            out.append(Directive(tag, ("\n".join(body) + "\n",), where, inline=True))
            continue
        try:
            words = split_line(raw, where)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        if not words:
            continue
        name = words[0][2:] if words[0].startswith("--") else words[0]
        out.append(Directive(name, tuple(words[1:]), where))
    return out


def directives_from_args(argv: Sequence[str]) -> list[Directive]:
    """`--option value ...` command-line words as directives (openvpn accepts both forms)."""
    out: list[Directive] = []
    for i, word in enumerate(argv, start=1):
        if word.startswith("--"):
            out.append(Directive(word[2:], (), Location("command line", i)))
        elif not out:
            raise ConfigError(
                f"expected an --option, got {word!r}", where=Location("command line", i)
            )
        else:
            last = out[-1]
            out[-1] = Directive(last.name, (*last.args, word), last.where)
    return out
