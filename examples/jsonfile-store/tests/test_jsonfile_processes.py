"""Atomicity across processes: several processes, each with its own store on one directory,
race on the same accounts; every account keeps the greatest snapshot any of them sent, and
every ignored answer names a strictly later snapshot that one of them sent."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path
from typing import Any

import anyio
from runtime_snapshot_mount_jsonfile import JsonFileStore

from runtime_snapshot_mount import Snapshot, is_stale
from runtime_snapshot_mount.testing import make_snapshot

PROCESSES = 4
ACCOUNTS = 4
WRITES_PER_ACCOUNT = 25  # per process


def snapshots_of(worker: int, accounts: list[str]) -> list[Snapshot]:
    """Worker ``worker``'s snapshots: versions that interleave with every other worker's."""
    found = [
        make_snapshot(account_id, PROCESSES * n + worker + 1, snapshot_id=f"w{worker}-n{n}")
        for account_id in accounts
        for n in range(WRITES_PER_ACCOUNT)
    ]
    random.Random(worker).shuffle(found)
    return found


def write_all(directory: str, worker: int, accounts: list[str], start: Any, out: Any) -> None:
    """One process: wait for the start, then send all of its snapshots at once."""

    async def main() -> list[tuple[dict[str, Any], bool, dict[str, Any]]]:
        store = JsonFileStore(directory)
        snapshots = snapshots_of(worker, accounts)
        answers: list[tuple[dict[str, Any], bool, dict[str, Any]]] = []

        async def send(snapshot: Snapshot) -> None:
            result = await store.store_upsert(snapshot)
            answers.append((snapshot.to_json(), result.applied, result.current.to_json()))

        start.wait()
        async with anyio.create_task_group() as group:
            for snapshot in snapshots:
                group.start_soon(send, snapshot)
        return answers

    out.put(anyio.run(main))


def test_writers_in_several_processes_keep_the_greatest_snapshot(tmp_path: Path) -> None:
    directory = str(tmp_path / "snapshots")
    store = JsonFileStore(directory)
    anyio.run(store.store_create_tables)
    accounts = [f"account-{index}" for index in range(ACCOUNTS)]
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=write_all, args=(directory, worker, accounts, start, out))
        for worker in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    start.set()
    answers = [answer for _ in workers for answer in out.get(timeout=120)]
    for process in workers:
        process.join(timeout=30)
        assert process.exitcode == 0

    sent = {
        (s.account_id, s.snapshot_id): s
        for worker in range(PROCESSES)
        for s in snapshots_of(worker, accounts)
    }
    assert len(answers) == len(sent)
    for account_id in accounts:
        greatest = max(
            (s for s in sent.values() if s.account_id == account_id), key=lambda s: s.freshness
        )
        stored = anyio.run(store.store_get, account_id)
        assert stored == greatest, f"{account_id}: {stored} is not the greatest sent"
    for incoming_json, applied, current_json in answers:
        incoming, current = Snapshot.from_json(incoming_json), Snapshot.from_json(current_json)
        if applied:
            assert current == incoming
        else:
            assert is_stale(incoming, current), f"{incoming} ignored for {current}"
            assert sent[(current.account_id, current.snapshot_id)] == current
