"""The targets, and their servers: each started as its own process, on a fresh store."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import PATH, ROOT, TOKEN, account_id


@dataclass(frozen=True)
class Target:
    """One thing to measure: a server, the load it gets, and what it is compared with."""

    name: str
    server: str  # "serve", "ceiling", "async_host", "sync_host", "trivial"
    store: str  # "memory", "sqlite", "postgres", "mariadb", "http", ""
    load: str = "applied"  # or "stale": every account stored first at a higher version
    ceiling: str = ""  # the target whose req/s this one's is divided by
    goal: float | None = None  # the least product / ceiling ratio wanted
    connections: int = 0  # 0: --connections
    options: tuple[str, ...] = ()  # serve's options beyond the bench's own
    mount: str = ""  # where a host serves the path: "/phonefarm" or "/ceiling"

    @property
    def pinned(self) -> bool:
        return "--workers" not in self.options


A, S = "applied", "stale"
PG = "/phonefarm"
# Each product sits next to its ceiling; the order is reversed every other round, so that
# product and ceiling runs alternate.
TARGETS = [
    Target("ceiling-http", "ceiling", "http"),
    Target("memory", "serve", "memory", A, "ceiling-http", 0.92),
    Target("memory-stale", "serve", "memory", S, "ceiling-http", 0.92),
    Target("memory-nolog", "serve", "memory", A, "ceiling-http", 1.0, options=("--no-access-log",)),
    Target("ceiling-sqlite", "ceiling", "sqlite"),
    Target("ceiling-sqlite-stale", "ceiling", "sqlite", S),
    Target("sqlite", "serve", "sqlite", A, "ceiling-sqlite", 3.0),
    Target("sqlite-stale", "serve", "sqlite", S, "ceiling-sqlite-stale"),
    Target("sqlite@64", "serve", "sqlite", connections=64),
    Target("ceiling-pg", "ceiling", "postgres"),
    Target("ceiling-pg-stale", "ceiling", "postgres", S),
    Target("postgres", "serve", "postgres", A, "ceiling-pg", 0.92),
    Target("postgres-stale", "serve", "postgres", S, "ceiling-pg-stale", 0.90),
    Target("postgres-w2", "serve", "postgres", A, "ceiling-pg", options=("--workers", "2")),
    Target("ceiling-mariadb", "ceiling", "mariadb"),
    Target("ceiling-mariadb-stale", "ceiling", "mariadb", S),
    Target("mariadb", "serve", "mariadb", A, "ceiling-mariadb", 0.80),
    Target("mariadb-stale", "serve", "mariadb", S, "ceiling-mariadb-stale", 0.80),
    Target("host-ceiling", "async_host", "postgres", A, mount="/ceiling"),
    Target("host-ceiling-stale", "async_host", "postgres", S, mount="/ceiling"),
    Target("host-async", "async_host", "postgres", A, "host-ceiling", 0.85, mount=PG),
    Target("host-async-stale", "async_host", "postgres", S, "host-ceiling-stale", 0.85, mount=PG),
    Target("host-sync", "sync_host", "postgres", A, "host-ceiling", mount=PG),
    Target("wrk-check", "trivial", ""),
]
BY_NAME = {t.name: t for t in TARGETS}


@dataclass
class Settings:
    """What every run shares: the databases, the tables, the output folder, the cores."""

    pg_url: str
    mysql_url: str
    table: str
    workdir: Path
    accounts: int = 1000
    pool_size: int = 20
    server_cpu: int | None = 0
    client_cpu: int | None = 1
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def accounts_file(self) -> Path:
        path = self.workdir / "accounts.json"
        if not path.exists():
            accounts = [{"account_id": account_id(i), "active": True} for i in range(self.accounts)]
            path.write_text(json.dumps(accounts))
        return path


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return (
        command
        if cpu is None or not shutil.which("taskset")
        else ["taskset", "-c", str(cpu), *command]
    )


def product() -> str:
    """The ``runtime-snapshot-mount`` command next to this Python: the README's set-up."""
    command = Path(sys.executable).parent / "runtime-snapshot-mount"
    if not os.access(command, os.X_OK):
        raise SystemExit(f"{command} not found: run the bench with the product's .venv/bin/python")
    return str(command)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---------------------------------------------------------------- databases


@functools.cache
def admin(url: str) -> Any:
    """A synchronous engine for the bench's own statements on ``url``'s server (psycopg or
    PyMySQL, autocommit, one kept connection, nothing sent when it goes back)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    driver = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite"}
    name = driver.get(parsed.get_backend_name(), f"{parsed.get_backend_name()}+pymysql")
    return create_engine(
        parsed.set(drivername=name),
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        pool_reset_on_return=None,
    )


def sql(url: str, *statements: str) -> list[Any]:
    """Run ``statements``; the first row of the last one's answer, if any."""
    from sqlalchemy import text

    with admin(url).connect() as connection:
        for statement in statements:
            result = connection.execute(text(statement))
        return list(result.first() or []) if result.returns_rows else []


def create_snapshot_table(url: str, name: str) -> None:
    """The table exactly as the SQLAlchemy plugin defines it, so a ceiling writes the same
    shape and column types as the product."""
    from runtime_snapshot_mount_sqlalchemy import snapshot_table
    from sqlalchemy import MetaData

    snapshot_table(MetaData(), name).create(admin(url))


def db_url(t: Target, s: Settings) -> str:
    return {"postgres": s.pg_url, "mariadb": s.mysql_url}.get(t.store, "")


def tables(t: Target, s: Settings) -> list[str]:
    if t.server.endswith("_host"):
        return [f"{s.table}_host_snapshots", f"{s.table}_host_accounts"]
    return [f"{s.table}_ceiling" if t.server == "ceiling" else s.table]


def sqlite_file(t: Target, s: Settings) -> Path:
    return s.workdir / ("ceiling-sqlite.db" if t.server == "ceiling" else "runtime-snapshots.db")


def reset(t: Target, s: Settings) -> None:
    """Every run starts on an empty store. ``serve`` and the hosts create their own tables;
    a ceiling's is created here."""
    if t.store == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            sqlite_file(t, s).with_name(sqlite_file(t, s).name + suffix).unlink(missing_ok=True)
        if t.server == "ceiling":
            create_snapshot_table(f"sqlite:///{sqlite_file(t, s)}", tables(t, s)[0])
    elif db_url(t, s):
        sql(db_url(t, s), *(f"DROP TABLE IF EXISTS {name}" for name in tables(t, s)))
        if t.server == "ceiling":
            create_snapshot_table(db_url(t, s), tables(t, s)[0])


def drop_all(s: Settings) -> None:
    for url in (s.pg_url, s.mysql_url):
        names = {name for t in TARGETS if db_url(t, s) == url for name in tables(t, s)}
        with contextlib.suppress(Exception):
            sql(url, *(f"DROP TABLE IF EXISTS {name}" for name in sorted(names)))


# ---------------------------------------------------------------- processes


def store_url(t: Target, s: Settings) -> str:
    if t.store == "memory":
        return "memory://"
    if t.store == "sqlite":
        return f"sqlite:///{sqlite_file(t, s)}"
    url = db_url(t, s)
    return f"{url}{'&' if '?' in url else '?'}table={s.table}"


def command(t: Target, port: int, s: Settings) -> list[str]:
    """``serve`` with its default options plus only what a run must set; a ceiling or the
    wrk check on the best stack; a host under the uvicorn command, as a host runs it."""
    if t.server == "serve":
        return [product(), "serve", "--host", "127.0.0.1", "--port", str(port),
                "--store", store_url(t, s), "--api-key", TOKEN,
                "--accounts", str(s.accounts_file), *t.options]  # fmt: skip
    python = [sys.executable, "-m"]
    if t.server.endswith("_host"):
        return [*python, "uvicorn", "--factory", f"bench.apps:{t.server}", "--app-dir", str(ROOT),
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    where = {"sqlite": str(sqlite_file(t, s)), "postgres": dsn(s.pg_url)}
    serves = t.store or t.server
    return [*python, "bench.apps", serves, "--port", str(port), "--table", tables(t, s)[0],
            "--db", where.get(t.store, s.mysql_url), "--pool-size", str(s.pool_size)]  # fmt: skip


def dsn(url: str) -> str:
    """postgresql+asyncpg://... as asyncpg itself takes it."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def environment(t: Target, s: Settings) -> dict[str, str]:
    """This environment less anything that would configure ``serve`` beyond its defaults,
    plus a host's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSM_", "PHONEFARM_"))}
    if t.server.endswith("_host"):
        env |= {"RSM_BENCH_DATABASE_URL": s.pg_url, "RSM_BENCH_TABLE": f"{s.table}_host"}
        env |= {"RSM_BENCH_ACCOUNTS": str(s.accounts), "RSM_BENCH_POOL_SIZE": str(s.pool_size)}
    return env


def start(cmd: list[str], log: Path, s: Settings, **options: Any) -> subprocess.Popen[bytes]:
    """A child in its own session (stopped with its children), its output to ``log``."""
    with log.open("wb") as output:
        child = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, **options)  # fmt: skip
    s.children.append(child)
    return child


def stop(child: subprocess.Popen[bytes], s: Settings, grace: float = 15.0) -> None:
    """SIGTERM (a graceful shutdown closes the store), then SIGKILL its process group."""
    if child.poll() is None:
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)
    if child in s.children:
        s.children.remove(child)


def tail(log: Path, lines: int = 12) -> str:
    return " | ".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def wait_listening(child: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"server exited with {child.returncode}: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not listening after {timeout:g} s: {tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def server(t: Target, s: Settings) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A fresh server for ``t``, listening: yields it, its port and its log."""
    reset(t, s)
    port = free_port()
    log = s.workdir / f"server-{t.name}.log"
    cwd = s.workdir if t.server == "serve" else ROOT
    cmd = pinned(s.server_cpu if t.pinned else None, command(t, port, s))
    child = start(cmd, log, s, env=environment(t, s), cwd=cwd)
    try:
        wait_listening(child, port, log, timeout=60)
        yield child, port, log
    finally:
        stop(child, s)


def url_path(t: Target) -> str:
    return t.mount + PATH
