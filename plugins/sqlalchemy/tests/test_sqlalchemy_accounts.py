"""SQLAlchemyAccounts: accounts from the host's own mapped class or table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts
from sqlalchemy import Boolean, Column, String, Table, create_engine, insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from support_sqlalchemy import Database, dispose, unique_name

from runtime_snapshot_mount import Account

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    pass


class Member(Base):
    """A host's model: the account id is ``handle``, activity is a status string."""

    __tablename__ = unique_name("members")

    handle: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    tenant: Mapped[str] = mapped_column(String(20))


devices = Table(
    unique_name("devices"),
    Base.metadata,
    Column("device_ref", String(255), primary_key=True),
    Column("enabled", Boolean, nullable=False),
)

MEMBERS = [
    {"handle": "alice", "status": "active", "tenant": "red"},
    {"handle": "bob", "status": "suspended", "tenant": "red"},
    {"handle": "carol", "status": "active", "tenant": "blue"},
]
DEVICES = [{"device_ref": "d1", "enabled": True}, {"device_ref": "d2", "enabled": False}]


@pytest.fixture
async def engine(database: Database, mode: str) -> AsyncIterator[Any]:
    """An engine on a database holding the host's ``Member`` and ``devices`` tables."""
    host = create_engine(database.sync_url)
    Base.metadata.create_all(host)
    with host.begin() as connection:
        connection.execute(insert(Member), MEMBERS)
        connection.execute(insert(devices), DEVICES)
    engine = database.engine(mode)
    yield engine
    await dispose(engine)
    Base.metadata.drop_all(host)
    host.dispose()


async def test_a_mapped_class_with_an_active_condition(engine: Any) -> None:
    accounts = SQLAlchemyAccounts(
        engine, Member, id_column="handle", active=Member.status == "active"
    )
    assert await accounts.get_account("alice", None) == Account("alice", True)
    assert await accounts.get_account("bob", None) == Account("bob", False)
    assert await accounts.get_account("nobody", None) is None


async def test_a_table_with_a_boolean_column_named_active(engine: Any) -> None:
    accounts = SQLAlchemyAccounts(engine, devices, id_column="device_ref", active="enabled")
    assert await accounts.get_account("d1", None) == Account("d1", True)
    assert await accounts.get_account("d2", None) == Account("d2", False)


async def test_without_an_active_condition_every_account_found_is_active(engine: Any) -> None:
    accounts = SQLAlchemyAccounts(engine, Member, id_column=Member.handle)
    assert await accounts.get_account("bob", None) == Account("bob", True)


async def test_visible_to_hides_accounts_from_other_principals(engine: Any) -> None:
    accounts = SQLAlchemyAccounts(
        engine,
        Member,
        id_column="handle",
        visible_to=lambda principal: None if principal == "admin" else Member.tenant == principal,
    )
    assert await accounts.get_account("carol", "blue") == Account("carol", True)
    assert await accounts.get_account("carol", "red") is None
    assert await accounts.get_account("carol", "admin") == Account("carol", True)
