"""What every part of the bench agrees on: the path, the token, the accounts, the bodies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from runtime_snapshot_mount import UPSERT_PATH

ROOT = Path(__file__).resolve().parent.parent  # the repository: ``python -m bench`` runs here
BENCH = ROOT / "bench"
PATH = "/" + UPSERT_PATH.lstrip("/")
TOKEN = "bench-token"
SEED_VERSION = 2**62  # the stale load's stored versions: above every version a load sends
EXAMPLE = json.loads((ROOT / "examples" / "example-request.json").read_text())


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


def snapshot_columns() -> tuple[str, ...]:
    """The snapshot table's columns, in order, as the SQLAlchemy plugin defines them."""
    from runtime_snapshot_mount_sqlalchemy import snapshot_table
    from sqlalchemy import MetaData

    return tuple(column.name for column in snapshot_table(MetaData()).columns)


def libpq(url: str) -> str:
    """A ``postgresql+asyncpg://`` URL as asyncpg itself takes it."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """``command`` bound to core ``cpu`` with taskset (None: not bound)."""
    if cpu is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", str(cpu), *command]
