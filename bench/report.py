"""The report: one table (printed, and written into bench/RESULTS.md) and one bar chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .servers import Target

FIGURES = ["req/s", "p50 ms", "p99 ms", "non-200", "unexp", "us/req", "db/req", "others"]
COLUMNS = ["target", "load", "conns", *FIGURES, "product / ceiling", "goal"]


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
    others: float  # share of a core everything else on the machine used meanwhile
    wrk_cpu: float  # share of its core wrk used


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(t: Target, runs: dict[str, list[Run]]) -> float | None:
    """Product / ceiling: the ratio of the medians of req/s, measured in the same rounds."""
    if not t.ceiling or not runs.get(t.name) or not runs.get(t.ceiling):
        return None
    return median([r.rps for r in runs[t.name]]) / median([r.rps for r in runs[t.ceiling]])


def verdict(t: Target, runs: dict[str, list[Run]]) -> str:
    found = ratio(t, runs)
    if t.connections:  # sqlite@64: more concurrency, and still no error
        return f"0 non-200: {'meets' if not sum(r.non_200 for r in runs[t.name]) else 'MISSES'}"
    if t.goal is None or found is None:
        return ""
    return f">= {t.goal:.2f}: {'meets' if found >= t.goal else 'MISSES'}"


def rows(targets: list[Target], runs: dict[str, list[Run]], connections: int) -> list[list[str]]:
    table = []
    for t in (t for t in targets if runs.get(t.name)):
        done, found = runs[t.name], ratio(t, runs)

        def mid(field: str, form: str, done: list[Run] = done) -> str:
            value = median([getattr(r, field) for r in done])
            return format(value, form) if value >= 0 else ""

        ceiling = f"{found:.2f} of {t.ceiling}" if found is not None else ""
        bad = [str(sum(r.non_200 for r in done)), str(sum(r.unexpected for r in done))]
        figures = [mid("rps", ".0f"), mid("p50_ms", ".2f"), mid("p99_ms", ".2f"), *bad]
        figures += [mid("us_per_request", ".0f"), mid("db_per_request", ".2f")]
        load = [t.name, t.load if t.store else "", str(t.connections or connections)]
        table.append([*load, *figures, mid("others", ".0%"), ceiling, verdict(t, runs)])
    return table


def markdown(table: list[list[str]]) -> str:
    """The table, printed as it is written into RESULTS.md."""
    return "\n".join("| " + " | ".join(row) + " |" for row in [COLUMNS, ["---"] * 13, *table])


def chart(targets: list[Target], runs: dict[str, list[Run]], path: Path, title: str) -> bool:
    """A bar chart of product / ceiling per target, goals marked; False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(t, found) for t in targets[::-1] if (found := ratio(t, runs)) is not None]
    if not bars:
        return False
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.2))
    for y, (t, value) in enumerate(bars):
        good = t.goal is None or value >= t.goal
        colour = "tab:gray" if t.goal is None else "tab:green" if good else "tab:red"
        axes.barh(t.name, value, color=colour)
        axes.text(max(value, t.goal or 0) * 1.03, y, f"{value:.2f}", va="center")
        if t.goal is not None:
            axes.plot([t.goal, t.goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
    axes.axvline(1.0, color="black", linewidth=0.5, linestyle=":")
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks := [0.25, 0.5, 1, 2, 4, 8], [f"{tick:g}" for tick in ticks])
    axes.set_xlim(0.2, max(8, *(value for _, value in bars)) * 1.3)
    axes.set_xlabel("req/s of the target / req/s of its ceiling (black tick: the goal)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
