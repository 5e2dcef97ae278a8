"""Bad input, fuzzed: whatever arrives, the answer is a documented 4xx or a 200, never a 500,
and a 4xx never changes what is stored.

Requests go straight to the ASGI app (no HTTP client in between) so that headers, bodies and
``Content-Length`` can be anything, including what a client library would refuse to send.
Each property is bounded (``max_examples``) to keep the file fast; ``test_fuzz_case_counts``
prints how many cases ran (``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rsm_support import EXAMPLE_REQUEST, UPSERT_URL

from runtime_snapshot_mount import Account, MemoryStore, create_app, hookimpl

try:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )
except ImportError:  # schemathesis needs Python 3.11+
    schemathesis = None

TOKEN = "fuzz-token-0123456789"
LIMIT = 2048
ALLOWED = {200, 401, 404, 413, 422}
EXAMPLES = 300
CASES: Counter[str] = Counter()
"""How many cases each fuzzing test ran in this session."""

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class PartitionedAccounts:
    """Account ids starting with ``hidden`` are not visible, ``retired`` ones are inactive."""

    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        if account_id.startswith("hidden"):
            return None
        return Account(account_id, active=not account_id.startswith("retired"))


STORE = MemoryStore()
APP = create_app(
    STORE,
    PartitionedAccounts(),
    api_keys=[TOKEN],
    max_body_bytes=LIMIT,
    entry_points=False,
    openapi=True,
)
ACCOUNT_IDS = st.sampled_from(["acct-1", "acct-2", "hidden-1", "retired-1", "", "x" * 256])


# -- calling the app -------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {key.decode("latin-1").lower(): value for key, value in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    headers: Sequence[tuple[bytes, bytes]],
    chunks: Sequence[bytes] = (),
    *,
    method: str = "POST",
    path: str = UPSERT_URL,
) -> Answer:
    """Send one request to ``APP`` as an ASGI server would, the body in ``chunks``."""
    pending = list(chunks) or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await APP(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return Answer(start["status"], start.get("headers", []), body)


def good_headers(content_type: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", content_type)]


def check_answer(answer: Answer, before: dict[str, Any]) -> None:
    """Every answer: allowed status, JSON body of the documented shape, store kept on 4xx."""
    assert answer.status in ALLOWED, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == b"application/json"
    assert answer.headers["x-request-id"]
    body = answer.json()
    if answer.status == 200:
        assert body["status"] in {"upserted", "ignored_stale"}
        return
    assert STORE.contents() == before
    if answer.status == 422:
        assert body["detail"]
        for error in body["detail"]:
            assert set(error) == {"loc", "msg", "type"}
    else:
        assert isinstance(body["detail"], str)
    assert b"Traceback" not in answer.body


# -- strategies ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64)
    | st.floats()
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(), children, max_size=6)
    ),
    max_leaves=40,
)
FIELDS = [*EXAMPLE_REQUEST, "unknown_field"]


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    """The example request with a few fields replaced by any JSON value, or removed."""
    body: dict[str, Any] = dict(EXAMPLE_REQUEST, account_id=draw(ACCOUNT_IDS))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return body


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a body: all-ASCII with escapes, or UTF-8 (lone surrogates left broken)."""
    text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """``body`` split at a few random points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    edges = [0, *cuts, len(body)]
    return [body[start:end] for start, end in itertools.pairwise(edges)]


# -- properties ------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


@fuzz_settings
@given(value=json_values, ascii_only=st.booleans())
async def test_any_json_value_as_the_body_is_answered_without_a_500(
    value: Any, ascii_only: bool
) -> None:
    CASES["any JSON value"] += 1
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    before = STORE.contents()
    answer = await call(good_headers(), [raw])
    check_answer(answer, before)
    if not isinstance(value, dict) and len(raw) <= LIMIT:
        assert answer.status == 422


@fuzz_settings
@given(body=mutated_examples(), ascii_only=st.booleans())
async def test_example_with_fields_replaced_by_any_json_is_answered_without_a_500(
    body: dict[str, Any], ascii_only: bool
) -> None:
    CASES["example with fields replaced"] += 1
    before = STORE.contents()
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    answer = await call(good_headers(), [raw])
    check_answer(answer, before)
    if len(raw) > LIMIT:
        assert answer.status == 413
    elif answer.status == 200:
        assert STORE.contents()[body["account_id"]].strategy_version >= 1


almost_json = st.builds(
    lambda raw, cut, flip: raw[:cut] + bytes([flip]) + raw[cut + 1 :],
    st.just(json.dumps(EXAMPLE_REQUEST).encode()),
    st.integers(0, len(json.dumps(EXAMPLE_REQUEST))),
    st.integers(0, 255),
)
deep_brackets = st.builds(
    lambda depth, opener: opener * depth, st.integers(1, 5000), st.sampled_from([b"[", b'{"a":'])
)


@fuzz_settings
@given(
    raw=st.binary(max_size=LIMIT + 64) | almost_json | deep_brackets,
    data=st.data(),
)
async def test_raw_bytes_as_the_body_are_answered_without_a_500(raw: bytes, data: Any) -> None:
    CASES["raw bytes"] += 1
    before = STORE.contents()
    answer = await call(good_headers(), data.draw(chunked(raw)))
    check_answer(answer, before)
    if len(raw) > LIMIT:
        assert answer.status == 413
    else:
        assert answer.status != 413


AUTHORIZATION = [
    (None, False),
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),
    (f"BEARER {TOKEN}", True),
    (f"Bearer  {TOKEN} ", True),
    (f"Bearer\t{TOKEN}", False),
    (f"Bearer {TOKEN}x", False),
    (f"Bearer {TOKEN[:-1]}", False),
    (f"Basic {TOKEN}", False),
    (f"Token {TOKEN}", False),
    (f"{TOKEN}", False),
    ("Bearer", False),
    ("Bearer ", False),
    ("", False),
]
CONTENT_TYPES = [
    (None, False),
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("APPLICATION/JSON", True),
    ("application/merge-patch+json", True),
    ("application/vnd.phonefarm+json; version=1", True),
    ("application/jsonx", False),
    ("text/plain", False),
    ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False),
    ("", False),
]


@st.composite
def authorization(draw: st.DrawFn) -> tuple[bytes | None, bool]:
    if draw(st.booleans()):
        value, valid = draw(st.sampled_from(AUTHORIZATION))
        return (None if value is None else value.encode()), valid
    raw = draw(st.binary(max_size=80))
    return raw, False


@st.composite
def content_type(draw: st.DrawFn) -> tuple[bytes | None, bool]:
    if draw(st.integers(0, 4)):
        value, is_json = draw(st.sampled_from(CONTENT_TYPES))
        return (None if value is None else value.encode()), is_json
    raw = draw(st.binary(max_size=40).filter(lambda b: b"json" not in b.lower()))
    return raw, False


@st.composite
def content_length(draw: st.DrawFn, size: int) -> tuple[bytes | None, bool]:
    """A Content-Length header (or none) and whether it declares more than the limit."""
    choice = draw(
        st.sampled_from(
            [
                (None, False),
                (str(size).encode(), size > LIMIT),
                (str(max(size - 1, 0)).encode(), size - 1 > LIMIT),
                (str(size + 1).encode(), size + 1 > LIMIT),
                (b"0", False),
                (str(LIMIT).encode(), False),
                (str(LIMIT + 1).encode(), True),
                (b"9" * 30, True),
                (b"9" * 5000, True),
                (b"0" * 40 + b"12", False),
                (b"-1", False),
                (b"12abc", False),
                (b"\xb2", False),  # a superscript two: str.isdigit() says yes, int() says no
                ("\uff11\uff12".encode(), False),  # full-width digits
                (b" 12", False),
            ]
        )
    )
    return choice


@fuzz_settings
@given(
    auth=authorization(),
    ctype=content_type(),
    body=st.one_of(
        encoded(mutated_examples()),
        st.binary(max_size=LIMIT + 16),
        st.integers(LIMIT - 4, LIMIT + 4).map(
            lambda n: json.dumps(EXAMPLE_REQUEST).encode().ljust(n)
        ),
    ),
    data=st.data(),
    request_id=st.none() | st.binary(max_size=80),
)
async def test_header_combinations_decide_401_413_and_422_in_order(
    auth: tuple[bytes | None, bool],
    ctype: tuple[bytes | None, bool],
    body: bytes,
    data: Any,
    request_id: bytes | None,
) -> None:
    CASES["header combinations"] += 1
    (auth_value, auth_ok), (ctype_value, is_json) = auth, ctype
    length_value, declares_too_much = data.draw(content_length(len(body)))
    headers = [
        (name, value)
        for name, value in [
            (b"authorization", auth_value),
            (b"content-type", ctype_value),
            (b"content-length", length_value),
            (b"x-request-id", request_id),
        ]
        if value is not None
    ]
    before = STORE.contents()
    answer = await call(headers, data.draw(chunked(body)))
    check_answer(answer, before)
    if not auth_ok:
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == b"Bearer"
    elif declares_too_much or len(body) > LIMIT:
        assert answer.status == 413
    elif not is_json:
        assert answer.status == 422
        assert answer.json()["detail"][0]["loc"] == ["header", "content-type"]
    else:
        assert answer.status in {200, 404, 422}


@fuzz_settings
@given(
    size=st.integers(LIMIT - 3, LIMIT + 3),
    version=st.integers(1, 2**63 - 1),
    declare=st.booleans(),
    data=st.data(),
)
async def test_bodies_around_the_limit_are_accepted_up_to_it_exactly(
    size: int, version: int, declare: bool, data: Any
) -> None:
    CASES["sizes around the limit"] += 1
    body = json.dumps(dict(EXAMPLE_REQUEST, account_id="acct-size", strategy_version=version))
    raw = body.encode().ljust(size)  # JSON allows trailing whitespace
    headers = good_headers()
    if declare:
        headers.append((b"content-length", str(size).encode()))
    before = STORE.contents()
    answer = await call(headers, data.draw(chunked(raw)))
    check_answer(answer, before)
    assert answer.status == (200 if size <= LIMIT else 413)


@fuzz_settings
@given(method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]), path=st.text(max_size=30))
async def test_other_methods_and_paths_answer_405_or_404(method: str, path: str) -> None:
    CASES["other methods and paths"] += 1
    before = STORE.contents()
    answer = await call(good_headers(), [b"{}"], method=method, path=UPSERT_URL)
    assert answer.status == 405
    assert answer.headers["allow"] == b"POST"
    other = "/" + path.replace("/", "")
    answer = await call(good_headers(), [b"{}"], method="POST", path=other)
    assert answer.status == (405 if other in ("/openapi.json", "/healthz") else 404)
    assert STORE.contents() == before


# -- schemathesis: generated from the app's own OpenAPI document --------------------------

if schemathesis is not None:
    SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)

    @pytest.mark.skipif(
        (3, 11) <= sys.version_info[:3] < (3, 11, 8),
        reason="CPython 3.11.0-3.11.7 bug gh-106905 (AST constructor recursion depth mismatch) "
        "breaks Hypothesis's lambda introspection under schemathesis; runs on 3.12 and 3.13",
    )
    @SCHEMA.parametrize()
    @settings(max_examples=200, deadline=None)
    def test_schemathesis_no_500_and_every_status_documented(case: Any) -> None:
        CASES["schemathesis"] += 1
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_headers_conformance,
                response_schema_conformance,
            ],
        )

else:

    @pytest.mark.skip(reason="schemathesis needs Python 3.11 or later")
    def test_schemathesis_no_500_and_every_status_documented() -> None:
        pass


def test_fuzz_case_counts(record_property: Any) -> None:
    """Report how many cases each fuzzing test ran (last in the file; see with ``-s``,
    or in a JUnit XML report as the property ``fuzz_cases``)."""
    if not CASES:
        pytest.skip("no fuzzing test ran in this session")
    record_property("fuzz_cases", json.dumps(dict(CASES), sort_keys=True))
    print("\nfuzz cases:", json.dumps(dict(CASES), sort_keys=True), "total", sum(CASES.values()))
    assert all(count > 0 for count in CASES.values())
