"""``python -m bench soak``: several ``serve`` processes on one PostgreSQL table, under load.

Random accounts, versions from a window that rises as the run goes on (about as many applied
as ignored), random instants with random offsets. It checks that every answer was 200, every
stored snapshot is the greatest (version, instant) sent (one of its snapshot ids) and no
request carrying it was ignored, every server runs and logged no error, and no server's
memory grew by more than ``--max-rss-growth-mib`` after the first third. Exit status 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore

from . import measure, servers
from .common import PATH, Client, account_id, body, parser
from .servers import Settings, Target

BASE = datetime(2026, 3, 22, tzinfo=timezone.utc)
OFFSETS = [timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError)
OPTIONS = [  # option, default, help
    ("--seconds", 60.0, "seconds of load"),
    ("--servers", 3, "serve processes, on one table"),
    ("--connections", 64, "connections, spread over the servers"),
    ("--accounts", 1000, "accounts"),
    ("--version-rate", 1.0, "how fast the window of versions sent rises, per second"),
    ("--sample-every", 3.0, "seconds between two samples of the servers' memory"),
    ("--max-rss-growth-mib", 16.0, "the most a server's RSS may grow after the first third"),
    ("--out", "", "keep the servers' logs here [a temporary folder]"),
]


class Load:
    """The requests sent and answered, per account the greatest (version, instant) sent, and
    the servers' memory sampled meanwhile."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.started = args, time.monotonic()
        self.accounts = [account_id(i) for i in range(args.accounts)]
        self.best: dict[str, tuple[tuple[int, datetime], set[str]]] = {}
        self.answers: collections.Counter[str] = collections.Counter()
        self.ignored: set[tuple[str, tuple[int, datetime]]] = set()
        self.latencies: list[float] = []
        self.samples: dict[int, list[tuple[float, int]]] = {}

    async def run(self, ports: list[int], pids: list[int]) -> None:
        """``--connections`` connections over the servers, and the sampling, to the end."""
        self.started = time.monotonic()
        work = [self.connection(n, ports[n % len(ports)]) for n in range(self.args.connections)]
        await asyncio.wait_for(asyncio.gather(self.sample(pids), *work), self.args.seconds + 120)

    async def sample(self, pids: list[int]) -> None:
        while (at := time.monotonic() - self.started) < self.args.seconds:
            for pid in pids:
                self.samples.setdefault(pid, []).append((at, measure.rss(pid)))
            await asyncio.sleep(self.args.sample_every)

    async def connection(self, number: int, port: int) -> None:
        rng, client, args = random.Random(number), Client(port, PATH), self.args
        for sequence in range(10**9):  # a bound; the deadline ends it
            now = time.monotonic()
            if now - self.started >= args.seconds:
                break
            account = rng.choice(self.accounts)
            version = 1 + int((now - self.started) * args.version_rate) + rng.randrange(8)
            instant = BASE + timedelta(microseconds=rng.randrange(86_400 * 10**6))
            text = instant.astimezone(rng.choice(OFFSETS)).isoformat(timespec="microseconds")
            pair, snapshot = (version, instant), f"c{number}-{sequence}"
            best, ids = self.best.get(account, ((0, BASE), set()))
            if pair > best:
                self.best[account] = (pair, {snapshot})
            elif pair == best:
                ids.add(snapshot)
            sent = time.perf_counter()
            data = body(account, version, strategy_synced_at=text, snapshot_id=snapshot)
            try:
                status, answer = await asyncio.wait_for(client.post(data), 30)
            except FAILURES as error:
                self.answers[f"error {type(error).__name__}"] += 1
                client.close()
                continue
            self.latencies.append(time.perf_counter() - sent)
            outcome = answer.get("status", "?") if status == 200 else ""
            self.answers[f"{status} {outcome}".strip()] += 1
            if outcome == "ignored_stale":
                self.ignored.add((account, pair))
        client.close()


async def mismatches(url: str, table: str, load: Load) -> list[str]:
    """Accounts whose stored snapshot is not the greatest sent, read through the store."""
    store, wrong = SQLAlchemyStore(url, table_name=table), []
    try:
        for account, (pair, ids) in load.best.items():
            got = await store.store_get(account)
            found = got and (got.strategy_version, got.strategy_synced_at, got.snapshot_id in ids)
            if found != (*pair, True):
                wrong.append(f"{account}: stored {got}, greatest sent {pair} {sorted(ids)}")
    finally:
        await store.store_close()
    return wrong


def main(argv: list[str]) -> int:
    """``python -m bench soak``: the servers, the load, the checks; 1 if one fails."""
    args = parser("python -m bench soak", __doc__, OPTIONS).parse_args(argv)
    workdir = Path(args.out or tempfile.mkdtemp(prefix="rsm-soak-"))
    table, cpus = f"rsm_soak_{os.getpid()}", (None, None)
    s = Settings(args.pg_url, "", table, workdir, cpus=cpus, accounts=args.accounts)
    with contextlib.ExitStack() as stack:  # one by one: the first creates the table
        running = [
            stack.enter_context(servers.server(Target(f"soak-{i}", "serve", "postgres"), s, i == 0))
            for i in range(args.servers)
        ]
        stack.callback(servers.sql, args.pg_url, f"DROP TABLE IF EXISTS {s.table}")
        load = Load(args)
        asyncio.run(load.run([p for _, p in running], [c.pid for c, _ in running]))
        wrong = asyncio.run(mismatches(args.pg_url, s.table, load))
        alive = all(child.poll() is None for child, _ in running)
    logs = [log.read_text(errors="replace") for log in workdir.glob("server-soak-*.log")]
    logged = [line for text in logs for line in text.splitlines() if " ERROR " in line]
    best_ignored = sum((a, pair) in load.ignored for a, (pair, _ids) in load.best.items())
    growth = 0.0
    for points in load.samples.values():  # the last sample against the first third's largest
        first = [v for at, v in points if at <= args.seconds / 3] or [points[0][1]]
        growth = max(growth, (points[-1][1] - max(first)) / 2**20)
    answers, lat = load.answers, sorted(load.latencies) or [0.0]
    print(
        f"{sum(answers.values())} requests in {args.seconds:g} s: {dict(answers)}; latency p50 "
        f"{lat[len(lat) // 2] * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms; "
        f"RSS growth at most {growth:.1f} MiB"
    )
    checks = {
        "every answer 200": answers and set(answers) <= {"200 upserted", "200 ignored_stale"},
        "both outcomes ran": answers["200 upserted"] and answers["200 ignored_stale"],
        "every stored snapshot is the greatest sent": not wrong,
        "no ignored_stale for a greatest snapshot": best_ignored == 0,
        "servers alive, no error logged": alive and not logged and "Traceback" not in str(logs),
        f"RSS growth <= {args.max_rss_growth_mib:g} MiB": growth <= args.max_rss_growth_mib,
    }
    for line in wrong[:5] + logged[:5]:
        print(f"  {line}")
    for name, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    return 0 if all(checks.values()) else 1
