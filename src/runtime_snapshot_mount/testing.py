"""The conformance kit for storage plugins.

A storage-plugin author subclasses :class:`StoreContract` in their own test suite and gives
it the fixture ``store``, which returns (or yields) their store plugin, empty or not::

    import pytest
    from runtime_snapshot_mount.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path / "data")

        @pytest.fixture
        def another_store(self, tmp_path):
            return MyStore(tmp_path / "data")  # a second instance on the same storage

Every test then runs against that store through the same plugin manager the app uses.
``another_store`` is a second instance of the store on the *same* storage, opened as another
process would open it (its own connections, its own locks): with it the kit proves that the
check and the write are atomic across instances, not only inside one. Without it those tests
skip and say how to provide it.

A plugin that opens store URLs for the command line (``store_from_url``) also subclasses
:class:`OpenerContract` and gives it ``opener`` (the plugin, e.g. the entry point's module)
and ``opener_url`` (a URL it opens, on storage the test may write to).

The tests use the ``anyio`` pytest plugin (installed with Starlette); fixtures may be
``async def``. Each test uses fresh account ids, so a store shared between tests is fine.
Every failure says what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import random
import reprlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NoReturn

import anyio
import pytest

from .app import UPSERT_PATH, create_app
from .freshness import is_stale
from .hookspecs import hookimpl
from .memory import MemoryStore
from .plugins import ConfigurationError, Plugins
from .snapshot import MAX_VERSION, Account, Snapshot, UpsertResult
from .timestamps import format_instant, parse_instant

__all__ = [
    "CONCURRENT_WRITERS",
    "CONTENTION_ROUNDS",
    "FOREIGN_URLS",
    "OpenerContract",
    "StoreContract",
    "make_snapshot",
    "new_account_id",
]

BASE_TIME = "2026-03-22T08:30:00.000Z"
CONCURRENT_WRITERS = 200
CONTENTION_ROUNDS = 64
"""Accounts raced at once in the contention tests, each by 4 writers started greatest first."""

FOREIGN_URLS = (
    "",
    "not a url",
    "://",
    "?table=snapshots",
    "conformance-nobody+driver://user:secret@127.0.0.1:1/nothing?table=x",
    "conformance-nobody:///tmp/nothing",
    "http://example.invalid/runtime-snapshots",
    "file:///nonexistent/runtime-snapshots",
    "%zz://broken",
    "x" * 5000,
)
"""URLs no store plugin should own: an opener must return ``None`` for each, never raise."""


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


def _show(value: Any) -> str:
    if isinstance(value, Snapshot):
        return (
            f"Snapshot(snapshot_id={_repr.repr(value.snapshot_id)}, "
            f"version={value.strategy_version}, "
            f"synced_at={_instant_text(value.strategy_synced_at)})"
        )
    if isinstance(value, UpsertResult):
        return f"UpsertResult(applied={value.applied}, current={_show(value.current)})"
    if isinstance(value, datetime):
        return _instant_text(value)
    return _repr.repr(value)


def _instant_text(value: Any) -> str:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return format_instant(value)
    return repr(value)


def _fail(message: str) -> NoReturn:
    __tracebackhide__ = True
    raise AssertionError(message)


def _check(condition: bool, message: str) -> None:
    __tracebackhide__ = True
    if not condition:
        _fail(message)


def _check_equal(found: Any, expected: Any, what: str) -> None:
    __tracebackhide__ = True
    if found != expected:
        _fail(f"{what}\n  expected: {_show(expected)}\n  found:    {_show(found)}")


def _json_value(value: Any) -> Any:
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
        return ("object", {key: _json_value(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return ("array", [_json_value(item) for item in value])
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
            same = _json_value(got) == _json_value(want)
        else:
            same = type(got) is type(want) and got == want
        if not same:
            if name == "strategy_synced_at":
                shown_want, shown_got = _instant_text(want), _instant_text(got)
                if isinstance(got, datetime) and got.utcoffset() is None:
                    shown_got += " (naive: it must be an aware UTC datetime)"
            else:
                shown_want, shown_got = _show(want), _show(got)
            differences.append(f"  {name}: expected {shown_want}, found {shown_got}")
    return differences


def _check_snapshot(found: object, expected: Snapshot, what: str) -> None:
    """``found`` is ``expected`` field by field, or fail naming each field that differs."""
    __tracebackhide__ = True
    if found is None:
        _fail(f"{what}\n  expected: {_show(expected)}\n  found:    None (nothing stored)")
    if not isinstance(found, Snapshot):
        _fail(f"{what}\n  expected a Snapshot, found {type(found).__name__}: {_show(found)}")
    differences = _field_differences(found, expected)
    if differences:
        _fail(f"{what}: these fields differ\n" + "\n".join(differences))


def _check_result(result: object, applied: bool, current: Snapshot, what: str) -> None:
    __tracebackhide__ = True
    _check(
        isinstance(result, UpsertResult),
        f"{what}: store_upsert must return an UpsertResult, found {_show(result)}",
    )
    assert isinstance(result, UpsertResult)
    verb = "applied" if applied else "ignored"
    _check(
        result.applied is applied,
        f"{what}: the incoming snapshot should be {verb}\n"
        f"  expected: applied={applied}\n  found:    applied={result.applied!r}"
        f" (current={_show(result.current)})",
    )
    if applied or result.current is not None:  # an ignored one need not read current back
        _check_snapshot(result.current, current, f"{what}: UpsertResult.current")


# -- values used by the tests ---------------------------------------------------------------


def _nested(depth: int) -> Any:
    """Objects and arrays in turn, ``depth`` levels deep."""
    value: Any = {"leaf": "🌱"}
    for level in range(depth - 1):
        value = [value, level] if level % 2 == 0 else {"level": level, "child": value}
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__


# One character of each Unicode plane (0-16), and the edges of UTF-8's 1- to 4-byte forms.
PLANES = "".join(chr(plane * 0x10000 + 0x1234) for plane in range(17)) + (
    "\u0001\u007f\u0080\u07ff\u0800\ud7ff\ue000\ufffd\uffff\U00010000\U0010fffd\U0010ffff"
)

# Numbers that JSON allows, compared by their decimal value.
JSON_NUMBERS = [
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    -(2**53) - 1,
    MAX_VERSION,
    -(2**63),
    2**64 + 1,
    10**30 + 1,
    -(10**30) - 1,
    10**100 + 7,
    0.0,
    -0.0,
    1.0,
    100.0,
    1.5,
    -0.25,
    0.1,
    0.30000000000000004,
    1 / 3,
    123456789.12345679,
    1e-7,
    2.5e-5,
    1e21,
    -1e21,
    1e300,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
]

# The stale matrix: stored (version 5, 08:30Z) against each incoming version and time.
_STORED_VERSION = 5
_TIMES = {
    "older": "2026-03-22T08:29:59.999999Z",
    "equal": BASE_TIME,
    "newer": "2026-03-22T08:30:00.000001Z",
}
_MATRIX = [
    (version, time, version > _STORED_VERSION or (version == _STORED_VERSION and time != "older"))
    for version in (4, 5, 6)
    for time in _TIMES
]

# Equal versions, times that compare as instants: (stored, incoming, incoming applied?).
_TIME_PAIRS = [
    # 10:00+02:00 is 08:00Z: earlier than 09:00Z although it sorts later as a string.
    ("2026-03-22T10:00:00+02:00", "2026-03-22T09:00:00Z", True),
    ("2026-03-22T09:00:00Z", "2026-03-22T10:00:00+02:00", False),
    ("2026-03-22T08:00:00-05:30", "2026-03-22T13:30:00Z", True),
    ("2026-03-22T13:30:00.000001Z", "2026-03-22T08:00:00-05:30", False),
    ("2026-03-22T00:30:00+01:00", "2026-03-21T23:30:00Z", True),
    # digits past the sixth are truncated: the first two pairs are the same instant
    ("2026-03-22T08:30:00.1234569Z", "2026-03-22T08:30:00.123456Z", True),
    ("2026-03-22T08:30:00.123456Z", "2026-03-22T08:30:00.1234561Z", True),
    ("2026-03-22T08:30:00.123457Z", "2026-03-22T08:30:00.1234569Z", False),
    ("2026-03-22T08:30:00.1Z", "2026-03-22T08:30:00.100000Z", True),
    ("2026-03-22T08:30:00.000002Z", "2026-03-22T08:30:00.000001Z", False),
    ("2026-03-22T08:30:00Z", "2026-03-22T08:30:00.000001Z", True),
]

# Offsets that move the instant into another day, month or year (stored, incoming, applied?).
_DAY_CROSSING_PAIRS = [
    ("2026-03-22T23:30:00-01:00", "2026-03-23T00:29:59.999999Z", False),
    ("2026-03-22T23:30:00-01:00", "2026-03-23T00:30:00Z", True),
    ("2026-03-23T00:30:00+01:00", "2026-03-22T23:30:00.000001Z", True),
    ("2000-01-01T00:00:00+00:01", "1999-12-31T23:59:00.000001Z", True),
    ("1999-12-31T23:59:00.000001Z", "2000-01-01T00:00:00+00:01", False),
    ("2024-03-01T01:00:00+02:00", "2024-02-29T23:00:00Z", True),
    ("2024-02-29T23:00:00.000001Z", "2024-03-01T01:00:00+02:00", False),
    ("2100-03-01T00:00:00+01:00", "2100-02-28T23:00:00Z", True),
    ("0001-01-01T23:59:59.999999+23:59", "0001-01-01T00:00:59.999999Z", True),
    ("0001-01-01T00:01:00Z", "0001-01-01T23:59:59.999999+23:59", False),
    ("9999-12-31T00:00:00-23:59", "9999-12-31T23:58:59.999999Z", False),
    ("9999-12-31T00:00:00-23:59", "9999-12-31T23:59:00Z", True),
]

# Spellings of one instant, 2026-03-22T08:30:00Z; storing any then any other is a replay.
_SPELLINGS = [
    "2026-03-22T08:30:00Z",
    "2026-03-22T08:30:00.000000Z",
    "2026-03-22T08:30:00.0000009Z",
    "2026-03-22t08:30:00z",
    "2026-03-22 08:30:00Z",
    "2026-03-22T08:30:00+00:00",
    "2026-03-22T08:30:00-00:00",
    "2026-03-22T09:30:00+01:00",
    "2026-03-22T03:00:00-05:30",
    "2026-03-23T08:29:00+23:59",
    "2026-03-21T08:31:00-23:59",
    "2026-03-22T14:15:00,000+05:45",
]

# Years across the whole allowed range, where precision tricks break (floats of seconds since
# 1970 lose microseconds far from it; 32-bit seconds end in 2038, 64-bit nanoseconds in 2262).
_YEARS = [1, 2, 99, 100, 999, 1000, 1582, 1899, 1900, 1901, 1969, 1970, 2000, 2038, 2106,
          2262, 2263, 2486, 3000, 5000, 9998, 9999]  # fmt: skip


# -- the kit --------------------------------------------------------------------------------


def _account_with(*, length: int, filler: str) -> str:
    """A fresh account id of exactly ``length`` characters, padded with ``filler``."""
    base = new_account_id() + "-"
    padding = (filler * length)[: length - len(base)]
    return base + padding


_KIT_TOKEN = "conformance-kit-token"


class _SpellingAccounts:
    """The accounts of a host that compares ids without case: every spelling of
    ``canonical`` names one account, reported under ``canonical``."""

    def __init__(self, canonical: str) -> None:
        self.canonical = canonical

    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return Account(self.canonical) if account_id.lower() == self.canonical else None


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


_ANOTHER_STORE_MISSING = (
    "no `another_store` fixture: define one in your StoreContract subclass that returns a "
    "second instance of your store on the same storage as `store`, opened as another process "
    "would open it (its own connections, locks and caches), e.g. "
    "`@pytest.fixture def another_store(self): return MyStore(SAME_URL)`. With it these tests "
    "prove that the check and the write are atomic across instances, not only inside one."
)


class StoreContract:
    """Every rule a store must keep (SPEC §3, §4). Subclass it and provide ``store``, and
    ``another_store`` to test atomicity across instances."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def store(self) -> Any:
        """Override: return (or yield) the store plugin under test."""
        raise NotImplementedError("StoreContract subclasses must define a `store` fixture")

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
        _check_result(result, True, snapshot, f"{what}: upserting into an empty account")
        stored = await plugins.store_get(snapshot.account_id)
        _check_snapshot(stored, snapshot, f"{what}: store_get after the upsert")

    async def _store_then(
        self, plugins: Plugins, stored: Snapshot, incoming: Snapshot, applied: bool, what: str
    ) -> None:
        """Store ``stored``, upsert ``incoming``; check the answer and what is stored after."""
        __tracebackhide__ = True
        first = await plugins.store_upsert(stored)
        _check_result(first, True, stored, f"{what}: the first snapshot of the account")
        result = await plugins.store_upsert(incoming)
        expected = incoming if applied else stored
        _check_result(result, applied, expected, what)
        _check_snapshot(
            await plugins.store_get(stored.account_id), expected, f"{what}: store_get afterwards"
        )

    # -- reads, simple writes and the lifecycle ------------------------------------------------

    @pytest.mark.anyio
    async def test_unknown_account_reads_none(self, plugins: Plugins) -> None:
        found = await plugins.store_get(new_account_id())
        _check(found is None, f"store_get of an unknown account: expected None, found {found!r}")

    @pytest.mark.anyio
    async def test_first_snapshot_is_applied_and_read_back_whole(self, plugins: Plugins) -> None:
        await self._round_trip(plugins, make_snapshot(new_account_id()), "the example snapshot")

    @pytest.mark.anyio
    async def test_optional_fields_round_trip_as_null(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(
            new_account_id(), stage=None, active_action=None, active_skills=None, personality={}
        )
        await self._round_trip(plugins, snapshot, "optional fields null")

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "empty",
        [
            {"stage": "", "active_action": "", "active_skills": ()},
            {"stage": "", "active_action": None, "active_skills": None},
            {"stage": None, "active_action": "", "active_skills": ()},
        ],
        ids=["all-empty", "empty-stage-only", "empty-action-and-skills"],
    )
    async def test_empty_values_are_kept_distinct_from_null(
        self, plugins: Plugins, empty: dict[str, Any]
    ) -> None:
        personality: dict[str, Any] = {
            "": "",
            "empty list": [],
            "empty object": {},
            "null": None,
            "list": [""],
        }
        snapshot = make_snapshot(new_account_id(), personality=personality, **empty)
        await self._round_trip(plugins, snapshot, "empty strings and lists (not null)")

    @pytest.mark.anyio
    async def test_accounts_are_independent(self, plugins: Plugins) -> None:
        first, second = make_snapshot(new_account_id(), 9), make_snapshot(new_account_id(), 1)
        _check_result(await plugins.store_upsert(first), True, first, "account one")
        _check_result(await plugins.store_upsert(second), True, second, "account two")
        _check_snapshot(await plugins.store_get(first.account_id), first, "account one after")
        _check_snapshot(await plugins.store_get(second.account_id), second, "account two after")

    @pytest.mark.anyio
    async def test_create_tables_is_idempotent_and_keeps_what_is_stored(
        self, plugins: Plugins
    ) -> None:
        await plugins.store_create_tables()
        snapshot = make_snapshot(new_account_id())
        await self._round_trip(plugins, snapshot, "after store_create_tables")
        await plugins.store_create_tables()
        await plugins.store_create_tables()
        _check_snapshot(
            await plugins.store_get(snapshot.account_id),
            snapshot,
            "store_get after store_create_tables ran again: it must keep what is stored",
        )
        newer = make_snapshot(snapshot.account_id, 8)
        _check_result(await plugins.store_upsert(newer), True, newer, "an upsert afterwards")
        _check_snapshot(await plugins.store_get(newer.account_id), newer, "store_get then")

    # -- edge values ---------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_text_fields_at_their_longest_round_trip(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(
            _account_with(length=255, filler="😀"),
            ugc_account_id="é" * 255,
            snapshot_id="𝄞" * 255,
            content_hash="sha256:" + "a" * 248,
            stage="ステージ" * 250,
            active_action="\U0010fffd" * 1000,
            active_skills=tuple((f"{index}-" + "𝄞" * 255)[:255] for index in range(256)),
        )
        await self._round_trip(plugins, snapshot, "every text at its longest (255/1000/256)")

    @pytest.mark.anyio
    async def test_text_fields_at_their_shortest_round_trip(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(
            new_account_id(),
            ugc_account_id="u",
            snapshot_id="𝄞",
            content_hash="\U0010ffff",
            stage="s",
            active_action="a",
            active_skills=("k",),
        )
        await self._round_trip(plugins, snapshot, "every text one character long")

    @pytest.mark.anyio
    async def test_one_character_account_id_round_trips(
        self, plugins: Plugins, request: pytest.FixtureRequest
    ) -> None:
        # A one-character id cannot be fresh: it is a private-use character picked by the
        # test's id (so other tests on the same storage use others), written at the greatest
        # freshness there is, so that it is applied whatever an earlier run left under it.
        digest = hashlib.sha256(request.node.nodeid.encode()).digest()
        account_id = chr(0x100000 + int.from_bytes(digest[:4], "big") % 0xFFFE)
        snapshot = make_snapshot(
            account_id, MAX_VERSION, "9999-12-31T23:59:59.999999Z", snapshot_id=new_account_id()
        )
        await self._round_trip(plugins, snapshot, f"the one-character account id {account_id!r}")

    @pytest.mark.anyio
    async def test_every_unicode_plane_round_trips_in_every_text_field(
        self, plugins: Plugins
    ) -> None:
        snapshot = make_snapshot(
            new_account_id() + PLANES,
            ugc_account_id=PLANES,
            snapshot_id=PLANES,
            content_hash=PLANES,
            stage=PLANES * 10,
            active_action=PLANES[::-1],
            active_skills=tuple(PLANES),
            personality={PLANES: PLANES, "each": list(PLANES), "key " + PLANES[::-1]: {"": PLANES}},
        )
        await self._round_trip(plugins, snapshot, "one character of each Unicode plane 0-16")

    @pytest.mark.anyio
    async def test_accounts_that_differ_in_case_or_trailing_space_are_different(
        self, plugins: Plugins
    ) -> None:
        base = new_account_id()
        ids = [base + "-a", base + "-A", base + "-a ", base + "-á", base + "-a\u0301"]
        snapshots = [make_snapshot(account_id, index + 1) for index, account_id in enumerate(ids)]
        for snapshot in snapshots:
            _check_result(
                await plugins.store_upsert(snapshot),
                True,
                snapshot,
                f"account {snapshot.account_id!r}: a new account, though another id is alike",
            )
        for snapshot in snapshots:
            _check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                f"account {snapshot.account_id!r} read back (ids are compared exactly)",
            )

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
            _check_equal(
                (status, answer.get("status"), answer.get("account_id")),
                (200, outcome, spelling),
                f"one snapshot per account: {spelling!r} at version {version}, canonical id "
                f"{canonical!r} -- (status, answer's status, answer's account_id)",
            )
        plugins = app.state.plugins
        _check_snapshot(
            await plugins.store_get(canonical),
            make_snapshot(canonical, 8),
            f"one snapshot per account: store_get of the canonical id {canonical!r}",
        )
        for spelling, _, _ in steps[:2]:
            found = await plugins.store_get(spelling)
            _check(
                found is None,
                f"one snapshot per account: nothing is stored under the spelling {spelling!r} "
                f"(the canonical id is {canonical!r}), found {_show(found)}",
            )

    @pytest.mark.anyio
    async def test_personality_round_trips_as_the_same_json_value(self, plugins: Plugins) -> None:
        personality = {
            "comment_style": "casual, validating",
            "unicode": "naïve café 日本語 emoji 😀👍🏽 \u200b \\ \" '",
            "😀 key": ["𝄞", "\u00e9", "\t\n"],
            "big": [MAX_VERSION, -(2**63), 10**30, -(10**30)],
            "numbers": [0, -1, 1.5, -0.25, 1e-7, 12345.678],
            "flags": [True, False, None],
            "empty": [{}, [], ""],
            "deep": _nested(31),
        }
        assert _depth(personality) == 32
        snapshot = make_snapshot(new_account_id(), personality=personality)
        await self._round_trip(plugins, snapshot, "a personality 32 levels deep")
        stored = await plugins.store_get(snapshot.account_id)
        assert stored is not None
        _check_equal(
            _types(stored.personality),
            _types(personality),
            "the JSON types in the personality read back (int, float, bool, null, str)",
        )

    @pytest.mark.anyio
    async def test_personality_numbers_keep_their_value(self, plugins: Plugins) -> None:
        personality = {
            "numbers": JSON_NUMBERS,
            "by name": {repr(number): number for number in JSON_NUMBERS},
            "true is not 1": [True, 1, False, 0, None],
        }
        snapshot = make_snapshot(new_account_id(), personality=personality)
        await plugins.store_upsert(snapshot)
        stored = await plugins.store_get(snapshot.account_id)
        _check(stored is not None, "store_get after the upsert: expected a snapshot, found None")
        assert stored is not None
        for index, number in enumerate(JSON_NUMBERS):
            found = stored.personality.get("numbers", [None] * len(JSON_NUMBERS))[index]
            _check_equal(
                _json_value(found),
                _json_value(number),
                f"personality number {number!r} read back (compared as a decimal value)",
            )
        _check_snapshot(stored, snapshot, "the personality with every kind of JSON number")

    @pytest.mark.anyio
    async def test_versions_compare_as_integers_from_1_to_2_63_minus_1(
        self, plugins: Plugins
    ) -> None:
        pairs = [
            (1, 1, True),
            (1, 2, True),
            (2, 1, False),
            (9, 10, True),
            (10, 9, False),
            (2**31 - 1, 2**31, True),
            (2**32, 2**32 - 1, False),
            (2**53, 2**53 + 1, True),
            (2**53 + 1, 2**53, False),
            (MAX_VERSION - 1, MAX_VERSION, True),
            (MAX_VERSION, MAX_VERSION - 1, False),
            (MAX_VERSION, MAX_VERSION, True),
            (1, MAX_VERSION, True),
            (MAX_VERSION, 1, False),
        ]
        for stored_version, incoming_version, applied in pairs:
            account_id = new_account_id()
            await self._store_then(
                plugins,
                make_snapshot(account_id, stored_version, snapshot_id="stored"),
                make_snapshot(account_id, incoming_version, snapshot_id="incoming"),
                applied,
                f"stored version {stored_version}, incoming version {incoming_version}",
            )

    # -- the stale rule ------------------------------------------------------------------------

    @pytest.mark.anyio
    @pytest.mark.parametrize(("version", "time", "applied"), _MATRIX)
    async def test_stale_rule_matrix(
        self, plugins: Plugins, version: int, time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, _STORED_VERSION, BASE_TIME),
            make_snapshot(account_id, version, _TIMES[time], snapshot_id="incoming"),
            applied,
            f"stored (version {_STORED_VERSION}, {BASE_TIME}), incoming (version {version}, "
            f"{_TIMES[time]})",
        )

    @pytest.mark.anyio
    async def test_exact_replay_is_applied_again(self, plugins: Plugins) -> None:
        snapshot = make_snapshot(new_account_id())
        await self._store_then(plugins, snapshot, snapshot, True, "an exact replay")

    @pytest.mark.anyio
    async def test_equal_key_with_new_content_replaces_the_stored_one(
        self, plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, stage="one"),
            make_snapshot(account_id, stage="two", snapshot_id="other", personality={"a": 1}),
            True,
            "equal version and time with new content",
        )

    @pytest.mark.anyio
    @pytest.mark.parametrize(("stored_time", "incoming_time", "applied"), _TIME_PAIRS)
    async def test_times_compare_as_instants_at_microsecond_precision(
        self, plugins: Plugins, stored_time: str, incoming_time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, 3, stored_time),
            make_snapshot(account_id, 3, incoming_time),
            applied,
            f"equal versions, stored at {stored_time}, incoming at {incoming_time}",
        )

    @pytest.mark.anyio
    @pytest.mark.parametrize(("stored_time", "incoming_time", "applied"), _DAY_CROSSING_PAIRS)
    async def test_offsets_that_cross_a_day_compare_as_instants(
        self, plugins: Plugins, stored_time: str, incoming_time: str, applied: bool
    ) -> None:
        account_id = new_account_id()
        await self._store_then(
            plugins,
            make_snapshot(account_id, 3, stored_time),
            make_snapshot(account_id, 3, incoming_time),
            applied,
            f"equal versions, stored at {stored_time}, incoming at {incoming_time}",
        )

    @pytest.mark.anyio
    async def test_equal_instants_in_different_spellings_are_a_replay(
        self, plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        first = make_snapshot(account_id, 3, _SPELLINGS[0], snapshot_id="0")
        _check_result(await plugins.store_upsert(first), True, first, "the first spelling")
        for index, spelling in enumerate(_SPELLINGS[1:], 1):
            same = make_snapshot(account_id, 3, spelling, snapshot_id=str(index))
            _check_result(
                await plugins.store_upsert(same),
                True,
                same,
                f"{spelling} after {_SPELLINGS[index - 1]}: the same instant, so a replay",
            )
        earlier = make_snapshot(account_id, 3, "2026-03-22T09:29:59.999999+01:00")
        _check_result(
            await plugins.store_upsert(earlier),
            False,
            make_snapshot(account_id, 3, _SPELLINGS[-1], snapshot_id=str(len(_SPELLINGS) - 1)),
            "1 µs before the stored instant, spelt with an offset",
        )

    @pytest.mark.anyio
    async def test_stale_rule_holds_at_microsecond_precision_in_every_era(
        self, plugins: Plugins
    ) -> None:
        for year in _YEARS:
            instant = datetime(year, 6, 15, 12, 34, 56, 123456, tzinfo=timezone.utc)
            if year == 1:
                instant = datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)
            elif year == 9999:
                instant = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=timezone.utc)
            text = format_instant(instant)
            for step, applied in ((-1, False), (0, True), (1, True)):
                other = format_instant(instant + timedelta(microseconds=step))
                account_id = new_account_id()
                await self._store_then(
                    plugins,
                    make_snapshot(account_id, 3, text, snapshot_id="stored"),
                    make_snapshot(account_id, 3, other, snapshot_id="incoming"),
                    applied,
                    f"equal versions, stored at {text}, incoming at {other} ({step:+d} µs)",
                )

    @pytest.mark.anyio
    async def test_instants_near_the_ends_of_the_range_round_trip(self, plugins: Plugins) -> None:
        for synced_at in (
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000001Z",
            "9999-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
        ):
            snapshot = make_snapshot(new_account_id(), synced_at=synced_at)
            await self._round_trip(plugins, snapshot, f"strategy_synced_at {synced_at}")

    @pytest.mark.anyio
    async def test_largest_allowed_version_is_stored_and_compared(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        largest = make_snapshot(account_id, MAX_VERSION)
        await self._round_trip(plugins, largest, "version 2**63-1")
        _check_result(
            await plugins.store_upsert(make_snapshot(account_id, MAX_VERSION - 1)),
            False,
            largest,
            "version 2**63-2 after 2**63-1",
        )
        _check_result(
            await plugins.store_upsert(largest), True, largest, "version 2**63-1 replayed"
        )

    # -- concurrency ---------------------------------------------------------------------------

    async def _race(self, writes: Sequence[tuple[Plugins, Snapshot]]) -> list[UpsertResult]:
        """Start every write in order, all at once, and wait for them all."""
        results: list[UpsertResult | None] = [None] * len(writes)

        async def write(index: int) -> None:
            plugins, snapshot = writes[index]
            results[index] = await plugins.store_upsert(snapshot)

        async with anyio.create_task_group() as group:
            for index in range(len(writes)):
                group.start_soon(write, index)
        return [result for result in results if result is not None]

    async def _check_race(
        self, writes: Sequence[tuple[Plugins, Snapshot]], readers: Sequence[Plugins]
    ) -> None:
        """Race ``writes``; then, per account: the greatest snapshot sent is stored and read by
        every reader, no lesser one was told applied after it, and every ignored answer names
        a strictly later snapshot that some writer sent."""
        __tracebackhide__ = True
        results = await self._race(writes)
        sent = {(s.account_id, s.snapshot_id): s for _, s in writes}
        by_account: dict[str, list[tuple[Snapshot, UpsertResult]]] = {}
        for (_, snapshot), result in zip(writes, results, strict=True):
            by_account.setdefault(snapshot.account_id, []).append((snapshot, result))
        for account_id, outcomes in by_account.items():
            greatest = max((snapshot for snapshot, _ in outcomes), key=lambda s: s.freshness)
            answers = ", ".join(
                f"{s.snapshot_id}:{'applied' if r.applied else 'ignored'}" for s, r in outcomes
            )
            what = (
                f"account {account_id}: {len(outcomes)} concurrent writers ({answers}, in the "
                "order they started); the greatest snapshot sent must be the one stored"
            )
            for reader in readers:
                _check_snapshot(await reader.store_get(account_id), greatest, what)
            for snapshot, result in outcomes:
                if result.applied:
                    _check_snapshot(
                        result.current, snapshot, f"{what}; {snapshot.snapshot_id} applied"
                    )
                    continue
                current = result.current
                justified = current is None or (  # None: the store did not read it back
                    isinstance(current, Snapshot)
                    and is_stale(snapshot, current)
                    and (current.account_id, current.snapshot_id) in sent
                    and sent[(current.account_id, current.snapshot_id)].freshness
                    == current.freshness
                )
                _check(
                    justified,
                    f"{what}; {snapshot.snapshot_id} was ignored, but its current "
                    f"{_show(current)} is not a strictly later snapshot that a writer sent",
                )

    def _contention_writes(
        self, instances: Sequence[Plugins]
    ) -> tuple[list[tuple[Plugins, Snapshot]], list[Snapshot]]:
        """The seeds and the racing writes of :data:`CONTENTION_ROUNDS` accounts: four
        writers each, started greatest first and spread over ``instances`` in turn. Between
        a plain read and its write, every writer of an account reads the seed, so whichever
        writes last -- the least, when the writes land in the order they started -- wins: a
        store that is not atomic loses the greatest snapshot."""
        seeds, writes = [], []
        start = datetime(2026, 3, 22, 8, 30, tzinfo=timezone.utc)
        for round_ in range(CONTENTION_ROUNDS):
            account_id = new_account_id()
            if round_ % 2 == 0:  # versions 5, 4, 3, 2 over version 1
                seed = make_snapshot(account_id, 1, snapshot_id="seed")
                racers = [make_snapshot(account_id, v, snapshot_id=f"v{v}") for v in (5, 4, 3, 2)]
            else:  # equal versions, times 4, 3, 2, 1 µs after the seed's
                seed = make_snapshot(account_id, 9, format_instant(start), snapshot_id="seed")
                racers = [
                    make_snapshot(
                        account_id,
                        9,
                        format_instant(start + timedelta(microseconds=us)),
                        snapshot_id=f"t+{us}us",
                    )
                    for us in (4, 3, 2, 1)
                ]
            seeds.append(seed)
            for index, snapshot in enumerate(racers):
                writes.append((instances[(index + round_) % len(instances)], snapshot))
        return writes, seeds

    async def _contend(self, instances: Sequence[Plugins]) -> None:
        __tracebackhide__ = True
        writes, seeds = self._contention_writes(instances)
        for index, seed in enumerate(seeds):
            plugins = instances[index % len(instances)]
            _check_result(await plugins.store_upsert(seed), True, seed, "seeding an account")
        await self._check_race(writes, instances)

    @pytest.mark.anyio
    async def test_racing_writers_never_lose_the_greater_snapshot(self, plugins: Plugins) -> None:
        await self._contend([plugins])

    @pytest.mark.anyio
    async def test_concurrent_shuffled_versions_keep_the_greatest(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        versions = list(range(1, CONCURRENT_WRITERS + 1))
        random.shuffle(versions)
        snapshots = [
            make_snapshot(account_id, version, snapshot_id=f"v{version}") for version in versions
        ]
        await self._check_race([(plugins, s) for s in snapshots], [plugins])

    @pytest.mark.anyio
    async def test_concurrent_equal_versions_keep_the_latest_time(self, plugins: Plugins) -> None:
        account_id = new_account_id()
        start = datetime(2026, 3, 22, 8, 30, tzinfo=timezone.utc)
        offsets = list(range(CONCURRENT_WRITERS))
        random.shuffle(offsets)
        snapshots = []
        for offset in offsets:
            instant = start + timedelta(seconds=offset, microseconds=offset)
            text = instant.astimezone(timezone(timedelta(hours=offset % 5))).isoformat()
            snapshots.append(make_snapshot(account_id, 42, text, snapshot_id=f"t{offset}"))
        await self._check_race([(plugins, s) for s in snapshots], [plugins])

    # -- across instances (the `another_store` fixture) ----------------------------------------

    @pytest.mark.anyio
    async def test_another_instance_reads_and_obeys_what_this_one_wrote(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        written = make_snapshot(account_id, 5, snapshot_id="written-by-store")
        _check_result(await plugins.store_upsert(written), True, written, "upsert via `store`")
        _check_snapshot(
            await other_plugins.store_get(account_id), written, "store_get via `another_store`"
        )
        stale = make_snapshot(account_id, 4, snapshot_id="stale-via-another")
        _check_result(
            await other_plugins.store_upsert(stale),
            False,
            written,
            "a lesser version via `another_store` after version 5 via `store`",
        )
        newer = make_snapshot(account_id, 6, snapshot_id="newer-via-another")
        _check_result(
            await other_plugins.store_upsert(newer), True, newer, "version 6 via `another_store`"
        )
        _check_result(
            await plugins.store_upsert(written),
            False,
            newer,
            "version 5 via `store` after version 6 via `another_store`",
        )
        _check_snapshot(await plugins.store_get(account_id), newer, "store_get via `store`")

    @pytest.mark.anyio
    async def test_another_instance_reads_and_compares_instants_as_written(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        for text in (
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00.000001Z",
            "1969-12-31T23:59:59.999999Z",
            BASE_TIME,
            "9999-12-31T23:59:59.999998Z",
            "9999-12-31T23:59:59.999999Z",
        ):
            account_id = new_account_id()
            written = make_snapshot(account_id, 3, text, snapshot_id="written-via-store")
            _check_result(await plugins.store_upsert(written), True, written, f"{text} via `store`")
            _check_snapshot(
                await other_plugins.store_get(account_id),
                written,
                f"{text} written via `store`, read via `another_store`",
            )
            replay = make_snapshot(account_id, 3, text, snapshot_id="replayed-via-another")
            _check_result(
                await other_plugins.store_upsert(replay),
                True,
                replay,
                f"{text} via `another_store` after the same instant via `store`: a replay",
            )
            again = make_snapshot(account_id, 3, text, snapshot_id="again-via-store")
            _check_result(
                await plugins.store_upsert(again),
                True,
                again,
                f"{text} via `store` after the same instant via `another_store`: a replay",
            )
            if text.startswith("0001-01-01T00:00:00Z"):
                continue
            earlier = format_instant(parse_instant(text) - timedelta(microseconds=1))
            _check_result(
                await other_plugins.store_upsert(make_snapshot(account_id, 3, earlier)),
                False,
                again,
                f"{earlier} via `another_store` after {text} via `store`",
            )

    @pytest.mark.anyio
    async def test_racing_writers_over_two_instances_never_lose_the_greater_snapshot(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        await self._contend([plugins, other_plugins])

    @pytest.mark.anyio
    async def test_concurrent_writers_over_two_instances_keep_the_greatest(
        self, plugins: Plugins, other_plugins: Plugins
    ) -> None:
        account_id = new_account_id()
        versions = list(range(1, CONCURRENT_WRITERS + 1))
        random.shuffle(versions)
        instances = [plugins, other_plugins]
        writes = [
            (instances[index % 2], make_snapshot(account_id, version, snapshot_id=f"v{version}"))
            for index, version in enumerate(versions)
        ]
        await self._check_race(writes, instances)


_OPENER_MISSING = (
    "no `{name}` fixture: an OpenerContract subclass defines `opener`, returning the plugin "
    "that implements `store_from_url` (e.g. the module your entry point names), and "
    "`opener_url`, returning a URL it opens on storage the test may write to"
)


class OpenerContract:
    """What an opener (``store_from_url``) must do. Subclass it and provide ``opener`` and
    ``opener_url``; override ``foreign_urls`` to add URLs that look like yours but are not."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def opener(self) -> Any:
        """Override: the plugin (object or module) that implements ``store_from_url``."""
        pytest.skip(_OPENER_MISSING.format(name="opener"))

    @pytest.fixture
    def opener_url(self) -> str:
        """Override: a URL ``opener`` opens, on storage this test may create and write to."""
        pytest.skip(_OPENER_MISSING.format(name="opener_url"))

    @pytest.fixture
    def foreign_urls(self) -> Sequence[str]:
        """URLs the opener must answer ``None`` for; :data:`FOREIGN_URLS` unless overridden."""
        return FOREIGN_URLS

    @pytest.fixture
    def opener_plugins(self, opener: Any) -> Plugins:
        return Plugins([opener], entry_points=False, require_store=False)

    @pytest.mark.anyio
    async def test_opener_returns_none_for_urls_it_does_not_own(
        self, opener_plugins: Plugins, foreign_urls: Sequence[str]
    ) -> None:
        for url in foreign_urls:
            shown = _repr.repr(url)
            try:
                found = await opener_plugins.store_from_url(url)
            except Exception as error:
                _fail(
                    f"store_from_url({shown}) raised {type(error).__name__}: {error}\n"
                    "  expected: None (a URL this plugin does not own; another plugin may)"
                )
            _check(
                found is None,
                f"store_from_url({shown}): expected None for a URL this plugin does not own, "
                f"found {_show(found)}",
            )

    def test_opener_is_not_a_store_itself(self, opener: Any) -> None:
        try:
            Plugins([opener, MemoryStore()], entry_points=False)
        except ConfigurationError as error:
            _fail(
                "the opener must implement store_from_url only, so that installing its entry "
                "point never adds a store to every app; with another store the app says: "
                f"{error}"
            )

    @pytest.mark.anyio
    async def test_opened_store_serves_a_whole_lifecycle(
        self, opener_plugins: Plugins, opener_url: str
    ) -> None:
        store = await opener_plugins.store_from_url(opener_url)
        _check(store is not None, f"store_from_url({opener_url!r}): expected a store, found None")
        try:
            plugins = Plugins([store], entry_points=False)
        except ConfigurationError as error:
            _fail(f"store_from_url({opener_url!r}) returned {store!r}, not a store: {error}")
        try:
            await plugins.store_create_tables()
            await plugins.store_create_tables()
            snapshot = make_snapshot(new_account_id())
            _check_result(
                await plugins.store_upsert(snapshot), True, snapshot, "upsert into the opened store"
            )
            _check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                "store_get from the opened store",
            )
            await plugins.store_create_tables()
            _check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                "store_get after store_create_tables ran again: it must keep what is stored",
            )
        finally:
            await plugins.store_close()
