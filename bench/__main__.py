"""``python -m bench``: the product as installed, and its hosts, against their ceilings.

    .venv/bin/python -m bench                                   # every target, 5 rounds x 10 s
    .venv/bin/python -m bench --targets memory,ceiling-http --duration 3 --rounds 1
    .venv/bin/python -m bench soak --seconds 60                 # see bench/soak.py

Prints one table, writes it to bench/RESULTS.md and the ratios to bench/ratios.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import loads, measure, report, servers
from .common import BENCH
from .report import Run
from .servers import BY_NAME, TARGETS, Settings, Target

MEMORY = "memory-per-snapshot"
VERSION_STEP = 10**9  # each wrk run's versions start this far above the previous run's


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    every = [t.name for t in TARGETS] + [MEMORY]
    parser.add_argument("--targets", default=",".join(every), help=f"subset of {','.join(every)}")
    parser.add_argument("--duration", type=float, default=10, help="measured s per run [10]")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up s per run [2]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the targets [5]")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    parser.add_argument("--profile", default="host-sync", help="targets to py-spy, or ''")
    parser.add_argument("--profile-duration", type=float, default=8)
    parser.add_argument("--memory-count", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("RSM_BENCH_POSTGRES_URL")
                        or "postgresql+asyncpg://postgres@127.0.0.1:5432/test")  # fmt: skip
    parser.add_argument("--mysql-url", default=os.environ.get("RSM_BENCH_MYSQL_URL")
                        or "mysql+asyncmy://root@127.0.0.1:3306/test")  # fmt: skip
    parser.add_argument("--table", default=f"rsm_bench_{os.getpid()}", help="tables' prefix")
    parser.add_argument("--pool-size", type=int, default=20,
                        help="the ceilings' and hosts' pools [20: the URL store's]")  # fmt: skip
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="before each run, wait up to this many s for an idle machine")  # fmt: skip
    parser.add_argument("--max-other", type=float, default=0.25,
                        help="run again a run in which others used more of a core [0.25]")  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="reruns of a noisy run [2]")
    parser.add_argument("--out", help="server logs and profiles [a temporary folder]")
    parser.add_argument("--results", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--chart", default=str(BENCH / "ratios.png"))
    args = parser.parse_args(argv)
    args.selected = [n for n in args.targets.split(",") if n]
    args.profiled = [n for n in args.profile.split(",") if n]
    unknown = set(args.selected + args.profiled) - set(every)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    return args


def database_reachable(t: Target, s: Settings) -> str:
    """Why ``t`` cannot run here, or ''."""
    url = servers.db_url(t, s)
    try:
        if url:
            servers.sql(url, "SELECT 1")
    except Exception as error:
        return f"{url.split('@')[-1]} unreachable: {' '.join(str(error).split())[:120]}"
    return ""


def measure_run(t: Target, s: Settings, args: argparse.Namespace, base: int) -> Run:
    """Start ``t``'s server on a fresh store, seed it for a stale load, warm it up, measure."""
    measure.wait_for_quiet(0.15, args.quiet_wait)
    expect = "ignored_stale" if t.load == "stale" else "upserted"
    conns = t.connections or args.connections
    path = servers.url_path(t)
    url = servers.db_url(t, s)
    with servers.server(t, s) as (child, port, _log):
        asyncio.run(loads.check(port, path))
        setup = 1 + (asyncio.run(loads.seed(port, path, s.accounts)) if t.load == "stale" else 0)
        counted = counter(url)
        warm = loads.wrk(port, path, conns, args.warmup, expect, base, s.accounts, s.client_cpu)
        server, db = measure.cpu_seconds(child.pid), measure.database_cpu_seconds()
        busy, started = measure.machine_busy_seconds(), time.monotonic()
        figures, wrk_cpu = loads.wrk(port, path, conns, args.duration, expect,
                                     base + VERSION_STEP // 2, s.accounts, s.client_cpu)  # fmt: skip
        wall = time.monotonic() - started
        server = measure.cpu_seconds(child.pid) - server
        others = measure.machine_busy_seconds() - busy - server - wrk_cpu
        others -= measure.database_cpu_seconds() - db
    time.sleep(0.5)  # the server's database sessions report their counts as they end
    done = warm[0]["requests"] + figures["requests"] + setup
    statements = (counter(url) - counted - 1) / done if counted >= 0 else -1.0
    errors = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return Run(
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        non_200=figures["non_200"] + errors,
        unexpected=figures["unexpected"],
        us_per_request=server * 1e6 / max(1, figures["requests"]),
        db_per_request=statements,
        others=max(0.0, others / wall),
        wrk_cpu=wrk_cpu / wall,
    )


def counter(url: str) -> int:
    """PostgreSQL: transactions ended in the database (a statement outside a transaction is
    one); MariaDB: statements received (``Questions``). -1 for other stores."""
    query = {
        "postgresql": "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()",
        "mysql": "SHOW GLOBAL STATUS LIKE 'Questions'",
        "mariadb": "SHOW GLOBAL STATUS LIKE 'Questions'",
    }.get(url.split("+")[0].split(":")[0], "")
    return int(servers.sql(url, query)[-1]) if query else -1


def profile(t: Target, s: Settings, args: argparse.Namespace) -> list[str]:
    """py-spy ``t``'s server under its load; a few lines on where the time goes."""
    path = s.workdir / f"profile-{t.name}.speedscope.json"
    with servers.server(t, s) as (child, port, _log):
        if t.load == "stale":
            asyncio.run(loads.seed(port, servers.url_path(t), s.accounts))
        expect = "ignored_stale" if t.load == "stale" else "upserted"
        cmd = loads.wrk_command(port, servers.url_path(t), t.connections or args.connections,
                                args.profile_duration + 6, expect, VERSION_STEP * 10**6,
                                s.accounts, s.client_cpu)  # fmt: skip
        loader = servers.start(cmd, s.workdir / "wrk-profile.log", s)
        try:
            time.sleep(2)
            measure.record(child.pid, args.profile_duration, path, s.client_cpu)
        finally:
            servers.stop(loader, s, grace=1)
    return [f"py-spy profile of {t.name} ({path}, opens in speedscope.app):",
            *measure.where_time_goes(path)]  # fmt: skip


def memory_per_snapshot(count: int, s: Settings) -> str:
    cmd = servers.pinned(
        s.server_cpu, [sys.executable, "-m", "bench.memory", "--count", str(count)]
    )
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=servers.ROOT, timeout=900,
                          check=True)  # fmt: skip
    per = json.loads(done.stdout.splitlines()[-1])["bytes_per_snapshot"]
    return (f"memory:// per stored snapshot: {per:.0f} bytes of RSS growth over {count} "
            f"accounts (goal <= 2048: {'meets' if per <= 2048 else 'MISSES'})")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    pin = not args.no_pin and (os.cpu_count() or 1) > 1
    s = Settings(args.pg_url, args.mysql_url, args.table,
                 Path(args.out or tempfile.mkdtemp(prefix="rsm-bench-")),
                 server_cpu=0 if pin else None, client_cpu=1 if pin else None)  # fmt: skip
    s.workdir.mkdir(parents=True, exist_ok=True)
    s.pool_size = args.pool_size
    chosen = [t for t in TARGETS if t.name in args.selected]
    skipped = {t.name: why for t in chosen if (why := database_reachable(t, s))}
    targets = [t for t in chosen if t.name not in skipped]
    runs: dict[str, list[Run]] = defaultdict(list)
    notes: list[str] = [f"skipped {name}: {why}" for name, why in skipped.items()]
    base = itertools.count(VERSION_STEP, VERSION_STEP)
    try:
        for round_number in range(args.rounds):
            for t in targets if round_number % 2 == 0 else targets[::-1]:
                print(f"  .. round {round_number + 1}/{args.rounds}: {t.name}", file=sys.stderr)
                try:
                    for _attempt in range(args.retries + 1):
                        result = measure_run(t, s, args, next(base))
                        if result.others <= args.max_other:
                            break
                    runs[t.name].append(result)
                except Exception as error:
                    notes.append(f"run failed: {t.name}: {' '.join(str(error).split())[:300]}")
                    print(f"  .. {notes[-1]}", file=sys.stderr)
        notes += [f"wrk check: {line}" for line in wrk_check(runs)]
        if MEMORY in args.selected:
            notes.append(memory_per_snapshot(args.memory_count, s))
        for name in args.profiled:
            if name not in skipped:
                notes += profile(BY_NAME[name], s, args)
    except (KeyboardInterrupt, SystemExit):
        notes.append("interrupted: the figures come from the runs that finished")
    finally:
        for child in list(s.children):
            servers.stop(child, s, grace=5)
        servers.drop_all(s)
    return write(args, s, targets, runs, notes)


def wrk_check(runs: dict[str, list[Run]]) -> list[str]:
    if not runs.get("wrk-check") or len(runs) < 2:
        return []
    top = max(report.median([r.rps for r in v]) for k, v in runs.items() if k != "wrk-check")
    check = report.median([r.rps for r in runs["wrk-check"]])
    most = max(r.wrk_cpu for k, v in runs.items() if k != "wrk-check" for r in v)
    return [f"wrk reaches {check:.0f} req/s against a trivial responder, {check / top:.1f} x "
            f"the fastest target; wrk used at most {most:.0%} of its core on any target"]  # fmt: skip


def write(args: argparse.Namespace, s: Settings, targets: list[Target],
          runs: dict[str, list[Run]], notes: list[str]) -> int:  # fmt: skip
    table = report.rows(targets, runs, args.connections)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rounds = f"median of {args.rounds} rounds of {args.duration:g} s (after {args.warmup:g} s)"
    print(report.text(table))
    print("\n".join(notes))
    chart = Path(args.chart)
    drew = report.chart(targets, runs, chart, f"product / ceiling, {rounds}, {when}")
    versions = ", ".join(f"{k} {v}" for k, v in measure.versions().items())
    Path(args.results).write_text(
        f"# Benchmark results\n\n{when}; {measure.machine()}.\n\n"
        f"`python -m bench {' '.join(sys.argv[1:])}`: {rounds}; server pinned to core 0, wrk"
        " to core 1 (`postgres-w2` not pinned). What each column means: `README.md` here.\n\n"
        f"Packages: {versions}.\n\n{report.markdown(table)}\n\n"
        + "".join(f"- {note}\n" for note in notes)
        + (f"\n![product / ceiling per target]({chart.name})\n" if drew else "")
    )
    print(f"written: {args.results}{', ' + str(chart) if drew else ''}; logs: {s.workdir}")
    failed = any(n.startswith(("run failed", "interrupted")) for n in notes)
    return 1 if failed or not table else 0


def main(argv: list[str]) -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    if argv[:1] == ["soak"]:
        from . import soak

        return soak.main(argv[1:])
    with contextlib.suppress(BrokenPipeError):
        return run(arguments(argv))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
