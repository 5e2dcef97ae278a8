"""The host app, built from its settings by a factory, so that importing this module never
reads a setting (and never fails on one)::

    DATABASE_URL=postgresql+psycopg://app@db/app PHONEFARM_API_KEYS=key-1,key-2 \
        uvicorn --factory sqlmodel_host.main:create_host

The endpoint is then ``POST /phonefarm/runtime-snapshots/upsert``, for the ids of active users.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts, SQLAlchemyStore
from sqlalchemy import create_engine

from runtime_snapshot_mount import create_app

from .models import User, runtime_snapshots


@dataclass(frozen=True)
class Settings:
    """What the host needs: its database, and the bearer tokens Phonefarm's caller may send."""

    database_url: str
    phonefarm_api_keys: tuple[str, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """``DATABASE_URL``, and ``PHONEFARM_API_KEYS`` (comma-separated)."""
        environ = os.environ if environ is None else environ
        keys = environ.get("PHONEFARM_API_KEYS", "").split(",")
        return cls(
            database_url=environ["DATABASE_URL"],
            phonefarm_api_keys=tuple(key.strip() for key in keys if key.strip()),
        )


def create_host(settings: Settings | None = None) -> FastAPI:
    """The host, with the snapshot endpoint mounted under ``/phonefarm`` on its own engine.

    An empty key list raises ``ConfigurationError`` here, when the server starts, not when
    this module is imported. The tables come from the host's Alembic migrations.
    """
    settings = Settings.from_environ() if settings is None else settings
    engine = create_engine(settings.database_url, pool_pre_ping=True)

    @asynccontextmanager
    async def lifespan(host: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    host = FastAPI(title="SQLModel host", lifespan=lifespan)
    host.mount(
        "/phonefarm",
        create_app(
            SQLAlchemyStore(engine, table=runtime_snapshots),
            SQLAlchemyAccounts(engine, User, id_column=User.id, active=User.is_active),
            api_keys=settings.phonefarm_api_keys,
        ),
    )
    return host
