"""``create_app`` and its one route: auth -> size -> validate -> account -> store (SPEC §2)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from time import perf_counter
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .memory import MemoryStoreOpener
from .openapi import OPENAPI_PATH, OpenAPIEndpoint, build_document
from .operations import (
    LOGGER_NAME,
    Metrics,
    bind_request_id,
    request_id_from_header,
    unbind_request_id,
)
from .plugins import ConfigurationError, Plugins
from .snapshot import Account, SnapshotRequest
from .static import StaticAccounts, StaticTokens

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "UPSERT_PATH", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
UPSERT_PATH = "/runtime-snapshots/upsert"

logger = logging.getLogger(LOGGER_NAME)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _detail(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


class _BodyTooLarge(Exception):
    pass


def _header(request: Request, name: bytes) -> str:
    """The first value of the header ``name`` (lower case), or ``""``; no exception if absent."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = _header(request, b"authorization").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _declares_more_than(content_length: str, limit: int) -> bool:
    """True when a Content-Length header value is a decimal number greater than ``limit``."""
    if not (content_length.isascii() and content_length.isdigit()):
        return False  # absent or malformed: the streamed size decides
    digits = content_length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def _read_body(request: Request, limit: int) -> bytes:
    if _declares_more_than(_header(request, b"content-length"), limit):
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


def _log_failure(error: Exception, request_id: str, token: str | None) -> None:
    """One log line with the traceback; the request's bearer token never appears in it."""
    message = "upsert failed; answered 500 (request %s)"
    if token:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        if token in text:
            redacted = text.replace(token, "[redacted token]").rstrip()
            logger.error(message + "\n%s", request_id, redacted)
            return
    logger.exception(message, request_id)


_Answer = tuple[Response, str]  # the response, and its outcome for the counters


def _applied(payload: SnapshotRequest) -> _Answer:
    body = {
        "status": "upserted",
        "account_id": payload.account_id,
        "snapshot_id": payload.snapshot_id,
        "strategy_version": payload.strategy_version,
        "strategy_synced_at": payload.strategy_synced_at,
    }
    return JSONResponse(body), "applied"


def _ignored(payload: SnapshotRequest) -> _Answer:
    body = {
        "status": "ignored_stale",
        "account_id": payload.account_id,
        "snapshot_id": payload.snapshot_id,
        "strategy_version": payload.strategy_version,
    }
    return JSONResponse(body), "ignored"


class _Handlers:
    """The route and the router's error handler of one app, around its plugins and counters.

    Every answer goes through :meth:`_observed`: request id bound for logging and echoed in
    ``X-Request-ID``, outcome counted on :class:`Metrics`, ``request_finished`` told.
    """

    def __init__(
        self,
        plugins: Plugins,
        metrics: Metrics,
        max_body_bytes: int,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.plugins = plugins
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.observe = plugins.observes_requests

    async def upsert(self, request: Request) -> Response:
        return await self._observed(request, self._upsert, None)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The router's own answers: 404 for an unknown path, 405 for another method."""
        assert isinstance(exc, HTTPException)
        return await self._observed(request, self._route_error, exc)

    async def _observed(
        self,
        request: Request,
        answer: Callable[[Request, str, Any], Awaitable[_Answer]],
        argument: Any,
    ) -> Response:
        request_id = request_id_from_header(_header(request, b"x-request-id"))
        bound = bind_request_id(request_id)
        try:
            started = perf_counter() if self.observe else 0.0
            response, outcome = await answer(request, request_id, argument)
            status = response.status_code
            self.metrics.count(status, outcome)
            if self.observe:
                elapsed = perf_counter() - started
                await self.plugins.request_finished(status, outcome, request_id, elapsed)
        finally:
            unbind_request_id(bound)
        response.raw_headers.append((b"x-request-id", request_id.encode("ascii")))
        return response

    @staticmethod
    async def _route_error(request: Request, request_id: str, exc: HTTPException) -> _Answer:
        outcome = "failed" if exc.status_code >= 500 else "rejected"
        return _detail(exc.status_code, exc.detail, exc.headers), outcome

    async def _upsert(self, request: Request, request_id: str, _: None) -> _Answer:
        plugins = self.plugins
        token = None
        try:
            token = _bearer_token(request)
            principal = None if token is None else await plugins.authenticate(token)
            if principal is None:
                return _detail(401, "Missing or invalid bearer token", _CHALLENGE), "rejected"
            try:
                with anyio.fail_after(self.body_timeout):  # None: no deadline
                    body = await _read_body(request, self.max_body_bytes)
            except _BodyTooLarge:
                limit = self.max_body_bytes
                return _detail(413, f"Request body exceeds {limit} bytes"), "rejected"
            except TimeoutError:  # a client trickling its body; the store is never called
                return _detail(408, "Request body not received in time"), "rejected"
            if not _is_json(_header(request, b"content-type")):
                error = {
                    "loc": ["header", "content-type"],
                    "msg": "Content-Type must be application/json",
                    "type": "content_type",
                }
                return _unprocessable([error]), "rejected"
            try:
                payload = SnapshotRequest.model_validate_json(body)
            except ValidationError as error:
                return _unprocessable(_validation_errors(error)), "rejected"
            snapshot = payload.to_snapshot()
            account = await plugins.get_account(snapshot.account_id, principal)
            if account is None or not account.active:
                return _detail(404, "Account not found or inactive"), "rejected"
            result = await plugins.store_upsert(snapshot)
        except ClientDisconnect:
            return Response(status_code=400), "rejected"
        except Exception as error:
            _log_failure(error, request_id, token)
            return _detail(500, "Unexpected update failure"), "failed"
        if result.applied:
            await plugins.snapshot_applied(snapshot, principal)
            return _applied(payload)
        await plugins.snapshot_ignored(snapshot, result.current, principal)
        return _ignored(payload)


def create_app(
    *plugins: object,
    api_keys: Iterable[str] | Mapping[str, Any] = (),
    accounts: Iterable[str | Account | Mapping[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    entry_points: bool = True,
    openapi: bool = False,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """Build the sub-app that serves ``POST /runtime-snapshots/upsert``; mount it anywhere.

    ``plugins`` are plugin objects or modules (exactly one of them, or of the installed
    entry-point plugins, must be a store, e.g. :class:`MemoryStore`). ``api_keys`` adds the
    built-in bearer-token check (a list of tokens, or a mapping of token to principal);
    ``accounts`` adds the built-in account list. Built-ins yield to the plugins' own
    ``authenticate`` and ``get_account``. ``entry_points=False`` skips installed plugins.
    ``openapi=True`` also serves the OpenAPI 3.1 document at ``{mount}/openapi.json``
    (no token needed). ``body_timeout`` is how many seconds a client has to send the whole
    body once authenticated (``None``: no limit); a slower one gets 408
    ``{"detail": "Request body not received in time"}`` and the store is not called.

    The app keeps its plugin manager on ``app.state.plugins`` and its counters
    (:class:`~runtime_snapshot_mount.Metrics`) on ``app.state.metrics``. Every answer carries
    an ``X-Request-ID`` header, and the request's log records carry ``request_id``.

    Nothing here needs the app's lifespan, so the app works mounted in a host. Raises
    :class:`ConfigurationError` with a one-line reason when the plugins do not add up.
    """
    if max_body_bytes < 1:
        raise ConfigurationError("max_body_bytes must be at least 1")
    if body_timeout is not None and not body_timeout > 0:
        raise ConfigurationError("body_timeout must be a positive number of seconds, or None")
    builtins: list[object] = [MemoryStoreOpener()]
    keys = api_keys if isinstance(api_keys, Mapping) else list(api_keys)
    if keys:
        builtins.append(StaticTokens(keys))
    if accounts is not None:
        builtins.append(StaticAccounts(accounts))
    manager = Plugins(plugins, builtins=builtins, entry_points=entry_points)
    manager.require("authenticate", "get_account")
    metrics = Metrics()
    handlers = _Handlers(manager, metrics, max_body_bytes, body_timeout)
    routes = [Route(UPSERT_PATH, handlers.upsert, methods=["POST"])]
    if openapi:
        document = OpenAPIEndpoint(build_document(UPSERT_PATH, max_body_bytes))
        routes.append(Route(OPENAPI_PATH, document.serve, methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: handlers.http_error})
    app.state.plugins = manager
    app.state.metrics = metrics
    return app
