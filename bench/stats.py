"""Percentiles and summaries of latency samples (milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, by the nearest-rank method."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(values_ms: Iterable[float]) -> dict[str, Any]:
    values = sorted(values_ms)
    if not values:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(values),
        "mean_ms": round(sum(values) / len(values), 3),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "p999_ms": round(percentile(values, 99.9), 3),
        "max_ms": round(values[-1], 3),
    }


def histogram(values_ms: Iterable[float], buckets: int = 60) -> dict[str, list[float]]:
    """Log-spaced histogram (for plots and the JSON file; raw samples are not kept)."""
    values = [v for v in values_ms if v > 0]
    if not values:
        return {"edges_ms": [], "counts": []}
    low, high = max(min(values), 0.01), max(values)
    if high <= low:
        high = low * 1.01
    ratio = (high / low) ** (1 / buckets)
    edges = [low * ratio**i for i in range(buckets + 1)]
    counts = [0.0] * buckets
    for v in values:
        i = min(buckets - 1, max(0, int(math.log(v / low) / math.log(ratio)))) if v > low else 0
        counts[i] += 1
    return {"edges_ms": [round(e, 4) for e in edges], "counts": counts}


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"
