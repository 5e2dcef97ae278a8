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

from . import logging_setup
from .app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES
from .operations import LOGGER_NAME
from .plugins import ConfigurationError
from .standalone import (
    DEFAULT_STORE,
    Settings,
    create_tables,
    is_process_local,
    open_store,
    sqlite_file,
)
from .static import load_accounts_file
from .version import __version__

__all__ = ["DEFAULT_STORE", "main"]

FACTORY = "runtime_snapshot_mount.standalone:create_app_from_env"
_SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_KEEP_ALIVE = 5
_MAX_CONNECTIONS = 1000
logger = logging.getLogger(LOGGER_NAME)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not at least 1")
    return number


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is not 0 or a positive number of seconds")
    return seconds


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="runtime-snapshot-mount",
        description="Serve POST /runtime-snapshots/upsert standalone, show a stored snapshot, "
        "or create a store's table.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="serve the endpoint on uvicorn",
        description="Serve the endpoint on uvicorn. Options left out take the environment "
        "variable named in their help (as the ASGI factory "
        f"{FACTORY} does), else the default shown.",
        formatter_class=formatter,
    )
    unset = argparse.SUPPRESS  # taken from the environment, else the settings' default
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (0-65535)")
    serve.add_argument(
        "--store", default=unset, help=f"store URL [RSM_STORE; default {DEFAULT_STORE}]"
    )
    serve.add_argument(
        "--accounts",
        default=unset,
        metavar="FILE",
        help="JSON array of {account_id, active} [RSM_ACCOUNTS; default: every account id]",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=unset,
        metavar="KEY",
        help="accepted bearer token; repeat for rotation; adds to RSM_API_KEYS "
        "(comma-separated) and PHONEFARM_API_KEY",
    )
    serve.add_argument(
        "--workers", type=_positive, default=1, help="worker processes (a shared store for > 1)"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=unset,
        metavar="N",
        help=f"largest accepted body, else 413 [RSM_MAX_BODY_BYTES; default "
        f"{DEFAULT_MAX_BODY_BYTES}]",
    )
    serve.add_argument(
        "--body-timeout",
        type=_seconds,
        default=unset,
        metavar="SECONDS",
        help=f"seconds to send the whole body, else 408; 0: no limit [RSM_BODY_TIMEOUT; "
        f"default {DEFAULT_BODY_TIMEOUT:g}]",
    )
    serve.add_argument(
        "--openapi",
        action="store_true",
        default=unset,
        help="also serve the OpenAPI document at /openapi.json [RSM_OPENAPI; default off]",
    )
    serve.add_argument(
        "--read",
        action="store_true",
        default=unset,
        help="also serve GET /runtime-snapshots/{account_id}, the stored snapshot "
        "[RSM_READ; default off]",
    )
    serve.add_argument(
        "--metrics",
        action="store_true",
        default=unset,
        help="also serve Prometheus metrics at /metrics, summed over every worker "
        "(extra [prometheus]) [RSM_METRICS; default off]",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        default=unset,
        help="write no access line per request [RSM_ACCESS_LOG; default: one line each]",
    )
    serve.add_argument(
        "--log-level",
        choices=logging_setup.LOG_LEVELS,
        type=str.lower,
        default=unset,
        help="least level logged [RSM_LOG_LEVEL; default info]",
    )
    serve.add_argument(
        "--log-format",
        choices=logging_setup.LOG_FORMATS,
        default=unset,
        help="text lines, or one JSON object per line [RSM_LOG_FORMAT; default text]",
    )
    serve.add_argument(
        "--retry-deadline",
        type=float,
        metavar="SECONDS",
        help="how long a request retries a database that is away (restarting, refusing "
        "connections) before it answers 500; SQLAlchemy stores on a server; adds "
        "?retry_deadline= to the store URL (default 2)",
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        metavar="N",
        help="connections (and requests) per worker before new requests get 503; bounds what "
        "clients that never finish their headers can hold (default: 1000, at most half the "
        "open-file limit)",
    )
    serve.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=_KEEP_ALIVE,
        metavar="SECONDS",
        help="close an idle keep-alive connection after this long",
    )
    serve.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="the path prefix a reverse proxy serves the app under (and strips)",
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address and scheme from X-Forwarded-* headers "
        "of the --forwarded-allow-ips",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated addresses (or *) whose X-Forwarded-* headers are trusted",
    )
    show = commands.add_parser(
        "show",
        help="print an account's stored snapshot as JSON",
        description="Print an account's stored snapshot as one JSON object. Exit status 1: "
        "nothing stored for the account; 2: the store, its database or its table is missing.",
        formatter_class=formatter,
    )
    show.add_argument("account_id", metavar="ACCOUNT_ID")
    show.add_argument(
        "--store", default=unset, help=f"store URL [RSM_STORE; default {DEFAULT_STORE}]"
    )
    create = commands.add_parser(
        "create-tables",
        help="create the store's table if it is missing, without Alembic",
        description="Create the store's table if it is missing (nothing else), then exit 0; "
        "exit 2 with one line when the store cannot be opened or reached.",
        formatter_class=formatter,
    )
    create.add_argument(
        "--store", default=unset, help=f"store URL [RSM_STORE; default {DEFAULT_STORE}]"
    )
    return parser


def _store_url(args: argparse.Namespace) -> str:
    """``--store``, else ``RSM_STORE``, else the default store."""
    given: str | None = getattr(args, "store", None)
    return given or os.environ.get("RSM_STORE", "").strip() or DEFAULT_STORE


def _fail(status: int, reason: str) -> int:
    print(f"runtime-snapshot-mount: {reason}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


_OPTIONS = ["store", "accounts", "max_body_bytes", "body_timeout", "openapi", "read", "metrics"]
_OPTIONS += ["access_log", "log_level", "log_format"]


def _serve_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, overridden by the options given."""
    given: dict[str, Any] = {name: getattr(args, name) for name in _OPTIONS if name in args}
    if given.get("body_timeout") == 0:
        given["body_timeout"] = None
    if given.get("accounts") is not None:
        given["accounts"] = os.path.abspath(given["accounts"])
    settings = Settings.from_environ(os.environ, api_keys=getattr(args, "api_key", ()))
    settings = dataclasses.replace(settings, **given)
    if args.retry_deadline is not None:
        if not args.retry_deadline > 0:  # NaN too
            raise ConfigurationError("--retry-deadline must be a positive number of seconds")
        store = settings.store
        if store.partition(":")[0].partition("+")[0].lower() not in _SQLALCHEMY_SCHEMES:
            raise ConfigurationError("--retry-deadline applies to SQLAlchemy store URLs only")
        separator = "&" if "?" in store else "?"
        store = f"{store}{separator}retry_deadline={args.retry_deadline:g}"
        settings = dataclasses.replace(settings, store=store)
    if args.limit_concurrency is not None and args.limit_concurrency < 1:
        raise ConfigurationError("--limit-concurrency must be at least 1")
    if args.timeout_keep_alive < 1:
        raise ConfigurationError("--timeout-keep-alive must be at least 1 second")
    return settings


def _exit_gracefully(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM or SIGINT once uvicorn has drained and shut down (it raises the signal again
    for whoever handled it before), or before it started: a clean stop, exit status 0."""
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_gracefully)
    try:
        settings = _serve_settings(args)
        local = is_process_local(settings.store)
        if args.workers > 1 and local:
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
        host=args.host,
        port=args.port,
        workers=args.workers,
        lifespan="on",
        loop="auto",
        http="auto",
        access_log=False,  # the app writes its own access line (RSM_ACCESS_LOG)
        log_level=settings.log_level,
        log_config=logging_setup.log_config(
            settings.log_level, settings.log_format, settings.access_log
        ),
        root_path=args.root_path,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        limit_concurrency=args.limit_concurrency or _default_connection_limit(),
        timeout_keep_alive=args.timeout_keep_alive,
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
