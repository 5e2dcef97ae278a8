"""The Prometheus observer plugin and its ASGI app, in one process."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rsm_support import EXAMPLE_REQUEST, client_for, example, make_app, post_json

from runtime_snapshot_mount import MemoryStore, Snapshot, UpsertResult, hookimpl
from runtime_snapshot_mount.prometheus import PrometheusMetrics

pytestmark = pytest.mark.anyio


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class BrokenStore(MemoryStore):
    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        raise RuntimeError("disk full")


async def scrape(
    metrics: PrometheusMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    transport = httpx.ASGITransport(app=metrics.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_are_counted_by_status_and_outcome_with_their_duration() -> None:
    metrics = PrometheusMetrics()
    async with client_for(make_app(MemoryStore(), metrics)) as client:
        await post_json(client, example(strategy_version=8))
        await post_json(client, example(strategy_version=7))
        await post_json(client, EXAMPLE_REQUEST, token="wrong")
    found = await scrape(metrics)
    total = "runtime_snapshot_mount_requests_total"
    assert found[(total, (("outcome", "applied"), ("status", "200")))] == 1
    assert found[(total, (("outcome", "ignored"), ("status", "200")))] == 1
    assert found[(total, (("outcome", "rejected"), ("status", "401")))] == 1
    assert found[("runtime_snapshot_mount_request_duration_seconds_count", ())] == 3
    assert found[("runtime_snapshot_mount_store_failures_total", ())] == 0


async def test_store_failures_are_counted() -> None:
    metrics = PrometheusMetrics()
    async with client_for(make_app(BrokenStore(), metrics)) as client:
        assert (await post_json(client, EXAMPLE_REQUEST)).status_code == 500
    found = await scrape(metrics)
    assert found[("runtime_snapshot_mount_store_failures_total", ())] == 1


def test_two_apps_in_one_process_keep_their_own_metrics() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    assert first.registry is not second.registry
