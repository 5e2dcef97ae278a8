"""The round-trip rules: every field comes back as it was sent, at its edge values (null and
empty, shortest and longest, every Unicode plane, every kind of JSON number, the ends of the
time range), and account ids are compared exactly."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from ..extend.plugins import Plugins
from ..request.snapshot import MAX_VERSION
from ._support import (
    StoreFixtures,
    check,
    check_equal,
    check_result,
    check_snapshot,
    json_value,
    make_snapshot,
    new_account_id,
)

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


def _account_with(*, length: int, filler: str) -> str:
    """A fresh account id of exactly ``length`` characters, padded with ``filler``."""
    base = new_account_id() + "-"
    padding = (filler * length)[: length - len(base)]
    return base + padding


class RoundTripRules(StoreFixtures):
    """What is stored is read back field by field as it was sent, at every edge value."""

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
            check_result(
                await plugins.store_upsert(snapshot),
                True,
                snapshot,
                f"account {snapshot.account_id!r}: a new account, though another id is alike",
            )
        for snapshot in snapshots:
            check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                f"account {snapshot.account_id!r} read back (ids are compared exactly)",
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
        check_equal(
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
        check(stored is not None, "store_get after the upsert: expected a snapshot, found None")
        assert stored is not None
        for index, number in enumerate(JSON_NUMBERS):
            found = stored.personality.get("numbers", [None] * len(JSON_NUMBERS))[index]
            check_equal(
                json_value(found),
                json_value(number),
                f"personality number {number!r} read back (compared as a decimal value)",
            )
        check_snapshot(stored, snapshot, "the personality with every kind of JSON number")

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
