"""SPEC §2 through HTTP: the order of the checks, every failure's answer, the success bodies."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from rsm_support import (
    ACCOUNT,
    APPLIED_KEYS,
    EXAMPLE_APPLIED,
    EXAMPLE_IGNORED,
    EXAMPLE_REQUEST,
    FAILURE_BODY,
    IGNORED_KEYS,
    INACTIVE_ACCOUNT,
    NOT_FOUND_BODY,
    OTHER_ACCOUNT,
    ROTATED_TOKEN,
    TOKEN,
    UNAUTHORIZED_BODY,
    UPSERT_URL,
    RecordingBody,
    client_for,
    compact,
    example,
    json_headers,
    make_app,
    post_json,
    stored_in,
)

from runtime_snapshot_mount import (
    DEFAULT_MAX_BODY_BYTES,
    MemoryStore,
    Principal,
    Snapshot,
    UpsertResult,
    hookimpl,
    parse_instant,
)

pytestmark = pytest.mark.anyio

SMALL_LIMIT = 1024


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"
    assert response.content == UNAUTHORIZED_BODY


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON followed by spaces up to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


# -- step 1: the bearer token -----------------------------------------------------------


async def test_missing_authorization_header_is_401_with_bearer_challenge(
    client: httpx.AsyncClient, store: MemoryStore
) -> None:
    response = await post_json(client, EXAMPLE_REQUEST, token=None)
    assert_unauthorized(response)
    assert stored_in(store) is None


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Basic {TOKEN}", id="basic-scheme"),
        pytest.param(f"Token {TOKEN}", id="token-scheme"),
        pytest.param(f"Bearer{TOKEN}", id="no-space-after-scheme"),
        pytest.param(TOKEN, id="token-without-scheme"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Bearer    ", id="blank-token"),
        pytest.param("", id="empty-header"),
        pytest.param("Bearer wrong-token", id="wrong-token"),
        pytest.param(f"Bearer {TOKEN[:-1]}", id="prefix-of-a-valid-token"),
        pytest.param(f"Bearer {TOKEN}x", id="valid-token-with-suffix"),
        pytest.param(f"Bearer {TOKEN.upper()}", id="token-in-other-case"),
        pytest.param(f"Bearer {TOKEN} {TOKEN}", id="two-tokens"),
    ],
)
async def test_malformed_or_unknown_bearer_credentials_are_401(
    client: httpx.AsyncClient, store: MemoryStore, authorization: str
) -> None:
    response = await client.post(
        UPSERT_URL,
        content=json.dumps(EXAMPLE_REQUEST),
        headers={"Content-Type": "application/json", "Authorization": authorization},
    )
    assert_unauthorized(response)
    assert stored_in(store) is None


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, scheme: str) -> None:
    response = await client.post(
        UPSERT_URL,
        content=json.dumps(EXAMPLE_REQUEST),
        headers={"Content-Type": "application/json", "Authorization": f"{scheme} {TOKEN}"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "upserted"


async def test_both_rotated_keys_are_accepted(client: httpx.AsyncClient) -> None:
    first = await post_json(client, example(strategy_version=7), token=TOKEN)
    second = await post_json(client, example(strategy_version=8), token=ROTATED_TOKEN)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "upserted"


async def test_unauthenticated_oversize_body_is_401_not_413(store: MemoryStore) -> None:
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        response = await post_json(client, padded(EXAMPLE_REQUEST, 4 * SMALL_LIMIT), token=None)
    assert_unauthorized(response)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="invalid-json"),
        pytest.param(b"[]", "application/json", id="array"),
        pytest.param(json.dumps(example(strategy_version="7")), "application/json", id="bad-field"),
        pytest.param(json.dumps(EXAMPLE_REQUEST), "text/plain", id="not-json-content-type"),
    ],
)
async def test_unauthenticated_invalid_body_is_401_not_422(
    client: httpx.AsyncClient, content: bytes | str, content_type: str
) -> None:
    response = await client.post(
        UPSERT_URL,
        content=content,
        headers={"Content-Type": content_type, "Authorization": "Bearer wrong-token"},
    )
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-authorization"),
        pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
    ],
)
async def test_body_is_not_read_before_the_token_is_accepted(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = RecordingBody([json.dumps(EXAMPLE_REQUEST).encode()])
    response = await client.post(
        UPSERT_URL, content=body, headers={"Content-Type": "application/json", **headers}
    )
    assert_unauthorized(response)
    assert body.pulled == 0


async def test_streamed_body_is_read_once_the_token_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    raw = json.dumps(EXAMPLE_REQUEST).encode()
    body = RecordingBody([raw[:100], raw[100:]])
    response = await client.post(UPSERT_URL, content=body, headers=json_headers())
    assert response.status_code == 200
    assert response.content == compact(EXAMPLE_APPLIED)
    assert body.pulled == body.total


# -- step 2: the body size --------------------------------------------------------------


async def test_body_over_the_limit_with_content_length_is_413(store: MemoryStore) -> None:
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        response = await post_json(client, padded(EXAMPLE_REQUEST, SMALL_LIMIT + 1))
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert list(response.json()) == ["detail"]
    assert stored_in(store) is None


async def test_declared_content_length_over_the_limit_is_413_without_reading_the_body(
    store: MemoryStore,
) -> None:
    chunks = [b" " * 256 for _ in range(8)]
    body = RecordingBody(chunks)
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        response = await client.post(
            UPSERT_URL,
            content=body,
            headers={**json_headers(), "Content-Length": str(len(chunks) * 256)},
        )
    assert response.status_code == 413
    assert body.pulled == 0


async def test_chunked_body_over_the_limit_is_413_while_streaming(store: MemoryStore) -> None:
    raw = json.dumps(EXAMPLE_REQUEST).encode()
    chunks = [raw] + [b" " * 256 for _ in range(100)]
    body = RecordingBody(chunks)
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        request = client.build_request("POST", UPSERT_URL, content=body, headers=json_headers())
        assert "content-length" not in request.headers
        response = await client.send(request)
    assert response.status_code == 413
    assert isinstance(response.json()["detail"], str)
    # the app stopped reading soon after the limit instead of buffering everything
    assert body.pulled < body.total
    assert sum(len(chunk) for chunk in chunks[: body.pulled - 1]) <= SMALL_LIMIT
    assert stored_in(store) is None


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_of_exactly_the_limit_is_accepted(store: MemoryStore, streamed: bool) -> None:
    raw = padded(EXAMPLE_REQUEST, SMALL_LIMIT)
    content: Any = RecordingBody([raw[:500], raw[500:]]) if streamed else raw
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        response = await client.post(UPSERT_URL, content=content, headers=json_headers())
    assert response.status_code == 200
    assert response.content == compact(EXAMPLE_APPLIED)


async def test_default_limit_is_one_mebibyte(client: httpx.AsyncClient, store: MemoryStore) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    at_limit = await post_json(client, padded(EXAMPLE_REQUEST, DEFAULT_MAX_BODY_BYTES))
    assert at_limit.status_code == 200
    over = await post_json(
        client, padded(example(strategy_version=9), DEFAULT_MAX_BODY_BYTES + 1), token=TOKEN
    )
    assert over.status_code == 413
    stored = stored_in(store)
    assert stored is not None and stored.strategy_version == 7


async def test_oversize_body_is_413_before_its_content_type_or_json_is_checked(
    store: MemoryStore,
) -> None:
    async with client_for(make_app(store, max_body_bytes=SMALL_LIMIT)) as client:
        response = await client.post(
            UPSERT_URL,
            content=b"x" * (SMALL_LIMIT + 1),
            headers={**json_headers(), "Content-Type": "text/plain"},
        )
    assert response.status_code == 413


# -- step 4: the account ----------------------------------------------------------------


@pytest.mark.parametrize("account_id", ["account_unknown", INACTIVE_ACCOUNT])
async def test_unknown_or_inactive_account_is_404(
    client: httpx.AsyncClient, store: MemoryStore, account_id: str
) -> None:
    response = await post_json(client, example(account_id=account_id))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.content == NOT_FOUND_BODY
    assert stored_in(store, account_id) is None


async def test_invalid_body_for_an_unknown_account_is_422_before_404(
    client: httpx.AsyncClient,
) -> None:
    response = await post_json(client, example(account_id="account_unknown", personality=None))
    assert response.status_code == 422


# -- step 5: the store ------------------------------------------------------------------

SECRET_SQL = "INSERT INTO runtime_snapshots (account_id, personality) VALUES ($1, $2)"


class FailingStore:
    """A store whose upsert fails with a message full of things that must not leak."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> Any:
        raise RuntimeError(f"(psycopg.errors.InternalError) {SECRET_SQL} -- token={TOKEN}")

    @hookimpl
    def store_get(self, account_id: str) -> Snapshot | None:
        return self.inner.store_get(account_id)


class AsyncFailingStore(FailingStore):
    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> Any:
        raise ConnectionError(f"server closed the connection during {SECRET_SQL} ({TOKEN})")


class WrongResultStore(FailingStore):
    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> Any:
        return {"applied": True}


@pytest.mark.parametrize("store_class", [FailingStore, AsyncFailingStore, WrongResultStore])
async def test_store_failure_is_500_without_sql_or_token_and_logged_with_traceback(
    caplog: pytest.LogCaptureFixture, store_class: type[FailingStore]
) -> None:
    caplog.set_level(logging.ERROR, logger="runtime_snapshot_mount")
    async with client_for(make_app(store_class())) as client:
        response = await post_json(client, EXAMPLE_REQUEST)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.content == FAILURE_BODY
    for secret in ("INSERT", "runtime_snapshots", TOKEN, "Traceback", "psycopg"):
        assert secret not in response.text
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "the 500 was not logged"
    assert "Traceback (most recent call last)" in caplog.text
    if store_class is WrongResultStore:  # the store returned; the check after it raised
        expected = "TypeError: WrongResultStore.store_upsert returned dict, not UpsertResult"
        assert expected in caplog.text
    else:
        assert f"in {store_class.store_upsert.__name__}" in caplog.text  # the failing frame


class RaisingAuthenticator:
    @hookimpl
    def authenticate(self, token: str) -> Any:
        raise RuntimeError(f"directory lookup failed for {token}")


class RaisingAccounts:
    @hookimpl
    async def get_account(self, account_id: str, principal: Any) -> Any:
        raise RuntimeError("SELECT * FROM accounts failed")


@pytest.mark.parametrize("plugin", [RaisingAuthenticator(), RaisingAccounts()])
async def test_a_raising_auth_or_accounts_hook_is_500_and_logged(
    caplog: pytest.LogCaptureFixture, store: MemoryStore, plugin: object
) -> None:
    caplog.set_level(logging.ERROR, logger="runtime_snapshot_mount")
    async with client_for(make_app(store, plugin)) as client:
        response = await post_json(client, EXAMPLE_REQUEST)
    assert response.status_code == 500
    assert response.content == FAILURE_BODY
    assert TOKEN not in response.text and "SELECT" not in response.text
    assert "Traceback (most recent call last)" in caplog.text
    assert stored_in(store) is None


# -- observers --------------------------------------------------------------------------


class Recorder:
    """A plain and an async observer of each kind, recording their arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        self.calls.append(("applied", snapshot, principal))

    @hookimpl
    async def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        self.calls.append(("ignored", snapshot, current, principal))


class AsyncRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    async def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        self.calls.append(("applied", snapshot, principal))

    @hookimpl
    def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        self.calls.append(("ignored", snapshot, current, principal))


async def test_sync_and_async_observers_see_applied_and_ignored_snapshots(
    store: MemoryStore,
) -> None:
    plain, asynchronous = Recorder(), AsyncRecorder()
    alice = Principal("alice")
    app = make_app(store, plain, asynchronous, api_keys={TOKEN: alice})
    async with client_for(app) as client:
        applied = await post_json(client, EXAMPLE_REQUEST)
        ignored = await post_json(client, example(strategy_version=6))
    assert applied.content == compact(EXAMPLE_APPLIED)
    assert ignored.content == compact(EXAMPLE_IGNORED)
    for recorder in (plain, asynchronous):
        assert [call[0] for call in recorder.calls] == ["applied", "ignored"]
        _, applied_snapshot, applied_principal = recorder.calls[0]
        _, incoming, current, ignored_principal = recorder.calls[1]
        assert applied_principal is alice and ignored_principal is alice
        assert applied_snapshot.account_id == ACCOUNT
        assert applied_snapshot.strategy_version == 7
        assert applied_snapshot.strategy_synced_at == parse_instant("2026-03-22T08:30:00Z")
        assert incoming.strategy_version == 6
        assert current == applied_snapshot == stored_in(store)


class RaisingObservers:
    @hookimpl(tryfirst=True)
    def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        raise RuntimeError("applied observer exploded")

    @hookimpl(tryfirst=True)
    async def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        raise RuntimeError("ignored observer exploded")


class AsyncRaisingObservers:
    @hookimpl(tryfirst=True)
    async def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        raise RuntimeError("applied observer exploded")

    @hookimpl(tryfirst=True)
    def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        raise RuntimeError("ignored observer exploded")


@pytest.mark.parametrize("raising", [RaisingObservers, AsyncRaisingObservers])
async def test_raising_observers_are_logged_and_never_change_the_response(
    caplog: pytest.LogCaptureFixture, store: MemoryStore, raising: type
) -> None:
    caplog.set_level(logging.ERROR, logger="runtime_snapshot_mount")
    recorder = Recorder()
    async with client_for(make_app(store, recorder, raising())) as client:
        applied = await post_json(client, EXAMPLE_REQUEST)
        ignored = await post_json(client, example(strategy_version=6))
    assert applied.status_code == ignored.status_code == 200
    assert applied.content == compact(EXAMPLE_APPLIED)
    assert ignored.content == compact(EXAMPLE_IGNORED)
    assert "applied observer exploded" in caplog.text
    assert "ignored observer exploded" in caplog.text
    assert caplog.text.count("Traceback (most recent call last)") >= 2
    # the other observers still ran
    assert [call[0] for call in recorder.calls] == ["applied", "ignored"]
    stored = stored_in(store)
    assert stored is not None and stored.strategy_version == 7


# -- success ----------------------------------------------------------------------------


async def test_api_page_example_request_yields_the_example_responses_exactly(
    client: httpx.AsyncClient,
) -> None:
    applied = await post_json(client, EXAMPLE_REQUEST)
    assert applied.status_code == 200
    assert applied.headers["content-type"] == "application/json"
    assert applied.json() == EXAMPLE_APPLIED
    assert list(applied.json()) == APPLIED_KEYS
    assert applied.content == compact(EXAMPLE_APPLIED)

    ignored = await post_json(client, example(strategy_version=6))
    assert ignored.status_code == 200
    assert ignored.json() == EXAMPLE_IGNORED
    assert list(ignored.json()) == IGNORED_KEYS
    assert ignored.content == compact(EXAMPLE_IGNORED)


async def test_pretty_printed_api_page_request_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post_json(client, json.dumps(EXAMPLE_REQUEST, indent=2))
    assert response.content == compact(EXAMPLE_APPLIED)


async def test_applied_snapshot_is_stored_with_every_request_field(
    client: httpx.AsyncClient, store: MemoryStore
) -> None:
    await post_json(client, EXAMPLE_REQUEST)
    stored = stored_in(store)
    assert stored is not None
    assert stored.to_json() == {
        **EXAMPLE_REQUEST,
        "strategy_synced_at": "2026-03-22T08:30:00.000000Z",
    }


@pytest.mark.parametrize(
    "synced_at",
    [
        "2026-03-22T08:30:00.000Z",
        "2026-03-22T10:30:00.1234567+02:00",
        "2026-03-22t08:30:00z",
        "2026-03-22T08:30:00,5Z",
        "2026-03-22T03:00:00-05:30",
        "2026-03-22T08:30:00.123456789+00:00",
    ],
)
async def test_applied_answer_echoes_strategy_synced_at_unchanged(
    client: httpx.AsyncClient, store: MemoryStore, synced_at: str
) -> None:
    response = await post_json(client, example(strategy_synced_at=synced_at))
    expected = {**EXAMPLE_APPLIED, "strategy_synced_at": synced_at}
    assert response.content == compact(expected)
    stored = stored_in(store)
    assert stored is not None and stored.strategy_synced_at == parse_instant(synced_at)


async def test_ignored_answer_carries_the_incoming_values(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    response = await post_json(
        client,
        example(snapshot_id="older-snapshot", strategy_version=3, content_hash="sha256:other"),
    )
    assert response.content == compact(
        {
            "status": "ignored_stale",
            "account_id": ACCOUNT,
            "snapshot_id": "older-snapshot",
            "strategy_version": 3,
        }
    )
    assert stored_in(store) == seeded


async def test_same_version_with_an_earlier_instant_in_another_offset_is_ignored(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    # 10:29:59+02:00 is 08:29:59Z: earlier than the stored 08:30:00Z, though it sorts later
    response = await post_json(
        client, example(snapshot_id="late-string", strategy_synced_at="2026-03-22T10:29:59+02:00")
    )
    assert response.json()["status"] == "ignored_stale"
    assert stored_in(store) == seeded


async def test_same_version_with_a_later_instant_in_another_offset_is_applied(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    # 04:30:01-04:00 is 08:30:01Z: later than the stored 08:30:00Z, though it sorts earlier
    synced_at = "2026-03-22T04:30:01-04:00"
    response = await post_json(client, example(snapshot_id="new", strategy_synced_at=synced_at))
    assert response.json()["status"] == "upserted"
    stored = stored_in(store)
    assert stored is not None and stored.snapshot_id == "new"


async def test_exact_replay_is_applied_again(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    response = await post_json(client, EXAMPLE_REQUEST)
    assert response.content == compact(EXAMPLE_APPLIED)
    assert stored_in(store) == seeded


async def test_same_instant_written_differently_is_a_replay_and_applied(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    synced_at = "2026-03-22T10:30:00.0000009+02:00"
    response = await post_json(
        client, example(stage="second", strategy_synced_at=synced_at, active_skills=None)
    )
    assert response.json() == {**EXAMPLE_APPLIED, "strategy_synced_at": synced_at}
    stored = stored_in(store)
    assert stored is not None and stored.stage == "second" and stored.active_skills is None


async def test_higher_version_with_an_earlier_time_is_applied(
    client: httpx.AsyncClient, seeded: Snapshot, store: MemoryStore
) -> None:
    response = await post_json(
        client, example(strategy_version=8, strategy_synced_at="2020-01-01T00:00:00Z")
    )
    assert response.json()["status"] == "upserted"
    stored = stored_in(store)
    assert stored is not None and stored.strategy_version == 8


async def test_accounts_are_kept_apart(client: httpx.AsyncClient, store: MemoryStore) -> None:
    await post_json(client, example(strategy_version=9))
    response = await post_json(client, example(account_id=OTHER_ACCOUNT, strategy_version=1))
    assert response.json()["status"] == "upserted"
    other = stored_in(store, OTHER_ACCOUNT)
    assert other is not None and other.strategy_version == 1


# -- other methods ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_on_the_path_are_405_json(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, UPSERT_URL, headers=json_headers())
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    if method != "HEAD":
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "Method Not Allowed"}


async def test_unauthenticated_get_is_405(client: httpx.AsyncClient) -> None:
    response = await client.get(UPSERT_URL)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


# -- nothing stored changes on a 4xx ----------------------------------------------------


@pytest.mark.parametrize(
    ("token", "body", "status"),
    [
        pytest.param(None, example(strategy_version=8), 401, id="401"),
        pytest.param(TOKEN, example(strategy_version=8, personality=[]), 422, id="422"),
        pytest.param(
            TOKEN,
            example(strategy_version=8, account_id=INACTIVE_ACCOUNT),
            404,
            id="404-inactive",
        ),
        pytest.param(TOKEN, example(strategy_version=8, active_skills=["x"] * 5000), 413, id="413"),
    ],
)
async def test_rejected_request_leaves_the_stored_snapshot_unchanged(
    store: MemoryStore, token: str | None, body: dict[str, Any], status: int
) -> None:
    async with client_for(make_app(store, max_body_bytes=4096)) as client:
        first = await post_json(client, EXAMPLE_REQUEST)
        assert first.status_code == 200
        before = stored_in(store)
        response = await post_json(client, body, token=token)
    assert response.status_code == status
    assert stored_in(store) is before
    assert stored_in(store, INACTIVE_ACCOUNT) is None
    assert len(store) == 1


class UnreadStore(MemoryStore):
    """A memory store whose ignored upserts do not report the later snapshot; counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        result = super().store_upsert(snapshot)
        return result if result.applied else UpsertResult(False)

    @hookimpl
    def store_get(self, account_id: str) -> Snapshot | None:
        self.reads += 1
        return super().store_get(account_id)


async def test_an_ignored_snapshot_is_read_back_only_for_its_observers() -> None:
    quiet, observed = UnreadStore(), UnreadStore()
    recorder = Recorder()
    async with client_for(make_app(quiet)) as client:
        await post_json(client, EXAMPLE_REQUEST)
        ignored = await post_json(client, example(strategy_version=6))
    assert ignored.content == compact(EXAMPLE_IGNORED)
    assert quiet.reads == 0  # nobody asked for the later snapshot
    async with client_for(make_app(observed, recorder)) as client:
        await post_json(client, EXAMPLE_REQUEST)
        ignored = await post_json(client, example(strategy_version=6))
    assert ignored.content == compact(EXAMPLE_IGNORED)
    assert observed.reads == 1
    _, incoming, current, _ = recorder.calls[1]
    assert incoming.strategy_version == 6
    assert current == stored_in(observed) and current.strategy_version == 7
