"""``python -m bench``: the product as installed, and its hosts, against their ceilings.

    .venv/bin/python -m bench                     # every target: 5 rounds x 10 s
    .venv/bin/python -m bench --targets memory,ceiling-http --duration 3 --rounds 1
    .venv/bin/python -m bench soak --seconds 60   # see bench/soak.py

Prints one table, and writes it to bench/RESULTS.md and the ratios to bench/ratios.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import measure, report, servers
from .common import BENCH, PATH, ROOT, SEED_VERSION, TOKEN, account_id, parser, pinned, send
from .servers import BY_NAME, TARGETS, Settings, Target

MEMORY = "memory-per-snapshot"
STEP = 10**9  # each wrk run's versions start this far above the previous run's
OPTIONS: list[tuple[str, Any, str]] = [  # option, default, help
    ("--duration", 10.0, "measured seconds per run"),
    ("--warmup", 2.0, "seconds of load before each measured window"),
    ("--rounds", 5, "rounds over the targets; the figures are medians"),
    ("--connections", 32, "wrk connections (sqlite@64: 64)"),
    ("--profile", "host-sync", "targets to profile with py-spy afterwards ('': none)"),
    ("--profile-duration", 8.0, "seconds sampled"),
    ("--memory-count", 100_000, "upserts for memory-per-snapshot"),
    ("--mysql-url", "mysql+asyncmy://root@127.0.0.1:3306/test", "or RSM_BENCH_MYSQL_URL"),
    ("--table", f"rsm_bench_{os.getpid()}", "the bench's tables' prefix (dropped at the end)"),
    ("--pool-size", 20, "the ceilings' and the hosts' pools (the URL store's is 20)"),
    ("--quiet-wait", 60.0, "before each run, wait up to this long for an idle machine"),
    ("--max-other", 0.25, "run again a run in which other processes used more of a core"),
    ("--retries", 2, "reruns of such a noisy run"),
    ("--out", "", "keep the servers' logs and the profiles here [a temporary folder]"),
    ("--results", str(BENCH / "RESULTS.md"), "the table, as markdown"),
    ("--chart", str(BENCH / "ratios.png"), "the bar chart"),
    ("--readme", str(ROOT / "README.md"), "its summary of a full run ('': leave it)"),
]


def arguments(argv: list[str]) -> argparse.Namespace:
    """The options, checked: known targets, wrk installed."""
    every = [t.name for t in TARGETS] + [MEMORY]
    parse = parser("python -m bench", __doc__, OPTIONS)
    parse.add_argument("--targets", default=",".join(every), help=", ".join(every))
    parse.add_argument("--no-pin", action="store_true", help="no taskset: use every core")
    args = parse.parse_args(argv)
    args.selected = args.targets.split(",")
    args.profiled = [n for n in args.profile.split(",") if n]
    unknown = set(args.selected + args.profiled) - set(every)
    if unknown:
        parse.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if not shutil.which("wrk"):
        parse.error("wrk is not installed (Debian, Ubuntu: apt-get install wrk)")
    return args


def load(t: Target, port: int, s: Settings, args: argparse.Namespace) -> Any:
    """``t``'s load on ``port``: wrk with upsert.lua, as a command for (seconds, the first
    version). For a stale load, every account is stored first above every version sent."""
    if t.load == "stale":
        seeds = {account_id(i): SEED_VERSION for i in range(s.accounts)}
        asyncio.run(send(port, t.path, seeds, "upserted"))
    expect = "ignored_stale" if t.load == "stale" else "upserted"
    url, connections = f"http://127.0.0.1:{port}{t.path}", t.connections or args.connections

    def command(seconds: float, base: int) -> list[str]:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        cmd += ["--timeout", "30s", "-s", str(BENCH / "upsert.lua"), url, "--", str(base)]
        return pinned(s.cpus[1], [*cmd, str(s.accounts), TOKEN, "1", expect])

    return command


def run_wrk(cmd: list[str], seconds: float) -> tuple[dict[str, Any], float]:
    """One wrk run: its figures (upsert.lua's ``BENCH_JSON``) and the CPU seconds wrk used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON ")), used
    raise RuntimeError(f"wrk printed no figures: {done.stdout[-300:]} {done.stderr[-300:]}")


def measure_run(t: Target, s: Settings, args: argparse.Namespace, base: int) -> report.Run:
    """A fresh server for ``t``, checked with one upsert, seeded, warmed up, measured."""
    measure.wait_for_quiet(0.15, args.quiet_wait)
    url = servers.db_url(t, s)
    counted = counter(url)
    with servers.server(t, s) as (child, port):
        asyncio.run(send(port, t.path, {account_id(0): 1}))  # one answers 200
        command = load(t, port, s, args)
        warm, _ = run_wrk(command(args.warmup, base), args.warmup)
        server, db = measure.cpu_seconds(child.pid), measure.database_cpu_seconds()
        busy, started = measure.machine_busy_seconds(), time.monotonic()
        figures, wrk_cpu = run_wrk(command(args.duration, base + STEP // 2), args.duration)
        wall = time.monotonic() - started
        server = measure.cpu_seconds(child.pid) - server
        others = measure.machine_busy_seconds() - busy - server - wrk_cpu
        others -= measure.database_cpu_seconds() - db
    time.sleep(0.5)  # the server's database sessions report their counts as they end
    sent = 1 + (s.accounts if t.load == "stale" else 0) + warm["requests"] + figures["requests"]
    errors = ("connect_errors", "read_errors", "write_errors", "timeouts", "non_200")
    return {
        "req/s": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50 ms": figures["p50_us"] / 1000,
        "p99 ms": figures["p99_us"] / 1000,
        "non-200": sum(figures[k] for k in errors),
        "unexp": figures["unexpected"],
        "us/req": server * 1e6 / max(1, figures["requests"]),
        "db/req": (counter(url) - counted - 1) / sent if counted >= 0 else -1.0,
        "others": max(0.0, others / wall),
        "wrk": wrk_cpu / wall,
    }


def counter(url: str) -> int:
    """PostgreSQL: transactions ended in the database (a statement outside a transaction is
    one); MariaDB: statements received by the server (``Questions``). -1 for other stores."""
    if url.startswith("postgresql"):
        query = "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        return int(servers.sql(url, query + " WHERE datname = current_database()")[0])
    return int(servers.sql(url, "SHOW GLOBAL STATUS LIKE 'Questions'")[1]) if url else -1


def profile(t: Target, s: Settings, args: argparse.Namespace) -> list[str]:
    """py-spy ``t``'s server under its load; a few lines on where the time goes."""
    path = s.workdir / f"profile-{t.name}.speedscope.json"
    with servers.server(t, s) as (child, port):
        cmd = load(t, port, s, args)(args.profile_duration + 6, STEP * 10**6)
        loader = servers.start(cmd, s.workdir / "wrk-profile.log", s)
        time.sleep(2)
        try:
            measure.record(child.pid, args.profile_duration, path, s.cpus[1])
        finally:
            servers.stop(loader, s, grace=1)
    return [f"py-spy profile of {t.name} ({path.name}):", *measure.where_time_goes(path)]


def memory_per_snapshot(count: int, s: Settings) -> str:
    """``serve --store memory://`` sent one upsert for each of ``count`` accounts, after 2000
    others as a warm-up: its resident set's growth over them, per snapshot."""
    s = dataclasses.replace(s, accounts=count + 2000)
    with servers.server(BY_NAME["memory"], s) as (child, port):
        asyncio.run(send(port, PATH, {account_id(count + i): 7 for i in range(2000)}))
        before = measure.rss(child.pid)
        asyncio.run(send(port, PATH, {account_id(i): 7 for i in range(count)}))
        per = (measure.rss(child.pid) - before) / count
    return (
        f"memory:// per stored snapshot: {per:.0f} bytes of the server's RSS growth over {count}"
        f" accounts (goal <= 2048: {'meets' if per <= 2048 else 'MISSES'})"
    )


def wrk_check(runs: dict[str, list[report.Run]]) -> list[str]:
    """How far the load generator is from limiting the figures."""
    others = [rs for name, rs in runs.items() if name != "wrk-check"]
    if not runs.get("wrk-check") or not others:
        return []
    top = max(report.figure(rs, "req/s") for rs in others)
    check = report.figure(runs["wrk-check"], "req/s")
    most = max(r["wrk"] for rs in others for r in rs)
    return [
        f"wrk check: wrk reaches {check:.0f} req/s against a trivial responder, "
        f"{check / top:.1f} x the fastest target; it used at most {most:.0%} of its core"
    ]


def run(args: argparse.Namespace) -> int:
    """Every selected target, round after round; then the notes; then the report."""
    cpus = (None, None) if args.no_pin or (os.cpu_count() or 1) < 2 else (0, 1)
    workdir = Path(args.out or tempfile.mkdtemp(prefix="rsm-bench-"))
    s = Settings(args.pg_url, args.mysql_url, args.table, workdir, args.pool_size, cpus)
    chosen = [t for t in TARGETS if t.name in args.selected]
    skipped = {t.name: why for t in chosen if (why := servers.unreachable(t, s))}
    targets = [t for t in chosen if t.name not in skipped]
    runs: dict[str, list[report.Run]] = defaultdict(list)
    notes = [f"skipped {name}: {why}" for name, why in skipped.items()]
    base = itertools.count(STEP, STEP)
    try:
        for number in range(args.rounds):  # alternate: product and ceiling runs interleave
            for t in targets if number % 2 == 0 else targets[::-1]:
                print(f"  .. round {number + 1}/{args.rounds}: {t.name}", file=sys.stderr)
                try:
                    for _ in range(args.retries + 1):
                        result = measure_run(t, s, args, next(base))
                        if result["others"] <= args.max_other:
                            break
                    runs[t.name].append(result)
                except Exception as error:
                    notes.append(f"run failed: {t.name}: {' '.join(str(error).split())[:300]}")
                    print(f"  .. {notes[-1]}", file=sys.stderr)
        notes += wrk_check(runs)
        if MEMORY in args.selected:
            notes.append(memory_per_snapshot(args.memory_count, s))
        for name in set(args.profiled) - set(skipped):
            notes += profile(BY_NAME[name], s, args)
    except (KeyboardInterrupt, SystemExit):
        notes.append("interrupted: the figures come from the runs that finished")
    except Exception as error:  # the memory measurement or a profile
        notes.append(f"run failed: {' '.join(str(error).split())[:300]}")
    finally:
        for child in list(s.children):
            servers.stop(child, s, grace=5)
        servers.drop_all(s)
    table = report.rows(targets, runs, args.connections)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    how = f"medians of {args.rounds} rounds of {args.duration:g} s (after {args.warmup:g} s)"
    print(report.markdown(table), *notes, sep="\n")
    short = "**A shortened run: it shows that every target runs, not figures to quote.**\n\n"
    short = short if args.rounds < 5 or args.duration < 10 else ""
    drew = report.chart(targets, runs, Path(args.chart), f"product / ceiling; {how}; {when}")
    picture = f"\n![product / ceiling per target]({Path(args.chart).name})\n" if drew else ""
    Path(args.results).write_text(
        f"# Benchmark results\n\n{when}: `python -m bench {' '.join(sys.argv[1:])}`, {how}; "
        f"each server pinned to core 0, wrk to core 1 (`postgres-w2`: not pinned). The columns "
        f"are explained in `README.md` here.\n\n{measure.machine()}.\n\n{short}"
        f"{report.markdown(table)}"
        "\n\n"
        + "".join(f"{'  ' * note.startswith(' ')}- {note.strip()}\n" for note in notes)
        + picture
    )
    written = [args.results] + [args.chart] * drew
    lines = report.summary(runs)
    if args.readme and lines and not short:  # only a full run of every target it names
        memory = [note for note in notes if note.startswith("memory://")]
        lines = [f"The last full run ({when}; the whole table is in `bench/RESULTS.md`):", ""]
        lines += [*report.summary(runs), "", *(f"{note}." for note in memory)]
        readme = Path(args.readme)
        readme.write_text(report.replace_between(readme.read_text(), lines))
        written.append(args.readme)
    print(f"written: {', '.join(written)}; logs: {s.workdir}")
    failed = any(note.startswith(("run failed", "interrupted")) for note in notes)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """``python -m bench [soak] ...``; SIGTERM and SIGHUP end it as an interruption does."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    if argv[:1] == ["soak"]:
        from . import soak

        return soak.main(argv[1:])
    return run(arguments(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
