"""Operations: a request id on every log line a request causes and in ``X-Request-ID``,
counters on ``app.state.metrics``, and the ``request_finished`` exporter hook."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from rsm_support import ACCOUNT, UPSERT_URL, client_for, example, make_app, post_json

from runtime_snapshot_mount import (
    MemoryStore,
    RequestIdFilter,
    Snapshot,
    UpsertResult,
    current_request_id,
    hookimpl,
)
from runtime_snapshot_mount.request.operations import (
    Metrics,
    new_request_id,
    request_id_from_header,
)

pytestmark = pytest.mark.anyio

EXPLODING = "acct-explodes"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class ExplodingStore(MemoryStore):
    """Fails for one account, with a traceback to log."""

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        if snapshot.account_id == EXPLODING:
            raise RuntimeError("the database went away")
        return super().store_upsert(snapshot)


class Exporter:
    """Records every ``request_finished`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str, float]] = []

    @hookimpl
    async def request_finished(
        self, status: int, outcome: str, request_id: str, duration_s: float
    ) -> None:
        self.calls.append((status, outcome, request_id, duration_s))


class RaisingExporter:
    @hookimpl
    def request_finished(self, status: int, outcome: str) -> None:
        raise RuntimeError("the metrics backend is down")


def rid(record: logging.LogRecord) -> str:
    """The request id the filter attached to ``record``."""
    value: str = record.__dict__["request_id"]
    return value


def app_with(*plugins: object) -> Any:
    return make_app(ExplodingStore(), *plugins, accounts=[ACCOUNT, EXPLODING])


async def mixed_requests(client: httpx.AsyncClient) -> list[httpx.Response]:
    """Two applied, one ignored, 401 twice, 413, 422, 404, 405 and 500."""
    return [
        await post_json(client, example(strategy_version=7)),
        await post_json(client, example(strategy_version=8)),
        await post_json(client, example(strategy_version=1)),
        await post_json(client, example(), token=None),
        await post_json(client, example(), token="wrong"),
        await post_json(client, b"[" + b" " * (2 * 1024 * 1024) + b"]"),
        await post_json(client, example(strategy_version="8")),
        await post_json(client, example(account_id="acct-unknown")),
        await client.get(UPSERT_URL),
        await post_json(client, example(account_id=EXPLODING)),
    ]


MIXED_STATUSES = [200, 200, 200, 401, 401, 413, 422, 404, 405, 500]
MIXED_OUTCOMES = [
    "applied",
    "applied",
    "ignored",
    "rejected",
    "rejected",
    "rejected",
    "rejected",
    "rejected",
    "rejected",
    "failed",
]


# -- request ids -----------------------------------------------------------------------------


async def test_the_failure_log_line_and_the_header_carry_the_same_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount")
    async with client_for(app_with()) as client:
        response = await post_json(client, example(account_id=EXPLODING))
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(request_id)
    [failure] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rid(failure) == request_id
    assert request_id in failure.getMessage()
    assert failure.exc_info is not None, "logged with its traceback"


@pytest.mark.parametrize("sent", ["trace-123", "A.b_c-9", "x" * 64])
async def test_a_sane_client_request_id_is_used_and_echoed(
    sent: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount")
    async with client_for(app_with()) as client:
        response = await post_json(
            client, example(account_id=EXPLODING), headers={"X-Request-ID": sent}
        )
    assert response.headers["x-request-id"] == sent
    assert [rid(r) for r in caplog.records if r.levelno >= logging.ERROR] == [sent]


@pytest.mark.parametrize(
    "sent", ["", "has space", "x" * 65, "semi;colon", "new\tline", "caf\u00e9", "a/b"]
)
async def test_an_unsane_client_request_id_is_replaced(sent: str) -> None:
    async with client_for(app_with()) as client:
        response = await client.post(
            UPSERT_URL,
            json=example(),
            headers={"X-Request-ID": sent.encode()},
        )
    assert response.status_code == 401
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_every_answer_has_its_own_request_id() -> None:
    async with client_for(app_with()) as client:
        responses = await mixed_requests(client)
    assert [r.status_code for r in responses] == MIXED_STATUSES
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)


async def test_every_record_logged_while_handling_carries_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str | None] = []

    class TalkativeObserver:
        @hookimpl
        def snapshot_applied(self, snapshot: Snapshot) -> None:
            seen.append(current_request_id())
            logging.getLogger("runtime_snapshot_mount").info("observed %s", snapshot.account_id)
            raise RuntimeError("observer failed")

    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount")
    async with client_for(app_with(TalkativeObserver())) as client:
        response = await post_json(client, example(), headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    assert seen == ["req-42"]
    records = [r for r in caplog.records if r.name == "runtime_snapshot_mount"]
    assert len(records) == 2  # the observer's line, and its failure
    assert {rid(r) for r in records} == {"req-42"}
    assert current_request_id() is None, "the id does not outlive its request"


def test_records_outside_a_request_carry_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount")
    logging.getLogger("runtime_snapshot_mount").info("starting")
    assert rid(caplog.records[-1]) == "-"


async def test_a_host_handler_with_the_filter_gets_the_id_on_its_own_lines() -> None:
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    class HostAccounts:
        @hookimpl(tryfirst=True)
        def get_account(self, account_id: str, principal: Any) -> None:
            logging.getLogger("host.accounts").warning("looking up %s", account_id)

    handler = ListHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("[%(request_id)s] %(name)s: %(message)s"))
    host_logger = logging.getLogger("host.accounts")
    host_logger.addHandler(handler)
    try:
        async with client_for(app_with(HostAccounts())) as client:
            await post_json(client, example(), headers={"X-Request-ID": "host-7"})
    finally:
        host_logger.removeHandler(handler)
    assert lines == [f"[host-7] host.accounts: looking up {ACCOUNT}"]


def test_request_ids_from_headers() -> None:
    assert request_id_from_header("abc") == "abc"
    assert GENERATED_ID.fullmatch(request_id_from_header(None))
    assert GENERATED_ID.fullmatch(request_id_from_header("x" * 65))
    assert len({new_request_id() for _ in range(1000)}) == 1000


# -- counters ------------------------------------------------------------------------------


async def test_counters_after_a_mix_of_requests() -> None:
    app = app_with()
    assert app.state.metrics.snapshot() == {
        "applied": 0,
        "ignored": 0,
        "read": 0,
        "rejected": {},
        "failed": 0,
    }
    async with client_for(app) as client:
        responses = await mixed_requests(client)
        await client.get("/no-such-path")
    assert [r.status_code for r in responses] == MIXED_STATUSES
    assert app.state.metrics.snapshot() == {
        "applied": 2,
        "ignored": 1,
        "read": 0,
        "rejected": {"401": 2, "404": 2, "405": 1, "413": 1, "422": 1},
        "failed": 1,
    }


async def test_counters_belong_to_one_app() -> None:
    first, second = app_with(), app_with()
    async with client_for(first) as client:
        await post_json(client, example())
    assert first.state.metrics.snapshot()["applied"] == 1
    assert second.state.metrics.snapshot()["applied"] == 0


def test_metrics_count_by_outcome() -> None:
    metrics = Metrics()
    for status, outcome in zip(MIXED_STATUSES, MIXED_OUTCOMES, strict=True):
        metrics.count(status, outcome)
    assert metrics.snapshot() == {
        "applied": 2,
        "ignored": 1,
        "read": 0,
        "rejected": {"401": 2, "404": 1, "405": 1, "413": 1, "422": 1},
        "failed": 1,
    }


# -- the exporter hook ------------------------------------------------------------------------


async def test_the_exporter_hook_receives_every_request() -> None:
    exporter = Exporter()
    async with client_for(app_with(exporter)) as client:
        responses = await mixed_requests(client)
    assert [call[0] for call in exporter.calls] == MIXED_STATUSES
    assert [call[1] for call in exporter.calls] == MIXED_OUTCOMES
    assert [call[2] for call in exporter.calls] == [r.headers["x-request-id"] for r in responses]
    assert all(0 <= call[3] < 10 for call in exporter.calls)


async def test_an_exporter_that_raises_changes_no_answer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="runtime_snapshot_mount")
    quiet, loud = app_with(), app_with(RaisingExporter(), Exporter())
    async with client_for(quiet) as client:
        expected = await mixed_requests(client)
    async with client_for(loud) as client:
        got = await mixed_requests(client)

    def visible(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
        headers = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
        return response.status_code, response.content, headers

    assert [visible(r) for r in got] == [visible(r) for r in expected]
    assert loud.state.metrics.snapshot() == quiet.state.metrics.snapshot()
    raised = [r for r in caplog.records if "raised; the response is unchanged" in r.getMessage()]
    assert len(raised) == len(MIXED_STATUSES)
    assert [rid(r) for r in raised] == [g.headers["x-request-id"] for g in got]


# -- the access log ----------------------------------------------------------------------------


async def test_every_answer_is_one_access_record_with_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="runtime_snapshot_mount.access")
    async with client_for(make_app(MemoryStore())) as client:
        applied = await post_json(client, example(), headers={"X-Request-ID": "req-1"})
        refused = await post_json(client, example(), token="wrong")
        missing = await client.get("/nowhere")
    records = [r for r in caplog.records if r.name == "runtime_snapshot_mount.access"]
    assert [(r.method, r.path, r.status, r.outcome) for r in records] == [
        ("POST", UPSERT_URL, 200, "applied"),
        ("POST", UPSERT_URL, 401, "rejected"),
        ("GET", "/nowhere", 404, "rejected"),
    ]
    ids = [applied, refused, missing]
    assert [r.request_id for r in records] == [a.headers["x-request-id"] for a in ids]
    assert records[0].request_id == "req-1"
    assert all(r.duration_ms >= 0 for r in records)
    assert records[0].getMessage().startswith(f"POST {UPSERT_URL} 200 applied ")


async def test_nothing_is_logged_per_request_when_nobody_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with client_for(make_app(MemoryStore())) as client:
        await post_json(client, example())
    assert not [r for r in caplog.records if r.name == "runtime_snapshot_mount.access"]
