"""Benchmark the product as shipped against its ceilings, on loopback, in one command.

    .venv/bin/python bench/run.py                      # 5 rounds x 10 s per target
    .venv/bin/python bench/run.py --rounds 1 --duration 2 --warmup 1 --no-profile   # a look

The product is the ``runtime-snapshot-mount serve`` command next to this Python (the
README's set-up), with its default options; the ceilings run on the best stack, from
bench/.venv (see bench/README.md). Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import logging
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PATH = "/runtime-snapshots/upsert"
TOKEN = "bench-token"
TICKS = os.sysconf("SC_CLK_TCK")
VERSION_STEP = 10**9  # each wrk run's versions start this far above the previous run's
SEED_VERSION = 2**62  # the stale load's stored versions: above every version wrk sends
SQLITE_FILE = "runtime-snapshots.db"  # the product's default store's file name
CEILING_SQLITE_FILE = "ceiling-sqlite.db"
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
POSTGRES_PROCESSES = frozenset({"postgres"})
MARIADB_PROCESSES = frozenset({"mariadbd", "mysqld"})


@dataclass(frozen=True)
class Target:
    """One thing to measure: a server, the load it gets, and how many connections."""

    name: str
    what: str
    kind: str  # "product", "ceiling" or "check"
    store: str  # "memory", "sqlite", "postgres", "mariadb"; "http" (ceiling); "" (check)
    load: str = "applied"  # or "stale"
    many: bool = False  # --sqlite-connections instead of --connections
    workers: int = 1
    no_access_log: bool = False


TARGETS = [
    Target(
        "ceiling-http", "HTTP ceiling: bare Starlette route, json.loads, answer", "ceiling", "http"
    ),
    Target("memory", "serve --store memory://", "product", "memory"),
    Target(
        "memory-stale", "serve --store memory://, every request stale", "product", "memory", "stale"
    ),
    Target(
        "memory-nolog",
        "serve --store memory:// --no-access-log",
        "product",
        "memory",
        no_access_log=True,
    ),
    Target("sqlite", "serve --store sqlite:///<tmp>/runtime-snapshots.db", "product", "sqlite"),
    Target("sqlite-stale", "the same, every request stale", "product", "sqlite", "stale"),
    Target("sqlite@64", "the same, applied, 64 connections", "product", "sqlite", many=True),
    Target(
        "ceiling-sqlite",
        "SQLite ceiling: stdlib sqlite3, one upsert + COMMIT per request",
        "ceiling",
        "sqlite",
    ),
    Target("ceiling-sqlite-stale", "the same, every request stale", "ceiling", "sqlite", "stale"),
    Target("postgres", "serve --store postgresql+asyncpg://...", "product", "postgres"),
    Target("postgres-stale", "the same, every request stale", "product", "postgres", "stale"),
    Target(
        "ceiling-pg",
        "PostgreSQL ceiling: one asyncpg round trip per request",
        "ceiling",
        "postgres",
    ),
    Target("ceiling-pg-stale", "the same, every request stale", "ceiling", "postgres", "stale"),
    Target(
        "postgres-w2",
        "serve --store postgresql+asyncpg://... --workers 2 (NOT pinned)",
        "product",
        "postgres",
        workers=2,
    ),
    Target("mariadb", "serve --store mysql+asyncmy://...", "product", "mariadb"),
    Target("mariadb-stale", "the same, every request stale", "product", "mariadb", "stale"),
    Target(
        "ceiling-mariadb",
        "MariaDB ceiling: one raw asyncmy round trip per request",
        "ceiling",
        "mariadb",
    ),
    Target("ceiling-mariadb-stale", "the same, every request stale", "ceiling", "mariadb", "stale"),
    Target("wrk-check", "the same wrk + Lua against a trivial uvloop responder", "check", ""),
]
BY_NAME = {t.name: t for t in TARGETS}

# (label, top, bottom, goal): the targets; a ratio of two medians of req/s
GOALS = [
    ("memory, applied, default options / HTTP ceiling", "memory", "ceiling-http", 0.85),
    ("memory, stale, default options / HTTP ceiling", "memory-stale", "ceiling-http", 0.85),
    ("memory, applied, --no-access-log / HTTP ceiling", "memory-nolog", "ceiling-http", 0.90),
    ("PostgreSQL, applied / asyncpg ceiling, applied", "postgres", "ceiling-pg", 0.90),
    ("PostgreSQL, stale / asyncpg ceiling, stale", "postgres-stale", "ceiling-pg-stale", 0.85),
    ("SQLite default store, applied / per-request-commit ceiling", "sqlite", "ceiling-sqlite", 2.0),
]
REPORTED = [
    ("SQLite default store, stale / SQLite ceiling, stale", "sqlite-stale", "ceiling-sqlite-stale"),
    ("MariaDB, applied / asyncmy ceiling, applied", "mariadb", "ceiling-mariadb"),
    ("MariaDB, stale / asyncmy ceiling, stale", "mariadb-stale", "ceiling-mariadb-stale"),
    (
        "PostgreSQL --workers 2, all cores / asyncpg ceiling, applied, core 0",
        "postgres-w2",
        "ceiling-pg",
    ),
]

PRODUCT_PACKAGES = [
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
    "asyncmy",
]
CEILING_PACKAGES = ["starlette", "uvicorn", "uvloop", "httptools", "asyncpg", "asyncmy", "py-spy"]

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


def start(
    command: list[str], log_path: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so it and its children can be stopped together);
    its output goes to ``log_path``, which is started afresh."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
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


def _comm(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields:
                yield int(entry), fields


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants (all threads):
    with ``--workers 2`` the worker processes are children of the supervisor."""
    parents = {child: int(fields[1]) for child, fields in _processes()}
    tree = {pid}
    grew = True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    total = 0.0
    for member in tree:
        fields = _stat(member)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def db_cpu_seconds(names: frozenset[str]) -> float:
    """CPU time so far of a database server: every live process with one of ``names``, plus
    what each top one's exited children used (its cutime + cstime), so that PostgreSQL
    backends that start or end between two readings are counted too."""
    total = 0.0
    for pid, fields in _processes():
        if _comm(pid) not in names:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        if _comm(fields[1]) not in names:  # a postmaster: add its reaped children
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


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- requests

EXAMPLE_REQUEST = json.loads(
    (Path(__file__).resolve().parent.parent / "examples" / "example-request.json").read_text()
)


def account_ids(count: int) -> list[str]:
    """The benchmark's accounts: the ids that bench/upsert.lua sends."""
    return [f"account_user{i:09d}" for i in range(count)]


def example_body(account: str, version: int) -> bytes:
    """The API page's example request for ``account`` at ``version``."""
    body = {**EXAMPLE_REQUEST, "account_id": account, "strategy_version": version}
    return json.dumps(body).encode()


def post(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    connection.request(
        "POST",
        PATH,
        body=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    return response.status, response.read()


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
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, answer = post(connection, example_body(account_ids(1)[0], 1))
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"sanity upsert answered {status}: {answer[:300]!r} {tail(log_path)}")


def seed(port: int, accounts: int, threads: int = 8) -> int:
    """Store every account's snapshot at ``SEED_VERSION`` (each answered ``upserted``), so
    that every request of the stale load, whose versions are all lower, is ignored."""
    ids = account_ids(accounts)

    def store(first: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for account in ids[first::threads]:
                status, answer = post(connection, example_body(account, SEED_VERSION))
                if status != 200 or b'"upserted"' not in answer:
                    raise RuntimeError(f"seeding {account} answered {status}: {answer[:200]!r}")
        finally:
            connection.close()
        return len(ids[first::threads])

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(store, range(threads)))


# ---------------------------------------------------------------- databases


def libpq_dsn(url: str) -> str:
    """postgresql+asyncpg://... -> postgresql://... (what asyncpg itself takes)."""
    _scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def with_table(url: str, table: str) -> str:
    """A store URL that names the bench-owned table (the plugin's ``?table=``)."""
    return f"{url}{'&' if '?' in url else '?'}table={table}"


async def _pg(dsn: str, statements: tuple[str, ...]) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return [await connection.fetch(statement) for statement in statements]
    finally:
        await connection.close()


def pg_execute(dsn: str, *statements: str) -> list[Any]:
    return asyncio.run(_pg(dsn, statements))


def pg_counters(dsn: str) -> tuple[int, int]:
    """Sessions ever established to the database (pg_stat_database.sessions, PostgreSQL
    14+) and transactions ever ended in it (committed or rolled back; every statement run
    outside a transaction is one), not counting the session that asks nor its one query;
    (-1, -1) when unknown."""
    try:
        [rows] = pg_execute(
            dsn,
            "SELECT sessions, xact_commit + xact_rollback AS transactions"
            " FROM pg_stat_database WHERE datname = current_database()",
        )
        return int(rows[0]["sessions"]) - 1, int(rows[0]["transactions"])
    except Exception:
        return -1, -1


async def _mysql(url: str, statements: tuple[str, ...]) -> list[Any]:
    import asyncmy
    from ceiling_mariadb import connect_options

    logging.getLogger("asyncmy").setLevel(logging.ERROR)  # "Unknown table" notes of DROP
    connection = await asyncmy.connect(autocommit=True, **connect_options(url))
    try:
        results = []
        async with connection.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
                results.append(await cursor.fetchall())
        return results
    finally:
        await connection.ensure_closed()


def mysql_execute(url: str, *statements: str) -> list[Any]:
    return asyncio.run(_mysql(url, statements))


def mysql_questions(url: str) -> int:
    """Statements the MariaDB server has been sent so far by all its clients (``Questions``,
    less this session's own); -1 when unknown."""
    try:
        [rows] = mysql_execute(url, "SHOW GLOBAL STATUS LIKE 'Questions'")
        return int(rows[0][1]) - 1
    except Exception:
        return -1


def plugin_importable() -> bool:
    return importlib.util.find_spec("runtime_snapshot_mount_sqlalchemy") is not None


def create_plugin_table(url: str, table: str) -> None:
    """Create ``table`` exactly as the SQLAlchemy plugin creates its own (same shape)."""
    from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore

    from runtime_snapshot_mount import Plugins

    async def create() -> None:
        plugins = Plugins([SQLAlchemyStore(url, table_name=table)], entry_points=False)
        try:
            await plugins.store_create_tables()
        finally:
            await plugins.store_close()

    asyncio.run(create())


def plugin_pool_size() -> int:
    """How many connections the plugin's engine holds at most (its documented fixed pool
    plus overflow); 20 if the plugin does not say."""
    try:
        from runtime_snapshot_mount_sqlalchemy import engines
    except ImportError:
        return 20
    size = getattr(engines, "POOL_SIZE", None)
    overflow = getattr(engines, "MAX_OVERFLOW", 0)
    if isinstance(size, int) and isinstance(overflow, int):
        return size + max(overflow, 0)
    return 20


# ---------------------------------------------------------------- runs


@dataclass
class Settings:
    duration: float
    warmup: float
    connections: int
    sqlite_connections: int
    accounts: int
    server_cpu: int | None
    client_cpu: int | None
    wrk_threads: int
    pg_url: str
    mysql_url: str
    table: str
    ceiling_table: str
    pool_size: int
    workdir: str
    product: str  # the runtime-snapshot-mount command
    ceiling_python: str
    accounts_file: str = ""
    quiet_limit: float = 0.15
    quiet_wait: float = 60
    max_other: float = 0.25
    retries: int = 2
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
    unexpected: int  # 200 answers whose status was not the load's expected one
    socket_errors: int
    wrk_cpu: float  # share of one core
    server_cpu: float
    server_us_per_request: float  # server CPU time (all its processes) per answered request
    db_cpu: float
    other_cpu: float  # everything else on the machine (other users' processes) meanwhile
    db_sessions: int  # PostgreSQL sessions opened by the run (set-up, warm-up, measurement)
    db_per_request: float  # PostgreSQL transactions / MariaDB statements per request
    busy_before: float  # the machine's load just before the run, in cores
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def connections_of(t: Target, s: Settings) -> int:
    return s.sqlite_connections if t.many else s.connections


def server_cpu_of(t: Target, s: Settings) -> int | None:
    """The core the server is pinned to; None (all cores) for several worker processes."""
    return None if t.workers > 1 else s.server_cpu


def store_url(t: Target, s: Settings) -> str:
    if t.store == "memory":
        return "memory://"
    if t.store == "sqlite":
        return f"sqlite:///{os.path.join(s.workdir, SQLITE_FILE)}"
    if t.store == "postgres":
        return with_table(s.pg_url, s.table)
    return with_table(s.mysql_url, s.table)


def product_command(t: Target, port: int, s: Settings) -> list[str]:
    """``serve`` with its default options: only what a run must set."""
    command = [s.product, "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--store", store_url(t, s), "--api-key", TOKEN, "--accounts", s.accounts_file]
    if t.workers > 1:
        command += ["--workers", str(t.workers)]
    if t.no_access_log:
        command.append("--no-access-log")
    return command


def server_command(t: Target, port: int, s: Settings) -> list[str]:
    if t.kind == "product":
        return product_command(t, port, s)
    if t.kind == "check":
        return [s.ceiling_python, os.path.join(HERE, "trivial_server.py"), str(port)]
    command = [s.ceiling_python, os.path.join(HERE, "ceiling_server.py"), t.store]
    command += ["--port", str(port)]
    if t.store == "sqlite":
        command += ["--path", os.path.join(s.workdir, CEILING_SQLITE_FILE)]
    elif t.store == "postgres":
        command += ["--dsn", libpq_dsn(s.pg_url), "--table", s.ceiling_table]
        command += ["--pool-size", str(s.pool_size)]
    elif t.store == "mariadb":
        command += ["--url", s.mysql_url, "--table", s.ceiling_table]
        command += ["--pool-size", str(s.pool_size)]
    return command


def remove_sqlite(path: str) -> None:
    for suffix in DB_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def reset_state(t: Target, s: Settings) -> None:
    """Every run starts from an empty store. The product creates its own table at start-up;
    a ceiling's table is created here, by the SQLAlchemy plugin."""
    ceiling = t.kind == "ceiling"
    if t.store == "sqlite":
        path = os.path.join(s.workdir, CEILING_SQLITE_FILE if ceiling else SQLITE_FILE)
        remove_sqlite(path)
        if ceiling:
            create_plugin_table(f"sqlite:///{path}", "runtime_snapshots")
    elif t.store == "postgres":
        table = s.ceiling_table if ceiling else s.table
        pg_execute(libpq_dsn(s.pg_url), f"DROP TABLE IF EXISTS {table}")
        if ceiling:
            create_plugin_table(s.pg_url, table)
    elif t.store == "mariadb":
        table = s.ceiling_table if ceiling else s.table
        mysql_execute(s.mysql_url, f"DROP TABLE IF EXISTS {table}")
        if ceiling:
            create_plugin_table(s.mysql_url, table)


def wrk_command(
    port: int, connections: int, seconds: int, load: str, s: Settings, *options: str
) -> list[str]:
    """The wrk command line (pinned to the client core) that runs upsert.lua against ``port``."""
    expected = "ignored_stale" if load == "stale" else "upserted"
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
            expected,
        ],
    )


def wrk(
    port: int, connections: int, duration: float, load: str, s: Settings
) -> tuple[dict[str, Any], float]:
    """One wrk run; returns its BENCH_JSON figures and the CPU seconds wrk itself used."""
    command = wrk_command(port, connections, max(1, round(duration)), load, s, "--timeout", "30s")
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


def product_env() -> dict[str, str]:
    """The environment of a product server: this one, less an API key that would add one."""
    return {k: v for k, v in os.environ.items() if k != "PHONEFARM_API_KEY"}


@contextlib.contextmanager
def server(t: Target, s: Settings) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """A fresh server for ``t``, ready; yields it, its port, and how many upserts set it up."""
    reset_state(t, s)
    port = free_port()
    log_path = os.path.join(s.workdir, f"server-{t.name}.log")
    command = pinned(server_cpu_of(t, s), server_command(t, port, s))
    process = start(command, log_path, env=product_env(), cwd=s.workdir)
    try:
        wait_ready(process, port, log_path, timeout=60)
        seeded = seed(port, s.accounts) if t.load == "stale" else 0
        yield process, port, 1 + seeded
    finally:
        stop(process)


def run_target(t: Target, s: Settings) -> RunResult:
    connections = connections_of(t, s)
    busy_before = wait_for_quiet(s.quiet_limit, s.quiet_wait)
    dsn = libpq_dsn(s.pg_url)
    sessions_before, count_before = -1, -1
    if t.store == "postgres":
        sessions_before, count_before = pg_counters(dsn)
    elif t.store == "mariadb":
        count_before = mysql_questions(s.mysql_url)
    db_names = {"postgres": POSTGRES_PROCESSES, "mariadb": MARIADB_PROCESSES}.get(t.store)
    warmup_requests = 0
    with server(t, s) as (process, port, setup_requests):
        if s.warmup > 0:
            warmup_requests = wrk(port, connections, s.warmup, t.load, s)[0]["requests"]
        server_before = tree_cpu_seconds(process.pid)
        db_before = db_cpu_seconds(db_names) if db_names else 0.0
        machine_before, interrupts_before = cpu_ticks()
        started = time.monotonic()
        figures, wrk_seconds = wrk(port, connections, s.duration, t.load, s)
        wall = time.monotonic() - started
        machine_after, interrupts_after = cpu_ticks()
        server_used = tree_cpu_seconds(process.pid) - server_before
        db_used = (db_cpu_seconds(db_names) - db_before) if db_names else 0.0
    # the server has stopped and closed its connections, whose backends report at exit
    sessions_after, count_after = -1, -1
    if t.store == "postgres":
        time.sleep(0.5)
        sessions_after, count_after = pg_counters(dsn)
        count_after -= 1  # less the first reading's own query
    elif t.store == "mariadb":
        count_after = mysql_questions(s.mysql_url)
    requests = setup_requests + warmup_requests + figures["requests"]
    other = (
        (machine_after - machine_before)
        - (interrupts_after - interrupts_before)
        - server_used
        - db_used
        - wrk_seconds
    )
    seconds = figures["duration_us"] / 1e6
    known = count_before >= 0 and count_after >= 0
    return RunResult(
        target=t.name,
        connections=connections,
        rps=figures["requests"] / seconds,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        non_200=figures["non_200"],
        unexpected=figures["unexpected"],
        socket_errors=figures["connect_errors"]
        + figures["read_errors"]
        + figures["write_errors"]
        + figures["timeouts"],
        wrk_cpu=wrk_seconds / wall,
        server_cpu=server_used / wall,
        server_us_per_request=server_used * 1e6 / max(1, figures["requests"]),
        db_cpu=db_used / wall,
        other_cpu=max(0.0, other / wall),
        db_sessions=sessions_after - sessions_before - 1 if sessions_before >= 0 else -1,
        db_per_request=(count_after - count_before) / max(1, requests) if known else -1.0,
        busy_before=busy_before,
        raw=figures,
    )


# ---------------------------------------------------------------- profile


def find_py_spy(s: Settings) -> str:
    for candidate in (
        shutil.which("py-spy"),
        os.path.join(os.path.dirname(s.ceiling_python), "py-spy"),
        os.path.join(os.path.dirname(sys.executable), "py-spy"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("py-spy not found (it is in bench/requirements.txt)")


def profile_target(t: Target, s: Settings, seconds: float, out_dir: str) -> dict[str, Any]:
    """py-spy the server of ``t`` under its load; returns the sample tables."""
    py_spy = find_py_spy(s)
    raw_path = os.path.join(out_dir, f"profile-{t.name}.txt")
    svg_path = os.path.join(out_dir, f"profile-{t.name}.svg")
    with server(t, s) as (process, port, _):
        loader = start(
            wrk_command(port, connections_of(t, s), round(2 * seconds + 6), t.load, s),
            os.path.join(s.workdir, "wrk-profile.log"),
        )
        try:
            time.sleep(2)
            for fmt, path, extra in (
                ("raw", raw_path, ["--nolineno"]),
                ("flamegraph", svg_path, []),
            ):
                command = [py_spy, "record", "--pid", str(process.pid), "--subprocesses"]
                command += ["--duration", str(round(seconds)), "--rate", "200"]
                command += ["--format", fmt, "-o", path, *extra]
                subprocess.run(
                    pinned(s.client_cpu, command),
                    capture_output=True,
                    timeout=seconds + 60,
                    check=True,
                )
        finally:
            stop(loader, grace=1)
    return analyse_profile(raw_path) | {"raw": raw_path, "svg": svg_path, "target": t.name}


def frame_package(frame: str) -> str:
    """'func (path/to/file.py)' -> a package-level bucket."""
    name, _, where = frame.rpartition(" (")
    parts = where.rstrip(")").split("/")
    for index, part in enumerate(parts):
        if part in ("runtime_snapshot_mount", "runtime_snapshot_mount_sqlalchemy"):
            return "/".join(parts[index : index + 2])
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if len(parts) > 1:
        return parts[0] or "/".join(parts[:3])
    return parts[0] or name


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
    out(
        f"top {top + 10} functions by total time (including callees; frames in nearly every"
        " sample left out):"
    )
    inner = [(f, c) for f, c in profile["total"] if c < 0.98 * total]
    for frame, count in inner[: top + 10]:
        out(f"  {count / total:6.1%}  {frame}")
    out(f"profile files: {profile['raw']} (collapsed stacks), {profile['svg']} (flame graph)")


# ---------------------------------------------------------------- environments


def versions_here(names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def versions_in(python: str, names: list[str]) -> dict[str, str | None]:
    """Installed versions of ``names`` in the environment of another Python."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # not realpath: venvs link
        return versions_here(names)
    script = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    completed = subprocess.run(
        [python, "-c", script, *names], capture_output=True, text=True, timeout=60, check=True
    )
    found: dict[str, str | None] = json.loads(completed.stdout)
    return found


def listed(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version or '(not installed)'}" for name, version in versions.items())


def server_stack(versions: dict[str, str | None]) -> str:
    """What uvicorn's automatic choice picks in the product's environment, and whether the
    fast parts came with the product or were added by hand (not as shipped)."""
    notes = []
    for name, fallback in (("uvloop", "asyncio"), ("httptools", "h11")):
        if versions.get(name) is None:
            notes.append(f"{fallback} ({name} not installed)")
            continue
        requested = False
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            requested = importlib.metadata.distribution(name).read_text("REQUESTED") is not None
        how = "installed by hand, NOT as shipped" if requested else "installed as a dependency"
        notes.append(f"{name} ({how})")
    return " + ".join(notes)


def serve_supports(product: str, option: str) -> bool:
    completed = subprocess.run(
        [product, "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return option in completed.stdout


def machine() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return [
        f"nproc: {os.cpu_count()} (this process may use {len(os.sched_getaffinity(0))})",
        f"CPU: {cpu}",
        f"kernel: {platform.system()} {platform.release()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"wrk: {wrk_version.split('Copyright')[0].strip()}",
    ]


# ---------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, list[RunResult]], s: Settings, rounds: int) -> dict[str, Any]:
    if not any(results.values()):
        return {}
    out()
    out(
        f"Median of {rounds} round(s) per target; {s.duration:g} s measured after "
        f"{s.warmup:g} s warm-up; {s.accounts} accounts; load 'applied': versions always "
        "increasing; 'stale': every account stored first at a higher version."
    )
    out(
        f"{'target':<21} {'load':<7} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'non-200':>7} {'unexp':>5} {'sockerr':>7} {'srv cpu':>7} {'us/req':>6} "
        f"{'wrk cpu':>7} {'db cpu':>6} {'others':>6}  req/s per round"
    )
    medians: dict[str, dict[str, float]] = {}
    for t in TARGETS:
        runs = results.get(t.name)
        if not runs:
            continue
        m = {
            "rps": median([r.rps for r in runs]),
            "p50": median([r.p50_ms for r in runs]),
            "p99": median([r.p99_ms for r in runs]),
            "non_200": sum(r.non_200 for r in runs),
            "unexpected": sum(r.unexpected for r in runs),
            "sock": sum(r.socket_errors for r in runs),
            "srv": median([r.server_cpu for r in runs]),
            "us": median([r.server_us_per_request for r in runs]),
            "wrk": median([r.wrk_cpu for r in runs]),
            "db": median([r.db_cpu for r in runs]),
            "other": median([r.other_cpu for r in runs]),
        }
        medians[t.name] = m
        db = f"{m['db']:6.0%}" if t.store in ("postgres", "mariadb") else f"{'':>6}"
        per_round = " ".join(f"{r.rps:.0f}{'*' if r.other_cpu > s.max_other else ''}" for r in runs)
        out(
            f"{t.name:<21} {t.load if t.kind != 'check' else '':<7} {runs[0].connections:>5} "
            f"{m['rps']:>8.0f} {m['p50']:>7.2f} {m['p99']:>7.2f} {m['non_200']:>7d} "
            f"{m['unexpected']:>5d} {m['sock']:>7d} {m['srv']:>7.0%} {m['us']:>6.0f} "
            f"{m['wrk']:>7.0%} {db} {m['other']:>6.0%}  [{per_round}]"
        )

    def per_request(store: str) -> str:
        return ", ".join(
            f"{t.name} {median([r.db_per_request for r in results[t.name]]):.2f}"
            for t in TARGETS
            if t.store == store
            and results.get(t.name)
            and all(r.db_per_request >= 0 for r in results[t.name])
        )

    sessions = ", ".join(
        f"{t.name} {median([float(r.db_sessions) for r in results[t.name]]):.0f}"
        for t in TARGETS
        if t.store == "postgres" and results.get(t.name) and results[t.name][0].db_sessions >= 0
    )
    if sessions:
        out(f"PostgreSQL sessions opened per run (set-up, warm-up and measured window): {sessions}")
    if per_request("postgres"):
        out(
            "PostgreSQL transactions per request, the same span (each statement outside a "
            f"transaction is one; 1.00 = one round trip): {per_request('postgres')}"
        )
    if per_request("mariadb"):
        out(
            "MariaDB statements per request, the same span (the server's Questions counter, all "
            f"clients: exact only when nothing else uses that server): {per_request('mariadb')}"
        )
    out("non-200, unexp (200 but not the load's expected status) and socket errors: totals over")
    out("all rounds. us/req: the server's CPU time (all its processes) per answered request, in")
    out("microseconds. cpu: share of one core in the measured window, of the server, wrk, the")
    out("database server (db: PostgreSQL or MariaDB processes), and everything else on the")
    out(f"machine (others); * = a run during which others used more than {s.max_other:.0%} of a")
    out("core (kept after retries).")
    return medians


def ratio(top: str, bottom: str, results: dict[str, list[RunResult]]) -> tuple[float, str] | None:
    if not results.get(top) or not results.get(bottom):
        return None
    value = median([r.rps for r in results[top]]) / median([r.rps for r in results[bottom]])
    per_round = [
        a.rps / b.rps for a, b in zip(results[top], results[bottom], strict=False) if b.rps
    ]
    return value, ", ".join(f"{v:.2f}" for v in per_round)


def unavailable(names: tuple[str, ...], skipped: dict[str, str]) -> str | None:
    reasons = [f"{name}: {skipped[name]}" for name in names if name in skipped]
    return "; ".join(reasons) or None


def print_ratios(
    results: dict[str, list[RunResult]],
    medians: dict[str, Any],
    skipped: dict[str, str],
    selected: list[str],
    s: Settings,
) -> list[str]:
    """The goals with their verdicts, then the reported ratios; returns the missed goals."""
    missed: list[str] = []
    out()
    out("Goals (ratios of median req/s):")
    for label, top, bottom, goal in GOALS:
        if top not in selected or bottom not in selected:
            continue
        found = ratio(top, bottom, results)
        if found is None:
            why = unavailable((top, bottom), skipped) or "its runs failed"
            out(f"  {label}: not available ({why})")
            missed.append(label)
            continue
        value, spread = found
        verdict = "meets" if value >= goal else "MISSES"
        if value < goal:
            missed.append(label)
        out(f"  {label} = {value:.2f}  (goal >= {goal:.2f}: {verdict}; per round: {spread})")
    if "sqlite@64" in medians:
        m = medians["sqlite@64"]
        ok = m["non_200"] == 0 and m["sock"] == 0
        if not ok:
            missed.append("SQLite @ 64 connections: zero non-200")
        out(
            f"  SQLite default store @ {s.sqlite_connections} connections: non-200 "
            f"{int(m['non_200'])}, socket errors {int(m['sock'])}, p99 {m['p99']:.2f} ms "
            f"(goal: zero non-200: {'meets' if ok else 'MISSES'})"
        )
    elif "sqlite@64" in skipped:
        out(f"  SQLite default store @ {s.sqlite_connections} connections: not available")
    reported = [
        (label, top, bottom)
        for label, top, bottom in REPORTED
        if top in selected and bottom in selected
    ]
    if reported:
        out("Reported (no goal):")
    for label, top, bottom in reported:
        found = ratio(top, bottom, results)
        if found is None:
            why = unavailable((top, bottom), skipped) or "its runs failed"
            out(f"  {label}: not available ({why})")
        else:
            out(f"  {label} = {found[0]:.2f}  (per round: {found[1]})")
    if "wrk-check" in medians and len(medians) > 1:
        out("Load generator:")
        others = {name: m for name, m in medians.items() if name != "wrk-check"}
        top_rps = max(m["rps"] for m in others.values())
        m = medians["wrk-check"]
        out(
            f"  wrk check: the same wrk and Lua script reach {m['rps']:.0f} req/s against a "
            f"trivial responder ({m['rps'] / top_rps:.1f}x the fastest target, {top_rps:.0f}); "
            f"wrk used {m['wrk']:.0%} of its core there and at most "
            f"{max(mm['wrk'] for mm in others.values()):.0%} on any target"
        )
    return missed


def memory_per_snapshot(s: Settings, count: int) -> tuple[str, bool]:
    """Runs memory_per_snapshot.py in the product's environment; (its line, goal met)."""
    completed = subprocess.run(
        pinned(
            s.server_cpu,
            [sys.executable, os.path.join(HERE, "memory_per_snapshot.py"), "--count", str(count)],
        ),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-500:])
    mem = json.loads(completed.stdout.strip().splitlines()[-1])
    per = mem["bytes_per_snapshot"]
    ok = per <= 2048
    return (
        f"  memory:// per stored snapshot: {per:.0f} bytes RSS growth over {mem['count']} "
        f"accounts (goal <= 2048: {'meets' if ok else 'MISSES'}); one snapshot's own "
        f"objects: {mem['own_objects_bytes']} bytes " + json.dumps(mem["own_objects_by_type"]),
        ok,
    )


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="measured s per run [10]")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up s before each run [2]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all targets [5]")
    parser.add_argument("--connections", type=int, default=32, help="main comparison [32]")
    parser.add_argument("--sqlite-connections", type=int, default=64, help="sqlite@64 [64]")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--targets",
        default=",".join(t.name for t in TARGETS),
        help="comma-separated subset of " + ",".join(t.name for t in TARGETS),
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("RSM_BENCH_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("RSM_BENCH_MYSQL_URL") or "mysql+asyncmy://root@127.0.0.1:3306/test",
    )
    parser.add_argument(
        "--ceiling-python",
        help="the Python the ceilings run on [bench/.venv/bin/python, else this one]",
    )
    parser.add_argument(
        "--table",
        default=f"rsm_bench_{os.getpid()}",
        help="bench-owned tables NAME and NAME_ceiling, dropped [rsm_bench_<pid>]",
    )
    parser.add_argument("--pool-size", type=int, help="database ceilings' pool [the plugin's]")
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
    args.selected = [name.strip() for name in args.targets.split(",") if name.strip()]
    args.profiled = [] if args.no_profile else [p for p in args.profile.split(",") if p]
    unknown = [n for n in args.selected + args.profiled if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    args.product = os.path.join(os.path.dirname(sys.executable), "runtime-snapshot-mount")
    if not os.access(args.product, os.X_OK):
        parser.error(
            f"{args.product} not found: run this with the Python of the README's set-up "
            "(.venv/bin/python bench/run.py)"
        )
    if args.ceiling_python is None:
        own = os.path.join(HERE, ".venv", "bin", "python")
        args.ceiling_python = own if os.path.exists(own) else sys.executable
    return args


def check_ceiling_stack(args: argparse.Namespace) -> dict[str, str | None]:
    """The ceilings' packages; refuses to go on if they would not run on the best stack."""
    versions = versions_in(args.ceiling_python, CEILING_PACKAGES)
    wanted = {BY_NAME[n].kind for n in args.selected + args.profiled} & {"ceiling", "check"}
    missing = [name for name in ("uvloop", "httptools") if versions.get(name) is None]
    if wanted and missing:
        raise SystemExit(
            f"bench/run.py: the ceilings' Python {args.ceiling_python} lacks "
            f"{' and '.join(missing)}; set it up once (bench/README.md):\n"
            "  python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/requirements.txt"
        )
    return versions


def find_skips(s: Settings, selected: list[str]) -> dict[str, str]:
    """Targets that cannot run here, with the reason."""
    skipped: dict[str, str] = {}
    chosen = [BY_NAME[n] for n in selected]
    if not plugin_importable():
        for t in chosen:
            if t.store in ("sqlite", "postgres", "mariadb"):
                skipped[t.name] = "runtime_snapshot_mount_sqlalchemy is not installed"
    if any(t.no_access_log for t in chosen) and not serve_supports(s.product, "--no-access-log"):
        for t in chosen:
            if t.no_access_log:
                skipped[t.name] = "this serve has no --no-access-log"
    if any(t.store == "postgres" for t in chosen):
        try:
            [rows] = pg_execute(libpq_dsn(s.pg_url), "SHOW server_version")
            out(f"PostgreSQL: {rows[0][0]} at {s.pg_url}")
        except Exception as error:
            for t in chosen:
                if t.store == "postgres":
                    skipped.setdefault(t.name, f"PostgreSQL unreachable at {s.pg_url}: {error}")
    if any(t.store == "mariadb" for t in chosen):
        try:
            [rows] = mysql_execute(s.mysql_url, "SELECT VERSION()")
            out(f"MariaDB: {rows[0][0]} at {s.mysql_url}")
        except Exception as error:
            for t in chosen:
                if t.store == "mariadb":
                    skipped.setdefault(t.name, f"MariaDB unreachable at {s.mysql_url}: {error}")
    return skipped


def run_rounds(
    targets: list[Target], s: Settings, rounds: int, results: dict[str, list[RunResult]]
) -> bool:
    """Every target once per round, the order rotated each round; False if a run failed."""
    ok = True
    for round_index in range(rounds):
        shift = round_index % max(1, len(targets))
        for t in targets[shift:] + targets[:shift]:
            log(f"round {round_index + 1}/{rounds}: {t.name}")
            try:
                for attempt in range(s.retries + 1):
                    result = run_target(t, s)
                    if result.other_cpu <= s.max_other:
                        break
                    log(
                        f"{t.name}: other processes used {result.other_cpu:.0%} of a core"
                        f"{'; again' if attempt < s.retries else ''}"
                    )
            except Exception as error:
                out(f"run failed: round {round_index + 1} {t.name}: {error}")
                ok = False
                continue
            results[t.name].append(result)
            log(
                f"{t.name}: {result.rps:.0f} req/s p50 {result.p50_ms:.2f} ms "
                f"p99 {result.p99_ms:.2f} ms non-200 {result.non_200} "
                f"unexpected {result.unexpected}"
            )
    return ok


def cleanup(s: Settings, selected: list[Target]) -> None:
    tables = (s.table, s.ceiling_table)
    if any(t.store == "postgres" for t in selected):
        with contextlib.suppress(Exception):
            pg_execute(libpq_dsn(s.pg_url), *(f"DROP TABLE IF EXISTS {n}" for n in tables))
    if any(t.store == "mariadb" for t in selected):
        with contextlib.suppress(Exception):
            mysql_execute(s.mysql_url, *(f"DROP TABLE IF EXISTS {n}" for n in tables))
    for name in (SQLITE_FILE, CEILING_SQLITE_FILE):
        remove_sqlite(os.path.join(s.workdir, name))


def main() -> int:
    args = parse_args()
    # Stop cleanly on SIGTERM, SIGHUP and SIGINT (even where SIGINT was inherited ignored).
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _terminate)
    ceiling_versions = check_ceiling_stack(args)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
    workdir = args.out or tempfile.mkdtemp(prefix="rsm-bench-")
    os.makedirs(workdir, exist_ok=True)
    s = Settings(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        sqlite_connections=args.sqlite_connections,
        accounts=args.accounts,
        server_cpu=args.server_cpu if pin else None,
        client_cpu=args.client_cpu if pin else None,
        wrk_threads=args.wrk_threads,
        pg_url=args.pg_url,
        mysql_url=args.mysql_url,
        table=args.table,
        ceiling_table=args.table + "_ceiling",
        pool_size=args.pool_size or plugin_pool_size(),
        workdir=workdir,
        product=args.product,
        ceiling_python=args.ceiling_python,
        quiet_wait=args.quiet_wait,
        max_other=args.max_other,
        retries=args.retries,
    )
    s.accounts_file = os.path.join(workdir, "accounts.json")
    with open(s.accounts_file, "w") as f:
        json.dump([{"account_id": a, "active": True} for a in account_ids(s.accounts)], f)

    product_versions = versions_here(PRODUCT_PACKAGES)
    out("# runtime-snapshot-mount benchmark, as shipped")
    for line in machine():
        out(line)
    out(f"product: {s.product} serve --host 127.0.0.1 --port PORT --store URL")
    out(f"  --api-key {TOKEN} --accounts <{s.accounts} accounts>.json, nothing else (default")
    out("  options: uvicorn's own choices, the access log as the product configures it; the")
    out("  server's output goes to a log file); --workers 2 for postgres-w2, --no-access-log")
    out(f"  for memory-nolog. Server stack there: {server_stack(product_versions)}")
    out(f"  packages: {listed(product_versions)}")
    out(
        f"ceilings: {s.ceiling_python} bench/ceiling_server.py: uvicorn, 1 worker, uvloop, "
        "httptools, no access log"
    )
    out(f"  packages: {listed(ceiling_versions)}")
    for name in ("starlette", "uvicorn"):
        if product_versions.get(name) != ceiling_versions.get(name):
            out(f"  NOTE: {name} differs between the product's and the ceilings' environments")
    out(
        f"pinning: servers on cpu {s.server_cpu} (postgres-w2: not pinned, all cores), "
        f"wrk -t{s.wrk_threads} on cpu {s.client_cpu}; 127.0.0.1 only"
        if pin
        else "pinning: NONE (taskset missing, --no-pin or one core)"
    )
    if any(BY_NAME[n].store in ("postgres", "mariadb") for n in args.selected):
        out(f"database ceilings' pool: {s.pool_size} connections (the plugin's engine's at most)")

    skipped = find_skips(s, args.selected)
    for name, reason in skipped.items():
        out(f"skipped {name}: {reason}")
    targets = [BY_NAME[n] for n in args.selected if n not in skipped]

    results: dict[str, list[RunResult]] = defaultdict(list)
    exit_status = 0
    interrupted = False
    try:
        try:
            if not run_rounds(targets, s, args.rounds, results):
                exit_status = 1
        except (KeyboardInterrupt, SystemExit):
            interrupted = True
            out("interrupted: the figures below come from the runs that finished")

        medians = report(results, s, args.rounds)
        missed = print_ratios(results, medians, skipped, args.selected, s)
        if not args.no_memory and not interrupted:
            log("memory per snapshot")
            try:
                line, ok = memory_per_snapshot(s, args.memory_count)
            except Exception as error:
                out(f"  memory per snapshot failed: {error}")
                exit_status = 1
                missed.append("memory per stored snapshot")
            else:
                out("Memory:")
                out(line)
                if not ok:
                    missed.append("memory per stored snapshot")
        out(f"Goals missed: {', '.join(missed)}" if missed else "Goals missed: none")

        for name in [] if interrupted else args.profiled:
            log(f"profiling {name} under load with py-spy")
            if name in skipped:
                out(f"profile of {name}: skipped ({skipped[name]})")
                continue
            try:
                profile = profile_target(BY_NAME[name], s, args.profile_duration, workdir)
            except Exception as error:
                out(f"profile of {name} failed: {error}")
                exit_status = 1
            else:
                print_profile(profile)
    finally:
        stop_all()
        cleanup(s, [BY_NAME[n] for n in args.selected])

    out()
    out(f"logs and profiles: {workdir}")
    if args.results:
        with open(args.results, "w") as f:
            f.write("```\n" + "\n".join(out.lines) + "\n```\n")
    return 130 if interrupted else exit_status


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
