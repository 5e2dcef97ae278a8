"""The OpenAPI 3.1 document of the sub-app, served at ``{mount}/openapi.json`` when enabled.

It is built from the same definition that validates request bodies
(:class:`~runtime_snapshot_mount.Snapshot`'s annotations) and small models of the answers below,
once per app. Its paths are relative to the mount: ``servers`` names the prefix the document was
fetched under (the ASGI ``root_path``), so it stays right under any mount.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.types import Receive, Scope, Send

from .snapshot import SNAPSHOT_SCHEMA

__all__ = [
    "OPENAPI_PATH",
    "ErrorResponse",
    "HealthResponse",
    "IgnoredStaleResponse",
    "OpenAPIEndpoint",
    "UpsertedResponse",
    "ValidationErrorItem",
    "ValidationErrorResponse",
    "build_document",
]

OPENAPI_PATH = "/openapi.json"
_MAX_CACHED_PREFIXES = 32


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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _version() -> str:
    try:
        return metadata.version("runtime-snapshot-mount")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


class HealthResponse(BaseModel):
    """200 ``ok`` when the store answers a cheap check in time; 503 ``unavailable`` otherwise."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "unavailable"]


def build_document(upsert_path: str, max_body_bytes: int, *, read: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving ``upsert_path``, without ``servers``
    (``read``: with the read-back path too)."""
    _, top = TypeAdapter.json_schemas(
        [
            ("request", "validation", SNAPSHOT_SCHEMA),
            *(
                (model, "serialization", TypeAdapter(model))
                for model in (
                    UpsertedResponse,
                    IgnoredStaleResponse,
                    ErrorResponse,
                    ValidationErrorResponse,
                    HealthResponse,
                )
            ),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    # The body's schema has been published as SnapshotRequest; it is Snapshot's, renamed.
    request = schemas["SnapshotRequest"] = schemas.pop("Snapshot")
    request["description"] = (
        "A runtime-strategy snapshot. Unknown fields are ignored. Beyond this schema: "
        "strategy_version must be a JSON integer literal (not 1.0); no string may contain "
        "U+0000 or a lone surrogate; strategy_synced_at must name an instant in the years "
        "0001-9999 once converted to UTC; personality nests at most 32 levels of objects "
        "and arrays, itself being level 1."
    )
    request_id_header = {
        "description": "The request's id: the client's X-Request-ID if sane, else a new one.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    }

    def answer(description: str, schema: dict[str, Any], **headers: Any) -> dict[str, Any]:
        return {
            "description": description,
            "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}, **headers},
            "content": _json(schema),
        }

    error = _ref("ErrorResponse")
    paths: dict[str, Any] = {
        upsert_path: {"post": _upsert_operation(answer, error, max_body_bytes)}
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "summary": "Whether the store answers a cheap check (no token needed)",
            "responses": {
                "200": answer("The store answered.", _ref("HealthResponse")),
                "503": answer("The store did not answer in time.", _ref("HealthResponse")),
            },
        }
    }
    if read:
        paths["/runtime-snapshots/{account_id}"] = {"get": _read_operation(answer, error)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runtime-snapshot-mount",
            "version": _version(),
            "description": (
                "Keeps each account's newest runtime-strategy snapshot. Configuration sync "
                "only: storing a snapshot never starts work on a phone. Methods other than "
                f"POST on {upsert_path} answer 405 with an Allow header."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": {"RequestId": request_id_header},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token the app's authenticate hook accepts.",
                }
            },
        },
    }


def _upsert_operation(answer: Any, error: dict[str, Any], max_body_bytes: int) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "upsertRuntimeSnapshot",
        "summary": "Store an account's runtime-strategy snapshot unless it is stale",
        "description": (
            "Checks run in order and the first that fails answers: bearer token "
            "(401, before the body is read), body size (413), body (422), account "
            "(404), store (500). A snapshot is ignored when the stored "
            "strategy_version is greater, or equal with a later stored "
            "strategy_synced_at instant; otherwise it is applied."
        ),
        "security": [{"bearerAuth": []}],
        "parameters": [
            {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "An id to log and echo; a new one is made if unsane.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": _json(_ref("SnapshotRequest")),
        },
        "responses": {
            "200": answer(
                "Applied (upserted) or ignored as stale (ignored_stale).",
                {"oneOf": [_ref("UpsertedResponse"), _ref("IgnoredStaleResponse")]},
            ),
            "401": answer(
                "Missing or invalid bearer token.",
                error,
                **{
                    "WWW-Authenticate": {
                        "required": True,
                        "schema": {"const": "Bearer"},
                    }
                },
            ),
            "404": answer("Account not found, inactive, or not visible.", error),
            "408": answer(
                "The body did not arrive within the body timeout; nothing stored.",
                error,
            ),
            "413": answer(f"Request body exceeds {max_body_bytes} bytes.", error),
            "422": answer(
                "Body not JSON (or Content-Type not application/json or +json), "
                "not an object, or a field breaks its rule.",
                _ref("ValidationErrorResponse"),
            ),
            "500": answer(
                "The store failed; nothing was written; the body says no more.",
                error,
            ),
        },
    }
    return operation


def _read_operation(answer: Any, error: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "readRuntimeSnapshot",
        "summary": "The snapshot stored for an account (enabled with read=True)",
        "security": [{"bearerAuth": []}],
        "parameters": [
            {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": answer("The stored snapshot, as `show` prints it.", _ref("SnapshotRequest")),
            "401": answer("Missing or invalid bearer token.", error),
            "404": answer("Account not visible, or nothing stored for it.", error),
            "500": answer("The store failed; the body says no more.", error),
        },
    }


class OpenAPIEndpoint:
    """Serves one app's document; ``servers`` names the prefix it is mounted under.

    The document is built once; its encoding is cached per mount prefix (a few at most).
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._encoded: dict[str, bytes] = {}

    def encoded(self, root_path: str) -> bytes:
        """The document as JSON bytes, with ``servers`` naming ``root_path`` (``/`` if empty)."""
        found = self._encoded.get(root_path)
        if found is None:
            document = dict(self.document)
            document = {
                "openapi": document.pop("openapi"),
                "info": document.pop("info"),
                "servers": [{"url": root_path or "/"}],
                **document,
            }
            found = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
            if len(self._encoded) < _MAX_CACHED_PREFIXES:
                self._encoded[root_path] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``GET openapi.json``; no token needed."""
        body = self.encoded(scope.get("root_path", ""))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
