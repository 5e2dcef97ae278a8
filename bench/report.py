"""The report: one table (printed, and written into bench/RESULTS.md) and one bar chart."""

from __future__ import annotations

import statistics
from pathlib import Path

from .servers import BY_NAME, Target

# Each column of figures, and its format: one run of a target is a dict of these figures (and
# "wrk" for the share of its core wrk used); a cell is the median over the rounds, or the sum
# for the counts of bad answers, blank if negative (db/req: not a counted database).
FIGURES = {"req/s": ".0f", "p50 ms": ".2f", "p99 ms": ".2f", "non-200": ".0f", "unexp": ".0f"}
FIGURES |= {"us/req": ".0f", "db/req": ".2f", "others": ".0%"}
SUMMED = ("non-200", "unexp")
COLUMNS = ["target", "load", "conns", *FIGURES, "product / ceiling", "goal"]
Run = dict[str, float]


def figure(runs: list[Run], column: str) -> float:
    """The column's figure over the rounds: a median, or the sum of the bad answers."""
    values = [r[column] for r in runs]
    return sum(values) if column in SUMMED else statistics.median(values)


def ratio(t: Target, runs: dict[str, list[Run]]) -> float | None:
    """Product / ceiling: the ratio of the medians of req/s, measured in the same rounds."""
    if not t.ceiling or not runs.get(t.name) or not runs.get(t.ceiling):
        return None
    return figure(runs[t.name], "req/s") / figure(runs[t.ceiling], "req/s")


def rows(targets: list[Target], runs: dict[str, list[Run]], connections: int) -> list[list[str]]:
    """The table's rows: one per target that ran."""
    table = []
    for t in (t for t in targets if runs.get(t.name)):
        found, verdict = ratio(t, runs), ""
        if t.connections:  # sqlite@64: more concurrency, and still no error
            verdict = f"0 non-200: {'meets' if not figure(runs[t.name], 'non-200') else 'MISSES'}"
        elif t.goal is not None and found is not None:
            verdict = f">= {t.goal:.2f}: {'meets' if found >= t.goal else 'MISSES'}"
        cells = [t.name, t.load if t.store else "", str(t.connections or connections)]
        for column, form in FIGURES.items():
            value = figure(runs[t.name], column)
            cells.append(format(value, form) if value >= 0 else "")
        ceiling = f"{found:.2f} of {t.ceiling}" if found is not None else ""
        table.append([*cells, ceiling, verdict])
    return table


# The README's summary: one line per product, the ratios of its targets joined by " / ".
SUMMARY = [
    ("`serve` on memory://, default options (access log on), applied / stale", "memory"),
    ("`serve` on memory://, `--no-access-log`", "memory-nolog"),
    ("`serve` on the default SQLite store, against a store that commits every request", "sqlite"),
    ("`serve` on SQLite, 64 connections", "sqlite@64"),
    ("`serve` on PostgreSQL (`postgresql+asyncpg://`), applied / stale", "postgres"),
    ("`serve --workers 2` on PostgreSQL (not pinned to one core)", "postgres-w2"),
    ("`serve` on MariaDB (`mysql+asyncmy://`), applied / stale", "mariadb"),
    (
        "a FastAPI host on its own `AsyncEngine` (asyncpg) + ORM accounts, applied / stale",
        "host-async",
    ),
    ("the same host on a sync `Engine` (psycopg)", "host-sync"),
]
SUMMARY_START, SUMMARY_END = "<!-- bench:summary -->", "<!-- /bench:summary -->"


def summary(runs: dict[str, list[Run]]) -> list[str]:
    """The README's table of ratios and goals (each target with its ``-stale`` twin, if it
    has one), or no lines unless every target it names ran."""
    lines = ["| target | product / its ceiling | goal |", "| --- | --- | --- |"]
    for label, name in SUMMARY:
        found = [BY_NAME[n] for n in (name, f"{name}-stale") if n in BY_NAME]
        if not all(runs.get(t.name) for t in found):
            return []
        if found[0].connections:  # sqlite@64: no ratio, no error
            bad = figure(runs[name], "non-200")
            lines.append(f"| {label} | {bad:.0f} non-200 | 0 non-200 |")
            continue
        values = " / ".join(f"{ratio(t, runs) or 0:.2f}" for t in found)
        goals = dict.fromkeys("reported" if t.goal is None else f"≥ {t.goal:g}" for t in found)
        lines.append(f"| {label} | {values} | {' / '.join(goals)} |")
    return lines


def replace_between(text: str, lines: list[str]) -> str:
    """``text`` with the lines between the summary's markers replaced by ``lines``."""
    head, rest = text.split(SUMMARY_START, 1)
    _, tail = rest.split(SUMMARY_END, 1)
    return "\n".join([head + SUMMARY_START, *lines, SUMMARY_END + tail])


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
    drawing, axes = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.2))
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
    drawing.tight_layout()
    drawing.savefig(path, dpi=110)
    plt.close(drawing)
    return True
