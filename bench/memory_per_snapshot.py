"""The in-memory store's memory per stored snapshot.

    python bench/memory_per_snapshot.py [--count 100000]

Builds the app as a host would (``create_app(MemoryStore(), api_keys=..., accounts=...)``,
public names only) and sends it COUNT upserts in-process, straight through ASGI, one per
account, each the API page's example body with its own account id: so every snapshot is built
and stored exactly as the app does it for a real request. Prints one JSON line: the growth of
this process's resident set size (RSS) over those COUNT upserts divided by COUNT, and for
orientation a breakdown of one stored snapshot's own objects (objects shared with other
snapshots, such as interned or cached strings, are left out of the breakdown, since they are
paid once, not per snapshot). The app and its account list are built before the first RSS
reading, so they do not count.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import os
import sys
from typing import Any

from runtime_snapshot_mount import UPSERT_PATH, MemoryStore, create_app

TOKEN = "memory-bench-token"
BODY = (
    '{"account_id":"account_user%09d","ugc_account_id":"ugc_123",'
    '"snapshot_id":"snapshot-2026-03-22-001","strategy_version":%d,'
    '"content_hash":"sha256:abc123","strategy_synced_at":"2026-03-22T08:30:00.000Z",'
    '"stage":"warmup","active_action":"keyword_warmup",'
    '"active_skills":["warmup","commenting"],'
    '"personality":{"comment_style":"casual, validating",'
    '"interests":["healthy recipes","meal prep"]}}'
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def account_id(i: int) -> str:
    return f"account_user{i:09d}"


async def post(app: Any, body: bytes) -> int:
    """One ``POST`` of ``body`` through the ASGI app; its status."""
    path = "/" + UPSERT_PATH.lstrip("/")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def fill(app: Any, first: int, count: int) -> None:
    for i in range(first, first + count):
        status = await post(app, (BODY % (i, 7)).encode())
        if status != 200:
            raise SystemExit(f"upsert {i} answered {status}")


def owned_objects(root: Any, shared: set[int]) -> dict[str, int]:
    """Sizes by type of the objects reachable from ``root`` whose ids are not in ``shared``."""
    sizes: dict[str, int] = {}
    for obj in walk(root, shared):
        name = type(obj).__name__
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(obj)
    return sizes


def walk(root: Any, skip: set[int] | frozenset[int] = frozenset()) -> list[Any]:
    """The objects reachable from ``root`` through containers and slots, not entering those
    whose ids are in ``skip``."""
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in skip:
            continue
        seen[id(obj)] = obj
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, slot) for slot in obj.__slots__ if hasattr(obj, slot))
    return list(seen.values())


async def stored(store: MemoryStore, account: str) -> Any:
    """The store's snapshot of ``account`` (a hook may be plain or a coroutine)."""
    found: Any = store.store_get(account)
    return await found if inspect.isawaitable(found) else found


async def measure(count: int) -> dict[str, Any]:
    warm_first = 10**8  # warm-up accounts: imports, validators and caches are paid once
    ids = [account_id(i) for i in range(count)] + [account_id(warm_first + i) for i in range(2000)]
    store = MemoryStore()
    app = create_app(store, api_keys=[TOKEN], accounts=ids, entry_points=False)
    await fill(app, warm_first, 2000)
    gc.collect()
    before = rss_bytes()
    await fill(app, 0, count)
    gc.collect()
    after = rss_bytes()
    one = await stored(store, account_id(1))
    other = await stored(store, account_id(2))
    if one is None or other is None:
        raise SystemExit("the store did not keep the snapshots")
    breakdown = owned_objects(one, {id(o) for o in walk(other)})
    return {
        "count": count,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_snapshot": (after - before) / count,
        "own_objects_bytes": sum(breakdown.values()),
        "own_objects_by_type": dict(sorted(breakdown.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.count))))


if __name__ == "__main__":
    main()
