"""The ``runtime-snapshot-mount`` command: ``serve`` the endpoint, ``show`` a stored snapshot,
``create-tables`` for a store.

``serve`` is a thin layer over :func:`runtime_snapshot_mount.standalone.create_app_from_env`:
it reads the same environment variables, lets its options override them, creates the table
once in this (the parent) process, and hands the settings to uvicorn's workers as those
variables.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

from ..extend.plugins import ConfigurationError
from ..extend.static import load_accounts_file
from ..request.operations import LOGGER_NAME
from ..version import __version__
from . import logging_setup
from .settings import (
    DEFAULT_STORE,
    ServeOptions,
    Settings,
    add_arguments,
    from_arguments,
    store_from_arguments,
)
from .standalone import (
    create_tables,
    is_process_local,
    is_sqlalchemy_url,
    open_store,
    sqlite_file,
)

__all__ = ["DEFAULT_STORE", "main"]

FACTORY = "runtime_snapshot_mount.standalone:create_app_from_env"
_MAX_CONNECTIONS = 1000
logger = logging.getLogger(LOGGER_NAME)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runtime-snapshot-mount",
        description="Serve POST /runtime-snapshots/upsert standalone, show a stored snapshot, "
        "or create a store's table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="serve the endpoint on uvicorn",
        description="Serve the endpoint on uvicorn. Options left out take the environment "
        "variable named in their help (as the ASGI factory "
        f"{FACTORY} does), else the default shown.",
    )
    show = commands.add_parser(
        "show",
        help="print an account's stored snapshot as JSON",
        description="Print an account's stored snapshot as one JSON object. Exit status 1: "
        "nothing stored for the account; 2: the store, its database or its table is missing.",
    )
    show.add_argument("account_id", metavar="ACCOUNT_ID")
    create = commands.add_parser(
        "create-tables",
        help="create the store's table if it is missing, without Alembic",
        description="Create the store's table if it is missing (nothing else), then exit 0; "
        "exit 2 with one line when the store cannot be opened or reached.",
    )
    for command, subparser in (("serve", serve), ("show", show), ("create-tables", create)):
        add_arguments(subparser, command)
    return parser


def _store_url(args: argparse.Namespace) -> str:
    """``--store``, else ``RSM_STORE``, else the default store (no API key needed)."""
    return store_from_arguments(args, os.environ)


def _fail(status: int, reason: str) -> int:
    print(f"runtime-snapshot-mount: {reason}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _serve_settings(args: argparse.Namespace) -> tuple[Settings, ServeOptions]:
    """The environment's settings, overridden by the options given, and serve's own."""
    given, serving = from_arguments(args, os.environ)
    if serving.retry_deadline is not None:
        store = given.store
        if not is_sqlalchemy_url(store):
            raise ConfigurationError("--retry-deadline applies to SQLAlchemy store URLs only")
        separator = "&" if "?" in store else "?"
        store = f"{store}{separator}retry_deadline={serving.retry_deadline:g}"
        given = dataclasses.replace(given, store=store)
    return given, serving


def _exit_gracefully(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM or SIGINT once uvicorn has drained and shut down (it raises the signal again
    for whoever handled it before), or before it started: a clean stop, exit status 0."""
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_gracefully)
    try:
        settings, serving = _serve_settings(args)
        local = is_process_local(settings.store)
        if serving.workers > 1 and local:
            raise ConfigurationError(
                f"--workers > 1 needs a shared store: {settings.store} lives in one process"
            )
        if settings.accounts is not None:
            load_accounts_file(settings.accounts)  # fail now, with a one-line reason
        if not local:  # once, here, before any worker starts: workers never race for it
            asyncio.run(create_tables(settings.store))
        if settings.metrics:
            _prepare_metrics()
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:
        return _fail(2, f"cannot open the store: {_one_line(error)}")
    logging_setup.configure(
        level=settings.log_level, log_format=settings.log_format, access_log=settings.access_log
    )
    if settings.accounts is None:
        logger.warning("no --accounts file: every account id is accepted")
    # an in-memory database exists only in the serving process: its table is made there
    os.environ.update(dataclasses.replace(settings, create_tables=local).to_environ())
    uvicorn.run(
        FACTORY,
        factory=True,
        host=serving.host,
        port=serving.port,
        workers=serving.workers,
        lifespan="on",
        loop="auto",
        http="auto",
        access_log=False,  # the app writes its own access line (RSM_ACCESS_LOG)
        log_level=settings.log_level,
        log_config=logging_setup.log_config(
            settings.log_level, settings.log_format, settings.access_log
        ),
        root_path=serving.root_path,
        proxy_headers=serving.proxy_headers,
        forwarded_allow_ips=serving.forwarded_allow_ips,
        limit_concurrency=serving.limit_concurrency or _default_connection_limit(),
        timeout_keep_alive=serving.timeout_keep_alive,
    )
    return 0


def _prepare_metrics() -> None:
    """Check that prometheus_client is installed, and give the workers an empty directory for
    its multiprocess mode (unless ``PROMETHEUS_MULTIPROC_DIR`` names one), removed at exit.

    prometheus_client picks its mode when first imported, so this sets the variable without
    importing it: a single worker runs in this process, and imports it afterwards.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigurationError(
            "--metrics needs prometheus_client: pip install 'runtime-snapshot-mount[prometheus]'"
        )
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = tempfile.mkdtemp(prefix="rsm-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def _default_connection_limit() -> int:
    """1000 connections per worker, or half the open-file limit if that is lower, so that
    stalled clients run into 503 answers before the process runs out of file descriptors."""
    try:
        import resource
    except ImportError:  # not on Unix
        return _MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(1, min(_MAX_CONNECTIONS, soft // 2))


async def _show(account_id: str, url: str) -> dict[str, Any] | None:
    _, plugins = await open_store(url)
    try:
        snapshot = await plugins.store_get(account_id)
    finally:
        await plugins.store_close()
    return None if snapshot is None else snapshot.to_json()


def _create_tables_command(url: str) -> int:
    """``create-tables``: create the store's table if it is missing (nothing else), then exit
    0; exit 2 with one line when the store cannot be opened or reached."""
    if url == "memory://":
        return _fail(2, "memory:// keeps no tables: pass a SQLAlchemy URL as --store")
    try:
        asyncio.run(create_tables(url))
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:
        return _fail(2, f"cannot create the table: {_one_line(error)}")
    print("runtime-snapshot-mount: the snapshot table is in place", file=sys.stderr)
    return 0


def _show_command(args: argparse.Namespace) -> int:
    url = _store_url(args)
    database = sqlite_file(url)
    if database is not None and not database.is_file():
        return _fail(2, f"no database file {str(database)!r} (from the store URL {url!r})")
    try:
        found = asyncio.run(_show(args.account_id, url))
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:  # a missing table, an unreachable server, ...
        return _fail(2, f"cannot read the store: {_one_line(error)}")
    if found is None:
        return _fail(1, f"no snapshot stored for account {args.account_id!r}")
    print(json.dumps(found, ensure_ascii=False))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "create-tables":
        return _create_tables_command(_store_url(args))
    return _show_command(args)
