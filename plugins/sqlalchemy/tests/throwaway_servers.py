"""Throwaway database servers that a test may stop, crash and restart.

The shared servers named by ``RSM_TEST_POSTGRES_URL`` / ``RSM_TEST_MYSQL_URL`` are never
touched: each server here is made from nothing (``initdb`` or ``mariadb-install-db``) in a
fresh temporary directory, listens on a free loopback port and a socket in that directory,
and is removed at the end. Where the binaries are missing, :func:`unavailable` skips the test
(or fails it under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from support_sqlalchemy import free_port, unavailable

_POSTGRES_BINARIES = "/usr/lib/postgresql/*/bin"
_MARIADB_SERVERS = ("mariadbd", "mysqld")
_MARIADB_INSTALLERS = ("mariadb-install-db", "mysql_install_db")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _as_user() -> dict[str, str]:
    """``subprocess`` keywords that run a server as an unprivileged OS user when we are root
    (``initdb`` and ``postgres`` refuse to run as root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own in a temporary directory."""

    def __init__(self, binaries: Path, directory: Path) -> None:
        self.binaries = binaries
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.log = directory / "server.log"

    @property
    def url(self) -> str:
        """The ``postgresql+asyncpg`` URL of its ``postgres`` database (trust auth)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        subprocess.run(
            command, check=True, capture_output=True, timeout=120, cwd=self.directory, **_as_user()
        )

    def init(self) -> None:
        """``initdb`` an empty cluster with trust authentication."""
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )

    def start(self) -> None:
        """``pg_ctl start`` on 127.0.0.1 and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c max_connections=100 -c shared_buffers=16MB"
        )
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE`` (``fast``: roll back and close sessions; ``immediate``:
        a crash, recovered from the log at the next start)."""
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop in ``mode``, stay down ``down_for`` seconds, start again."""
        self.stop(mode)
        time.sleep(down_for)
        self.start()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started throwaway PostgreSQL; stopped and removed afterwards."""
    found = sorted(glob.glob(_POSTGRES_BINARIES))
    binaries = [Path(path) for path in found if (Path(path) / "initdb").exists()]
    if not binaries:
        unavailable(f"no PostgreSQL server binaries in {_POSTGRES_BINARIES} (initdb, pg_ctl)")
    directory = Path(tempfile.mkdtemp(prefix="rsm-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    server = ThrowawayPostgres(binaries[-1], directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None
        )
        if found:
            return found
    return None


class ThrowawayMariaDB:
    """A MariaDB (or MySQL) server of its own in a temporary directory, without grant
    tables (any user may connect from loopback, without a password)."""

    def __init__(self, server: str, installer: str, directory: Path) -> None:
        self.server = server
        self.installer = installer
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``mysql+asyncmy`` URL of its ``test`` database."""
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/test"

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def init(self) -> None:
        """``mariadb-install-db`` the system tables, and a ``test`` database."""
        subprocess.run(
            [
                self.installer,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
            cwd=self.directory,
        )
        (self.data / "test").mkdir()

    def start(self) -> None:
        """Run ``mariadbd`` on 127.0.0.1 and wait until it listens."""
        command = [
            self.server,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.directory / 'server.sock'}",
            f"--pid-file={self.directory / 'server.pid'}",
            f"--log-error={self.directory / 'server.log'}",
            "--skip-grant-tables",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--max-connections=200",
            *self._user(),
        ]
        with open(self.directory / "stderr.log", "ab") as output:
            self.process = subprocess.Popen(
                command, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        _wait_for_port(self.port, 60)

    def stop(self, crash: bool = False) -> None:
        """SIGTERM (a clean shutdown) or, with ``crash``, SIGKILL; wait for the exit."""
        process = self.process
        if process is None:
            return
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        process.wait(timeout=120)
        self.process = None

    def restart(self, crash: bool = False, down_for: float = 0.0) -> None:
        """Stop (or crash), stay down ``down_for`` seconds, start again."""
        self.stop(crash)
        time.sleep(down_for)
        self.start()


@contextlib.contextmanager
def throwaway_mariadb() -> Iterator[ThrowawayMariaDB]:
    """A started throwaway MariaDB; killed and removed afterwards."""
    server, installer = _find(_MARIADB_SERVERS), _find(_MARIADB_INSTALLERS)
    if server is None or installer is None:
        unavailable("no MariaDB/MySQL server binaries (mariadbd, mariadb-install-db)")
    assert server is not None and installer is not None
    directory = Path(tempfile.mkdtemp(prefix="rsm-mariadb-"))
    database = ThrowawayMariaDB(server, installer, directory)
    try:
        database.init()
        database.start()
        yield database
    finally:
        with contextlib.suppress(Exception):
            database.stop(crash=True)
        shutil.rmtree(directory, ignore_errors=True)
