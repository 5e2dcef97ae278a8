"""``parse_upsert``: its shorter way for ordinary bodies answers exactly as ``SnapshotRequest``.

The endpoint validates a body with :func:`parse_upsert`, which skips the per-string Python
checks when the body cannot hold U+0000, and falls back to :class:`SnapshotRequest` for the
rest. These properties hold both to the same result for any body: the same snapshot and
``strategy_synced_at`` when valid, the same errors when not.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rsm_support import EXAMPLE_REQUEST, nested_personality

from runtime_snapshot_mount import Snapshot, SnapshotRequest
from runtime_snapshot_mount.snapshot import parse_upsert

FIELDS = list(EXAMPLE_REQUEST)

texts = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=st.sampled_from('a\x00\udc00\ud800é\u2028\\"z'), max_size=6),
    st.sampled_from(["", "x" * 255, "x" * 256, "y" * 1000, "y" * 1001, "\x00", "a\x00b"]),
)
times = st.one_of(
    st.sampled_from(
        [
            "2026-03-22T08:30:00.000Z",
            "2026-03-22T08:30:00Z",
            "2026-03-22T08:30:00.123456Z",
            "2026-03-22T10:30:00+02:00",
            "2026-03-22t08:30:00z",
            "2026-02-30T08:30:00.000Z",
            "2026-03-22T24:00:00Z",
            "2026-03-22T08:30:00",
            "0000-01-01T00:00:00Z",
            "2026-03-22T08:30:00.000Z\x00",
        ]
    ),
    texts,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    times,
    st.sampled_from([0, 1, 2**63 - 1, 2**63, -1, 7.0, "7", True]),
    st.lists(texts, max_size=3),
    st.builds(nested_personality, st.integers(min_value=30, max_value=34)),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = dict(EXAMPLE_REQUEST)
    for field in draw(st.lists(st.sampled_from([*FIELDS, "unknown"]), max_size=4)):
        if draw(st.booleans()) and field in body:
            del body[field]
        else:
            body[field] = draw(field_values)
    text = json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def outcome(parse: Any, body: bytes) -> Any:
    try:
        snapshot, synced_at = parse(body)
    except ValidationError as error:
        return ("invalid", error.errors(include_url=False, include_context=False))
    return ("valid", snapshot, str(synced_at))


def by_the_model(body: bytes) -> tuple[Snapshot, str]:
    request = SnapshotRequest.model_validate_json(body)
    return request.to_snapshot(), request.strategy_synced_at


def same(first: Any, second: Any) -> bool:
    # NaN never survives validation, but compare it as equal in error inputs all the same
    if isinstance(first, float) and isinstance(second, float):
        return first == second or (math.isnan(first) and math.isnan(second))
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return len(first) == len(second) and all(map(same, first, second))
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    return bool(first == second)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_any_body_gets_the_models_answer(body: bytes) -> None:
    assert same(outcome(parse_upsert, body), outcome(by_the_model, body))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"stage": None, "active_action": None, "active_skills": None},
        {"strategy_synced_at": "2026-03-22T10:30:00.5+02:00"},
        {"personality": {"a": [1.5, -0.0, 10**30, {"b": None}]}},
        {"personality": nested_personality(32)},
    ],
)
def test_valid_bodies_take_the_shorter_way(changes: dict[str, Any]) -> None:
    body = json.dumps({**EXAMPLE_REQUEST, **changes}).encode()
    snapshot, synced_at = parse_upsert(body)
    assert (snapshot, synced_at) == by_the_model(body)
    assert type(synced_at) is str  # not the model's SyncedAt: no model was built


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"snapshot_id": "a\x00b"}, r"U\+0000"),
        ({"personality": {"k\x00": 1}}, r"U\+0000"),
        ({"personality": {"x": float("inf")}}, "finite"),
        ({"personality": nested_personality(33)}, "deeper"),
        ({"strategy_synced_at": "2026-02-30T08:30:00.000Z"}, "not a possible date"),
    ],
)
def test_refusals_carry_the_models_reason(changes: dict[str, Any], reason: str) -> None:
    body = json.dumps({**EXAMPLE_REQUEST, **changes}, allow_nan=True).encode()
    with pytest.raises(ValidationError, match=reason):
        parse_upsert(body)
