"""A run as files: the JSON document, a Markdown table, and two runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

from xdp_ovpn.bench.figures import BY_KEY, FIGURES, QUESTIONS, SCALE_QUESTIONS
from xdp_ovpn.bench.runner import SCHEMA


class ReportError(ValueError):
    """A file is not a benchmark result this version can read."""


def _workers(cfg: dict, rx_queues: int | None = None) -> str:
    """", N data-plane workers (veth with Q queues)" when the run set them; else the veth's
    queues when the run chose them (a scenario with its own workers)."""
    workers = cfg.get("workers")
    if workers:
        return (f", {workers} data-plane worker(s) on XDP (veth with "
                f"{rx_queues or max(workers, 2)} queues)")
    return f", veth with {rx_queues} queues" if rx_queues else ""

def number(value: float | None) -> str:
    """Three significant digits, thousands separated; '–' for nothing."""
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def cell(summary: dict | None, scale: float = 1.0) -> str:
    """'median (min–max)', or the median alone for one value."""
    if not summary:
        return "–"
    med, lo, hi = (summary[k] / scale for k in ("median", "min", "max"))
    if summary["n"] == 1:
        return number(med)
    return f"{number(med)} ({number(lo)}–{number(hi)})"


def write_json(doc: dict, path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def load(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ReportError(f"{path}: not an xdp-ovpn bench result ({SCHEMA})")
    return doc


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _environment(doc: dict) -> list[str]:
    env, cfg = doc.get("environment", {}), doc.get("config", {})
    v = env.get("versions", {})
    load_avg = env.get("load_average_at_start") or []
    partial = "; INTERRUPTED, partial results" if doc.get("interrupted") else ""
    return [
        f"- machine: {env.get('cpus')} × {env.get('cpu_model')}, {env.get('memory_gib')} GiB, "
        f"kernel {env.get('kernel')}, Debian {env.get('debian')}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in load_avg)}",
        f"- versions: xdp-ovpn {v.get('xdp-ovpn')} ({(v.get('git_commit') or '?')[:12]}"
        f"{', dirty tree' if v.get('git_dirty') else ''}), {v.get('openvpn')}, {v.get('iperf3')}, "
        f"Python {v.get('python')}, cryptography {v.get('cryptography')}",
        f"- configuration: {cfg.get('repetitions')} repetitions in alternating order; TCP "
        f"{cfg.get('tcp_seconds')} s, UDP {cfg.get('udp_seconds')} s at "
        f"{number(cfg.get('udp_pps'))} packets/s offered; {cfg.get('cipher')}, xdp-ovpn engine "
        f"{cfg.get('engine', 'python')}{_workers(cfg, doc.get('rx_queues'))}, wrapping "
        f"{cfg.get('wrapping')}, underlay MTU {cfg.get('underlay_mtu')}; run took "
        f"{doc.get('seconds')} s{partial}",
    ]


def markdown(doc: dict) -> str:
    """The whole run as Markdown: conditions, scenarios, one table per question, ratios, scale."""
    out = [f"# xdp-ovpn bench, {doc.get('started')}", "", *_environment(doc), ""]
    out += ["## Scenarios", ""]
    rows = []
    for s in doc.get("scenarios", []):
        errors = [r["error"] for r in doc.get("runs", []) if r["scenario"] == s["name"]
                  and r.get("error")]
        status = "ran" if s["available"] else f"unavailable: {s.get('unavailable')}"
        if errors:
            status += f"; {len(errors)} failed: {errors[0]}"
        rows.append([f"`{s['name']}`", s["label"], status])
    out += _table(["scenario", "what", "status"], rows)
    summary = doc.get("summary", {})
    ran = [s["name"] for s in doc.get("scenarios", []) if summary.get(s["name"])]
    for question, title in QUESTIONS.items():
        figs = [f for f in FIGURES if f.question == question
                and any(f.key in summary[n] for n in ran)]
        if not figs:
            continue
        out += ["", f"## {title}", "", "median (min–max) over the repetitions", ""]
        header = ["scenario", *(f"{f.label} ({f.unit})" for f in figs)]
        out += _table(header, [[n, *(cell(summary[n].get(f.key)) for f in figs)] for n in ran])
    out += _ratios(doc, ran)
    out += _flood(doc, ran)
    out += _scale(doc)
    return "\n".join(out) + "\n"


FLOOD_VERDICTS = ("drop_unknown_peer", "drop_data_v1", "drop_control_source",
                  "drop_control_global", "drop_short", "drop_bad_opcode", "pass_control")


def _flood(doc: dict, ran: list[str]) -> list[str]:
    """What the flood sent, and what an XDP server's classifier did with it (means)."""
    rows = []
    for n in ran:
        floods = [r["tests"]["flood_tcp_up_1"]["flood"] for r in doc.get("runs", [])
                  if r["scenario"] == n and "flood" in r["tests"].get("flood_tcp_up_1", {})]
        if not floods:
            continue
        sent = sum(sum(f["sent"].values()) for f in floods) / len(floods)
        verdicts = [f.get("xdp_verdicts") for f in floods]
        counts = [f"{round(sum(v.get(k, 0) for v in verdicts) / len(verdicts)):,}"
                  if all(verdicts) else "–" for k in FLOOD_VERDICTS]
        rows.append([n, f"{floods[0]['pps']:,}", f"{round(sent):,}", *counts])
    if not rows:
        return []
    return ["", "## The flood, and the XDP server's verdicts meanwhile (mean a repetition)", "",
            *_table(["scenario", "offered packets/s", "sent", *FLOOD_VERDICTS], rows)]


def _ratios(doc: dict, ran: list[str]) -> list[str]:
    ratios = doc.get("ratios", {})
    figs = [f for f in FIGURES if f.ratios and any(f.key in ratios.get(n, {}) for n in ran)]
    if not figs:
        return []
    rows = []
    for n in ran:
        row = [n]
        for f in figs:
            r = ratios.get(n, {}).get(f.key, {})
            user, bare = r.get("vs_userspace"), r.get("vs_bare")
            row.append(f"{number(user)}× / {number(bare)}×" if r else "–")
        rows.append(row)
    return ["", "## Ratios of medians: × userspace openvpn / × bare link", "",
            *_table(["scenario", *(f.label for f in figs)], rows)]


def _scale(doc: dict) -> list[str]:
    scale = doc.get("scale_summary", {})
    if not scale:
        return []
    out = ["", f"## {SCALE_QUESTIONS['handshakes']}", "",
           "Simulated clients (the protocol core, one UDP socket each) against the real server.",
           ""]
    rows = [[e["label"], n, cell(s)] for e in scale.values()
            for n, s in e["handshakes_per_s"].items()]
    out += _table(["server", "clients at once", "handshakes/s"], rows)
    counts = sorted({n for e in scale.values() for n in e["memory_per_peer"]}, key=int)
    out += ["", f"## {SCALE_QUESTIONS['memory']}", "",
            "Growth of the server's PSS (all its processes) divided by the peers connected, KiB; "
            "the peers connect with a bounded number of handshakes in flight.", ""]
    rows = [[e["label"], *(cell(e["memory_per_peer"].get(n), 1024) for n in counts)]
            for e in scale.values()]
    out += _table(["server", *(f"{n} peers" for n in counts)], rows)
    steps = sorted({k for e in scale.values() for k in e.get("marginal_memory_per_peer", {})},
                   key=lambda k: int(k.split("-")[0]))
    if steps:
        out += ["", "Marginal memory per extra peer between two counts (KiB; one-time costs "
                "such as the first peer's buffers cancel out):", ""]
        rows = [[e["label"], *(number(_kib(e.get("marginal_memory_per_peer", {}).get(k)))
                               for k in steps)] for e in scale.values()]
        out += _table(["server", *(f"{k} peers" for k in steps)], rows)
    rows = [[e["label"], *(cell(e["fill_handshakes_per_s"].get(n)) for n in counts)]
            for e in scale.values()]
    out += ["", "Handshakes per second while filling the server:", ""]
    out += _table(["server", *(f"{n} peers" for n in counts)], rows)
    return out


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def compare(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Medians of two runs side by side, with B's change against A."""
    rows = []
    sa, sb = a.get("summary", {}), b.get("summary", {})
    for scenario in [n for n in sa if n in sb]:
        for key in [k for k in sa[scenario] if k in sb[scenario]]:
            f = BY_KEY.get(key)
            va, vb = sa[scenario][key]["median"], sb[scenario][key]["median"]
            change = f"{100 * (vb - va) / va:+.0f} %" if va else "–"
            label = f"{f.label} ({f.unit})" if f else key
            rows.append([scenario, label, number(va), number(vb), change])
    ka, kb = a.get("scale_summary", {}), b.get("scale_summary", {})
    for target in [t for t in ka if t in kb]:
        for field, unit, scale in (("handshakes_per_s", "handshakes/s", 1),
                                   ("memory_per_peer", "KiB/peer", 1024)):
            for n, s in ka[target][field].items():
                other = kb[target][field].get(n)
                if s and other:
                    va, vb = s["median"] / scale, other["median"] / scale
                    change = f"{100 * (vb - va) / va:+.0f} %" if va else "–"
                    rows.append([target, f"{n} peers ({unit})", number(va), number(vb), change])
    header = ["scenario", "figure", f"{name_a} median", f"{name_b} median", "change"]
    lines = [f"A: {name_a} ({a.get('started')}, {a.get('environment', {}).get('kernel')})",
             f"B: {name_b} ({b.get('started')}, {b.get('environment', {}).get('kernel')})", "",
             *_table(header, rows)]
    return "\n".join(lines) + "\n"
