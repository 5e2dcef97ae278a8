"""The targets, and their servers: each started as its own process, on a fresh store."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from .common import PATH, ROOT, TOKEN, account_id, libpq, pinned


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
    def path(self) -> str:
        return self.mount + PATH


A, S, PG = "applied", "stale", "/phonefarm"
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
    pool_size: int = 20
    cpus: tuple[int | None, int | None] = (0, 1)  # the servers' core, wrk's core
    accounts: int = 1000
    children: list[Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def accounts_file(self) -> str:
        path = self.workdir / f"accounts-{self.accounts}.json"
        if not path.exists():
            accounts = [{"account_id": account_id(i), "active": True} for i in range(self.accounts)]
            path.write_text(json.dumps(accounts))
        return str(path)


def sync_url(url: str) -> Any:
    """``url`` with a synchronous driver (psycopg, PyMySQL) for the bench's own statements."""
    backend = make_url(url).get_backend_name()
    driver = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite"}
    return make_url(url).set(drivername=driver.get(backend, f"{backend}+pymysql"))


@functools.cache
def admin(url: str) -> Any:
    """One kept autocommit connection: its statements are the only ones it sends."""
    options = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    return create_engine(sync_url(url), pool_size=1, **options)


def sql(url: str, *statements: str) -> list[Any]:
    """Run ``statements``; the first row of the last one's answer, if any."""
    with admin(url).connect() as connection:
        for statement in statements:
            result = connection.execute(text(statement))
        return list(result.first() or []) if result.returns_rows else []


def unreachable(t: Target, s: Settings) -> str:
    """Why ``t``'s database cannot be used, or ''."""
    try:
        sql(db_url(t, s), "SELECT 1") if db_url(t, s) else None
    except Exception as error:
        return f"{db_url(t, s).split('@')[-1]} unreachable: {' '.join(str(error).split())[:120]}"
    return ""


def db_url(t: Target, s: Settings) -> str:
    return {"postgres": s.pg_url, "mariadb": s.mysql_url}.get(t.store, "")


def tables(t: Target, s: Settings) -> list[str]:
    if t.server.endswith("_host"):
        return [f"{s.table}_host_snapshots", f"{s.table}_host_accounts"]
    return [f"{s.table}_ceiling" if t.server == "ceiling" else s.table]


def sqlite_file(t: Target, s: Settings) -> Path:
    return s.workdir / ("ceiling-sqlite.db" if t.server == "ceiling" else "runtime-snapshots.db")


def reset(t: Target, s: Settings) -> None:
    """An empty store. ``serve`` and the hosts create their own tables; a ceiling's is made
    here, as the SQLAlchemy plugin defines it: the product's shape and types."""
    url = db_url(t, s) or f"sqlite:///{sqlite_file(t, s)}"
    if t.store == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            sqlite_file(t, s).with_name(sqlite_file(t, s).name + suffix).unlink(missing_ok=True)
    elif db_url(t, s):
        sql(url, *(f"DROP TABLE IF EXISTS {name}" for name in tables(t, s)))
    if t.server == "ceiling" and t.store != "http":
        engine = create_engine(sync_url(url))
        snapshot_table(MetaData(), tables(t, s)[0]).create(engine)
        engine.dispose()


def drop_all(s: Settings) -> None:
    for url in (s.pg_url, s.mysql_url):
        names = sorted({n for t in TARGETS if db_url(t, s) == url for n in tables(t, s)})
        with contextlib.suppress(Exception):
            sql(url, *(f"DROP TABLE IF EXISTS {name}" for name in names))


def command(t: Target, port: int, s: Settings) -> list[str]:
    """``serve`` with its default options plus only what a run must set; a host under the
    uvicorn command, as a host runs it; a ceiling or the wrk check on the best stack."""
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    if t.server == "serve":
        url = db_url(t, s)
        url = f"{url}{'&' if '?' in url else '?'}table={s.table}" if url else ""
        url = url or ("memory://" if t.store == "memory" else f"sqlite:///{sqlite_file(t, s)}")
        store = ["--store", url, "--api-key", TOKEN, "--accounts", s.accounts_file]
        product = Path(sys.executable).parent / "runtime-snapshot-mount"  # the README's set-up
        return [str(product), "serve", *listen, *store, *t.options]
    if t.server.endswith("_host"):
        app = ["--factory", f"bench.apps:{t.server}", "--app-dir", str(ROOT)]
        return [sys.executable, "-m", "uvicorn", *app, *listen, "--no-access-log"]
    db = {"sqlite": str(sqlite_file(t, s)), "postgres": libpq(s.pg_url)}.get(t.store, s.mysql_url)
    return [sys.executable, "-m", "bench.apps", t.store or t.server, str(port), db, tables(t, s)[0]]


def start(cmd: list[str], log: Path, s: Settings, **options: Any) -> Popen[bytes]:
    """A child in its own session (stopped with its children), its output to ``log``."""
    with log.open("wb") as out:
        options |= {"stdout": out, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
        child = subprocess.Popen(cmd, start_new_session=True, **options)
    s.children.append(child)
    return child


def stop(child: Popen[bytes], s: Settings, grace: float = 15.0) -> None:
    """SIGTERM (a graceful shutdown closes the store), then SIGKILL its process group."""
    child.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait(5)
    s.children.remove(child)


@contextlib.contextmanager
def server(t: Target, s: Settings, fresh: bool = True) -> Iterator[tuple[Popen[bytes], int]]:
    """A server for ``t`` (on an empty store if ``fresh``), listening: yields it and its port.
    Its environment drops what would set ``serve``'s options and adds a host's settings."""
    if fresh:
        reset(t, s)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port, log = probe.getsockname()[1], s.workdir / f"server-{t.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSM_", "PHONEFARM_"))}
    env |= {"RSM_BENCH_ACCOUNTS": str(s.accounts), "RSM_BENCH_POOL_SIZE": str(s.pool_size)}
    env |= {"RSM_BENCH_DATABASE_URL": s.pg_url, "RSM_BENCH_TABLE": f"{s.table}_host"}
    cmd = pinned(None if "--workers" in t.options else s.cpus[0], command(t, port, s))
    cwd = s.workdir if t.server == "serve" else ROOT  # python -m bench.apps: from ROOT
    child = start(cmd, log, s, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        else:
            lines = log.read_text(errors="replace").splitlines()[-12:]
            raise RuntimeError(f"server not listening ({child.poll()}): {' | '.join(lines)}")
        yield child, port
    finally:
        stop(child, s)
