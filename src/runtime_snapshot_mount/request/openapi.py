"""The OpenAPI 3.1 document of the sub-app, served at ``{mount}/openapi.json`` when enabled.

It is built once per app from the same definitions that validate request bodies
(:class:`~runtime_snapshot_mount.Snapshot`'s annotations) and that make the answers
(:mod:`runtime_snapshot_mount.answers`: each operation's statuses, body models, descriptions and
examples). Its paths are relative to the mount: ``servers`` names the prefix the document was
fetched under (the ASGI ``root_path``), so it stays right under any mount.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from .answers import (
    HEALTH_ANSWERS,
    READ_ANSWERS,
    RESPONSE_MODELS,
    ErrorResponse,
    Family,
    HealthResponse,
    IgnoredStaleResponse,
    UpsertedResponse,
    ValidationErrorItem,
    ValidationErrorResponse,
    upsert_answers,
)
from .operations import REQUEST_ID_PATTERN
from .snapshot import MAX_PERSONALITY_DEPTH, SNAPSHOT_SCHEMA

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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _version() -> str:
    try:
        return metadata.version("runtime-snapshot-mount")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def build_document(upsert_path: str, max_body_bytes: int, *, read: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving ``upsert_path``, without ``servers``
    (``read``: with the read-back path too)."""
    _, top = TypeAdapter.json_schemas(
        [
            ("request", "validation", SNAPSHOT_SCHEMA),
            *((model, "serialization", TypeAdapter(model)) for model in RESPONSE_MODELS),
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
        "0001-9999 once converted to UTC; personality nests at most "
        f"{MAX_PERSONALITY_DEPTH} levels of objects and arrays, itself being level 1."
    )
    request_id_header = {
        "description": "The request's id: the client's X-Request-ID if sane, else a new one.",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{REQUEST_ID_PATTERN}$"},
    }
    paths: dict[str, Any] = {upsert_path: {"post": _upsert_operation(max_body_bytes)}}
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "summary": "Whether the store answers a cheap check (no token needed)",
            "responses": _responses(HEALTH_ANSWERS),
        }
    }
    if read:
        paths["/runtime-snapshots/{account_id}"] = {"get": _read_operation()}
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


def _responses(families: tuple[Family, ...]) -> dict[str, Any]:
    """An operation's ``responses``: one per status, from the answers' own definitions."""
    responses: dict[str, Any] = {}
    for family in families:
        schemas = [_ref(name) for name in family.schemas]
        first = next(iter(family.examples.values()))
        sent = {name.decode("ascii"): value.decode("ascii") for name, value in first.headers}
        headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
        for name in family.headers:
            headers[name] = {"required": True, "schema": {"const": sent[name.lower()]}}
        content = {
            "schema": schemas[0] if len(schemas) == 1 else {"oneOf": schemas},
            "examples": {name: {"value": a.content} for name, a in family.examples.items()},
        }
        responses[str(family.status)] = {
            "description": family.description,
            "headers": headers,
            "content": {"application/json": content},
        }
    return responses


def _upsert_operation(max_body_bytes: int) -> dict[str, Any]:
    return {
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
        "responses": _responses(upsert_answers(max_body_bytes)),
    }


def _read_operation() -> dict[str, Any]:
    return {
        "operationId": "readRuntimeSnapshot",
        "summary": "The snapshot stored for an account (enabled with read=True)",
        "security": [{"bearerAuth": []}],
        "parameters": [
            {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": _responses(READ_ANSWERS),
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
