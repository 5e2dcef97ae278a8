"""One canonical id per account: the snapshot is stored, compared and read back under the id
the account lookup returns (``Account.account_id``), while answers echo the request's
spelling; observers see what is stored. A lookup that returns the request's id keeps each
spelling apart."""

from __future__ import annotations

from typing import Any

import pytest
from rsm_support import (
    TOKEN,
    bearer,
    client_for,
    compact,
    example,
    make_app,
    post_json,
    stored_in,
)

from runtime_snapshot_mount import Account, MemoryStore, Snapshot, hookimpl

pytestmark = pytest.mark.anyio

CANONICAL = "6b1f0c2e-9a4d-4c1b-8e7f-0123456789ab"
UPPER = CANONICAL.upper()
DASHLESS = CANONICAL.replace("-", "")
SPELLINGS = (CANONICAL, UPPER, DASHLESS)


class UUIDAccounts:
    """A host whose account key is a UUID: every spelling of it names one account, reported
    under the UUID's canonical text."""

    @hookimpl(tryfirst=True)
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        if account_id.replace("-", "").lower() == DASHLESS:
            return Account(CANONICAL)
        return None


class LooseAccounts:
    """A host whose lookup accepts every spelling but cannot say the canonical one."""

    @hookimpl(tryfirst=True)
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        if account_id.replace("-", "").lower() == DASHLESS:
            return Account(account_id)
        return None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        self.calls.append(("applied", snapshot))

    @hookimpl
    def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        self.calls.append(("ignored", snapshot, current))


def upsert(account_id: str, version: int) -> dict[str, Any]:
    return example(account_id=account_id, strategy_version=version, snapshot_id=f"v{version}")


async def test_every_spelling_reaches_one_snapshot_and_answers_echo_the_request() -> None:
    store = MemoryStore()
    async with client_for(make_app(store, UUIDAccounts())) as client:
        applied = await post_json(client, upsert(UPPER, 7))
        ignored = await post_json(client, upsert(DASHLESS, 6))
        replay = await post_json(client, upsert(CANONICAL, 7))
    assert applied.content == compact(
        {
            "status": "upserted",
            "account_id": UPPER,
            "snapshot_id": "v7",
            "strategy_version": 7,
            "strategy_synced_at": "2026-03-22T08:30:00.000Z",
        }
    )
    assert ignored.content == compact(
        {
            "status": "ignored_stale",
            "account_id": DASHLESS,
            "snapshot_id": "v6",
            "strategy_version": 6,
        }
    )
    assert replay.json()["status"] == "upserted" and replay.json()["account_id"] == CANONICAL
    stored = stored_in(store, CANONICAL)
    assert stored is not None and stored.account_id == CANONICAL and stored.snapshot_id == "v7"
    assert stored_in(store, UPPER) is None and stored_in(store, DASHLESS) is None


async def test_observers_see_the_canonical_id_that_is_stored() -> None:
    store, recorder = MemoryStore(), Recorder()
    async with client_for(make_app(store, UUIDAccounts(), recorder)) as client:
        await post_json(client, upsert(UPPER, 7))
        await post_json(client, upsert(DASHLESS, 6))
    (_, applied), (_, incoming, current) = recorder.calls
    assert applied == stored_in(store, CANONICAL) == current
    assert incoming.account_id == CANONICAL and incoming.strategy_version == 6


async def test_the_read_back_reads_the_canonical_id_and_names_the_requests() -> None:
    store = MemoryStore()
    async with client_for(make_app(store, UUIDAccounts(), read=True)) as client:
        await post_json(client, upsert(UPPER, 7))
        answers = [
            await client.get(f"/runtime-snapshots/{spelling}", headers=bearer(TOKEN))
            for spelling in SPELLINGS
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [answer.json()["account_id"] for answer in answers] == list(SPELLINGS)
    assert {answer.json()["snapshot_id"] for answer in answers} == {"v7"}


async def test_a_lookup_that_returns_the_requests_id_keeps_each_spelling_apart() -> None:
    store = MemoryStore()
    async with client_for(make_app(store, LooseAccounts())) as client:
        first = await post_json(client, upsert(UPPER, 7))
        older = await post_json(client, upsert(DASHLESS, 6))
    assert first.json()["status"] == older.json()["status"] == "upserted"
    assert [stored_in(store, spelling) is not None for spelling in SPELLINGS] == [
        False,
        True,
        True,
    ]
