"""The in-memory store's memory per stored snapshot.

    python bench/memory_per_snapshot.py [--count 100000]

Stores COUNT accounts' snapshots, each built from the API page's example body (own account id)
through the path the app uses — ``parse_upsert(body)``
then ``MemoryStore.store_upsert`` — and prints one JSON line: the growth of this process's
resident set size (RSS) divided by COUNT, and for orientation a breakdown of one stored
snapshot's own objects (objects shared with other snapshots, such as interned or cached
strings, are left out of the breakdown, since they are paid once, not per snapshot).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any

from runtime_snapshot_mount import MemoryStore
from runtime_snapshot_mount.snapshot import parse_upsert

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


def fill(store: MemoryStore, first: int, count: int) -> None:
    for i in range(first, first + count):
        body = (BODY % (i, 7)).encode()
        store.store_upsert(parse_upsert(body)[0])


def owned_objects(root: Any, shared: set[int]) -> dict[str, int]:
    """Sizes by type of the objects reachable from ``root`` whose ids are not in ``shared``."""
    sizes: dict[str, int] = {}
    for obj in _walk(root, shared):
        name = type(obj).__name__
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(obj)
    return sizes


def reachable_ids(root: Any) -> set[int]:
    return {id(o) for o in _walk(root)}


def _walk(root: Any, skip: set[int] | frozenset[int] = frozenset()) -> list[Any]:
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
            stack.extend(getattr(obj, slot) for slot in obj.__slots__)
    return list(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    # Warm up on a throw-away store: imports, validators and caches are paid once, not per
    # snapshot, so they must not count.
    fill(MemoryStore(), 10**8, 2000)
    gc.collect()
    store = MemoryStore()
    before = rss_bytes()
    fill(store, 0, args.count)
    gc.collect()
    after = rss_bytes()
    assert len(store) == args.count
    one = store.store_get("account_user000000001")
    other = store.store_get("account_user000000002")
    shared = reachable_ids(other)
    breakdown = owned_objects(one, shared)
    print(
        json.dumps(
            {
                "count": args.count,
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "bytes_per_snapshot": (after - before) / args.count,
                "own_objects_bytes": sum(breakdown.values()),
                "own_objects_by_type": dict(sorted(breakdown.items(), key=lambda kv: -kv[1])),
                # the store's dict itself (a private attribute, read for orientation only)
                "store_dict_bytes_per_entry": sys.getsizeof(getattr(store, "_snapshots", {}))
                / args.count,
            }
        )
    )


if __name__ == "__main__":
    main()
