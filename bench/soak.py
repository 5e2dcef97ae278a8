"""Soak: three ``runtime-snapshot-mount serve`` processes on one PostgreSQL, under load for a while.

    .venv/bin/python bench/soak.py                 # 60 s, 3 servers, 64 connections
    .venv/bin/python bench/soak.py --seconds 600   # a longer soak

Starts ``--servers`` server processes (``serve --store postgresql+asyncpg://...?table=rsm_soak_<hex>``)
on loopback ports, one after the other (each creates the table if missing), then drives
``--connections`` keep-alive connections spread over them for ``--seconds``. Every request is
the API page's example for one of ``--accounts`` accounts with a random ``strategy_version``
from a window that moves up as the run goes on (``--version-spread`` versions wide, rising
``--version-rate`` per second: roughly as many snapshots applied as ignored) and a random
``strategy_synced_at`` (microseconds, random offsets; it decides between equal versions). The
script remembers, per account, the greatest ``(version, instant)`` it sent and the
``snapshot_id`` values sent with it.

At the end it checks:

- every answer was 200 (no other status, no transport error);
- every account's stored snapshot (read back through the SQLAlchemy store) is the greatest
  ``(version, instant)`` sent for it, with one of the ``snapshot_id`` values sent with it;
  no request carrying that greatest pair was answered ``ignored_stale``;
- every server process is still running and logged no ERROR line;
- each server's resident memory (psutil, else ``/proc/PID/status`` VmRSS), sampled every
  ``--sample-every`` seconds, is stable: the last sample is at most ``--max-rss-growth-mib``
  above the largest sample of the first third of the run.

It prints a summary and exits 1 if a check failed (2 if it could not start). It stops every
process it started and drops its table, also on error or Ctrl-C. All traffic is on 127.0.0.1;
every loop is bounded in time and in count. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

PATH = "/runtime-snapshots/upsert"
TOKEN = "soak-token"
BASE_INSTANT = datetime(2026, 3, 22, tzinfo=timezone.utc)
OFFSETS = [timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30)]
STARTUP_LIMIT_S = 30.0
REQUEST_LIMIT_S = 30.0
# a refused or dropped connection, a cut-short or malformed answer, no answer in time
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError)
MAX_REQUESTS_PER_CONNECTION = 10_000_000  # a count bound on each connection's loop
MIB = 1024 * 1024


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int | None:
    """The resident set size of ``pid`` (psutil if installed, else /proc), or None if gone."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def serve_command() -> str:
    """The ``runtime-snapshot-mount`` command installed next to this Python (the README's
    set-up), as an operator runs it."""
    command = os.path.join(os.path.dirname(sys.executable), "runtime-snapshot-mount")
    if not os.access(command, os.X_OK):
        raise RuntimeError(f"{command} not found: run this with the product's .venv/bin/python")
    return command


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the load, bytes)


def start_server(store_url: str, out: Path, index: int) -> Server:
    port = free_port()
    log = out / f"server-{index}.log"
    command = [serve_command(), "serve", "--store", store_url]
    command += ["--host", "127.0.0.1", "--port", str(port), "--api-key", TOKEN]
    env = {k: v for k, v in os.environ.items() if k != "PHONEFARM_API_KEY"}
    with log.open("wb") as errors:
        # uvicorn's access log (one line per request) goes to stdout: dropped. Errors,
        # tracebacks and the app's log records go to stderr: kept and checked.
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, env=env, start_new_session=True
        )
    server = Server(port, process, log)
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server {index} exited ({process.returncode}):\n{tail(log)}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server {index} did not listen within {STARTUP_LIMIT_S:g} s")


def stop_server(server: Server, grace: float = 15.0) -> None:
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


def tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def error_lines(path: Path) -> list[str]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]


# ---------------------------------------------------------------- load


@dataclass
class Sent:
    """What was sent for one account: the greatest (version, instant) and its snapshot ids."""

    best: tuple[int, datetime] | None = None
    best_ids: set[str] = field(default_factory=set)


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)  # "200 upserted", "500", "error: X"
    latencies: list[float] = field(default_factory=list)
    best_ignored: int = 0  # ignored_stale answers to a request carrying its account's best pair


def timestamp(rng: random.Random) -> tuple[str, datetime]:
    """A random RFC 3339 time with microseconds and a random offset, and its instant."""
    instant = BASE_INSTANT + timedelta(microseconds=rng.randrange(86_400 * 10**6))
    offset = rng.choice(OFFSETS)
    local = instant.astimezone(timezone(offset))
    text = local.isoformat(timespec="microseconds")
    if offset == timedelta(0):
        text = text.replace("+00:00", "Z")
    return text, instant


def body_for(account_id: str, version: int, synced_at: str, snapshot_id: str) -> bytes:
    return json.dumps(
        {
            "account_id": account_id,
            "ugc_account_id": "ugc_123",
            "snapshot_id": snapshot_id,
            "strategy_version": version,
            "content_hash": "sha256:abc123",
            "strategy_synced_at": synced_at,
            "stage": "warmup",
            "active_action": "keyword_warmup",
            "active_skills": ["warmup", "commenting"],
            "personality": {"comment_style": "casual", "interests": ["meal prep"]},
        }
    ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection to a server: a minimal client, so that the load
    generator (one process) costs far less CPU than the servers it drives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode("ascii")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send one upsert; its status and body. Raises on a transport failure."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.head + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        content = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def connection_loop(
    number: int,
    port: int,
    accounts: list[str],
    versions: tuple[float, int],
    started: float,
    deadline: float,
    sent: dict[str, Sent],
    answered: list[tuple[str, tuple[int, datetime], str]],
    tally: Tally,
) -> None:
    """One connection's requests until ``deadline`` (and at most a fixed count)."""
    rng = random.Random(number)
    connection = Connection(port)
    rate, spread = versions
    try:
        for sequence in range(MAX_REQUESTS_PER_CONNECTION):
            now = time.monotonic()
            if now >= deadline:
                return
            account_id = rng.choice(accounts)
            version = 1 + int((now - started) * rate) + rng.randrange(spread)
            synced_at, instant = timestamp(rng)
            snapshot_id = f"c{number}-{sequence}"
            pair = (version, instant)
            record = sent[account_id]
            if record.best is None or pair > record.best:
                record.best, record.best_ids = pair, {snapshot_id}
            elif pair == record.best:
                record.best_ids.add(snapshot_id)
            body = body_for(account_id, version, synced_at, snapshot_id)
            sent_at = time.perf_counter()
            try:
                status, content = await asyncio.wait_for(connection.post(body), REQUEST_LIMIT_S)
            except TRANSPORT_ERRORS as error:
                tally.statuses[f"error: {type(error).__name__}"] += 1
                connection.close()
                continue
            tally.latencies.append(time.perf_counter() - sent_at)
            if status != 200:
                tally.statuses[str(status)] += 1
                continue
            outcome = json.loads(content).get("status", "?")
            tally.statuses[f"200 {outcome}"] += 1
            answered.append((account_id, pair, outcome))
    finally:
        connection.close()


async def sample_rss(servers: list[Server], started: float, deadline: float, every: float) -> None:
    while True:
        now = time.monotonic()
        for server in servers:
            rss = rss_bytes(server.process.pid)
            if rss is not None:
                server.rss.append((now - started, rss))
        if now >= deadline:
            return
        await asyncio.sleep(min(every, max(0.0, deadline - now)))


async def drive(servers: list[Server], s: argparse.Namespace) -> tuple[Tally, dict[str, Sent]]:
    accounts = [f"soak_account_{i:06d}" for i in range(s.accounts)]
    sent = {account_id: Sent() for account_id in accounts}
    answered: list[tuple[str, tuple[int, datetime], str]] = []
    tally = Tally()
    started = time.monotonic()
    deadline = started + s.seconds
    tasks = [
        connection_loop(
            number,
            servers[number % len(servers)].port,
            accounts,
            (s.version_rate, s.version_spread),
            started,
            deadline,
            sent,
            answered,
            tally,
        )
        for number in range(s.connections)
    ]
    sampler = sample_rss(servers, started, deadline, s.sample_every)
    await asyncio.wait_for(asyncio.gather(sampler, *tasks), timeout=s.seconds + 120)
    for account_id, pair, status in answered:
        if pair == sent[account_id].best and status == "ignored_stale":
            tally.best_ignored += 1
    return tally, sent


# ---------------------------------------------------------------- database


async def read_back(store_url: str, table: str, sent: dict[str, Sent]) -> list[str]:
    """Compare each account's stored snapshot with the greatest one sent; the mismatches."""
    from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(store_url, table_name=table)
    problems: list[str] = []
    try:
        for account_id, record in sent.items():
            stored = await store.store_get(account_id)
            if record.best is None:
                if stored is not None:
                    problems.append(f"{account_id}: stored {stored.snapshot_id}, nothing sent")
                continue
            if stored is None:
                problems.append(f"{account_id}: nothing stored, sent {record.best}")
                continue
            pair = (stored.strategy_version, stored.strategy_synced_at)
            if pair != record.best or stored.snapshot_id not in record.best_ids:
                problems.append(
                    f"{account_id}: stored {pair} {stored.snapshot_id}, "
                    f"greatest sent {record.best} {sorted(record.best_ids)}"
                )
    finally:
        await store.store_close()
    return problems


async def drop_table(store_url: str, table: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        await engine.dispose()


async def check_database(store_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- report


def mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def rss_report(server: Server, index: int, seconds: float, limit_mib: float) -> tuple[str, bool]:
    samples = server.rss
    if not samples:
        return f"  server {index} (pid {server.process.pid}): no RSS samples", False
    values = [rss for _, rss in samples]
    first_third = [rss for at, rss in samples if at <= seconds / 3] or values[:1]
    baseline = max(first_third)
    last = values[-1]
    growth = last - baseline
    ok = growth <= limit_mib * MIB
    line = (
        f"  server {index} (pid {server.process.pid}): {len(values)} samples, "
        f"first {mib(values[0])} MiB, last {mib(last)} MiB, max {mib(max(values))} MiB; "
        f"first-third max {mib(baseline)} MiB -> end {mib(last)} MiB: "
        f"{'+' if growth >= 0 else ''}{mib(growth)} MiB ({100 * growth / baseline:+.1f}%)"
        f" [{'ok' if ok else 'FAIL'}: limit +{limit_mib:g} MiB]"
    )
    return line, ok


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarise(
    servers: list[Server],
    tally: Tally,
    sent: dict[str, Sent],
    problems: list[str],
    s: argparse.Namespace,
    elapsed: float,
) -> bool:
    total = sum(tally.statuses.values())
    applied = tally.statuses["200 upserted"]
    ignored = tally.statuses["200 ignored_stale"]
    bad = {key: n for key, n in tally.statuses.items() if not key.startswith("200 ")}
    bad_200 = {
        key: n
        for key, n in tally.statuses.items()
        if key.startswith("200 ") and key not in ("200 upserted", "200 ignored_stale")
    }
    print(f"requests: {total} in {elapsed:.1f} s ({total / elapsed:.0f}/s)")
    print(f"  200 upserted: {applied}, 200 ignored_stale: {ignored}")
    print(f"  non-200 answers and transport errors: {sum(bad.values())} {dict(bad) or ''}")
    if tally.latencies:
        lat = tally.latencies
        print(
            "  latency ms: "
            f"p50 {1000 * statistics.median(lat):.1f}, p99 {1000 * percentile(lat, 0.99):.1f}, "
            f"max {1000 * max(lat):.1f}"
        )
    written = sum(1 for record in sent.values() if record.best is not None)
    print(f"accounts written: {written} of {len(sent)}")
    print(f"  stored snapshot != greatest sent: {len(problems)}")
    for problem in problems[:10]:
        print(f"    {problem}")
    print(f"  ignored_stale answers to an account's greatest snapshot: {tally.best_ignored}")
    print("server processes:")
    alive = True
    logged_errors = 0
    for index, server in enumerate(servers):
        if server.process.poll() is not None:
            alive = False
            print(f"  server {index} exited early with {server.process.returncode}")
        errors = error_lines(server.log)
        logged_errors += len(errors)
        for line in errors[:5]:
            print(f"  server {index} logged: {line}")
    print(f"  all running at the end: {'yes' if alive else 'NO'}; ERROR log lines: {logged_errors}")
    print(f"resident memory (sampled every {s.sample_every:g} s):")
    rss_ok = True
    for index, server in enumerate(servers):
        line, ok = rss_report(server, index, s.seconds, s.max_rss_growth_mib)
        rss_ok = rss_ok and ok
        print(line)
    checks = {
        "zero non-200 answers": not bad and not bad_200 and total > 0,
        "both paths ran (applied and ignored)": applied > 0 and ignored > 0,
        "every stored snapshot is the greatest sent": not problems and written > 0,
        "no ignored_stale for a greatest snapshot": tally.best_ignored == 0,
        "servers alive, no ERROR lines": alive and logged_errors == 0,
        "RSS stable": rss_ok,
    }
    print("checks:")
    for name, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    passed = all(checks.values())
    print(f"result: {'PASS' if passed else 'FAIL'}")
    return passed


# ---------------------------------------------------------------- main


def run(coroutine: Any) -> Any:
    """Run the load on uvloop when it is installed (a cheaper client), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (60)")
    parser.add_argument("--servers", type=int, default=3, help="server processes (3)")
    parser.add_argument("--connections", type=int, default=64, help="client connections (64)")
    parser.add_argument("--accounts", type=int, default=1000, help="distinct accounts (1000)")
    parser.add_argument("--version-spread", type=int, default=8, help="version window (8)")
    parser.add_argument(
        "--version-rate", type=float, default=1.0, help="window's rise per second (1)"
    )
    parser.add_argument("--sample-every", type=float, default=3.0, help="RSS sampling period")
    parser.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=16.0,
        help="allowed growth from the first third's largest RSS sample to the last (16)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("RSM_BENCH_POSTGRES_URL")
        or os.environ.get("RSM_TEST_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL (an asyncpg URL); RSM_BENCH_POSTGRES_URL or RSM_TEST_POSTGRES_URL",
    )
    parser.add_argument("--out", help="keep the servers' logs in this directory")
    s = parser.parse_args()
    if not (0 < s.seconds <= 24 * 3600) or min(s.servers, s.connections, s.accounts) < 1:
        parser.error("--seconds, --servers, --connections and --accounts must be positive")
    if s.version_spread < 1 or not s.version_rate >= 0:
        parser.error("--version-spread must be positive and --version-rate not negative")
    return s


def main() -> int:
    s = parse_args()
    table = f"rsm_soak_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in s.pg_url else "?"
    store_url = f"{s.pg_url}{separator}table={table}"
    out = Path(s.out or tempfile.mkdtemp(prefix="rsm-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"soak: {s.servers} servers x serve --store {s.pg_url.split('@')[-1]} table {table}, "
        f"{s.connections} connections, {s.accounts} accounts, versions in a window of "
        f"{s.version_spread} rising {s.version_rate:g}/s, "
        f"{s.seconds:g} s; logs in {out}"
    )
    try:
        asyncio.run(check_database(s.pg_url))
    except Exception as error:
        print(f"soak: cannot reach PostgreSQL: {' '.join(str(error).split())[:200]}")
        return 2
    servers: list[Server] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for index in range(s.servers):  # one by one: each creates the table if it is missing
            servers.append(start_server(store_url, out, index))
        started = time.monotonic()
        tally, sent = run(drive(servers, s))
        elapsed = time.monotonic() - started
        problems = asyncio.run(read_back(s.pg_url, table, sent))
        passed = summarise(servers, tally, sent, problems, s, elapsed)
    except RuntimeError as error:
        print(f"soak: {error}")
        return 2
    finally:
        for server in servers:
            stop_server(server)
        with contextlib.suppress(Exception):
            asyncio.run(drop_table(s.pg_url, table))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
