"""A FastAPI host that mounts runtime-snapshot-mount on its own asyncio SQLAlchemy engine.

The host's account model (``Member``) has an integer key, a separate account reference and
an ``enabled`` flag; the snapshot table sits on the host's own ``MetaData``::

    PHONEFARM_API_KEY=secret DATABASE_URL=sqlite+aiosqlite:///host.db \\
    PHONEFARM_ACCOUNTS=account_user095916355 \\
        uvicorn --factory --app-dir examples fastapi_async_host:app_from_environment

At start-up it creates its tables and adds each account reference named in
``PHONEFARM_ACCOUNTS`` (space-separated) that is not there yet, enabled; without them every
upsert answers 404 until the host's own code adds members. Then the API page's example is
accepted::

    curl -X POST http://127.0.0.1:8000/phonefarm/runtime-snapshots/upsert \\
        -H "Authorization: Bearer secret" -H "Content-Type: application/json" \\
        -d @examples/example-request.json
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore, snapshot_table
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime_snapshot_mount import create_app


class Base(DeclarativeBase):
    """The host's declarative base: its metadata holds every table, the snapshots' too."""


class Member(Base):
    """The host's own account model."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_ref: Mapped[str] = mapped_column(String(255), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)


phonefarm_snapshots = snapshot_table(Base.metadata, "phonefarm_snapshots")


def build_app(
    database_url: str, api_keys: list[str], first_accounts: Sequence[str] = ()
) -> FastAPI:
    """The host app on an asyncio engine for ``database_url``; ``first_accounts`` are added at
    start-up (enabled) unless they exist."""
    engine = create_async_engine(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A demo creates its tables at start-up; a real host runs its Alembic migrations.
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            for reference in first_accounts:
                known = select(Member.id).where(Member.account_ref == reference)
                if (await session.execute(known)).first() is None:
                    session.add(Member(account_ref=reference, enabled=True))
            await session.commit()
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine
    store = SQLAlchemyStore(engine, table=phonefarm_snapshots)
    accounts = SQLAlchemyAccounts(engine, Member, id_column="account_ref", active="enabled")
    app.mount("/phonefarm", create_app(store, accounts, api_keys=api_keys, openapi=True))
    return app


def app_from_environment() -> FastAPI:
    """The app that ``uvicorn --factory`` serves: ``DATABASE_URL``, ``PHONEFARM_API_KEY``
    and ``PHONEFARM_ACCOUNTS``."""
    return build_app(
        os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///host-async.db"),
        os.environ.get("PHONEFARM_API_KEY", "").split(),
        os.environ.get("PHONEFARM_ACCOUNTS", "").split(),
    )
