"""The ``runtime-snapshot-mount`` command: ``serve`` the endpoint, ``show`` a stored snapshot,
``create-tables`` for a store."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, create_app
from .memory import MemoryStoreOpener
from .operations import RequestIdFilter
from .plugins import ConfigurationError, Plugins
from .static import AnyAccount, load_accounts_file
from .version import __version__

__all__ = ["DEFAULT_STORE", "main"]

DEFAULT_STORE = "sqlite:///runtime-snapshots.db"
_CONFIG_VARIABLE = "RUNTIME_SNAPSHOT_MOUNT_SERVE_CONFIG"
_SQLALCHEMY_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

logger = logging.getLogger("runtime_snapshot_mount")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runtime-snapshot-mount",
        description="Serve POST /runtime-snapshots/upsert standalone, or show a stored snapshot.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the endpoint on uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--store", default=DEFAULT_STORE, help=f"store URL; {DEFAULT_STORE} if unset"
    )
    serve.add_argument("--accounts", metavar="FILE", help="JSON array of {account_id, active}")
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted bearer token; repeat for rotation (PHONEFARM_API_KEY adds one more)",
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to send the whole body, else 408; 0: no limit ({DEFAULT_BODY_TIMEOUT:g})",
    )
    serve.add_argument(
        "--openapi", action="store_true", help="also serve the OpenAPI document at /openapi.json"
    )
    show = commands.add_parser("show", help="print an account's stored snapshot as JSON")
    show.add_argument("account_id", metavar="ACCOUNT_ID")
    show.add_argument("--store", default=DEFAULT_STORE, help=f"store URL; {DEFAULT_STORE} if unset")
    create_tables = commands.add_parser(
        "create-tables", help="create the store's table if it is missing, without Alembic"
    )
    create_tables.add_argument(
        "--store", default=DEFAULT_STORE, help=f"store URL; {DEFAULT_STORE} if unset"
    )
    return parser


def _fail(status: int, reason: str) -> int:
    print(f"runtime-snapshot-mount: {reason}", file=sys.stderr)
    return status


async def _open_store(url: str) -> tuple[object, Plugins]:
    """Open the store plugin for ``url``; returns it with a manager that holds only it."""
    opener = Plugins(builtins=[MemoryStoreOpener()], require_store=False)
    store = await opener.store_from_url(url)
    if store is None:
        scheme = url.partition(":")[0].partition("+")[0].lower()
        if scheme in _SQLALCHEMY_SCHEMES:
            raise ConfigurationError(
                f"the store URL {url!r} needs the SQLAlchemy plugin: "
                "pip install 'runtime-snapshot-mount[sqlalchemy]'"
            )
        raise ConfigurationError(f"no installed plugin opens the store URL {url!r}")
    return store, Plugins([store], entry_points=False)


def _serve_config(args: argparse.Namespace) -> dict[str, Any]:
    keys = list(args.api_key)
    if os.environ.get("PHONEFARM_API_KEY"):
        keys.append(os.environ["PHONEFARM_API_KEY"])
    if not keys:
        raise ConfigurationError("no API key: pass --api-key KEY or set PHONEFARM_API_KEY")
    if any(not key.strip() for key in keys):
        raise ConfigurationError("an API key must not be empty")
    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if args.workers > 1 and args.store == "memory://":
        raise ConfigurationError(
            "--workers > 1 needs a shared store: memory:// is not shared between processes"
        )
    if args.max_body_bytes < 1:
        raise ConfigurationError("--max-body-bytes must be at least 1")
    if not args.body_timeout >= 0:  # NaN too
        raise ConfigurationError("--body-timeout must be a number of seconds, or 0 for no limit")
    accounts = None
    if args.accounts is not None:
        load_accounts_file(args.accounts)  # fail now, in the parent, with a one-line reason
        accounts = os.path.abspath(args.accounts)
    return {
        "store": args.store,
        "api_keys": keys,
        "accounts": accounts,
        "max_body_bytes": args.max_body_bytes,
        "body_timeout": args.body_timeout or None,
        "openapi": args.openapi,
    }


class _StandaloneApp:
    """The served ASGI app: opens the store and builds the sub-app at lifespan start-up,
    on the server's own event loop, in each worker process."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.app: ASGIApp | None = None
        self.plugins: Plugins | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.app is not None, "the server did not run the lifespan start-up"
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start()
                except Exception as error:
                    logger.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.plugins is not None:
                    await self.plugins.store_close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        config = self.config
        store, self.plugins = await _open_store(config["store"])
        accounts_file = config["accounts"]
        extra: list[object] = [store]
        if accounts_file is not None:
            extra.append(load_accounts_file(accounts_file))
        else:
            extra.append(AnyAccount())
        self.app = create_app(
            *extra,
            api_keys=config["api_keys"],
            max_body_bytes=config["max_body_bytes"],
            openapi=config.get("openapi", False),
            body_timeout=config.get("body_timeout", DEFAULT_BODY_TIMEOUT),
        )


def standalone_app() -> _StandaloneApp:
    """The uvicorn factory that each worker calls; its settings come from the parent."""
    if not logging.getLogger().handlers and not logger.handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(RequestIdFilter())
    return _StandaloneApp(json.loads(os.environ[_CONFIG_VARIABLE]))


async def _create_tables(url: str) -> None:
    _, plugins = await _open_store(url)
    try:
        await plugins.store_create_tables()
    finally:
        await plugins.store_close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        config = _serve_config(args)
        asyncio.run(_create_tables(config["store"]))
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:
        return _fail(2, f"cannot open the store: {' '.join(str(error).split())[:300]}")
    if config["accounts"] is None:
        print(
            "runtime-snapshot-mount: no --accounts file: every account id is accepted",
            file=sys.stderr,
        )
    os.environ[_CONFIG_VARIABLE] = json.dumps(config)
    uvicorn.run(
        "runtime_snapshot_mount.cli:standalone_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        lifespan="on",
    )
    return 0


async def _show(account_id: str, url: str) -> dict[str, Any] | None:
    _, plugins = await _open_store(url)
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
        asyncio.run(_create_tables(url))
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:
        return _fail(2, f"cannot create the table: {' '.join(str(error).split())[:300]}")
    print("runtime-snapshot-mount: the snapshot table is in place", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "create-tables":
        return _create_tables_command(args.store)
    try:
        found = asyncio.run(_show(args.account_id, args.store))
    except ConfigurationError as error:
        return _fail(2, str(error))
    except Exception as error:
        return _fail(1, f"cannot read the store: {' '.join(str(error).split())[:300]}")
    if found is None:
        return _fail(1, f"no snapshot stored for account {args.account_id!r}")
    print(json.dumps(found, ensure_ascii=False))
    return 0
