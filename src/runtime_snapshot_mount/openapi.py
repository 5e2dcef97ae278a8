"""The OpenAPI 3.1 document of the sub-app, served at ``{mount}/openapi.json`` when enabled.

It is built from the pydantic model that validates request bodies
(:class:`~runtime_snapshot_mount.SnapshotRequest`) and small models of the answers below, once
per app. Its paths are relative to the mount: ``servers`` names the prefix the document was
fetched under (the ASGI ``root_path``), so it stays right under any mount.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from .snapshot import SnapshotRequest

__all__ = [
    "OPENAPI_PATH",
    "ErrorResponse",
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


def build_document(upsert_path: str, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving ``upsert_path``, without ``servers``."""
    _, top = models_json_schema(
        [
            (SnapshotRequest, "validation"),
            (UpsertedResponse, "serialization"),
            (IgnoredStaleResponse, "serialization"),
            (ErrorResponse, "serialization"),
            (ValidationErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    request = schemas["SnapshotRequest"]
    request["description"] = (
        "A runtime-strategy snapshot. Unknown fields are ignored. Beyond this schema: "
        "strategy_version must be a JSON integer literal (not 1.0); no string may contain "
        "U+0000 or a lone surrogate; strategy_synced_at must name an instant in the years "
        "0001-9999 once converted to UTC; personality nests at most 32 levels of objects "
        "and arrays, itself being level 1."
    )
    properties = request["properties"]
    properties["strategy_synced_at"].update(
        format="date-time",
        description="RFC 3339 date-time with an offset (Z or +HH:MM), returned unchanged.",
        examples=["2026-03-22T08:30:00.000Z"],
    )
    properties["personality"]["description"] = (
        "Any JSON object, at most 32 levels deep; stored and returned as the same JSON value."
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
        "paths": {
            upsert_path: {
                "post": {
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
            }
        },
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

    async def serve(self, request: Request) -> Response:
        """Answer ``GET openapi.json``; no token needed."""
        root_path: str = request.scope.get("root_path", "")
        return Response(self.encoded(root_path), media_type="application/json")
