"""PNG charts of a run, one figure per question, axes labelled with units.

Bars are medians; whiskers span min to max over the repetitions. Scenarios that did
not run are named in a footnote instead of being drawn as zero.
"""

from __future__ import annotations

from pathlib import Path

from xdp_ovpn.bench.figures import BY_KEY, CPU_ROLES, QUESTIONS, SCALE_QUESTIONS, cpu_key


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed (it is the optional `bench` extra)."""


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ChartsUnavailable(
            "charts need matplotlib: pip install 'xdp-ovpn[bench]' (or matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _footnote(fig, doc: dict) -> None:
    missing = [f"{s['name']} ({s.get('unavailable')})" for s in doc.get("scenarios", [])
               if not s["available"]]
    env = doc.get("environment", {})
    text = (f"{doc.get('started')} · {env.get('cpus')} CPUs · kernel {env.get('kernel')} · "
            f"{doc.get('config', {}).get('repetitions')} repetitions")
    if missing:
        text += "\nnot run: " + "; ".join(missing)
    fig.text(0.01, 0.01, text, fontsize=7, color="0.4", va="bottom", wrap=True)


def _grouped_bars(ax, names: list[str], series: list[tuple[str, list[dict | None]]],
                  scale: float = 1.0) -> None:
    """One group of bars per scenario, one bar per series, whiskers min–max."""
    width = 0.8 / max(len(series), 1)
    for i, (label, summaries) in enumerate(series):
        xs, heights, low, high = [], [], [], []
        for j, s in enumerate(summaries):
            if s is None:
                continue
            med = s["median"] / scale
            xs.append(j + (i - (len(series) - 1) / 2) * width)
            heights.append(med)
            low.append(med - s["min"] / scale)
            high.append(s["max"] / scale - med)
        ax.bar(xs, heights, width, yerr=[low, high], capsize=2, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _ran(doc: dict) -> list[str]:
    summary = doc.get("summary", {})
    return [s["name"] for s in doc.get("scenarios", []) if summary.get(s["name"])]


def _save(plt, fig, doc: dict, path: Path) -> Path:
    _footnote(fig, doc)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scenario_chart(plt, doc: dict, question: str, keys: list[str], ylabel: str,
                    path: Path, log: bool = False) -> Path | None:
    summary = doc.get("summary", {})
    names = [n for n in _ran(doc) if any(k in summary[n] for k in keys)]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    series = [(BY_KEY[k].label, [summary[n].get(k) for n in names]) for k in keys]
    _grouped_bars(ax, names, series)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("scenario")
    ax.set_title(QUESTIONS.get(question, question))
    if len(keys) > 1:
        ax.legend(fontsize=8)
    return _save(plt, fig, doc, path)


def _udp_chart(plt, doc: dict, path: Path) -> Path | None:
    summary = doc.get("summary", {})
    sizes = doc.get("config", {}).get("udp_sizes", [])
    names = [n for n in _ran(doc) if any(f"udp_{z}_pps" in summary[n] for z in sizes)]
    if not names or not sizes:
        return None
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 5), squeeze=False)
    offered = doc.get("config", {}).get("udp_pps")
    for ax, size in zip(axes[0], sizes, strict=True):
        _grouped_bars(ax, names, [("received", [summary[n].get(f"udp_{size}_pps")
                                                for n in names])])
        for j, n in enumerate(names):
            loss = summary[n].get(f"udp_{size}_loss")
            pps = summary[n].get(f"udp_{size}_pps")
            if loss and pps:
                ax.annotate(f"{loss['median']:.1f} % lost", (j, pps["median"]), ha="center",
                            va="bottom", fontsize=7)
        if offered:
            ax.axhline(offered, color="0.3", linestyle="--", linewidth=1, label="offered")
            ax.legend(fontsize=8)
        ax.set_title(f"{size}-byte datagrams")
        ax.set_ylabel("packets/s received")
        ax.set_xlabel("scenario")
    fig.suptitle(QUESTIONS["udp"])
    return _save(plt, fig, doc, path)


def _scale_charts(plt, doc: dict, out: Path) -> list[Path]:
    scale = doc.get("scale_summary", {})
    if not scale:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(7, 5))
    labels = [e["label"] for e in scale.values()]
    for i, e in enumerate(scale.values()):
        for n, s in e["handshakes_per_s"].items():
            if s:
                ax.bar(i, s["median"], yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                       capsize=3, color=f"C{i}")
                ax.annotate(f"N={n}", (i, s["median"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=10)
    ax.set_ylabel("handshakes/s (all N clients up ÷ time)")
    ax.set_xlabel("server")
    ax.set_title(SCALE_QUESTIONS["handshakes"])
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(plt, fig, doc, out / "handshakes.png"))

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, e in enumerate(scale.values()):
        points = sorted((int(n), s) for n, s in e["memory_per_peer"].items() if s)
        if points:
            xs = [n for n, _ in points]
            ax.errorbar(xs, [s["median"] / 1024 for _, s in points], marker="o",
                        yerr=[[(s["median"] - s["min"]) / 1024 for _, s in points],
                              [(s["max"] - s["median"]) / 1024 for _, s in points]],
                        capsize=3, label=e["label"], color=f"C{i}")
    ax.set_xscale("log")
    ax.set_yscale("log")  # the first peer also pays one-time buffers: orders of magnitude
    ax.set_xlabel("connected peers (log scale)")
    ax.set_ylabel("server memory growth ÷ peers (KiB of PSS, log scale)")
    ax.set_title(SCALE_QUESTIONS["memory"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(plt, fig, doc, out / "memory.png"))
    return paths


def render(doc: dict, out: Path) -> list[Path]:
    """Write every chart the run has data for into `out`; return their paths."""
    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    tcp = [k for k in ("tcp_up_1", "tcp_up_4", "tcp_down_1", "tcp_down_4")]
    made = [
        _scenario_chart(plt, doc, "tcp", tcp, "Mbit/s received (log scale)", out / "tcp.png",
                        log=True),
        _udp_chart(plt, doc, out / "udp.png"),
        _scenario_chart(plt, doc, "latency", ["added_rtt"],
                        "ms added to the bare link's round trip", out / "latency.png"),
        _scenario_chart(plt, doc, "cpu", [cpu_key(r) for r in CPU_ROLES],
                        "CPU seconds per GB moved (log scale)", out / "cpu.png", log=True),
    ]
    return [p for p in made if p is not None] + _scale_charts(plt, doc, out)
