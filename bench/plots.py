"""PNG plots of a run (matplotlib, Agg backend): write throughput against clients, latency
percentiles, the lag distribution, reads, memory, and the growth curves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt

MIB = 1024 * 1024


def _save(fig: Any, folder: Path, name: str, drawn: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    drawn.append(name)


def writes_throughput(s: dict[str, Any], folder: Path, drawn: list[str]) -> None:
    w = s["writes"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, style, color in (
        ("http", "HTTP write API", "o-", "C0"),
        ("event_store", "event store direct (no HTTP)", "s--", "C1"),
        ("crud", "CRUD baseline (FastAPI + psycopg)", "^:", "C2"),
    ):
        runs = w[key]
        clients = [r["clients"] for r in runs]
        ax1.plot(clients, [r["ok_rps"] for r in runs], style, color=color, label=label)
        ax2.plot(clients, [r["p99_ms"] for r in runs], style, color=color, label=f"{label} p99")
        ax2.plot(clients, [r["p50_ms"] for r in runs], style, color=color, alpha=0.35)
    ax1.axhline(800, color="grey", lw=0.8, ls="--", label="target 800/s")
    ax2.axhline(25, color="grey", lw=0.8, ls="--", label="target p99 25 ms")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["clients"] for r in w["http"]], [str(r["clients"]) for r in w["http"]])
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("commands/s (2xx)")
    ax1.set_title("Write throughput")
    ax2.set_ylabel("latency ms (p99 solid, p50 faint)")
    ax2.set_yscale("log")
    ax2.set_title("Write latency")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=7)
    _save(fig, folder, "writes.png", drawn)


def _cdf(hist: dict[str, list[float]]) -> tuple[list[float], list[float]]:
    edges, counts = hist.get("edges_ms", []), hist.get("counts", [])
    total = sum(counts)
    xs, ys, acc = [], [], 0.0
    for right, c in zip(edges[1:], counts, strict=False):
        acc += c
        xs.append(right)
        ys.append(acc / total if total else 0)
    return xs, ys


def lag(s: dict[str, Any], folder: Path, drawn: list[str]) -> None:
    lg = s["lag"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for key, style, label, color in (
        ("pipeline", "-", "pipeline", "C0"),
        ("projection_runner", "--", "ProjectionRunner", "C1"),
    ):
        for i, run in enumerate(lg[key]):
            xs, ys = _cdf(run["lag_histogram"])
            rate = run["rate_target"]
            ax1.plot(xs, ys, style, color=colors[i % len(colors)], label=f"{label} {rate}/s")
        rates = [r["rate_target"] for r in lg[key]]
        p50 = [r["lag"]["p50_ms"] for r in lg[key]]
        p99 = [r["lag"]["p99_ms"] for r in lg[key]]
        ax2.plot(rates, p50, f"o{style}", color=color, alpha=0.5, label=f"{label} p50")
        ax2.plot(rates, p99, f"s{style}", color=color, label=f"{label} p99")
    ax1.set_xscale("log")
    ax1.set_xlabel("write -> read lag (ms)")
    ax1.set_ylabel("fraction of writes visible")
    ax1.set_title("Lag distribution (CDF)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.axhline(100, color="grey", lw=0.8, ls="--", label="target p99 100 ms")
    ax2.set_xlabel("writes/s (open loop)")
    ax2.set_ylabel("lag ms")
    ax2.set_yscale("log")
    ax2.set_title("Lag percentiles against rate")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    _save(fig, folder, "lag.png", drawn)


def reads(s: dict[str, Any], folder: Path, drawn: list[str]) -> None:
    r = s["reads"]
    series = {**r["kinds"], **r["baselines"]}
    names = list(series)
    conns = sorted({x["connections"] for runs in series.values() for x in runs})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    width = 0.8 / max(len(conns), 1)
    for j, c in enumerate(conns):
        xs = [i + j * width for i in range(len(names))]
        runs = [next((x for x in series[n] if x["connections"] == c), None) for n in names]
        ax1.bar(xs, [x["rps"] if x else 0 for x in runs], width, label=f"{c} connections")
        ax2.bar(xs, [x["p99_ms"] if x else 0 for x in runs], width, label=f"{c} connections p99")
    ax1.set_ylabel("requests/s")
    ax1.set_yscale("log")
    ax1.set_title("Reads: throughput (top) and p99 latency (bottom)")
    ax2.set_ylabel("p99 ms")
    ax2.set_yscale("log")
    ax2.axhline(10, color="grey", lw=0.8, ls="--", label="10 ms (cached target)")
    ax2.axhline(50, color="grey", lw=0.8, ls=":", label="50 ms (uncached page target)")
    ax2.set_xticks([i + width * (len(conns) - 1) / 2 for i in range(len(names))], names)
    plt.setp(ax2.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    _save(fig, folder, "reads.png", drawn)


def memory(s: dict[str, Any], folder: Path, drawn: list[str]) -> None:
    m = s["memory"]
    names = list(m["steady_rss_bytes"])
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs], [m["steady_rss_bytes"][n] / MIB for n in names], 0.4, label="steady"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [m["peak_rss_bytes"].get(n, 0) / MIB for n in names],
        0.4,
        label="peak",
    )
    ax.axhline(120, color="grey", lw=0.8, ls="--", label="API target 120 MiB")
    ax.axhline(150, color="grey", lw=0.8, ls=":", label="relay/projector target 150 MiB")
    ax.set_xticks(list(xs), names)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.set_ylabel("RSS MiB")
    ax.set_title("Memory of each process")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, folder, "memory.png", drawn)


def growth(s: dict[str, Any], folder: Path, drawn: list[str]) -> None:
    levels = s["growth"]["levels"]
    events = [lv["events"]["all"] for lv in levels]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    ax.plot(events, [lv["writes"]["one_tenant"]["ok_rps"] for lv in levels], "o-", label="1 tenant")
    many = [next(v for k, v in lv["writes"].items() if k != "one_tenant") for lv in levels]
    ax.plot(
        events, [m["ok_rps"] for m in many], "s--", label=f"{s['growth']['tenants'] - 1} tenants"
    )
    ax.set_title("Writes/s at 8 clients")
    ax = axes[0][1]
    for name, style in (("by_id_cached", "o"), ("page_uncached", "s"), ("phrase_uncached", "^")):
        ax.plot(
            events,
            [lv["reads"]["one_big_tenant"][name]["p99_ms"] for lv in levels],
            f"{style}-",
            label=f"{name} big",
        )
        ax.plot(
            events,
            [lv["reads"]["one_small_tenant"][name]["p99_ms"] for lv in levels],
            f"{style}:",
            label=f"{name} small",
        )
    with_lag = [(lv["events"]["all"], lv["lag"]) for lv in levels if lv.get("lag")]
    if with_lag:
        ax.plot(
            [e for e, _ in with_lag],
            [run["lag"]["p99_ms"] or 0 for _, run in with_lag],
            "kD-",
            label=f"write -> read lag ({with_lag[0][1]['rate_target']}/s)",
        )
    ax.set_yscale("log")
    ax.set_title("p99 ms: reads (4 connections), lag")
    ax = axes[1][0]
    raw = [lv["replay"]["raw_read"] for lv in levels]
    ax.plot(events, [r["raw_per_s"] or 0 for r in raw], "o-", label="raw read")
    ax.plot(events, [r["decoded_per_s"] or 0 for r in raw], "s-", label="read + decode")
    ref = [
        lv["replay"].get("reference_rebuild", {}).get("customer_events_per_s") or 0 for lv in levels
    ]
    ax.plot(events, ref, "^--", label="reference rebuild (customer ev.)")
    cli = [lv["replay"]["cli"].get("customer_events_per_s") or 0 for lv in levels]
    if any(cli):
        ax.plot(events, cli, "D-", label="beeoclock replay (customer ev.)")
    ax.axhline(30_000, color="grey", lw=0.8, ls="--", label="target 30k/s")
    ax.set_yscale("log")
    ax.set_title("Replay events/s")
    ax = axes[1][1]
    with_deep = [
        (lv["events"]["all"], lv["deep_page"]) for lv in levels if "first" in lv["deep_page"]
    ]
    for key, style in (("first", "o-"), ("offset", "s--"), ("cursor", "^:")):
        ax.plot(
            [e for e, _ in with_deep],
            [d[key]["p50_ms"] for _, d in with_deep],
            style,
            label=f"{key} p50",
        )
    ax.set_title("Deep page vs first page (big tenant, ms)")
    for row in axes:
        for a in row:
            a.set_xscale("log")
            a.set_xlabel("events in the store")
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
    _save(fig, folder, "growth.png", drawn)


def draw(results: dict[str, Any], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    s = results.get("scenarios", {})
    drawn: list[str] = []
    makers: list[tuple[str, Callable[[dict[str, Any], Path, list[str]], None]]] = [
        ("writes", writes_throughput),
        ("lag", lag),
        ("reads", reads),
        ("memory", memory),
        ("growth", growth),
    ]
    for key, maker in makers:
        if key in s:
            try:
                maker(s, folder, drawn)
            except (KeyError, TypeError, IndexError, ValueError, StopIteration) as exc:
                results.setdefault("notes", []).append(f"Plot {key} not drawn: {exc!r}")
            plt.close("all")
    return drawn
