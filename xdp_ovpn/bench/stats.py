"""Medians, spread and ratios over repetitions: what the report prints and charts draw."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def summarize(values: Iterable[float | None]) -> dict[str, float | int | list[float]] | None:
    """Median, min, max, quartiles and relative spread of the values that exist."""
    got = sorted(float(v) for v in values if v is not None)
    if not got:
        return None
    median = statistics.median(got)
    q1, q3 = (statistics.quantiles(got, n=4, method="inclusive")[i] for i in (0, 2)) \
        if len(got) > 1 else (got[0], got[0])
    return {
        "n": len(got),
        "median": median,
        "min": got[0],
        "max": got[-1],
        "q1": q1,
        "q3": q3,
        # (max - min) / median: how far to trust the median's digits
        "spread_pct": 100.0 * (got[-1] - got[0]) / abs(median) if median else 0.0,
        "values": got,
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or not baseline:
        return None
    return value / baseline


def median_of(summary: dict | None) -> float | None:
    return None if summary is None else float(summary["median"])
