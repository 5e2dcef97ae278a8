"""The report: one table (printed, and written into bench/RESULTS.md) and one bar chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .servers import Target

COLUMNS = ["target", "load", "conns", "req/s", "p50 ms", "p99 ms", "non-200", "unexp",
           "us/req", "db/req", "others", "product / ceiling", "goal"]  # fmt: skip


@dataclass
class Run:
    """One measured window of one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_200: int  # answers that were not 200, and socket errors
    unexpected: int  # 200 answers whose status was not the load's
    us_per_request: float  # server CPU (all its processes) per answered request
    db_per_request: float  # PostgreSQL transactions or MariaDB statements per request; -1
    others: float  # share of a core everything else used meanwhile
    wrk_cpu: float  # share of its core wrk used


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(t: Target, runs: dict[str, list[Run]]) -> float | None:
    """Product / ceiling: the ratio of the two medians of req/s (one run, alternate rounds)."""
    if not t.ceiling or not runs.get(t.name) or not runs.get(t.ceiling):
        return None
    return median([r.rps for r in runs[t.name]]) / median([r.rps for r in runs[t.ceiling]])


def verdict(t: Target, runs: dict[str, list[Run]]) -> str:
    if t.connections and not t.ceiling:
        bad = sum(r.non_200 for r in runs[t.name])
        return f"0 non-200: {'meets' if bad == 0 else 'MISSES'}"
    found = ratio(t, runs)
    if t.goal is None or found is None:
        return ""
    return f">= {t.goal:.2f}: {'meets' if found >= t.goal else 'MISSES'}"


def rows(targets: list[Target], runs: dict[str, list[Run]], connections: int) -> list[list[str]]:
    table = []
    for t in targets:
        if not runs.get(t.name):
            continue
        done = runs[t.name]
        found = ratio(t, runs)
        db = median([r.db_per_request for r in done])
        table.append([
            t.name, t.load if t.store else "", str(t.connections or connections),
            f"{median([r.rps for r in done]):.0f}",
            f"{median([r.p50_ms for r in done]):.2f}", f"{median([r.p99_ms for r in done]):.2f}",
            str(sum(r.non_200 for r in done)), str(sum(r.unexpected for r in done)),
            f"{median([r.us_per_request for r in done]):.0f}", f"{db:.2f}" if db >= 0 else "",
            f"{median([r.others for r in done]):.0%}",
            f"{found:.2f} of {t.ceiling}" if found is not None else "",
            verdict(t, runs),
        ])  # fmt: skip
    return table


def text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [COLUMNS, *table]) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i in (0, 1, 11, 12) else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [COLUMNS, *table]
    )  # fmt: skip


def markdown(table: list[list[str]]) -> str:
    lines = [COLUMNS, ["---"] * len(COLUMNS), *table]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def chart(targets: list[Target], runs: dict[str, list[Run]], path: Path, title: str) -> bool:
    """A bar chart of product / ceiling per target, goals marked; False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(t, found) for t in targets if (found := ratio(t, runs)) is not None]
    if not bars:
        return False
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.2))
    names = [t.name for t, _ in bars][::-1]
    values = [found for _, found in bars][::-1]
    goals = [t.goal for t, _ in bars][::-1]
    colours = ["tab:gray" if g is None else "tab:green" if v >= g else "tab:red"
               for v, g in zip(values, goals, strict=True)]  # fmt: skip
    axes.barh(names, values, color=colours)
    for y, (value, goal) in enumerate(zip(values, goals, strict=True)):
        axes.text(max(value, goal or 0) * 1.03, y, f"{value:.2f}", va="center")
        if goal is not None:
            axes.plot([goal, goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
    axes.axvline(1.0, color="black", linewidth=0.5, linestyle=":")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks := [0.25, 0.5, 1, 2, 4, 8], [f"{tick:g}" for tick in ticks])
    axes.set_xlim(0.2, max(8, *values) * 1.3)
    axes.set_xlabel("req/s of the target / req/s of its ceiling (black tick: the goal)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
