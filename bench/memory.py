"""The in-memory store's memory per stored snapshot: ``python -m bench.memory [--count N]``.

Builds the app as a host does (``create_app(MemoryStore(), api_keys=..., accounts=...)``),
sends it COUNT upserts in-process through ASGI, one per account (the API page's example with
its own account id), and prints one JSON line: the growth of the process's resident set over
them (psutil), divided by COUNT. The app, its accounts and a warm-up come before the first
reading.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

import psutil

from runtime_snapshot_mount import MemoryStore, create_app

from .common import PATH, TOKEN, account_id, body


async def fill(app: Any, accounts: range) -> None:
    """One upsert per account, each straight through the ASGI app, each answered 200."""
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
    ]
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": headers}
    scope |= {"http_version": "1.1", "query_string": b"", "root_path": "", "scheme": "http"}
    for i in accounts:
        messages, statuses = [{"type": "http.request", "body": body(account_id(i), 7)}], []

        async def receive(messages: list[Any] = messages) -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: Any, statuses: list[int] = statuses) -> None:
            statuses += [message["status"]] if message["type"] == "http.response.start" else []

        await app(scope, receive, send)
        if statuses != [200]:
            raise SystemExit(f"upsert {i} answered {statuses}")


async def measure(count: int) -> dict[str, Any]:
    warm = range(10**8, 10**8 + 2000)  # imports, validators and caches are paid once
    ids = [account_id(i) for i in [*range(count), *warm]]
    app = create_app(MemoryStore(), api_keys=[TOKEN], accounts=ids, entry_points=False)
    await fill(app, warm)
    gc.collect()
    before = psutil.Process().memory_info().rss
    await fill(app, range(count))
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    return {"count": count, "bytes_per_snapshot": grown / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    print(json.dumps(asyncio.run(measure(parser.parse_args().count))))


if __name__ == "__main__":
    main()
