"""Every answer the sub-app gives (SPEC §2, §5a), and how one is sent."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.types import Send

from .snapshot import Snapshot

__all__ = [
    "ACCOUNT_NOT_FOUND",
    "BODY_TIMEOUT",
    "DISCONNECTED",
    "FAILED",
    "HEALTHY",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "SNAPSHOT_NOT_FOUND",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "WRONG_CONTENT_TYPE",
    "Answer",
    "applied",
    "ignored",
    "invalid",
    "method_not_allowed",
    "stored",
    "too_large",
]

Headers = tuple[tuple[bytes, bytes], ...]
_JSON = (b"content-type", b"application/json")


class Answer(NamedTuple):
    """One answer: its status, JSON content (``None``: empty body), the outcome counted for
    it (``applied``, ``ignored``, ``rejected`` or ``failed``), and extra headers."""

    status: int
    content: Any
    outcome: str
    headers: Headers = ()

    async def send(self, send: Send, request_id: str) -> None:
        """Send this answer, with ``X-Request-ID: request_id``."""
        body = b"" if self.content is None else to_json(self.content)
        headers = [
            _JSON,
            (b"content-length", str(len(body)).encode("ascii")),
            (b"x-request-id", request_id.encode("ascii")),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def detail(status: int, text: str, outcome: str = "rejected", headers: Headers = ()) -> Answer:
    """``{"detail": text}`` with ``status``."""
    return Answer(status, {"detail": text}, outcome, headers)


UNAUTHORIZED = detail(
    401, "Missing or invalid bearer token", headers=((b"www-authenticate", b"Bearer"),)
)
BODY_TIMEOUT = detail(408, "Request body not received in time")
ACCOUNT_NOT_FOUND = detail(404, "Account not found or inactive")
SNAPSHOT_NOT_FOUND = detail(404, "Snapshot not found")
FAILED = detail(500, "Unexpected update failure", "failed")
DISCONNECTED = Answer(400, None, "rejected")  # nobody is listening any more
NOT_FOUND = detail(404, "Not Found")
HEALTHY = Answer(200, {"status": "ok"}, "ok")
UNAVAILABLE = Answer(503, {"status": "unavailable"}, "failed")
WRONG_CONTENT_TYPE = Answer(
    422,
    {
        "detail": [
            {
                "loc": ["header", "content-type"],
                "msg": "Content-Type must be application/json",
                "type": "content_type",
            }
        ]
    },
    "rejected",
)


def method_not_allowed(allowed: str) -> Answer:
    return detail(405, "Method Not Allowed", headers=((b"allow", allowed.encode("ascii")),))


METHOD_NOT_ALLOWED = method_not_allowed("POST")


def too_large(limit: int) -> Answer:
    return detail(413, f"Request body exceeds {limit} bytes")


# pydantic names the error of a body that is not an object after the kind of schema
# (a dataclass here); the 422 answers have always called it model_type.
_ERROR_TYPES = {"dataclass_type": "model_type"}


def invalid(error: ValidationError) -> Answer:
    """422 with FastAPI's ``{"detail": [{"loc", "msg", "type"}, ...]}``, ``loc`` from ``body``."""
    items = error.errors(include_url=False, include_input=False, include_context=False)
    content = [
        {
            "loc": ["body", *item["loc"]],
            "msg": item["msg"],
            "type": _ERROR_TYPES.get(item["type"], item["type"]),
        }
        for item in items
    ]
    return Answer(422, {"detail": content}, "rejected")


def applied(snapshot: Snapshot, synced_at: str) -> Answer:
    """200 ``upserted``: ``strategy_synced_at`` is the request's string, unchanged."""
    content = {
        "status": "upserted",
        "account_id": snapshot.account_id,
        "snapshot_id": snapshot.snapshot_id,
        "strategy_version": snapshot.strategy_version,
        "strategy_synced_at": synced_at,
    }
    return Answer(200, content, "applied")


def ignored(snapshot: Snapshot) -> Answer:
    """200 ``ignored_stale``, with the incoming request's values."""
    content = {
        "status": "ignored_stale",
        "account_id": snapshot.account_id,
        "snapshot_id": snapshot.snapshot_id,
        "strategy_version": snapshot.strategy_version,
    }
    return Answer(200, content, "ignored")


def stored(snapshot: Snapshot) -> Answer:
    """200 with the stored snapshot, as ``show`` prints it (read-back)."""
    return Answer(200, snapshot.to_json(), "read")
