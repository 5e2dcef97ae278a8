"""An installed store plugin that checks the store lifecycle, for the standalone tests.

``loopbound://`` opens a memory store that refuses any call on another event loop than the
one it was opened on, or after ``store_close``, and appends every call to the JSON-lines
file named by ``RSM_TEST_EVENTS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rsm_support import COMMAND, clean_env, install_entry_point

STORE_URL = "loopbound://"

PLUGIN_SOURCE = textwrap.dedent(
    f"""
    import asyncio
    import json
    import os

    from runtime_snapshot_mount import MemoryStore, hookimpl


    def record(event, store):
        line = {{"event": event, "pid": os.getpid(), "store": id(store)}}
        with open(os.environ["RSM_TEST_EVENTS"], "a", encoding="utf-8") as events:
            events.write(json.dumps(line) + "\\n")


    class LoopBoundStore:
        def __init__(self):
            self.memory = MemoryStore()
            self.loop = asyncio.get_running_loop()
            self.closed = False
            record("open", self)

        def check(self, event):
            if self.closed:
                record(event + " after close", self)
                raise RuntimeError(event + " after close")
            if asyncio.get_running_loop() is not self.loop:
                record(event + " on another loop", self)
                raise RuntimeError(event + " on another loop")
            record(event, self)

        @hookimpl
        async def store_upsert(self, snapshot):
            self.check("upsert")
            return self.memory.store_upsert(snapshot)

        @hookimpl
        async def store_get(self, account_id):
            self.check("get")
            return self.memory.store_get(account_id)

        @hookimpl
        async def store_create_tables(self):
            self.check("create")

        @hookimpl
        async def store_close(self):
            self.check("close")
            self.closed = True


    class Plugin:
        @hookimpl
        async def store_from_url(self, url):
            return LoopBoundStore() if url == {STORE_URL!r} else None


    plugin = Plugin()
    """
)


def loopbound_env(directory: Path, **extra: str) -> dict[str, str]:
    """The environment that installs the ``loopbound://`` plugin, events in ``directory``."""
    site = directory / "site"
    if not site.exists():
        site.mkdir()
        install_entry_point(site, "rsm_loopbound_store", PLUGIN_SOURCE, name="loopbound")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return clean_env(PYTHONPATH=path, RSM_TEST_EVENTS=str(directory / "events.jsonl"), **extra)


def events(directory: Path) -> list[dict[str, Any]]:
    """The store calls recorded so far, in order."""
    path = directory / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_store(recorded: list[dict[str, Any]]) -> dict[tuple[int, int], list[str]]:
    """Each store instance (pid, id) with the calls it got, in order."""
    calls: dict[tuple[int, int], list[str]] = {}
    for event in recorded:
        calls.setdefault((event["pid"], event["store"]), []).append(event["event"])
    return calls


def start(
    command: list[str], directory: Path, env: dict[str, str], log_name: str = "server.log"
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``command`` in ``directory`` with its output in a log file."""
    log = directory / log_name
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return process, log


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def lines(log: Path) -> Iterator[str]:
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            yield line


COMMAND_SERVE = [*COMMAND, "serve"]
