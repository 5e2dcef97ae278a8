"""The host's tables: its own ``User`` (a UUID key and ``is_active``), and the snapshot table
on the same metadata, so that Alembic's autogenerate sees both."""

from __future__ import annotations

import uuid

from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlmodel import Field, SQLModel


class User(SQLModel, table=True):
    """A user of the host; each active one is a Phonefarm account, keyed by its UUID."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=255)
    full_name: str | None = Field(default=None, max_length=255)
    is_active: bool = True


metadata = SQLModel.metadata
runtime_snapshots = snapshot_table(metadata)
