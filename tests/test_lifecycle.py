"""The store lifecycle (hookspecs.py): open -> create tables -> serve -> close, each store
instance on one event loop. A strict store that refuses anything else proves the app and
``serve`` keep that order, in one worker and in several."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from rsm_support import (
    EXAMPLE_REQUEST,
    clean_env,
    client_for,
    example,
    install_entry_point,
    make_app,
    post_json,
    serving,
)

STRICT_STORE = textwrap.dedent(
    """
    import asyncio, json, os, threading, uuid

    from runtime_snapshot_mount import MemoryStore, hookimpl


    class StrictStore(MemoryStore):
        '''A memory store that refuses calls after store_close or on a second event loop,
        and writes every call (pid, instance, loop, event) to $RSM_LIFECYCLE_LOG.'''

        def __init__(self):
            super().__init__()
            self.instance = uuid.uuid4().hex
            self.loop = None
            self.closed = False
            self.log("open")

        def log(self, event):
            path = os.environ.get("RSM_LIFECYCLE_LOG")
            if path:
                line = json.dumps([os.getpid(), self.instance, event])
                with open(path, "a", encoding="utf-8") as file:
                    file.write(line + "\\n")

        def check(self, event):
            loop = asyncio.get_running_loop()
            if self.closed:
                self.log("refused-after-close:" + event)
                raise RuntimeError(f"{event} after store_close")
            if self.loop is None:
                self.loop = loop
            elif self.loop is not loop:
                self.log("refused-other-loop:" + event)
                raise RuntimeError(f"{event} on another event loop")
            self.log(event)

        @hookimpl
        async def store_upsert(self, snapshot):
            self.check("upsert")
            return MemoryStore.store_upsert(self, snapshot)

        @hookimpl
        async def store_get(self, account_id):
            self.check("get")
            return MemoryStore.store_get(self, account_id)

        @hookimpl
        async def store_create_tables(self):
            self.check("create_tables")

        @hookimpl
        async def store_close(self):
            self.check("close")
            self.closed = True


    class Opener:
        @hookimpl
        def store_from_url(self, url):
            return StrictStore() if url == "strict://" else None


    plugin = Opener()
    """
)


def load_strict_store(site: Path) -> Any:
    install_entry_point(site, "rsm_strict_store", STRICT_STORE, name="strict")
    namespace: dict[str, Any] = {}
    exec(compile(STRICT_STORE, "rsm_strict_store", "exec"), namespace)
    return namespace["StrictStore"]


@pytest.mark.anyio
async def test_the_strict_store_refuses_a_second_loop_and_calls_after_close(
    tmp_path: Path,
) -> None:
    store = load_strict_store(tmp_path)()
    app = make_app(store)
    async with client_for(app) as client:
        assert (await post_json(client, EXAMPLE_REQUEST)).status_code == 200
        assert (await post_json(client, example(strategy_version=8))).status_code == 200
    await app.state.plugins.store_close()
    async with client_for(app) as client:
        assert (await post_json(client, example(strategy_version=9))).status_code == 500


def events_by_instance(log: Path) -> dict[tuple[int, str], list[str]]:
    found: dict[tuple[int, str], list[str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        pid, instance, event = json.loads(line)
        found.setdefault((pid, instance), []).append(event)
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_keeps_the_documented_order_in_every_process(tmp_path: Path, workers: int) -> None:
    site = tmp_path / "site"
    site.mkdir()
    load_strict_store(site)
    log = tmp_path / "lifecycle.log"
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = clean_env(PYTHONPATH=path, RSM_LIFECYCLE_LOG=str(log))
    args = ["--store", "strict://", "--api-key", "secret", "--workers", str(workers)]
    with serving(*args, directory=tmp_path, env=env) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer secret"})
        for version in range(1, 21):
            body = {**EXAMPLE_REQUEST, "strategy_version": version}
            assert client.post("/runtime-snapshots/upsert", json=body).status_code == 200
        client.close()
    instances = events_by_instance(log)
    assert not [e for events in instances.values() for e in events if e.startswith("refused")]
    creators = [events for events in instances.values() if "create_tables" in events]
    servers = [events for events in instances.values() if "upsert" in events]
    assert creators == [["open", "create_tables", "close"]]  # once, before any worker serves
    assert 1 <= len(servers) <= workers
    for events in instances.values():  # every instance: opened, used, closed once, last
        assert events[0] == "open" and events[-1] == "close" and events.count("close") == 1
    for events in servers:
        assert "create_tables" not in events
    assert sum(events.count("upsert") for events in servers) == 20


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_metrics_sums_every_worker(tmp_path: Path, workers: str) -> None:
    """``serve --metrics``: ``GET /metrics`` counts every request, with one worker (which
    runs in the command's own process) and with two, whichever worker answers it
    (prometheus_client's multiprocess mode)."""
    site = tmp_path / "site"
    site.mkdir()
    load_strict_store(site)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = clean_env(PYTHONPATH=path)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = ["--store", "strict://", "--api-key", "secret", "--workers", workers, "--metrics"]
    with serving(*args, directory=tmp_path, env=env) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer secret"})
        for version in range(1, 41):
            body = {**EXAMPLE_REQUEST, "strategy_version": version}
            assert client.post("/runtime-snapshots/upsert", json=body).status_code == 200
        assert client.post("/runtime-snapshots/upsert", json={}).status_code == 422
        scrapes = [client.get("/metrics") for _ in range(6)]
        client.close()
    applied = 'runtime_snapshot_mount_requests_total{outcome="applied",status="200"} 40.0'
    rejected = 'runtime_snapshot_mount_requests_total{outcome="rejected",status="422"} 1.0'
    for scrape in scrapes:
        assert scrape.status_code == 200
        assert applied in scrape.text and rejected in scrape.text
