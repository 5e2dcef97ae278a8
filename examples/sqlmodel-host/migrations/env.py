"""The host's Alembic environment: its own metadata (which holds the snapshot table), and
the snapshot plugin's options in both ``context.configure`` calls."""

from __future__ import annotations

import os

from alembic import context
from runtime_snapshot_mount_sqlalchemy.migrations import alembic_options
from sqlalchemy import engine_from_config, pool
from sqlmodel_host.models import metadata

config = context.config
target_metadata = metadata


def database_url() -> str:
    """``DATABASE_URL``, as the app reads it; else ``sqlalchemy.url`` from the config."""
    return os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url", "")


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        **alembic_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        {"sqlalchemy.url": database_url()}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            **alembic_options(),
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
