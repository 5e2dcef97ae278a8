"""What every rule family of the kit shares: the fixtures, the snapshots it writes, and the
checks whose failures say what was expected and what was found."""

from __future__ import annotations

import reprlib
import uuid
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

import pytest

from ..extend.plugins import Plugins
from ..request.snapshot import Snapshot, UpsertResult
from ..request.timestamps import format_instant, parse_instant

BASE_TIME = "2026-03-22T08:30:00.000Z"


def new_account_id() -> str:
    """A fresh account id, so that tests never see each other's snapshots."""
    return f"conformance-{uuid.uuid4().hex}"


def make_snapshot(
    account_id: str, version: int = 7, synced_at: str = BASE_TIME, **fields: Any
) -> Snapshot:
    """A snapshot like the API page's example, with the given version, time and fields."""
    values: dict[str, Any] = {
        "ugc_account_id": "ugc_123",
        "snapshot_id": f"snapshot-{version}-{synced_at}"[:255],
        "content_hash": "sha256:abc123",
        "stage": "warmup",
        "active_action": "keyword_warmup",
        "active_skills": ("warmup", "commenting"),
        "personality": {
            "comment_style": "casual, validating",
            "interests": ["healthy recipes", "meal prep"],
        },
    }
    values.update(fields)
    return Snapshot(
        account_id=account_id,
        strategy_version=version,
        strategy_synced_at=parse_instant(synced_at),
        **values,
    )


# -- failures that say what was expected and what was found ---------------------------------

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 160
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 8
_repr.maxlevel = 4

shorten = _repr.repr
"""``repr`` cut to a length a failure message can show."""


def show(value: Any) -> str:
    """``value`` as a failure message shows it: snapshots by their key, instants as text."""
    if isinstance(value, Snapshot):
        return (
            f"Snapshot(snapshot_id={shorten(value.snapshot_id)}, "
            f"version={value.strategy_version}, "
            f"synced_at={_instant_text(value.strategy_synced_at)})"
        )
    if isinstance(value, UpsertResult):
        return f"UpsertResult(applied={value.applied}, current={show(value.current)})"
    if isinstance(value, datetime):
        return _instant_text(value)
    return shorten(value)


def _instant_text(value: Any) -> str:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return format_instant(value)
    return repr(value)


def fail(message: str) -> NoReturn:
    __tracebackhide__ = True
    raise AssertionError(message)


def check(condition: bool, message: str) -> None:
    __tracebackhide__ = True
    if not condition:
        fail(message)


def check_equal(found: Any, expected: Any, what: str) -> None:
    __tracebackhide__ = True
    if found != expected:
        fail(f"{what}\n  expected: {show(expected)}\n  found:    {show(found)}")


def json_value(value: Any) -> Any:
    """``value`` as the JSON value it stands for: numbers by their decimal value (so ``1e21``
    and ``1000000000000000000000`` are the same number, as JSON defines it), ``true`` never
    equal to ``1``, objects without key order."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("number", Decimal(value))
    if isinstance(value, float):
        return ("number", Decimal(repr(value)))
    if isinstance(value, dict):
        return ("object", {key: json_value(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return ("array", [json_value(item) for item in value])
    return (type(value).__name__, value)


def _field_differences(found: Snapshot, expected: Snapshot) -> list[str]:
    differences = []
    for field in fields(Snapshot):
        name = field.name
        want, got = getattr(expected, name), getattr(found, name)
        if name == "strategy_synced_at":
            same = isinstance(got, datetime) and got.utcoffset() == timedelta(0) and got == want
        elif name == "active_skills":
            same = (got is None) == (want is None) and (got is None or list(got) == list(want))
        elif name == "personality":
            same = json_value(got) == json_value(want)
        else:
            same = type(got) is type(want) and got == want
        if not same:
            if name == "strategy_synced_at":
                shown_want, shown_got = _instant_text(want), _instant_text(got)
                if isinstance(got, datetime) and got.utcoffset() is None:
                    shown_got += " (naive: it must be an aware UTC datetime)"
            else:
                shown_want, shown_got = show(want), show(got)
            differences.append(f"  {name}: expected {shown_want}, found {shown_got}")
    return differences


def check_snapshot(found: object, expected: Snapshot, what: str) -> None:
    """``found`` is ``expected`` field by field, or fail naming each field that differs."""
    __tracebackhide__ = True
    if found is None:
        fail(f"{what}\n  expected: {show(expected)}\n  found:    None (nothing stored)")
    if not isinstance(found, Snapshot):
        fail(f"{what}\n  expected a Snapshot, found {type(found).__name__}: {show(found)}")
    differences = _field_differences(found, expected)
    if differences:
        fail(f"{what}: these fields differ\n" + "\n".join(differences))


def check_result(result: object, applied: bool, current: Snapshot, what: str) -> None:
    """``result`` is an ``UpsertResult`` that applied (or ignored) the incoming snapshot and
    names ``current`` as the stored one (an ignored one may leave ``current`` unread)."""
    __tracebackhide__ = True
    check(
        isinstance(result, UpsertResult),
        f"{what}: store_upsert must return an UpsertResult, found {show(result)}",
    )
    assert isinstance(result, UpsertResult)
    verb = "applied" if applied else "ignored"
    check(
        result.applied is applied,
        f"{what}: the incoming snapshot should be {verb}\n"
        f"  expected: applied={applied}\n  found:    applied={result.applied!r}"
        f" (current={show(result.current)})",
    )
    if applied or result.current is not None:  # an ignored one need not read current back
        check_snapshot(result.current, current, f"{what}: UpsertResult.current")


# -- the fixtures every family uses ---------------------------------------------------------

_ANOTHER_STORE_MISSING = (
    "no `another_store` fixture: define one in your StoreContract subclass (or the subclass of "
    "the rule family you run) that returns a second instance of your store on the same storage "
    "as `store`, opened as another process would open it (its own connections, locks and "
    "caches), e.g. `@pytest.fixture def another_store(self): return MyStore(SAME_URL)`. With it "
    "these tests prove that the check and the write are atomic across instances, not only "
    "inside one."
)


class OnAsyncio:
    """The kit's async tests run on asyncio (the ``anyio`` pytest plugin's backend)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"


class StoreFixtures(OnAsyncio):
    """The fixtures of every store rule family: ``store`` (override it), ``another_store``
    (override it to test across instances), and the plugin managers the tests call through."""

    @pytest.fixture
    def store(self) -> Any:
        """Override: return (or yield) the store plugin under test."""
        raise NotImplementedError(
            "a StoreContract subclass (or the subclass of one of its rule families) must "
            "define a `store` fixture"
        )

    @pytest.fixture
    def another_store(self) -> Any:
        """Override: a second instance of the store on the same storage as ``store``."""
        pytest.skip(_ANOTHER_STORE_MISSING)

    @pytest.fixture
    def plugins(self, store: Any) -> Iterator[Plugins]:
        yield Plugins([store], entry_points=False)

    @pytest.fixture
    def other_plugins(self, another_store: Any) -> Iterator[Plugins]:
        yield Plugins([another_store], entry_points=False)

    async def _round_trip(self, plugins: Plugins, snapshot: Snapshot, what: str) -> None:
        __tracebackhide__ = True
        result = await plugins.store_upsert(snapshot)
        check_result(result, True, snapshot, f"{what}: upserting into an empty account")
        stored = await plugins.store_get(snapshot.account_id)
        check_snapshot(stored, snapshot, f"{what}: store_get after the upsert")

    async def _store_then(
        self, plugins: Plugins, stored: Snapshot, incoming: Snapshot, applied: bool, what: str
    ) -> None:
        """Store ``stored``, upsert ``incoming``; check the answer and what is stored after."""
        __tracebackhide__ = True
        first = await plugins.store_upsert(stored)
        check_result(first, True, stored, f"{what}: the first snapshot of the account")
        result = await plugins.store_upsert(incoming)
        expected = incoming if applied else stored
        check_result(result, applied, expected, what)
        check_snapshot(
            await plugins.store_get(stored.account_id), expected, f"{what}: store_get afterwards"
        )
