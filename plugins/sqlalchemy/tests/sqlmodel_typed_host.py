"""A SQLModel host's documented calls, as a host writes them: ``mypy --strict`` must pass on this
file (``test_typing.py``), and ``build_app`` serves (``test_sqlalchemy_account_keys.py``).

SQLModel types its class attributes by their Python values (``User.id`` is a ``uuid.UUID``,
``User.is_active`` a ``bool``, ``User.team == "red"`` a ``bool``), so the options take them.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore, snapshot_table
from sqlalchemy import Engine
from sqlmodel import Field, SQLModel

from runtime_snapshot_mount import create_app


class User(SQLModel, table=True):
    """The host's account model: a UUID key, as SQLModel projects make it."""

    __tablename__ = "typed_host_users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    team: str = "red"
    is_active: bool = True


snapshots = snapshot_table(SQLModel.metadata, "typed_host_snapshots", schema=None)


def user_id(account_id: str) -> uuid.UUID:
    """A host's own id conversion: a user id is exactly 32 hex digits."""
    if len(account_id) != 32:
        raise ValueError("a user id is 32 hex digits")
    return uuid.UUID(hex=account_id)


def build_app(engine: Engine, *, hex_ids: bool = False) -> FastAPI:
    """The host with the sub-app mounted at ``/phonefarm``, accounts from ``User`` (a red
    team's); ``hex_ids``: ids are converted by :func:`user_id`, not by the key's type."""
    accounts = SQLAlchemyAccounts(
        engine,
        User,
        id_column=User.id,
        active=User.is_active,
        visible_to=lambda principal: User.team == "red",
        convert_id=user_id if hex_ids else None,
    )
    store = SQLAlchemyStore(engine, table=snapshots)
    host = FastAPI()
    host.mount("/phonefarm", create_app(store, accounts, api_keys=["secret"]))
    return host
