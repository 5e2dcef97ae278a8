"""SPEC §2 step 3 and §3 through HTTP: every field rule, the 422 shape, nothing stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rsm_support import (
    ACCOUNT,
    EXAMPLE_APPLIED,
    EXAMPLE_REQUEST,
    MISSING,
    UPSERT_URL,
    client_for,
    compact,
    depth,
    example,
    json_headers,
    make_app,
    nested_personality,
    post_json,
    stored_in,
)

from runtime_snapshot_mount import MemoryStore, Snapshot

pytestmark = pytest.mark.anyio

TEXT_FIELDS = ["account_id", "ugc_account_id", "snapshot_id", "content_hash"]
REQUIRED_FIELDS = [*TEXT_FIELDS, "strategy_version", "strategy_synced_at", "personality"]
STORED_FIELDS = {*REQUIRED_FIELDS, "stage", "active_action", "active_skills"}


def rejected(**changes: Any) -> dict[str, Any]:
    """A body that would be applied over the seeded snapshot, were it not for ``changes``."""
    return example(**{"strategy_version": 8, "snapshot_id": "rejected", **changes})


def raw(**changes: Any) -> str:
    """:func:`rejected` as JSON text, for substituting literals json.dumps cannot write."""
    return json.dumps(rejected(**changes))


def assert_422_shape(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["detail"]
    errors = body["detail"]
    assert isinstance(errors, list) and errors
    for error in errors:
        assert list(error) == ["loc", "msg", "type"]
        assert isinstance(error["loc"], list) and error["loc"]
        assert all(isinstance(part, str | int) for part in error["loc"])
        assert isinstance(error["msg"], str) and error["msg"]
        assert isinstance(error["type"], str) and error["type"]
    return errors


async def assert_rejected(
    client: httpx.AsyncClient,
    store: MemoryStore,
    seeded: Snapshot,
    body: Any,
    loc: list[str | int],
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    response = await post_json(client, body, headers=headers)
    errors = assert_422_shape(response)
    assert [error["loc"] for error in errors] == [loc]
    assert stored_in(store) is seeded
    return errors


# -- the content type and the JSON document ---------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/json",
        "application/jsonp",
        "multipart/form-data; boundary=x",
    ],
)
async def test_non_json_content_type_is_422(
    client: httpx.AsyncClient,
    store: MemoryStore,
    seeded: Snapshot,
    content_type: str | None,
) -> None:
    headers = json_headers()
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    response = await client.post(UPSERT_URL, content=json.dumps(rejected()), headers=headers)
    errors = assert_422_shape(response)
    assert errors[0]["loc"][0] in {"body", "header"}
    assert stored_in(store) is seeded


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.x+json",
        "application/merge-patch+json",
    ],
)
async def test_json_and_plus_json_content_types_are_accepted(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await post_json(client, EXAMPLE_REQUEST, headers={"Content-Type": content_type})
    assert response.status_code == 200
    assert response.content == compact(EXAMPLE_APPLIED)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'account_id': 'x'}", id="single-quotes"),
        pytest.param(json.dumps(EXAMPLE_REQUEST).encode() + b"}", id="trailing-brace"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(
            json.dumps(rejected()).encode().replace(b"ugc_123", b"ugc_\xed\xa0\x80"),
            id="utf8-encoded-surrogate",
        ),
    ],
)
async def test_invalid_json_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, body: bytes
) -> None:
    await assert_rejected(client, store, seeded, body, ["body"])


@pytest.mark.parametrize("document", ["[]", json.dumps([EXAMPLE_REQUEST]), '"text"', "null", "7"])
async def test_top_level_value_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, document: str
) -> None:
    await assert_rejected(client, store, seeded, document, ["body"])


async def test_missing_field_error_has_fastapis_exact_shape(client: httpx.AsyncClient) -> None:
    response = await post_json(client, example(account_id=MISSING))
    assert response.status_code == 422
    assert response.content == compact(
        {"detail": [{"loc": ["body", "account_id"], "msg": "Field required", "type": "missing"}]}
    )


async def test_every_failing_field_is_reported(client: httpx.AsyncClient) -> None:
    response = await post_json(client, example(account_id="", strategy_version=0, personality=None))
    errors = assert_422_shape(response)
    assert sorted(tuple(error["loc"]) for error in errors) == [
        ("body", "account_id"),
        ("body", "personality"),
        ("body", "strategy_version"),
    ]


async def test_error_body_does_not_echo_the_input(client: httpx.AsyncClient) -> None:
    secret = "sk_live_do_not_echo"
    response = await post_json(client, example(content_hash=secret * 20))
    assert_422_shape(response)
    assert secret not in response.text


# -- required fields and their types ----------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
async def test_missing_required_field_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, field: str
) -> None:
    errors = await assert_rejected(
        client, store, seeded, rejected(**{field: MISSING}), ["body", field]
    )
    assert errors[0]["type"] == "missing"


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("value", [None, 5, 1.5, True, [], {}, ["x"]], ids=repr)
async def test_text_field_of_another_type_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, field: str, value: Any
) -> None:
    await assert_rejected(client, store, seeded, rejected(**{field: value}), ["body", field])


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("length", [0, 256])
async def test_text_field_of_0_or_256_characters_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, field: str, length: int
) -> None:
    await assert_rejected(client, store, seeded, rejected(**{field: "x" * length}), ["body", field])


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("value", ["x", "é" * 255, "😀" * 255], ids=["1", "255-latin", "255-emoji"])
async def test_text_field_of_1_to_255_characters_is_accepted(
    store: MemoryStore, field: str, value: str
) -> None:
    app = make_app(store, accounts=[ACCOUNT, value])
    async with client_for(app) as client:
        response = await post_json(client, example(**{field: value}))
    assert response.status_code == 200
    stored = stored_in(store, value if field == "account_id" else ACCOUNT)
    assert stored is not None and getattr(stored, field) == value


@pytest.mark.parametrize(
    "value",
    ["7", 7.0, 7.5, True, False, 0, -1, -(2**63), 2**63, 10**40, None, [7], {"v": 7}],
    ids=repr,
)
async def test_strategy_version_that_is_not_an_integer_from_1_to_2_63_minus_1_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, value: Any
) -> None:
    await assert_rejected(
        client, store, seeded, rejected(strategy_version=value), ["body", "strategy_version"]
    )


@pytest.mark.parametrize("literal", ["7e0", "NaN", "Infinity"])
async def test_strategy_version_written_as_a_float_literal_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, literal: str
) -> None:
    body = raw().replace('"strategy_version": 8', f'"strategy_version": {literal}')
    assert literal in body
    await assert_rejected(client, store, seeded, body, ["body", "strategy_version"])


@pytest.mark.parametrize("version", [1, 2**63 - 1])
async def test_strategy_version_1_and_2_63_minus_1_are_accepted(
    client: httpx.AsyncClient, version: int
) -> None:
    response = await post_json(client, example(strategy_version=version))
    assert response.json() == {**EXAMPLE_APPLIED, "strategy_version": version}


# -- optional fields --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["stage", "active_action"])
@pytest.mark.parametrize("value", ["x" * 1001, 5, True, [], {}, ["warmup"]], ids=repr)
async def test_label_over_1000_characters_or_not_a_string_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, field: str, value: Any
) -> None:
    await assert_rejected(client, store, seeded, rejected(**{field: value}), ["body", field])


@pytest.mark.parametrize("field", ["stage", "active_action"])
@pytest.mark.parametrize("value", ["", "x" * 1000, "ステ" * 500, None, MISSING], ids=repr)
async def test_label_of_at_most_1000_characters_or_null_or_absent_is_accepted(
    client: httpx.AsyncClient, store: MemoryStore, field: str, value: Any
) -> None:
    response = await post_json(client, example(**{field: value}))
    assert response.status_code == 200
    stored = stored_in(store)
    assert stored is not None
    assert getattr(stored, field) == (None if value is MISSING else value)


@pytest.mark.parametrize(
    ("value", "loc"),
    [
        pytest.param(["skill"] * 257, ["body", "active_skills"], id="257-items"),
        pytest.param([""], ["body", "active_skills", 0], id="empty-item"),
        pytest.param(["ok", "x" * 256], ["body", "active_skills", 1], id="256-char-item"),
        pytest.param(["ok", 5], ["body", "active_skills", 1], id="number-item"),
        pytest.param([None], ["body", "active_skills", 0], id="null-item"),
        pytest.param([["nested"]], ["body", "active_skills", 0], id="array-item"),
        pytest.param([{"name": "x"}], ["body", "active_skills", 0], id="object-item"),
        pytest.param("warmup", ["body", "active_skills"], id="string"),
        pytest.param({"warmup": True}, ["body", "active_skills"], id="object"),
        pytest.param(5, ["body", "active_skills"], id="number"),
    ],
)
async def test_invalid_active_skills_are_422(
    client: httpx.AsyncClient,
    store: MemoryStore,
    seeded: Snapshot,
    value: Any,
    loc: list[str | int],
) -> None:
    await assert_rejected(client, store, seeded, rejected(active_skills=value), loc)


@pytest.mark.parametrize(
    "value",
    [[], ["x"], ["s" * 255] * 256, [f"skill-{i}" for i in range(256)], None, MISSING],
    ids=["empty", "one", "256-items-of-255", "256-distinct", "null", "absent"],
)
async def test_valid_active_skills_are_accepted_and_stored(
    client: httpx.AsyncClient, store: MemoryStore, value: Any
) -> None:
    response = await post_json(client, example(active_skills=value))
    assert response.status_code == 200
    stored = stored_in(store)
    assert stored is not None
    expected = None if value is MISSING or value is None else tuple(value)
    assert stored.active_skills == expected


# -- personality ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], [{"a": 1}], "casual", 5, True], ids=repr)
async def test_personality_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, value: Any
) -> None:
    await assert_rejected(
        client, store, seeded, rejected(personality=value), ["body", "personality"]
    )


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays-and-objects", "objects"])
async def test_personality_32_levels_deep_is_accepted_and_stored_as_is(
    client: httpx.AsyncClient, store: MemoryStore, arrays: bool
) -> None:
    personality = nested_personality(32, arrays=arrays)
    assert depth(personality) == 32
    response = await post_json(client, example(personality=personality))
    assert response.status_code == 200
    stored = stored_in(store)
    assert stored is not None and stored.personality == personality


@pytest.mark.parametrize("arrays", [True, False], ids=["arrays-and-objects", "objects"])
async def test_personality_33_levels_deep_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, arrays: bool
) -> None:
    personality = nested_personality(33, arrays=arrays)
    assert depth(personality) == 33
    await assert_rejected(
        client, store, seeded, rejected(personality=personality), ["body", "personality"]
    )


async def test_deep_nesting_outside_personality_is_still_only_a_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot
) -> None:
    deep = "[" * 5000 + "]" * 5000
    response = await post_json(client, raw().replace('"stage": "warmup"', f'"stage": {deep}'))
    assert_422_shape(response)
    assert stored_in(store) is seeded


async def test_personality_round_trips_json_values_and_empty_containers(
    client: httpx.AsyncClient, store: MemoryStore
) -> None:
    personality = {
        "": "empty key",
        "numbers": [0, -1, 2**63, -(10**30), 1.5, -0.25, 1e-7],
        "flags": [True, False, None],
        "empty": [{}, [], ""],
        "text": 'naïve "quoted" \\ 😀 \t\n',
    }
    response = await post_json(client, example(personality=personality))
    assert response.status_code == 200
    stored = stored_in(store)
    assert stored is not None and stored.personality == personality


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("where", ["value", "nested"])
async def test_non_finite_number_in_personality_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, literal: str, where: str
) -> None:
    marker = "__NUMBER__"
    personality: dict[str, Any] = (
        {"score": marker} if where == "value" else {"a": [{"b": [1, marker]}]}
    )
    body = raw(personality=personality).replace(f'"{marker}"', literal)
    assert literal in body
    await assert_rejected(client, store, seeded, body, ["body", "personality"])


# -- U+0000 and lone surrogates ---------------------------------------------------------

NUL = "a\u0000b"


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        *[
            pytest.param({field: NUL}, ["body", field], id=field)
            for field in [*TEXT_FIELDS, "stage", "active_action"]
        ],
        pytest.param({"active_skills": ["ok", NUL]}, ["body", "active_skills", 1], id="skill"),
        pytest.param(
            {"strategy_synced_at": "2026-03-22T08:30:00\u0000Z"},
            ["body", "strategy_synced_at"],
            id="strategy_synced_at",
        ),
        pytest.param({"personality": {NUL: "x"}}, ["body", "personality"], id="personality-key"),
        pytest.param(
            {"personality": {"a": {"b": [1, {"c": NUL}]}}},
            ["body", "personality"],
            id="nested-personality-string",
        ),
        pytest.param(
            {"personality": {"a": [{"k\u0000": 1}]}},
            ["body", "personality"],
            id="nested-personality-key",
        ),
        pytest.param({"personality": {"a": "\u0000"}}, ["body", "personality"], id="only-nul"),
    ],
)
async def test_u0000_in_any_string_is_422(
    client: httpx.AsyncClient,
    store: MemoryStore,
    seeded: Snapshot,
    changes: dict[str, Any],
    loc: list[str | int],
) -> None:
    body = json.dumps(rejected(**changes))
    assert "\\u0000" in body
    await assert_rejected(client, store, seeded, body, loc)


SURROGATE = "__SURROGATE__"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83dx", "\\ud800\\ud800"])
@pytest.mark.parametrize(
    "changes",
    [
        *[pytest.param({field: SURROGATE}, id=field) for field in [*TEXT_FIELDS, "stage"]],
        pytest.param({"active_action": SURROGATE}, id="active_action"),
        pytest.param({"active_skills": ["ok", SURROGATE]}, id="skill"),
        pytest.param({"strategy_synced_at": SURROGATE}, id="strategy_synced_at"),
        pytest.param({"personality": {SURROGATE: 1}}, id="personality-key"),
        pytest.param({"personality": {"a": [{"b": SURROGATE}]}}, id="nested-personality"),
        pytest.param({"unknown_field": SURROGATE}, id="unknown-field"),
    ],
)
async def test_lone_surrogate_escape_anywhere_is_422(
    client: httpx.AsyncClient,
    store: MemoryStore,
    seeded: Snapshot,
    changes: dict[str, Any],
    escape: str,
) -> None:
    body = json.dumps(rejected(**changes)).replace(SURROGATE, escape)
    assert escape in body
    response = await post_json(client, body)
    errors = assert_422_shape(response)
    assert errors[0]["loc"][0] == "body"
    assert stored_in(store) is seeded


async def test_surrogate_pair_escape_is_a_valid_character(
    client: httpx.AsyncClient, store: MemoryStore
) -> None:
    body = json.dumps(example(stage="__PAIR__")).replace("__PAIR__", "\\ud83d\\ude00")
    response = await post_json(client, body)
    assert response.status_code == 200
    stored = stored_in(store)
    assert stored is not None and stored.stage == "😀"


# -- strategy_synced_at -----------------------------------------------------------------

INVALID_TIMESTAMPS = [
    pytest.param("2026-03-22T08:30:00", id="naive"),
    pytest.param("2026-03-22T08:30:00.000", id="naive-with-fraction"),
    pytest.param("2026-03-22", id="date-only"),
    pytest.param("08:30:00Z", id="time-only"),
    pytest.param(1774168200, id="epoch-number"),
    pytest.param(1774168200.5, id="epoch-float"),
    pytest.param("1774168200", id="epoch-string"),
    pytest.param("2026-02-30T08:30:00Z", id="february-30"),
    pytest.param("2025-02-29T08:30:00Z", id="february-29-non-leap"),
    pytest.param("2026-13-01T08:30:00Z", id="month-13"),
    pytest.param("2026-00-10T08:30:00Z", id="month-0"),
    pytest.param("2026-03-22T25:00:00Z", id="hour-25"),
    pytest.param("2026-03-22T08:61:00Z", id="minute-61"),
    pytest.param("2026-03-22T08:30:00+24:00", id="offset-24h"),
    pytest.param("2026-03-22T08:30:00+02:60", id="offset-60min"),
    pytest.param("2026-03-22T08:30:00+2:00", id="offset-one-digit-hour"),
    pytest.param("2026-03-22T08:30:00+02", id="offset-hours-only"),
    pytest.param("2026-03-22T08:30:00 +02:00", id="space-before-offset"),
    pytest.param("2026-03-22T08:30:00UTC", id="zone-name"),
    pytest.param("2026-03-22T08:30:00.Z", id="empty-fraction"),
    pytest.param("2026-03-22T08:30:00Z ", id="trailing-space"),
    pytest.param(" 2026-03-22T08:30:00Z", id="leading-space"),
    pytest.param("2026-03-22T08:30:00Z\n", id="trailing-newline"),
    pytest.param("0000-01-01T00:00:00Z", id="year-0000"),
    pytest.param("0000-12-31T23:30:00-01:00", id="year-0000-into-0001"),
    pytest.param("0001-01-01T00:00:00+01:00", id="before-0001-in-utc"),
    pytest.param("0001-01-01T00:59:59.999999+01:00", id="just-before-0001-in-utc"),
    pytest.param("9999-12-31T23:30:00-01:00", id="after-9999-in-utc"),
    pytest.param("10000-01-01T00:00:00Z", id="five-digit-year"),
    pytest.param("\u0662\u0660\u0662\u0666-03-22T08:30:00Z", id="arabic-indic-digits"),
    pytest.param("\uff12\uff10\uff12\uff16-03-22T08:30:00Z", id="fullwidth-digits"),
    pytest.param("", id="empty"),
    pytest.param("now", id="word"),
    pytest.param("Sun, 22 Mar 2026 08:30:00 GMT", id="http-date"),
    pytest.param(None, id="null"),
    pytest.param({"iso": "2026-03-22T08:30:00Z"}, id="object"),
]


@pytest.mark.parametrize("value", INVALID_TIMESTAMPS)
async def test_invalid_strategy_synced_at_is_422(
    client: httpx.AsyncClient, store: MemoryStore, seeded: Snapshot, value: Any
) -> None:
    await assert_rejected(
        client, store, seeded, rejected(strategy_synced_at=value), ["body", "strategy_synced_at"]
    )


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T01:00:00+01:00",
        "0001-01-01T00:00:00-01:00",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.9999999Z",
        "9999-12-31T23:30:00+01:00",
        "2024-02-29T12:00:00Z",
        "2026-03-22T08:30:00+23:59",
        "2026-03-22T08:30:00-23:59",
        "2026-03-22T08:30:00-00:00",
    ],
)
async def test_valid_strategy_synced_at_at_the_edges_is_accepted(
    client: httpx.AsyncClient, value: str
) -> None:
    response = await post_json(client, example(strategy_synced_at=value))
    assert response.status_code == 200, response.text
    assert response.json()["strategy_synced_at"] == value


# -- unknown fields ---------------------------------------------------------------------


async def test_unknown_top_level_fields_are_ignored_and_not_stored(
    client: httpx.AsyncClient, store: MemoryStore
) -> None:
    body = {
        **EXAMPLE_REQUEST,
        "tenant": "someone-else",
        "status": "forged",
        "extra": {"deep": [1, 2, {"x": None}]},
    }
    response = await post_json(client, body)
    assert response.content == compact(EXAMPLE_APPLIED)
    stored = stored_in(store, ACCOUNT)
    assert stored is not None
    assert set(stored.to_json()) == STORED_FIELDS
    assert not hasattr(stored, "tenant") and not hasattr(stored, "extra")
