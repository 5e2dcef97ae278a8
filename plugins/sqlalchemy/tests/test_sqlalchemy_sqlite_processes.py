"""Group commit on SQLite across processes: several writers on one file, and ``kill -9``.

Each test starts real processes (bounded by timeouts) on a file in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rsm_support import wait_until_listening
from support_sqlalchemy import API_KEY, AUTH, UPSERT, Database, free_port, request_body

pytestmark = pytest.mark.sqlite

# One process's share of the upserts: all at once, through the store the command line makes
# (sqlite:///FILE), with a writer that also counts its batches, 8 in flight at a time. It
# starts writing when its stdin says so, and prints every answer.
WRITER_PROCESS = r"""
import asyncio, json, sys
from runtime_snapshot_mount import parse_instant, format_instant
from runtime_snapshot_mount.testing import make_snapshot
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
from runtime_snapshot_mount_sqlalchemy.sqlite_writer import SQLiteWriter

path = sys.argv[1]
batches = []
writer = SQLiteWriter(path, "runtime_snapshots", before_commit=lambda c, s: batches.append(len(s)))
store = SQLAlchemyStore(f"sqlite:///{path}", writer=writer)

async def main(requests):
    in_flight = asyncio.Semaphore(8)  # many batches, interleaved with the other processes'

    async def one(account_id, version, synced_at):
        async with in_flight:
            return await write(account_id, version, synced_at)

    async def write(account_id, version, synced_at):
        name = f"{account_id}/{version}/{synced_at}"
        snapshot = make_snapshot(account_id, version, synced_at, snapshot_id=name)
        result = await store.store_upsert(snapshot)
        # an ignored one reads the later snapshot back, as the app does for its observers
        current = result.current or await store.store_get(account_id)
        instant = format_instant(current.strategy_synced_at)
        return {
            "snapshot_id": snapshot.snapshot_id,
            "applied": result.applied,
            "current": [current.snapshot_id, current.strategy_version, instant],
        }
    answers = await asyncio.gather(*(one(*request) for request in requests))
    await store.store_close()
    return answers

requests = json.loads(sys.stdin.readline())
print(json.dumps({"answers": asyncio.run(main(requests)), "batches": batches}))
"""


def freshness(version: int, synced_at: str) -> tuple[int, str]:
    """The stale rule's order; the times below are all UTC ``Z`` of one width."""
    return (version, synced_at)


def test_several_processes_on_one_file_keep_the_greatest_snapshot(sqlite: Database) -> None:
    path = Path(str(sqlite.sync_url.database))  # the table as snapshot_table makes it
    accounts = [f"shared-{i}" for i in range(4)]
    # per account: versions 1..30, each at two instants (equal versions: the later time wins)
    requests = [
        [account, version, f"2026-03-22T08:30:{second:02d}.000000Z"]
        for account in accounts
        for version in range(1, 31)
        for second in (10, 20)
    ]
    random.shuffle(requests)
    processes = 4
    shares = [requests[i::processes] for i in range(processes)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_PROCESS, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker, share in zip(workers, shares, strict=True):  # all start together
        assert worker.stdin is not None
        worker.stdin.write(json.dumps(share) + "\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    results = [json.loads(stdout) for stdout, _ in outputs]
    answers = [answer for result in results for answer in result["answers"]]
    assert len(answers) == len(requests)
    assert any(size > 1 for result in results for size in result["batches"])  # batched

    applied = {a["snapshot_id"] for a in answers if a["applied"]}
    key_of = {f"{a}/{v}/{t}": freshness(v, t) for a, v, t in requests}
    for answer in answers:
        if answer["applied"]:
            assert answer["current"][0] == answer["snapshot_id"]
            continue
        # every ignored answer names a strictly later snapshot that someone was told was applied
        later_id, later_version, later_time = answer["current"]
        assert later_id in applied
        assert freshness(later_version, later_time) == key_of[later_id]
        assert key_of[later_id] > key_of[answer["snapshot_id"]]
    with sqlite3.connect(path) as connection:
        stored = dict(
            connection.execute("SELECT account_id, snapshot_id FROM runtime_snapshots").fetchall()
        )
    connection.close()
    for account in accounts:
        greatest = f"{account}/30/2026-03-22T08:30:20.000000Z"
        assert greatest in applied  # the greatest is never ignored ...
        assert stored[account] == greatest  # ... and is what the file keeps
        told = max((key_of[i] for i in applied if i.startswith(f"{account}/")), default=None)
        assert told == key_of[greatest]


def _start_server(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "runtime_snapshot_mount", "serve"]
    command += ["--store", f"sqlite:///{path}", "--port", str(port), "--api-key", API_KEY]
    with log.open("wb") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


async def _load(base: str, acknowledged: dict[str, int], stop: asyncio.Event) -> None:
    """32 clients, each raising its own account's version after every acknowledged upsert,
    until ``stop`` or the server is gone."""

    async def client(index: int, http: httpx.AsyncClient) -> None:
        account_id = f"killed-{index}"
        version = 1
        while not stop.is_set():
            try:
                response = await http.post(
                    UPSERT, json=request_body(account_id, version), headers=AUTH
                )
            except httpx.HTTPError:
                return  # killed
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "upserted"
            acknowledged[account_id] = version
            version += 1

    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
        await asyncio.gather(*(client(index, http) for index in range(32)))


def test_every_acknowledged_write_survives_kill_9_of_the_server_under_load(
    tmp_path: Path,
) -> None:
    path, log = tmp_path / "killed.db", tmp_path / "server.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start_server(path, port, log)
    acknowledged: dict[str, int] = {}
    try:
        wait_until_listening(process, port, log)

        async def run() -> None:
            stop = asyncio.Event()
            load = asyncio.ensure_future(_load(base, acknowledged, stop))
            deadline = time.monotonic() + 20
            while sum(acknowledged.values()) < 600 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if load.done():
                    break
            os.killpg(process.pid, signal.SIGKILL)  # mid-load: requests are in flight
            await asyncio.wait_for(load, timeout=30)
            stop.set()

        asyncio.run(run())
        assert process.wait(timeout=15) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    assert sum(acknowledged.values()) > 32, log.read_text()  # it was under load
    with sqlite3.connect(path) as connection:  # opening recovers the write-ahead log
        stored: dict[str, Any] = dict(
            connection.execute(
                "SELECT account_id, strategy_version FROM runtime_snapshots"
            ).fetchall()
        )
    connection.close()
    lost = {
        account: (version, stored.get(account))
        for account, version in acknowledged.items()
        if stored.get(account, 0) < version
    }
    assert lost == {}
