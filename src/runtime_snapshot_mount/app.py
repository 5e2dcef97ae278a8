"""``create_app`` and its one route: auth -> size -> validate -> account -> store (SPEC §2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .memory import MemoryStoreOpener
from .plugins import ConfigurationError, Plugins
from .snapshot import Account, SnapshotRequest
from .static import StaticAccounts, StaticTokens

__all__ = ["DEFAULT_MAX_BODY_BYTES", "UPSERT_PATH", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
UPSERT_PATH = "/runtime-snapshots/upsert"

logger = logging.getLogger("runtime_snapshot_mount")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _detail(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


class _BodyTooLarge(Exception):
    pass


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)


def _validation_errors(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def _make_endpoint(plugins: Plugins, max_body_bytes: int) -> Any:
    async def upsert(request: Request) -> Response:
        try:
            token = _bearer_token(request)
            principal = None if token is None else await plugins.authenticate(token)
            if principal is None:
                return _detail(401, "Missing or invalid bearer token", _CHALLENGE)
            try:
                body = await _read_body(request, max_body_bytes)
            except _BodyTooLarge:
                return _detail(413, f"Request body exceeds {max_body_bytes} bytes")
            if not _is_json(request.headers.get("content-type", "")):
                return _unprocessable(
                    [
                        {
                            "loc": ["header", "content-type"],
                            "msg": "Content-Type must be application/json",
                            "type": "content_type",
                        }
                    ]
                )
            try:
                payload = SnapshotRequest.model_validate_json(body)
            except ValidationError as error:
                return _unprocessable(_validation_errors(error))
            snapshot = payload.to_snapshot()
            account = await plugins.get_account(snapshot.account_id, principal)
            if account is None or not account.active:
                return _detail(404, "Account not found or inactive")
            result = await plugins.store_upsert(snapshot)
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception:
            logger.exception("upsert failed")
            return _detail(500, "Unexpected update failure")
        if result.applied:
            await plugins.snapshot_applied(snapshot, principal)
            return JSONResponse(
                {
                    "status": "upserted",
                    "account_id": payload.account_id,
                    "snapshot_id": payload.snapshot_id,
                    "strategy_version": payload.strategy_version,
                    "strategy_synced_at": payload.strategy_synced_at,
                }
            )
        await plugins.snapshot_ignored(snapshot, result.current, principal)
        return JSONResponse(
            {
                "status": "ignored_stale",
                "account_id": payload.account_id,
                "snapshot_id": payload.snapshot_id,
                "strategy_version": payload.strategy_version,
            }
        )

    return upsert


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _detail(exc.status_code, exc.detail, exc.headers)


def create_app(
    *plugins: object,
    api_keys: Iterable[str] | Mapping[str, Any] = (),
    accounts: Iterable[str | Account | Mapping[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    entry_points: bool = True,
) -> Starlette:
    """Build the sub-app that serves ``POST /runtime-snapshots/upsert``; mount it anywhere.

    ``plugins`` are plugin objects or modules (exactly one of them, or of the installed
    entry-point plugins, must be a store, e.g. :class:`MemoryStore`). ``api_keys`` adds the
    built-in bearer-token check (a list of tokens, or a mapping of token to principal);
    ``accounts`` adds the built-in account list. Built-ins yield to the plugins' own
    ``authenticate`` and ``get_account``. ``entry_points=False`` skips installed plugins.

    Nothing here needs the app's lifespan, so the app works mounted in a host. Raises
    :class:`ConfigurationError` with a one-line reason when the plugins do not add up.
    """
    if max_body_bytes < 1:
        raise ConfigurationError("max_body_bytes must be at least 1")
    builtins: list[object] = [MemoryStoreOpener()]
    keys = api_keys if isinstance(api_keys, Mapping) else list(api_keys)
    if keys:
        builtins.append(StaticTokens(keys))
    if accounts is not None:
        builtins.append(StaticAccounts(accounts))
    manager = Plugins(plugins, builtins=builtins, entry_points=entry_points)
    manager.require("authenticate", "get_account")
    app = Starlette(
        routes=[Route(UPSERT_PATH, _make_endpoint(manager, max_body_bytes), methods=["POST"])],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.plugins = manager
    return app
