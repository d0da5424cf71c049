"""`xdp-ovpn options`: what happens to each OpenVPN option, from the parser's own table.

The README's option table is this command's `--markdown` output (a test keeps the two
equal), so the documentation cannot drift from the parser.
"""

from __future__ import annotations

import click

from xdp_ovpn.config import Outcome, option_table


def markdown_table() -> str:
    """Supported options as a list, then tables: supported ones' limits, refused ones with
    the reason, ignored ones with why that is harmless."""
    rows = option_table()
    supported = [r.name for r in rows if r.outcome is Outcome.SUPPORTED]
    out = [
        f"**Supported** ({len(supported)}): " + ", ".join(f"`{n}`" for n in supported) + ".",
        "",
    ]
    for outcome, title, column in (
        (Outcome.SUPPORTED, "Supported with limits (anything beyond is refused)", "limit"),
        (Outcome.REFUSED, "Refused at start (one line: file, line, option, reason)", "reason"),
        (Outcome.IGNORED, "Ignored, logged once at start", "why it is harmless here"),
    ):
        chosen = [r for r in rows if r.outcome is outcome and r.note]
        out += [f"**{title}** ({len(chosen)}):", "", f"| option | {column} |", "|---|---|"]
        out += [f"| `{r.name}` | {r.note} |" for r in chosen]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


@click.command()
@click.option("--markdown", is_flag=True, help="The README's table instead of plain lines.")
def options(markdown: bool) -> None:
    """List every OpenVPN option the parser knows: supported, refused or ignored."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    for row in option_table():
        click.echo(f"{row.name:28} {row.outcome.value:10} {row.note}".rstrip())
