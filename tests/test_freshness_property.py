"""Property tests of the stale rule (SPEC §4) against a simple model.

Timestamps are generated as texts with random offsets, separators and 0-9 fractional digits,
together with the integer count of nanoseconds since the epoch that the text names. The model
truncates that to microseconds and orders snapshots by ``(version, microseconds)``; the store
keeps the last snapshot whose key is not below the stored one (an exact replay is applied).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rsm_support import ACCOUNT, client_for, example, make_app, post_json

from runtime_snapshot_mount import MemoryStore, parse_instant, parse_upsert
from runtime_snapshot_mount.testing import make_snapshot

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_OFFSET_MINUTES = 23 * 60 + 59
PROPERTY_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150
)


@dataclass(frozen=True)
class Stamp:
    """A ``strategy_synced_at`` text and the instant it names, in whole nanoseconds."""

    text: str
    nanoseconds: int

    @property
    def microseconds(self) -> int:
        """The model's instant: digits past the sixth truncated (towards the past)."""
        return self.nanoseconds // 1000


def render(
    utc_second: datetime, fraction_ns: int, digits: int, offset: int, draw_style: int
) -> Stamp:
    """Write ``utc_second`` plus the first ``digits`` of ``fraction_ns`` in local time."""
    local = utc_second + timedelta(minutes=offset)
    separator = "Tt"[draw_style % 2]
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}{separator}"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    kept = f"{fraction_ns:09d}"[:digits]
    if digits:
        text += ".,"[draw_style // 2 % 2] + kept
    if offset == 0 and draw_style // 4 % 2 == 0:
        text += "Zz"[draw_style // 8 % 2]
    else:
        sign = "-" if offset < 0 or (offset == 0 and draw_style // 8 % 2) else "+"
        hours, minutes = divmod(abs(offset), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    whole_seconds = (utc_second - EPOCH) // timedelta(seconds=1)
    return Stamp(text, whole_seconds * 10**9 + int(kept.ljust(9, "0")))


offsets = st.one_of(st.just(0), st.integers(-MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES))


@st.composite
def stamps(draw: st.DrawFn, seconds: st.SearchStrategy[datetime]) -> Stamp:
    return render(
        draw(seconds),
        draw(st.integers(0, 10**9 - 1)),
        draw(st.integers(0, 9)),
        draw(offsets),
        draw(st.integers(0, 15)),
    )


def whole_seconds(low: datetime, high: datetime) -> st.SearchStrategy[datetime]:
    return st.datetimes(min_value=low, max_value=high, timezones=st.just(UTC)).map(
        lambda instant: instant.replace(microsecond=0)
    )


# Anywhere in the range that stays inside years 0001-9999 in local time too.
any_stamp = stamps(whole_seconds(datetime(1, 1, 2), datetime(9999, 12, 30)))

# A few nearby seconds and few fraction values, so that equal instants written
# differently and near-equal instants are common.
_BASE = datetime(2026, 3, 22, 8, 30, tzinfo=UTC)
close_stamp = st.builds(
    render,
    st.sampled_from([_BASE, _BASE + timedelta(seconds=1), _BASE - timedelta(hours=3)]),
    st.sampled_from([0, 1_000, 1_999, 2_000, 999_999_999, 500_000_000, 500_000_999]),
    st.integers(0, 9),
    offsets,
    st.integers(0, 15),
)


def micro_instant(stamp: Stamp) -> datetime:
    return EPOCH + timedelta(microseconds=stamp.microseconds)


# -- parsing ----------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(any_stamp)
def test_parsed_timestamp_is_the_utc_instant_truncated_to_microseconds(stamp: Stamp) -> None:
    parsed = parse_instant(stamp.text)
    assert parsed == micro_instant(stamp)
    assert parsed.utcoffset() == timedelta(0)


@PROPERTY_SETTINGS
@given(st.one_of(any_stamp, close_stamp), st.one_of(any_stamp, close_stamp))
def test_comparing_parsed_timestamps_is_comparing_truncated_utc_instants(
    first: Stamp, second: Stamp
) -> None:
    a, b = parse_instant(first.text), parse_instant(second.text)
    assert (a < b) == (first.microseconds < second.microseconds)
    assert (a == b) == (first.microseconds == second.microseconds)
    assert (a > b) == (first.microseconds > second.microseconds)


@PROPERTY_SETTINGS
@given(close_stamp)
def test_generated_timestamps_pass_request_validation(stamp: Stamp) -> None:
    snapshot, synced_at = parse_upsert(json.dumps(example(strategy_synced_at=stamp.text)).encode())
    assert synced_at == stamp.text
    assert snapshot.strategy_synced_at == micro_instant(stamp)


# -- the stale rule ---------------------------------------------------------------------

upserts = st.lists(st.tuples(st.integers(1, 3), close_stamp), min_size=1, max_size=12)


def model_answers(sequence: list[tuple[int, Stamp]]) -> list[tuple[bool, int]]:
    """For each upsert: whether it is applied, and the index of the upsert stored after it."""
    answers: list[tuple[bool, int]] = []
    stored_key: tuple[int, int] | None = None
    stored_index = -1
    for index, (version, stamp) in enumerate(sequence):
        key = (version, stamp.microseconds)
        applied = stored_key is None or key >= stored_key
        if applied:
            stored_key, stored_index = key, index
        answers.append((applied, stored_index))
    return answers


@PROPERTY_SETTINGS
@given(upserts)
def test_memory_store_hooks_follow_the_model(sequence: list[tuple[int, Stamp]]) -> None:
    store = MemoryStore()
    expected = model_answers(sequence)
    for index, ((version, stamp), (applied, stored_index)) in enumerate(
        zip(sequence, expected, strict=True)
    ):
        snapshot = make_snapshot(ACCOUNT, version, stamp.text, snapshot_id=f"s{index}")
        result = store.store_upsert(snapshot)
        assert result.applied is applied
        assert result.current.snapshot_id == f"s{stored_index}"
    stored_index = expected[-1][1]
    stored = store.store_get(ACCOUNT)
    assert stored is not None
    assert stored.snapshot_id == f"s{stored_index}"
    version, stamp = max(sequence, key=lambda item: (item[0], item[1].microseconds))
    assert stored.freshness == (version, micro_instant(stamp))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(upserts)
def test_app_answers_and_stored_snapshot_follow_the_model(
    sequence: list[tuple[int, Stamp]],
) -> None:
    store = MemoryStore()
    expected = model_answers(sequence)

    async def run() -> list[dict[str, object]]:
        answers = []
        async with client_for(make_app(store)) as client:
            for index, (version, stamp) in enumerate(sequence):
                body = example(
                    snapshot_id=f"s{index}", strategy_version=version, strategy_synced_at=stamp.text
                )
                response = await post_json(client, body)
                assert response.status_code == 200, response.text
                answers.append(response.json())
        return answers

    answers = anyio.run(run)
    for index, ((version, stamp), answer, (applied, _)) in enumerate(
        zip(sequence, answers, expected, strict=True)
    ):
        common = {"account_id": ACCOUNT, "snapshot_id": f"s{index}", "strategy_version": version}
        if applied:
            assert answer == {"status": "upserted", **common, "strategy_synced_at": stamp.text}
        else:
            assert answer == {"status": "ignored_stale", **common}
    stored_index = expected[-1][1]
    stored = store.store_get(ACCOUNT)
    assert stored is not None
    assert stored.snapshot_id == f"s{stored_index}"
    version, stamp = sequence[stored_index]
    assert stored.freshness == (version, micro_instant(stamp))
    assert stored.freshness == max((version, micro_instant(stamp)) for version, stamp in sequence)
