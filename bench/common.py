"""What every part of the bench shares: the path, the token, the accounts, the bodies, the
options, and a small keep-alive HTTP/1.1 client (readiness, seeding, the soak)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from runtime_snapshot_mount import UPSERT_PATH

ROOT = Path(__file__).resolve().parent.parent  # the repository: ``python -m bench`` runs here
BENCH = ROOT / "bench"
PATH = "/" + UPSERT_PATH.lstrip("/")
TOKEN = "bench-token"
SEED_VERSION = 2**62  # the stale load's stored versions: above every version a load sends
EXAMPLE = json.loads((ROOT / "examples" / "example-request.json").read_text())
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SNAPSHOT_COLUMNS = tuple(column.name for column in snapshot_table(MetaData()).columns)


def parser(prog: str, doc: str, options: list[tuple[str, Any, str]]) -> argparse.ArgumentParser:
    """A parser with ``--pg-url`` and ``options``; the database URLs' defaults can come from
    the environment."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    env = {"--pg-url": "RSM_BENCH_POSTGRES_URL", "--mysql-url": "RSM_BENCH_MYSQL_URL"}
    pg_url = ("--pg-url", PG_URL, "or RSM_BENCH_POSTGRES_URL")
    for option, default, text in [pg_url, *options]:
        default = os.environ.get(env.get(option, ""), default)
        parser.add_argument(
            option, type=type(default), default=default, help=f"{text} [%(default)s]"
        )
    return parser


def account_id(index: int) -> str:
    """The bench's accounts, as ``bench/upsert.lua`` names them."""
    return f"account_user{index:09d}"


def body(account: str, version: int, **changes: Any) -> bytes:
    """The API page's example request for ``account`` at ``version``."""
    data = {**EXAMPLE, "account_id": account, "strategy_version": version, **changes}
    return json.dumps(data).encode()


def answer(request: dict[str, Any], applied: bool) -> dict[str, Any]:
    """The success body for an applied or an ignored request (the incoming values)."""
    keys = ["account_id", "snapshot_id", "strategy_version"]
    keys += ["strategy_synced_at"] if applied else []
    return {"status": "upserted" if applied else "ignored_stale"} | {k: request[k] for k in keys}


def libpq(url: str) -> str:
    """A ``postgresql+asyncpg://`` URL as asyncpg itself takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """``command`` bound to core ``cpu`` with taskset (None: not bound)."""
    if cpu is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", str(cpu), *command]


class Client:
    """One keep-alive HTTP/1.1 connection that POSTs upserts: small enough that one Python
    process drives several servers."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, data: bytes) -> tuple[int, dict[str, Any]]:
        """Send one upsert; its status and JSON answer. Raises on a transport failure."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(self.head + b"%d\r\n\r\n" % len(data) + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        content = await reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").strip() == "close":
            self.close()
        return int(lines[0].split()[1]), json.loads(content or b"{}")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
        self.streams = None


async def send(port: int, path: str, versions: dict[str, int], expect: str = "") -> None:
    """Upsert each account at its version over 8 connections: each answer must be 200, with
    the status ``expect`` if one is given."""
    items = list(versions.items())

    async def part(first: int) -> None:
        client = Client(port, path)
        try:
            for account, version in items[first::8]:
                status, answer = await client.post(body(account, version))
                if status != 200 or expect not in ("", answer.get("status")):
                    raise RuntimeError(f"upserting {account} answered {status}: {answer}")
        finally:
            client.close()

    await asyncio.wait_for(asyncio.gather(*map(part, range(8))), 300)
