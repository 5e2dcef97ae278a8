"""``parse_upsert``: one schema (``Snapshot``'s annotations) validates every body.

The answers to a fixed corpus of bodies were recorded before the schema was written once (with
the model and the hand-built validator it replaced); they must not change. Generated bodies
must be judged alike whichever way they are spelt.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import validation_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rsm_support import EXAMPLE_REQUEST, nested_personality

from runtime_snapshot_mount import SNAPSHOT_FIELDS, Snapshot, parse_instant, parse_upsert
from runtime_snapshot_mount.request import answers

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


def test_the_recorded_answers_to_a_corpus_of_bodies_are_unchanged() -> None:
    recorded = json.loads((Path(__file__).parent / "data" / "validation-answers.json").read_text())
    corpus = validation_corpus.bodies()
    assert len(corpus) == len(recorded)
    changed = []
    for body, expected in zip(corpus, recorded, strict=True):
        try:
            snapshot, synced_at = parse_upsert(body)
        except ValidationError as error:
            found: Any = answers.invalid(error).content["detail"]
        else:
            found = validation_corpus.accepted(snapshot.to_json(), synced_at)
        if without_positions(found) != without_positions(expected):
            changed.append((body[:200], expected, found))
    assert not changed, changed[:3]


def without_positions(answer: Any) -> Any:
    """``answer`` with the JSON parser's "at line L column C" dropped from its messages:
    where the parser stops on malformed input differs by a character between pydantic-core
    releases, and is the parser's, not the app's."""
    if isinstance(answer, str):
        return answer
    return [
        {**item, "msg": re.sub(r" at line \d+ column \d+$", "", item["msg"])} for item in answer
    ]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_any_body_becomes_its_snapshot_or_a_list_of_reasons(body: bytes) -> None:
    try:
        snapshot, synced_at = parse_upsert(body)
    except ValidationError as error:
        reasons = answers.invalid(error).content["detail"]
        assert reasons and all(reason["loc"][0] == "body" for reason in reasons)
        return
    document = json.loads(body)
    assert synced_at == document["strategy_synced_at"]
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
    assert snapshot.account_id == document["account_id"]
    assert snapshot.personality == document["personality"]


def outcome(body: bytes) -> Any:
    try:
        snapshot, synced_at = parse_upsert(body)
    except ValidationError as error:
        return ("invalid", answers.invalid(error).content)
    return ("valid", snapshot, synced_at)


def same(first: Any, second: Any) -> bool:
    if isinstance(first, float) and isinstance(second, float):
        return first == second or (math.isnan(first) and math.isnan(second))
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return len(first) == len(second) and all(map(same, first, second))
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    return bool(first == second)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"stage": None, "active_action": None, "active_skills": None},
        {"stage": "", "active_action": "", "active_skills": []},
        {"strategy_synced_at": "2026-03-22T10:30:00.5+02:00"},
        {"personality": {"a": [1.5, -0.0, 10**30, {"b": None}]}},
        {"personality": nested_personality(32)},
    ],
)
def test_valid_bodies_become_the_snapshot_they_describe(changes: dict[str, Any]) -> None:
    document = {**EXAMPLE_REQUEST, **changes}
    snapshot, synced_at = parse_upsert(json.dumps(document).encode())
    assert type(snapshot) is Snapshot and type(synced_at) is str
    assert synced_at == document["strategy_synced_at"]
    assert snapshot.strategy_synced_at == parse_instant(synced_at)
    for name in SNAPSHOT_FIELDS:
        if name != "strategy_synced_at":
            value = getattr(snapshot, name)
            assert (list(value) if isinstance(value, tuple) else value) == document.get(name)
    assert type(snapshot.active_skills) in (tuple, type(None))


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
def test_refusals_carry_the_reason(changes: dict[str, Any], reason: str) -> None:
    body = json.dumps({**EXAMPLE_REQUEST, **changes}, allow_nan=True).encode()
    with pytest.raises(ValidationError, match=reason):
        parse_upsert(body)
