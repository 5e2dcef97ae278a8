"""A FastAPI host that mounts runtime-snapshot-mount on its own synchronous SQLAlchemy engine.

The host keeps its accounts in its own model (``PhoneAccount``), puts the snapshot table on
its own ``MetaData`` (so Alembic sees it), and mounts the endpoint under ``/phonefarm``::

    PHONEFARM_API_KEY=secret DATABASE_URL=sqlite:///host.db \\
    PHONEFARM_ACCOUNTS=account_user095916355 \\
        uvicorn --factory --app-dir examples fastapi_sync_host:app_from_environment

At start-up it creates its tables and adds each account id named in ``PHONEFARM_ACCOUNTS``
(space-separated) that is not there yet, as active; without them every upsert answers 404
until the host's own code adds accounts. Then the API page's example is accepted::

    curl -X POST http://127.0.0.1:8000/phonefarm/runtime-snapshots/upsert \\
        -H "Authorization: Bearer secret" -H "Content-Type: application/json" \\
        -d @examples/example-request.json

The store runs the blocking driver in worker threads, never on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore, snapshot_table
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from runtime_snapshot_mount import create_app


class Base(DeclarativeBase):
    """The host's declarative base: its metadata holds every table, the snapshots' too."""


class PhoneAccount(Base):
    """The host's own account model: a handle and a status."""

    __tablename__ = "phone_accounts"

    handle: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="active")


runtime_snapshots = snapshot_table(Base.metadata)


def build_app(
    database_url: str, api_keys: list[str], first_accounts: Sequence[str] = ()
) -> FastAPI:
    """The host app on a synchronous engine for ``database_url``; ``first_accounts`` are added at
    start-up (as active) unless they exist."""
    engine = create_engine(database_url)

    def prepare() -> None:
        # A demo creates its tables at start-up; a real host runs its Alembic migrations.
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            for handle in first_accounts:
                if session.get(PhoneAccount, handle) is None:
                    session.add(PhoneAccount(handle=handle, status="active"))
            session.commit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(prepare)
        yield
        engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine
    store = SQLAlchemyStore(engine, table=runtime_snapshots)
    accounts = SQLAlchemyAccounts(
        engine, PhoneAccount, id_column="handle", active=PhoneAccount.status == "active"
    )
    app.mount("/phonefarm", create_app(store, accounts, api_keys=api_keys, openapi=True))
    return app


def app_from_environment() -> FastAPI:
    """The app that ``uvicorn --factory`` serves: ``DATABASE_URL``, ``PHONEFARM_API_KEY``
    and ``PHONEFARM_ACCOUNTS``."""
    return build_app(
        os.environ.get("DATABASE_URL", "sqlite:///host-sync.db"),
        os.environ.get("PHONEFARM_API_KEY", "").split(),
        os.environ.get("PHONEFARM_ACCOUNTS", "").split(),
    )
