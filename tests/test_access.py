"""Access: principals limited to their own accounts, nothing secret in answers or logs,
401 before the body is read, and tokens compared in constant time."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from rsm_support import (
    FAILURE_BODY,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSERT_URL,
    client_for,
    example,
    post_json,
)

from runtime_snapshot_mount import (
    Account,
    MemoryStore,
    Snapshot,
    StaticTokens,
    UpsertResult,
    create_app,
    hookimpl,
)

pytestmark = pytest.mark.anyio

TOKENS = {"token-alpha-7f3c9e2a1b": "tenant-alpha", "token-beta-4d8b6a0c5e": "tenant-beta"}
ALPHA_TOKEN, BETA_TOKEN = TOKENS
OWNERS = {"acct-alpha": "tenant-alpha", "acct-beta": "tenant-beta"}
SQL = "INSERT INTO runtime_snapshots (account_id, personality) VALUES ($1, $2)"


class TenantTokens:
    """Two tokens, two principals (a host's own token check)."""

    @hookimpl
    def authenticate(self, token: str) -> str | None:
        return TOKENS.get(token)


class TenantAccounts:
    """Each principal sees only the accounts it owns."""

    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        if OWNERS.get(account_id) != principal:
            return None
        return Account(account_id)


def tenant_app(store: object) -> Any:
    return create_app(store, TenantTokens(), TenantAccounts(), entry_points=False)


# -- a principal sees only its own accounts ----------------------------------------------


@pytest.mark.parametrize(
    ("token", "own", "foreign"),
    [(ALPHA_TOKEN, "acct-alpha", "acct-beta"), (BETA_TOKEN, "acct-beta", "acct-alpha")],
)
async def test_another_principals_account_answers_exactly_like_a_missing_one(
    token: str, own: str, foreign: str
) -> None:
    store = MemoryStore()
    async with client_for(tenant_app(store)) as client:
        mine = await post_json(client, example(account_id=own), token=token)
        theirs = await post_json(client, example(account_id=foreign), token=token)
        missing = await post_json(client, example(account_id="acct-nobody"), token=token)
    assert mine.status_code == 200
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content == NOT_FOUND_BODY

    def visible(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k != "x-request-id"}

    assert visible(theirs) == visible(missing)
    assert store.store_get(foreign) is None
    assert store.store_get(own) is not None


async def test_each_principal_writes_its_own_account() -> None:
    store = MemoryStore()
    async with client_for(tenant_app(store)) as client:
        alpha = await post_json(client, example(account_id="acct-alpha"), token=ALPHA_TOKEN)
        beta = await post_json(client, example(account_id="acct-beta"), token=BETA_TOKEN)
    assert alpha.status_code == beta.status_code == 200
    assert set(store.contents()) == {"acct-alpha", "acct-beta"}


# -- no token, SQL or traceback in any answer or log line ------------------------------------


class LeakyStore(MemoryStore):
    """A store whose failure message carries SQL text and the caller's token."""

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        raise RuntimeError(f"{SQL} failed; connection made with password {ALPHA_TOKEN}")


class LeakyTokens:
    """A token check whose database error quotes the token it looked up."""

    @hookimpl(tryfirst=True)
    def authenticate(self, token: str) -> str | None:
        if token == BETA_TOKEN:
            raise RuntimeError(f"SELECT tenant FROM api_keys WHERE token = '{token}'")
        return None


def formatted(record: logging.LogRecord) -> str:
    return logging.Formatter("%(levelname)s %(name)s %(message)s").format(record)


async def test_no_token_sql_or_traceback_in_answers_and_no_token_in_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(
        LeakyStore(), LeakyTokens(), TenantTokens(), TenantAccounts(), entry_points=False
    )
    answers: list[httpx.Response] = []
    async with client_for(app) as client:
        # 401: a wrong token, and one that makes the token check itself fail (500)
        answers.append(await post_json(client, example(), token=ALPHA_TOKEN + "x"))
        answers.append(await post_json(client, example(), token=BETA_TOKEN))
        # 404, 422
        answers.append(await post_json(client, example(account_id="acct-beta"), token=ALPHA_TOKEN))
        answers.append(await post_json(client, example(strategy_version="7"), token=ALPHA_TOKEN))
        # 500 from the store
        answers.append(await post_json(client, example(account_id="acct-alpha"), token=ALPHA_TOKEN))
    assert [a.status_code for a in answers] == [401, 500, 404, 422, 500]
    assert answers[0].content == UNAUTHORIZED_BODY
    assert answers[1].content == answers[4].content == FAILURE_BODY
    for answer in answers:
        text = answer.text
        for secret in (*TOKENS, "SELECT", "INSERT", "Traceback", "RuntimeError", 'File "'):
            assert secret not in text
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2, "one log line per 500"
    for record in failures:
        assert "Traceback" in formatted(record), "a 500 is logged with its traceback"
    for record in caplog.records:
        line = formatted(record)
        for token in (*TOKENS, ALPHA_TOKEN + "x"):
            assert token not in record.getMessage()
            assert token not in repr(record.args)
            assert token not in line
    assert all("[redacted token]" in formatted(record) for record in failures)


# -- 401 before the body is read --------------------------------------------------------------

CHUNK = b"x" * (64 * 1024)
HUNDRED_MB_CHUNKS = 100 * 1024 * 1024 // len(CHUNK)


class HugeBody:
    """A request body that would yield 100 MB, counting the chunks the app pulls."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(HUNDRED_MB_CHUNKS):
            self.pulled += 1
            yield CHUNK


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {ALPHA_TOKEN}"},
        {"Authorization": f"Bearer {ALPHA_TOKEN}", "Content-Length": str(100 * 1024 * 1024)},
    ],
    ids=["no header", "wrong token", "wrong scheme", "right token, declared 100 MB"],
)
async def test_a_100_mb_body_is_not_read_before_the_answer(headers: dict[str, str]) -> None:
    body = HugeBody()
    async with client_for(tenant_app(MemoryStore())) as client:
        response = await client.post(
            UPSERT_URL, content=body, headers={"Content-Type": "application/json", **headers}
        )
    authorized = "Bearer " + ALPHA_TOKEN in headers.get("Authorization", "")
    assert response.status_code == (413 if authorized else 401)
    assert body.pulled <= 1


# -- constant-time token comparison -------------------------------------------------------------


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


@pytest.mark.parametrize("offered", ["key-one", "key-two", "key-three", "key-none", "k"])
def test_static_tokens_compare_every_key_in_constant_time(
    compare_calls: list[tuple[bytes, bytes]], offered: str
) -> None:
    keys = ["key-one", "key-two", "key-three"]
    tokens = StaticTokens({key: f"principal-{key}" for key in keys})
    principal = tokens.authenticate(offered)
    assert principal == (f"principal-{offered}" if offered in keys else None)
    assert len(compare_calls) == len(keys)
    assert {len(a) for a, _ in compare_calls} | {len(b) for _, b in compare_calls} == {32}


async def test_the_app_compares_the_token_with_every_key(
    compare_calls: list[tuple[bytes, bytes]],
) -> None:
    keys = [f"rotated-key-{n}" for n in range(5)]
    app = create_app(MemoryStore(), api_keys=keys, accounts=["acct"], entry_points=False)
    async with client_for(app) as client:
        for token in (keys[0], keys[-1], "no-such-key"):
            compare_calls.clear()
            response = await post_json(client, example(account_id="acct"), token=token)
            assert response.status_code == (401 if token == "no-such-key" else 200)
            assert len(compare_calls) == len(keys)


def test_accepted_tokens_are_remembered_and_nothing_else(
    compare_calls: list[tuple[bytes, bytes]],
) -> None:
    keys = ["key-one", "key-two"]
    tokens = StaticTokens({key: f"principal-{key}" for key in keys})
    for _ in range(3):
        assert tokens.authenticate("key-nope") is None  # refused: every key compared, each time
    assert len(compare_calls) == 3 * len(keys)
    compare_calls.clear()
    assert tokens.authenticate("key-one") == "principal-key-one"
    assert len(compare_calls) == len(keys)  # first use: compared in constant time
    compare_calls.clear()
    for _ in range(3):
        assert tokens.authenticate("key-one") == "principal-key-one"
        assert tokens.authenticate("key-one ") is None
    assert len(compare_calls) == 3 * len(keys)  # only the refused near-miss was compared:
    # a refused token is never remembered, the accepted one always is
