"""Every answer the sub-app gives (SPEC §2, §5a), how one is sent, and how the OpenAPI document
describes each operation's answers (:data:`UPSERT_ANSWERS` and the like: the document is built
from these, so a status, body or header is written here only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.types import Send

from .snapshot import Snapshot, parse_upsert

__all__ = [
    "ACCOUNT_NOT_FOUND",
    "BODY_TIMEOUT",
    "DISCONNECTED",
    "FAILED",
    "HEALTHY",
    "HEALTH_ANSWERS",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "READ_ANSWERS",
    "RESPONSE_MODELS",
    "SNAPSHOT_NOT_FOUND",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "WRONG_CONTENT_TYPE",
    "Answer",
    "ErrorResponse",
    "Family",
    "HealthResponse",
    "IgnoredStaleResponse",
    "UpsertedResponse",
    "ValidationErrorItem",
    "ValidationErrorResponse",
    "applied",
    "ignored",
    "invalid",
    "method_not_allowed",
    "stored",
    "too_large",
    "upsert_answers",
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


# -- the shapes of the answers' bodies, as the OpenAPI document publishes them ---------------


class UpsertedResponse(BaseModel):
    """200: the snapshot was applied; strategy_synced_at is the request's string, unchanged."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["upserted"]
    account_id: str
    snapshot_id: str
    strategy_version: int
    strategy_synced_at: str


class IgnoredStaleResponse(BaseModel):
    """200: the snapshot was ignored because a later one is stored; the request's values."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ignored_stale"]
    account_id: str
    snapshot_id: str
    strategy_version: int


class ErrorResponse(BaseModel):
    """401, 404, 405, 408, 413 and 500: one sentence saying what went wrong."""

    model_config = ConfigDict(extra="forbid")

    detail: str


class ValidationErrorItem(BaseModel):
    """One reason a request was unprocessable, shaped like FastAPI's."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int] = Field(description='Where: ["body", field, ...] or ["header", name].')
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: the body is not JSON, not an object, or a field breaks its rule."""

    model_config = ConfigDict(extra="forbid")

    detail: list[ValidationErrorItem]


class HealthResponse(BaseModel):
    """200 ``ok`` when the store answers a cheap check in time; 503 ``unavailable`` otherwise."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "unavailable"]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    UpsertedResponse,
    IgnoredStaleResponse,
    ErrorResponse,
    ValidationErrorResponse,
    HealthResponse,
)
"""Every body model the answers below name, published as the document's schemas."""


# -- each operation's answers, as documented --------------------------------------------------


class Family(NamedTuple):
    """The answers one operation gives with one status, as the OpenAPI document describes them.

    ``schemas`` names the body's schema (one of :data:`RESPONSE_MODELS`, or ``SnapshotRequest``;
    several: any one of them); ``examples`` are real answers, by name; ``headers`` names, in their
    documented spelling, the headers the examples send beyond ``X-Request-ID``.
    """

    status: int
    description: str
    schemas: tuple[str, ...]
    examples: Mapping[str, Answer]
    headers: tuple[str, ...] = ()


def _error(status: int, description: str, **examples: Answer) -> Family:
    return Family(status, description, ("ErrorResponse",), examples)


# The upsert from the original API page, as the examples' request.
_EXAMPLE, _EXAMPLE_SYNCED_AT = parse_upsert(
    b'{"account_id": "account_user095916355", "ugc_account_id": "ugc_123",'
    b' "snapshot_id": "snapshot-2026-03-22-001", "strategy_version": 7,'
    b' "content_hash": "sha256:abc123", "strategy_synced_at": "2026-03-22T08:30:00.000Z",'
    b' "stage": "warmup", "active_action": "keyword_warmup",'
    b' "active_skills": ["warmup", "commenting"], "personality": {"comment_style": "casual"}}'
)
_UNAUTHORIZED = Family(
    401,
    "Missing or invalid bearer token.",
    ("ErrorResponse",),
    {"unauthorized": UNAUTHORIZED},
    ("WWW-Authenticate",),
)


def _not_an_object() -> Answer:
    """The 422 answer to a body that is a JSON array."""
    try:
        parse_upsert(b"[]")
    except ValidationError as error:
        return invalid(error)
    raise AssertionError("an array is not a snapshot")  # pragma: no cover


def upsert_answers(max_body_bytes: int) -> tuple[Family, ...]:
    """The answers of ``POST`` on the upsert path, for an app taking ``max_body_bytes``."""
    return (
        Family(
            200,
            "Applied (upserted) or ignored as stale (ignored_stale).",
            ("UpsertedResponse", "IgnoredStaleResponse"),
            {"upserted": applied(_EXAMPLE, _EXAMPLE_SYNCED_AT), "ignored_stale": ignored(_EXAMPLE)},
        ),
        _UNAUTHORIZED,
        _error(404, "Account not found, inactive, or not visible.", not_found=ACCOUNT_NOT_FOUND),
        _error(
            408,
            "The body did not arrive within the body timeout; nothing stored.",
            body_timeout=BODY_TIMEOUT,
        ),
        _error(
            413,
            f"Request body exceeds {max_body_bytes} bytes.",
            too_large=too_large(max_body_bytes),
        ),
        Family(
            422,
            "Body not JSON (or Content-Type not application/json or +json), "
            "not an object, or a field breaks its rule.",
            ("ValidationErrorResponse",),
            {"not_an_object": _not_an_object(), "wrong_content_type": WRONG_CONTENT_TYPE},
        ),
        _error(500, "The store failed; nothing was written; the body says no more.", failed=FAILED),
    )


READ_ANSWERS = (
    Family(
        200,
        "The stored snapshot, as `show` prints it.",
        ("SnapshotRequest",),
        {"stored": stored(_EXAMPLE)},
    ),
    _UNAUTHORIZED,
    _error(
        404,
        "Account not visible, or nothing stored for it.",
        account_not_found=ACCOUNT_NOT_FOUND,
        snapshot_not_found=SNAPSHOT_NOT_FOUND,
    ),
    _error(500, "The store failed; the body says no more.", failed=FAILED),
)
"""The answers of ``GET`` on the read-back path."""

HEALTH_ANSWERS = (
    Family(200, "The store answered.", ("HealthResponse",), {"ok": HEALTHY}),
    Family(
        503, "The store did not answer in time.", ("HealthResponse",), {"unavailable": UNAVAILABLE}
    ),
)
"""The answers of ``GET /healthz``."""
