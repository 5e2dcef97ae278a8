"""The canonical-id rule, through the app (``create_app`` with the store under test): when the
host's account lookup reports one canonical id for several spellings of it, the account keeps
one snapshot under that id, compared by one stale rule, while each answer names the account
as its request spelt it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ..extend.hookspecs import hookimpl
from ..request.app import UPSERT_PATH, create_app
from ..request.snapshot import Account, Snapshot
from ._support import (
    StoreFixtures,
    check,
    check_equal,
    check_snapshot,
    make_snapshot,
    new_account_id,
    show,
)

_KIT_TOKEN = "conformance-kit-token"


async def _post_upsert(app: Any, snapshot: Snapshot) -> tuple[int, Any]:
    """POST ``snapshot`` to ``app``'s upsert endpoint in-process: the status and JSON answer."""
    body = json.dumps(snapshot.to_json()).encode("utf-8")
    scope = {
        "type": "http",
        "method": "POST",
        "path": UPSERT_PATH,
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {_KIT_TOKEN}".encode("ascii")),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ],
    }
    messages: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    content = b"".join(message.get("body", b"") for message in messages[1:])
    return messages[0]["status"], json.loads(content) if content else {}


class _SpellingAccounts:
    """The accounts of a host that compares ids without case: every spelling of
    ``canonical`` names one account, reported under ``canonical``."""

    def __init__(self, canonical: str) -> None:
        self.canonical = canonical

    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return Account(self.canonical) if account_id.lower() == self.canonical else None


class CanonicalIdRules(StoreFixtures):
    """One account, one snapshot, however the request spells its id (through the app)."""

    @pytest.mark.anyio
    async def test_every_spelling_of_an_account_reaches_one_snapshot(self, store: Any) -> None:
        """Through the app: accounts whose lookup reports one canonical id for several
        spellings (a UUID key, a case-insensitive collation) keep one snapshot, compared by one
        stale rule, while each answer names the account as its request spelt it."""
        canonical = new_account_id()
        accounts = _SpellingAccounts(canonical)
        app = create_app(store, accounts, api_keys=[_KIT_TOKEN], entry_points=False)
        steps = [(canonical.upper(), 7, "upserted"), (canonical.title(), 6, "ignored_stale")]
        steps.append((canonical, 8, "upserted"))
        for spelling, version, outcome in steps:
            status, answer = await _post_upsert(app, make_snapshot(spelling, version))
            check_equal(
                (status, answer.get("status"), answer.get("account_id")),
                (200, outcome, spelling),
                f"one snapshot per account: {spelling!r} at version {version}, canonical id "
                f"{canonical!r} -- (status, answer's status, answer's account_id)",
            )
        plugins = app.state.plugins
        check_snapshot(
            await plugins.store_get(canonical),
            make_snapshot(canonical, 8),
            f"one snapshot per account: store_get of the canonical id {canonical!r}",
        )
        for spelling, _, _ in steps[:2]:
            found = await plugins.store_get(spelling)
            check(
                found is None,
                f"one snapshot per account: nothing is stored under the spelling {spelling!r} "
                f"(the canonical id is {canonical!r}), found {show(found)}",
            )
