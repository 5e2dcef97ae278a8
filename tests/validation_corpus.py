"""A fixed corpus of upsert bodies, made the same way on every run, for the recorded-answers test.

``python tests/validation_corpus.py FILE`` records what the validator answers for each body
(the errors of a refused body; a digest of the snapshot and the sent time of an accepted one).
The file in ``tests/data`` was recorded before the body schema was defined once (with the
model and the hand-built schema it replaced), so the test shows the answers did not change.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from typing import Any

from rsm_support import EXAMPLE_REQUEST, nested_personality

SEED = 20261202
COUNT = 2500
TEXTS = ["", "x", "x" * 255, "x" * 256, "y" * 1000, "y" * 1001, "\x00", "a\x00b", "\ud800", "é",
         "😀", "\\", "a\u2028b", "𝄞" * 255, "𝄞" * 256]  # fmt: skip
TIMES = [
    "2026-03-22T08:30:00.000Z", "2026-03-22T08:30:00Z", "2026-03-22T08:30:00.123456789Z",
    "2026-03-22T10:30:00+02:00", "2026-03-22t08:30:00z", "2026-02-30T08:30:00.000Z",
    "2026-03-22T24:00:00Z", "2026-03-22T08:30:00", "2026-03-22", "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-03-22T08:30:00+24:00",
    "2026-03-22T08:30:00.000Z\x00", "2026-03-22 08:30:00Z", "2026-03-22T08:30:00,5Z",
    "20260322T083000Z",
]  # fmt: skip
VALUES: list[Any] = [None, True, False, 0, 1, -1, 2**63 - 1, 2**63, 2**64, 7.0, 1.5, "7", [], {},
    ["x"], [1], {"a": 1}, [None], ["x"] * 256, ["x"] * 257, [""], ["x" * 256], float("inf"),
    float("nan")]  # fmt: skip
EXTRA = [b"[]", b"null", b"7", b'"x"', b"{", b"", b"{}", b"\xff\xfe", b'{"account_id": "a"}',
         json.dumps([EXAMPLE_REQUEST]).encode(), b'{"a": NaN}', b'{"strategy_version": 1e3}',
         b'{"strategy_version": 7.0}']  # fmt: skip


def bodies() -> list[bytes]:
    """The corpus: mutations of the API page's example, then some bodies that are not objects."""
    rng = random.Random(SEED)
    fields = list(EXAMPLE_REQUEST)

    def value() -> Any:
        k = rng.random()
        if k < 0.3:
            return rng.choice(TEXTS)
        if k < 0.5:
            return rng.choice(TIMES)
        if k < 0.9:
            return rng.choice(VALUES)
        return nested_personality(rng.randint(30, 34))

    def body() -> bytes:
        document = dict(EXAMPLE_REQUEST)
        for _ in range(rng.randint(0, 4)):
            field = rng.choice([*fields, "unknown"])
            if rng.random() < 0.25 and field in document:
                del document[field]
            else:
                document[field] = value()
        if rng.random() < 0.1:
            document["personality"] = {rng.choice(TEXTS): value(), "n": [value(), {"k": value()}]}
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5, allow_nan=True)
        return text.encode("utf-8", "surrogatepass")

    return [body() for _ in range(COUNT)] + EXTRA


def accepted(snapshot_json: Any, synced_at: str) -> str:
    """A digest of an accepted body's snapshot (as ``to_json`` gives it) and its sent time."""
    text = json.dumps([snapshot_json, synced_at], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _record(path: str) -> None:  # pragma: no cover - run by hand, once
    from pydantic import ValidationError

    from runtime_snapshot_mount.request.snapshot import parse_upsert

    answers: list[Any] = []
    for body in bodies():
        try:
            snapshot, synced_at = parse_upsert(body)
        except ValidationError as error:
            items = error.errors(include_url=False, include_input=False, include_context=False)
            answers.append(
                [{"loc": ["body", *i["loc"]], "msg": i["msg"], "type": i["type"]} for i in items]
            )
        else:
            answers.append(accepted(snapshot.to_json(), synced_at))
    with open(path, "w", encoding="utf-8") as file:
        json.dump(answers, file, ensure_ascii=True, separators=(",", ":"))


if __name__ == "__main__":  # pragma: no cover
    _record(sys.argv[1])
