"""Benchmark POST /runtime-snapshots/upsert against its ceilings, on loopback, in one command.

    .venv/bin/python bench/run.py                      # 5 rounds x 10 s per target (15-25 min)
    .venv/bin/python bench/run.py --duration 3 --rounds 1 --no-profile   # a quick look

See bench/README.md for what each figure means. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from serve import TOKEN, account_ids  # noqa: E402

PATH = "/runtime-snapshots/upsert"
TICKS = os.sysconf("SC_CLK_TCK")
VERSION_STEP = 10**9  # each wrk run's versions start this far above the previous run's

TARGETS: dict[str, str] = {
    "ceiling-http": "(a) HTTP ceiling: bare Starlette route, json.loads, same-shaped JSON",
    "memory": "(b) product on memory://",
    "sqlite": "(c) product on SQLite (file, aiosqlite)",
    "postgres": "(d) product on PostgreSQL (asyncpg)",
    "ceiling-db": "(e) DB ceiling: bare Starlette route, one asyncpg round trip",
    "postgres-fixed": "(d') product on PostgreSQL, host engine with the ceiling's fixed pool",
    "sqlite@64": "(c@64) product on SQLite, 64 connections",
    "wrk-check": "wrk check: same wrk + Lua against a trivial uvloop responder",
}
DEFAULT_ORDER = list(TARGETS)

PACKAGES = [
    "runtime-snapshot-mount",
    "runtime-snapshot-mount-sqlalchemy",
    "starlette",
    "pydantic",
    "pydantic-core",
    "pluggy",
    "uvicorn",
    "uvloop",
    "httptools",
    "SQLAlchemy",
    "asyncpg",
    "aiosqlite",
    "py-spy",
]

# ---------------------------------------------------------------- output


class Output:
    """Prints, and keeps what it printed for --results."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))


out = Output()


def log(text: str) -> None:
    """Progress, on stderr: not part of the results."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

_children: list[subprocess.Popen[bytes]] = []


def start(command: list[str], log_path: str) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so it and its children can be stopped together)."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _children.append(process)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (uvicorn shuts down gracefully: lifespan shutdown closes the store), then
    SIGKILL the child's process group if it has not exited in ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    if process in _children:
        _children.remove(process)


def stop_all() -> None:
    for process in list(_children):
        stop(process, grace=5.0)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (fields[0] is the state)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def _comm(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def postgres_cpu_seconds() -> float:
    """CPU time so far of PostgreSQL: every live process named postgres, plus what each
    postmaster's exited children used (its cutime + cstime), so that backends that start or
    end between two readings are counted too."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _comm(entry) != "postgres":
            continue
        fields = _stat(entry)
        if not fields:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        if _comm(fields[1]) != "postgres":  # a postmaster: add its reaped children
            total += (int(fields[13]) + int(fields[14])) / TICKS
    return total


def cpu_ticks() -> tuple[float, float]:
    """(busy, interrupt) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS, (irq + softirq) / TICKS


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the rest of the machine uses less than ``limit``
    of one core over one second; returns the last such reading (cores busy)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_ticks()[0]
        time.sleep(1)
        busy = cpu_ticks()[0] - before
        if busy < limit or time.monotonic() >= deadline:
            return busy


EXAMPLE_REQUEST = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "example-request.json").read_text()
)


def example_body(account: str, version: int) -> bytes:
    """The API page's example request for ``account`` at ``version``."""
    body = {**EXAMPLE_REQUEST, "account_id": account, "strategy_version": version}
    return json.dumps(body).encode()


def wait_ready(process: subprocess.Popen[bytes], port: int, log_path: str, timeout: float) -> None:
    """Wait until the server accepts connections, then check one real upsert answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError as error:
            if time.monotonic() > deadline:
                reason = f"server not listening after {timeout} s: {tail(log_path)}"
                raise RuntimeError(reason) from error
            time.sleep(0.05)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            PATH,
            body=example_body(account_ids(1)[0], 1),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"sanity upsert answered {response.status}: {answer[:300]!r}")


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- PostgreSQL


def libpq_dsn(url: str) -> str:
    """postgresql+asyncpg://... -> postgresql://... (what asyncpg itself takes)."""
    _scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


async def _pg(dsn: str, *statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def pg_execute(dsn: str, *statements: str) -> None:
    asyncio.run(_pg(dsn, *statements))


def pg_counters(dsn: str) -> tuple[int, int]:
    """Sessions ever established to the database (pg_stat_database.sessions, PostgreSQL
    14+) and transactions ever ended in it (committed or rolled back; every statement run
    outside a transaction is one), not counting the session that asks nor its one query;
    (-1, -1) when unknown."""

    async def counters() -> tuple[int, int]:
        import asyncpg

        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            row = await connection.fetchrow(
                "SELECT sessions, xact_commit + xact_rollback AS transactions"
                " FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(row["sessions"]) - 1, int(row["transactions"])
        finally:
            await connection.close()

    try:
        return asyncio.run(counters())
    except Exception:
        return -1, -1


def pg_server_version(dsn: str) -> str:
    async def version() -> str:
        import asyncpg

        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    return asyncio.run(version())


def plugin_importable() -> bool:
    try:
        from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore  # noqa: F401
    except ImportError:
        return False
    return True


def create_plugin_table(url: str, table: str) -> None:
    """Create ``table`` exactly as the SQLAlchemy plugin creates its own (same shape)."""
    from serve import sqlalchemy_store

    async def create() -> None:
        from runtime_snapshot_mount import Plugins

        plugins = Plugins([sqlalchemy_store(url, table)], entry_points=False)
        try:
            await plugins.store_create_tables()
        finally:
            await plugins.store_close()

    asyncio.run(create())


def plugin_pool_size(url: str) -> int | None:
    """How many connections the plugin's engine can hold at once (pool_size + max_overflow)."""
    from serve import sqlalchemy_store

    store = sqlalchemy_store(url, None)
    engine = getattr(store, "engine", None) or getattr(store, "_engine", None)
    pool = getattr(getattr(engine, "sync_engine", engine), "pool", None)
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", None)
    if callable(size) and isinstance(overflow, int):
        return int(size()) + max(overflow, 0)
    return None


# ---------------------------------------------------------------- runs


@dataclass
class Settings:
    duration: float
    warmup: float
    connections: int
    sqlite_connections: int
    accounts: int
    loop: str
    http: str
    server_cpu: int | None
    client_cpu: int | None
    wrk_threads: int
    pg_url: str
    table: str
    ceiling_table: str
    pool_size: int
    workdir: str
    sqlite_driver: str = "pysqlite"
    quiet_limit: float = 0.15
    quiet_wait: float = 60
    max_other: float = 0.25
    retries: int = 2
    python: str = sys.executable
    base: int = 0

    def next_base(self) -> int:
        self.base += VERSION_STEP
        return self.base


@dataclass
class RunResult:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_200: int
    not_upserted: int
    socket_errors: int
    wrk_cpu: float  # share of one core
    server_cpu: float
    server_us_per_request: float  # server CPU time per answered request
    postgres_cpu: float
    other_cpu: float  # everything else on the machine (other users' processes) meanwhile
    pg_sessions: int  # PostgreSQL sessions opened by the run (set-up, warm-up, measurement)
    pg_transactions_per_request: float  # PostgreSQL transactions per request, the same span
    busy_before: float  # the machine's load just before the run, in cores
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def connections_of(target: str, s: Settings) -> int:
    return s.sqlite_connections if target == "sqlite@64" else s.connections


def server_command(target: str, port: int, s: Settings) -> list[str]:
    if target == "wrk-check":
        return [s.python, os.path.join(HERE, "trivial_server.py"), str(port)]
    name = {"sqlite@64": "sqlite", "postgres-fixed": "postgres"}.get(target, target)
    command = [
        s.python,
        os.path.join(HERE, "serve.py"),
        name,
        "--port",
        str(port),
        "--loop",
        s.loop,
        "--http",
        s.http,
        "--accounts",
        str(s.accounts),
    ]
    if name == "sqlite":
        command += [
            "--sqlite-path",
            os.path.join(s.workdir, "bench.db"),
            "--sqlite-driver",
            s.sqlite_driver,
        ]
    elif name == "postgres":
        command += ["--pg-url", s.pg_url, "--table", s.table]
        if target == "postgres-fixed":
            command += ["--pool-size", str(s.pool_size)]
    elif name == "ceiling-db":
        command += [
            "--pg-dsn",
            libpq_dsn(s.pg_url),
            "--table",
            s.ceiling_table,
            "--pool-size",
            str(s.pool_size),
        ]
    return command


def reset_state(target: str, s: Settings) -> None:
    """Every run starts from an empty store."""
    if target.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(s.workdir, "bench.db" + suffix))
    elif target in ("postgres", "postgres-fixed"):
        pg_execute(libpq_dsn(s.pg_url), f"DROP TABLE IF EXISTS {s.table}")
    elif target == "ceiling-db":
        pg_execute(libpq_dsn(s.pg_url), f"DROP TABLE IF EXISTS {s.ceiling_table}")
        if plugin_importable():
            create_plugin_table(s.pg_url, s.ceiling_table)
        else:
            import ceiling_db

            pg_execute(libpq_dsn(s.pg_url), ceiling_db.create_table_sql(s.ceiling_table))


def wrk_command(port: int, connections: int, seconds: int, s: Settings, *options: str) -> list[str]:
    """The wrk command line (pinned to the client core) that runs upsert.lua against ``port``."""
    return pinned(
        s.client_cpu,
        [
            "wrk",
            f"-t{s.wrk_threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            *options,
            "-s",
            os.path.join(HERE, "upsert.lua"),
            f"http://127.0.0.1:{port}{PATH}",
            "--",
            str(s.next_base()),
            str(s.accounts),
            TOKEN,
            str(s.wrk_threads),
        ],
    )


def wrk(port: int, connections: int, duration: float, s: Settings) -> tuple[dict[str, Any], float]:
    """One wrk run; returns its BENCH_JSON figures and the CPU seconds wrk itself used."""
    command = wrk_command(port, connections, max(1, round(duration)), s, "--timeout", "30s")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 90, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :]), used
    raise RuntimeError(f"wrk printed nothing: {completed.stdout[-500:]} {completed.stderr[-500:]}")


@contextlib.contextmanager
def server(target: str, s: Settings) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    reset_state(target, s)
    port = free_port()
    log_path = os.path.join(s.workdir, f"server-{target}.log")
    process = start(pinned(s.server_cpu, server_command(target, port, s)), log_path)
    try:
        wait_ready(process, port, log_path, timeout=60)
        yield process, port
    finally:
        stop(process)


def run_target(target: str, s: Settings) -> RunResult:
    connections = connections_of(target, s)
    busy_before = wait_for_quiet(s.quiet_limit, s.quiet_wait)
    uses_pg = "postgres" in target or target == "ceiling-db"
    sessions_before, transactions_before = pg_counters(libpq_dsn(s.pg_url)) if uses_pg else (-1, -1)
    warmup_requests = 0
    with server(target, s) as (process, port):
        if s.warmup > 0:
            warmup_requests = wrk(port, connections, s.warmup, s)[0]["requests"]
        server_before = cpu_seconds(process.pid)
        pg_before = postgres_cpu_seconds()
        machine_before, interrupts_before = cpu_ticks()
        started = time.monotonic()
        figures, wrk_seconds = wrk(port, connections, s.duration, s)
        wall = time.monotonic() - started
        machine_after, interrupts_after = cpu_ticks()
        server_used = cpu_seconds(process.pid) - server_before
        pg_used = postgres_cpu_seconds() - pg_before
    # the server has stopped and closed its connections, whose backends report at exit
    if uses_pg:
        time.sleep(0.5)
    sessions_after, transactions_after = pg_counters(libpq_dsn(s.pg_url)) if uses_pg else (-1, -1)
    # set-up's few statements (table creation) are counted too: a few in 10^5
    transactions = transactions_after - transactions_before - 1  # less the first query's own
    requests = warmup_requests + figures["requests"]
    other = (
        (machine_after - machine_before)
        - (interrupts_after - interrupts_before)
        - server_used
        - pg_used
        - wrk_seconds
    )
    seconds = figures["duration_us"] / 1e6
    return RunResult(
        target=target,
        connections=connections,
        rps=figures["requests"] / seconds,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        non_200=figures["non_200"],
        not_upserted=figures["not_upserted"],
        socket_errors=figures["connect_errors"]
        + figures["read_errors"]
        + figures["write_errors"]
        + figures["timeouts"],
        wrk_cpu=wrk_seconds / wall,
        server_cpu=server_used / wall,
        server_us_per_request=server_used * 1e6 / max(1, figures["requests"]),
        postgres_cpu=pg_used / wall,
        other_cpu=max(0.0, other / wall),
        pg_sessions=sessions_after - sessions_before - 1 if sessions_before >= 0 else -1,
        pg_transactions_per_request=transactions / max(1, requests)
        if transactions_before >= 0
        else -1.0,
        busy_before=busy_before,
        raw=figures,
    )


# ---------------------------------------------------------------- profile


def profile_target(target: str, s: Settings, seconds: float, out_dir: str) -> dict[str, Any]:
    """py-spy the server of ``target`` under the main load; returns the sample tables."""
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(s.python), "py-spy")
    raw_path = os.path.join(out_dir, f"profile-{target}.txt")
    svg_path = os.path.join(out_dir, f"profile-{target}.svg")
    with server(target, s) as (process, port):
        loader = start(
            wrk_command(port, connections_of(target, s), round(2 * seconds + 6), s),
            os.path.join(s.workdir, "wrk-profile.log"),
        )
        try:
            time.sleep(2)
            for fmt, path, extra in (
                ("raw", raw_path, ["--nolineno"]),
                ("flamegraph", svg_path, []),
            ):
                subprocess.run(
                    pinned(
                        s.client_cpu,
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(process.pid),
                            "--duration",
                            str(round(seconds)),
                            "--rate",
                            "200",
                            "--format",
                            fmt,
                            "-o",
                            path,
                            *extra,
                        ],
                    ),
                    capture_output=True,
                    timeout=seconds + 60,
                    check=True,
                )
        finally:
            stop(loader, grace=1)
    return analyse_profile(raw_path) | {"raw": raw_path, "svg": svg_path, "target": target}


def frame_package(frame: str) -> str:
    """'func (path/to/file.py)' -> a package-level bucket."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")")
    parts = path.split("/")
    if parts[0] in ("runtime_snapshot_mount", "runtime_snapshot_mount_sqlalchemy"):
        return "/".join(parts[:2])
    if len(parts) > 1:
        return parts[0]
    return path or name


def analyse_profile(path: str) -> dict[str, Any]:
    self_samples: dict[str, int] = defaultdict(int)
    total_samples: dict[str, int] = defaultdict(int)
    package_self: dict[str, int] = defaultdict(int)
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            self_samples[frames[-1]] += count
            package_self[frame_package(frames[-1])] += count
            for frame in set(frames):
                total_samples[frame] += count
    return {
        "samples": total,
        "self": sorted(self_samples.items(), key=lambda kv: -kv[1]),
        "total": sorted(total_samples.items(), key=lambda kv: -kv[1]),
        "packages": sorted(package_self.items(), key=lambda kv: -kv[1]),
    }


# ---------------------------------------------------------------- report


def machine(s: Settings) -> list[str]:
    lines = []
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    lines.append(f"nproc: {os.cpu_count()} (this process may use {len(os.sched_getaffinity(0))})")
    lines.append(f"CPU: {cpu}")
    lines.append(f"kernel: {platform.system()} {platform.release()}")
    lines.append(f"Python: {platform.python_version()} ({platform.python_implementation()})")
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    lines.append("packages: " + ", ".join(versions))
    lines.append(f"wrk: {wrk_version.split('Copyright')[0].strip()}")
    return lines


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, list[RunResult]], s: Settings, rounds: int) -> dict[str, Any]:
    if not any(results.values()):
        return {}
    out()
    out(
        f"Median of {rounds} round(s) per target; {s.duration:g} s measured after "
        f"{s.warmup:g} s warm-up; {s.accounts} accounts, versions always increasing."
    )
    out(
        f"{'target':<14} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-200':>7} {'stale':>5} {'sockerr':>7} {'srv cpu':>7} {'us/req':>6} "
        f"{'wrk cpu':>7} {'pg cpu':>6} {'others':>6}  req/s per round"
    )
    medians: dict[str, dict[str, float]] = {}
    for target in DEFAULT_ORDER:
        runs = results.get(target)
        if not runs:
            continue
        m = {
            "rps": median([r.rps for r in runs]),
            "p50": median([r.p50_ms for r in runs]),
            "p99": median([r.p99_ms for r in runs]),
            "non_200": sum(r.non_200 for r in runs),
            "stale": sum(r.not_upserted for r in runs),
            "sock": sum(r.socket_errors for r in runs),
            "srv": median([r.server_cpu for r in runs]),
            "us": median([r.server_us_per_request for r in runs]),
            "wrk": median([r.wrk_cpu for r in runs]),
            "pg": median([r.postgres_cpu for r in runs]),
            "other": median([r.other_cpu for r in runs]),
        }
        medians[target] = m
        pg = f"{m['pg']:6.0%}" if "postgres" in target or target == "ceiling-db" else f"{'':>6}"
        per_round = " ".join(f"{r.rps:.0f}{'*' if r.other_cpu > s.max_other else ''}" for r in runs)
        out(
            f"{target:<14} {runs[0].connections:>5} {m['rps']:>9.0f} {m['p50']:>8.2f} "
            f"{m['p99']:>8.2f} {m['non_200']:>7d} {m['stale']:>5d} {m['sock']:>7d} "
            f"{m['srv']:>7.0%} {m['us']:>6.0f} {m['wrk']:>7.0%} {pg} {m['other']:>6.0%}"
            f"  [{per_round}]"
        )
    sessions = [
        f"{target} {median([float(r.pg_sessions) for r in runs]):.0f}"
        for target, runs in results.items()
        if runs and runs[0].pg_sessions >= 0
    ]
    if sessions:
        out(
            "PostgreSQL sessions opened per run (set-up, warm-up and measured window): "
            + ", ".join(sessions)
        )
        transactions = ", ".join(
            f"{target} {median([r.pg_transactions_per_request for r in runs]):.2f}"
            for target, runs in results.items()
            if runs and runs[0].pg_sessions >= 0
        )
        out(
            "PostgreSQL transactions per request, the same span (each statement outside a "
            f"transaction is one; 1.00 = one round trip): {transactions}"
        )
    out("non-200, stale (200 but not 'upserted') and socket errors: totals over all rounds.")
    out("us/req: the server process's CPU time per answered request, in microseconds.")
    out("cpu: share of one core in the measured window, of the server process, wrk, all")
    out("postgres processes, and everything else on the machine (others); * = a run during")
    out(f"which others used more than {s.max_other:.0%} of a core (kept after retries).")
    return medians


def ratio_line(
    name: str, top: str, bottom: str, goal: float, results: dict[str, list[RunResult]]
) -> str | None:
    if not results.get(top) or not results.get(bottom):
        return None
    value = median([r.rps for r in results[top]]) / median([r.rps for r in results[bottom]])
    per_round = [
        a.rps / b.rps for a, b in zip(results[top], results[bottom], strict=False) if b.rps
    ]
    spread = ", ".join(f"{v:.2f}" for v in per_round)
    verdict = "meets" if value >= goal else "MISSES"
    return f"{name} = {value:.2f}   (goal >= {goal:.2f}: {verdict}; per round: {spread})"


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="measured s per run [10]")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up s before each run [2]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all targets [5]")
    parser.add_argument("--connections", type=int, default=32, help="main comparison [32]")
    parser.add_argument("--sqlite-connections", type=int, default=64, help="sqlite@64 [64]")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_ORDER),
        help=f"comma-separated subset of {','.join(DEFAULT_ORDER)}",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("RSM_BENCH_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument(
        "--sqlite-driver",
        default="pysqlite",
        choices=["pysqlite", "aiosqlite"],
        help="pysqlite = sqlite:///file, the command line's default (worker threads) [pysqlite]",
    )
    parser.add_argument(
        "--table",
        default=f"rsm_bench_{os.getpid()}",
        help="bench-owned tables NAME and NAME_ceiling, dropped [rsm_bench_<pid>]",
    )
    parser.add_argument("--pool-size", type=int, help="ceiling-db pool [the plugin's engine's]")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server [0]")
    parser.add_argument("--client-cpu", type=int, default=1, help="core for wrk [1]")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--profile-duration", type=float, default=8)
    parser.add_argument(
        "--profile", default="memory", help="targets to profile with py-spy, comma-separated"
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--memory-count", type=int, default=100_000)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each run, wait up to this many s for the machine to be idle [60]",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.25,
        help="rerun a run during which other processes used more of a core than this [0.25]",
    )
    parser.add_argument("--retries", type=int, default=2, help="reruns of a noisy run [2]")
    parser.add_argument("--out", help="keep logs and profiles here [a temporary directory]")
    parser.add_argument("--results", help="also write the printed figures to this markdown file")
    args = parser.parse_args()

    # Stop cleanly on SIGTERM, SIGHUP and SIGINT (even where SIGINT was inherited ignored).
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _terminate)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    have_httptools = importlib.util.find_spec("httptools") is not None

    workdir = args.out or tempfile.mkdtemp(prefix="rsm-bench-")
    os.makedirs(workdir, exist_ok=True)
    s = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        sqlite_connections=args.sqlite_connections,
        accounts=args.accounts,
        loop="uvloop" if have_uvloop else "asyncio",
        http="httptools" if have_httptools else "h11",
        server_cpu=args.server_cpu if pin else None,
        client_cpu=args.client_cpu if pin else None,
        wrk_threads=args.wrk_threads,
        pg_url=args.pg_url,
        table=args.table,
        ceiling_table=args.table + "_ceiling",
        pool_size=args.pool_size or 0,
        workdir=workdir,
        quiet_wait=args.quiet_wait,
        sqlite_driver=args.sqlite_driver,
        max_other=args.max_other,
        retries=args.retries,
    )

    out("# runtime-snapshot-mount benchmark")
    for line in machine(s):
        out(line)
    out(
        f"server: uvicorn --workers 1 --loop {s.loop} --http {s.http} (no access log), "
        f"pinned to cpu {s.server_cpu}; wrk -t{s.wrk_threads} pinned to cpu {s.client_cpu}; "
        f"127.0.0.1 only"
        if pin
        else f"server: uvicorn --workers 1 --loop {s.loop} --http {s.http}; NOT pinned"
    )

    skipped: dict[str, str] = {}
    if not plugin_importable():
        for t in ("sqlite", "postgres", "postgres-fixed", "sqlite@64"):
            skipped[t] = "runtime_snapshot_mount_sqlalchemy is not importable"
    pg_ok = False
    if any(t in targets for t in ("postgres", "postgres-fixed", "ceiling-db")):
        try:
            out(f"PostgreSQL: {pg_server_version(libpq_dsn(s.pg_url))} at {s.pg_url}")
            pg_ok = True
        except Exception as error:
            for t in ("postgres", "postgres-fixed", "ceiling-db"):
                skipped.setdefault(t, f"PostgreSQL unreachable at {s.pg_url}: {error}")
    if pg_ok and s.pool_size == 0:
        s.pool_size = (plugin_importable() and plugin_pool_size(s.pg_url)) or 15
    if "ceiling-db" in targets and pg_ok:
        out(f"ceiling-db pool: {s.pool_size} connections (the plugin engine's pool + overflow)")
    for t, reason in skipped.items():
        if t in targets:
            out(f"skipped {t}: {reason}")
    targets = [t for t in targets if t not in skipped]

    results: dict[str, list[RunResult]] = defaultdict(list)
    exit_status = 0
    interrupted = False
    try:
        try:
            for round_index in range(args.rounds):
                shift = round_index % max(1, len(targets))
                order = targets[shift:] + targets[:shift]
                for target in order:
                    log(f"round {round_index + 1}/{args.rounds}: {target}")
                    try:
                        for attempt in range(s.retries + 1):
                            result = run_target(target, s)
                            if result.other_cpu <= s.max_other:
                                break
                            log(
                                f"{target}: other processes used {result.other_cpu:.0%} of a core"
                                f"{'; again' if attempt < s.retries else ''}"
                            )
                    except Exception as error:
                        out(f"run failed: round {round_index + 1} {target}: {error}")
                        exit_status = 1
                        continue
                    results[target].append(result)
                    log(
                        f"{target}: {result.rps:.0f} req/s p50 {result.p50_ms:.2f} ms "
                        f"p99 {result.p99_ms:.2f} ms non-200 {result.non_200}"
                    )
        except (KeyboardInterrupt, SystemExit):
            interrupted = True
            out("interrupted: the figures below come from the runs that finished")

        medians = report(results, s, args.rounds)
        out()
        ratios = (
            ratio_line("b/a (memory / HTTP ceiling)", "memory", "ceiling-http", 0.85, results),
            ratio_line("d/e (PostgreSQL / DB ceiling)", "postgres", "ceiling-db", 0.80, results),
            ratio_line(
                "d'/e (PostgreSQL, fixed pool / DB ceiling)",
                "postgres-fixed",
                "ceiling-db",
                0.80,
                results,
            ),
        )
        for ratio in ratios:
            if ratio:
                out(ratio)
        if "sqlite@64" in medians:
            m = medians["sqlite@64"]
            verdict = "meets" if m["non_200"] == 0 and m["sock"] == 0 else "MISSES"
            out(
                f"SQLite @ {s.sqlite_connections} connections: p99 {m['p99']:.2f} ms, "
                f"non-200 {int(m['non_200'])}, socket errors {int(m['sock'])} "
                f"(goal: zero non-200: {verdict})"
            )
        if "wrk-check" in medians:
            top = max(
                (m["rps"] for t, m in medians.items() if t != "wrk-check"), default=float("nan")
            )
            m = medians["wrk-check"]
            out(
                f"wrk check: the same wrk and Lua script reach {m['rps']:.0f} req/s against a "
                f"trivial responder ({m['rps'] / top:.1f}x the fastest target, {top:.0f}); "
                f"wrk used {m['wrk']:.0%} of its core there and at most "
                f"{max(mm['wrk'] for t, mm in medians.items() if t != 'wrk-check'):.0%} "
                f"on any target"
            )

        if not args.no_memory and not interrupted:
            log("memory per snapshot")
            completed = subprocess.run(
                pinned(
                    s.server_cpu,
                    [
                        s.python,
                        os.path.join(HERE, "memory_per_snapshot.py"),
                        "--count",
                        str(args.memory_count),
                    ],
                ),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if completed.returncode != 0:
                out(f"memory per snapshot failed: {completed.stderr[-500:]}")
                exit_status = 1
            else:
                mem = json.loads(completed.stdout.strip().splitlines()[-1])
                per = mem["bytes_per_snapshot"]
                verdict = "meets" if per <= 2048 else "MISSES"
                out(
                    f"memory:// per stored snapshot: {per:.0f} bytes RSS growth over "
                    f"{mem['count']} accounts (goal <= 2048: {verdict}); one snapshot's own "
                    f"objects: {mem['own_objects_bytes']} bytes "
                    + json.dumps(mem["own_objects_by_type"])
                )

        for target in [] if args.no_profile or interrupted else args.profile.split(","):
            log(f"profiling {target} under load with py-spy")
            try:
                profile = profile_target(target, s, args.profile_duration, workdir)
            except Exception as error:
                out(f"profile of {target} failed: {error}")
                exit_status = 1
            else:
                print_profile(profile)
    finally:
        stop_all()
        if pg_ok:
            with contextlib.suppress(Exception):
                pg_execute(
                    libpq_dsn(s.pg_url),
                    f"DROP TABLE IF EXISTS {s.table}",
                    f"DROP TABLE IF EXISTS {s.ceiling_table}",
                )
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(workdir, "bench.db" + suffix))

    out()
    out(f"logs and profiles: {workdir}")
    if args.results:
        with open(args.results, "w") as f:
            f.write("```\n" + "\n".join(out.lines) + "\n```\n")
    return 130 if interrupted else exit_status


ENTRY_FRAMES = frozenset(
    {
        "<module> (serve.py)",
        "main (serve.py)",
        "serve (serve.py)",
        "run (uvicorn/main.py)",
        "Server.run (uvicorn/server.py)",
        "asyncio_run (uvicorn/_compat.py)",
        "Runner.run (asyncio/runners.py)",
        "Thread._bootstrap (threading.py)",
        "Thread._bootstrap_inner (threading.py)",
    }
)


def print_profile(profile: dict[str, Any], top: int = 15) -> None:
    total = profile["samples"] or 1
    out()
    out(
        f"py-spy profile of {profile['target']} under the same load "
        f"({profile['samples']} samples at 200 Hz of the server's threads while not idle;"
        f" each thread of a threaded server counts)"
    )
    out("self time by package:")
    for name, count in profile["packages"][:12]:
        out(f"  {count / total:6.1%}  {name}")
    out(f"top {top} functions by self time:")
    for frame, count in profile["self"][:top]:
        out(f"  {count / total:6.1%}  {frame}")
    out(f"top {top + 10} functions by total time (including callees; entry frames left out):")
    inner = [(f, c) for f, c in profile["total"] if c < 0.995 * total and f not in ENTRY_FRAMES]
    for frame, count in inner[: top + 10]:
        out(f"  {count / total:6.1%}  {frame}")
    out(f"profile files: {profile['raw']} (collapsed stacks), {profile['svg']} (flame graph)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
