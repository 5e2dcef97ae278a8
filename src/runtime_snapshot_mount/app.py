"""``create_app`` and its one route: auth -> size -> validate -> account -> store (SPEC §2)."""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
import types
from collections.abc import Coroutine, Generator, Iterable, Mapping
from time import monotonic as _monotonic
from time import perf_counter
from typing import Any, NamedTuple, TypeVar

import anyio
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .memory import MemoryStoreOpener
from .openapi import OPENAPI_PATH, OpenAPIEndpoint, build_document
from .operations import (
    LOGGER_NAME,
    Metrics,
    bind_request_id,
    current_request_id,
    request_id_from_header,
    unbind_request_id,
)
from .plugins import ConfigurationError, Plugins, check_upsert_result
from .snapshot import Account, Snapshot, UpsertResult, parse_upsert
from .static import StaticAccounts, StaticTokens

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "UPSERT_PATH",
    "SnapshotApp",
    "create_app",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
UPSERT_PATH = "/runtime-snapshots/upsert"

logger = logging.getLogger(LOGGER_NAME)
_CHALLENGE = ((b"www-authenticate", b"Bearer"),)
_JSON_HEADER = (b"content-type", b"application/json")


_current_task = asyncio.current_task
T = TypeVar("T")


class _BodyTooLarge(Exception):
    pass


class _Answer(NamedTuple):
    """One answer: its status, JSON content, outcome for the counters, and extra headers."""

    status: int
    content: Any
    outcome: str  # applied, ignored, rejected or failed
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def encode(self, request_id: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The response's raw headers and body."""
        body = b"" if self.content is None else to_json(self.content)
        headers = [
            _JSON_HEADER,
            (b"content-length", str(len(body)).encode("ascii")),
            (b"x-request-id", request_id.encode("ascii")),
            *self.headers,
        ]
        return headers, body


def _detail(status: int, detail: str, outcome: str = "rejected", headers: Any = ()) -> _Answer:
    return _Answer(status, {"detail": detail}, outcome, headers)


class _Headers:
    """The request headers the endpoint reads, found in one pass over the ASGI scope."""

    __slots__ = ("authorization", "content_length", "content_type", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.authorization = self.content_type = self.content_length = self.request_id = ""
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = self.authorization or value.decode("latin-1")
            elif key == b"content-type":
                self.content_type = self.content_type or value.decode("latin-1")
            elif key == b"content-length":
                self.content_length = self.content_length or value.decode("latin-1")
            elif key == b"x-request-id":
                self.request_id = self.request_id or value.decode("latin-1")

    def bearer_token(self) -> str | None:
        scheme, _, token = self.authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _declares_more_than(content_length: str, limit: int, limit_digits: int) -> bool:
    """True when a Content-Length header value is a decimal number greater than ``limit``
    (which has ``limit_digits`` digits)."""
    if not (content_length.isdigit() and content_length.isascii()):
        return False  # absent or malformed: the streamed size decides
    if len(content_length) > limit_digits:
        content_length = content_length.lstrip("0")
        if len(content_length) > limit_digits:
            return True
    return int(content_length or "0") > limit


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, refusing it as soon as more than ``limit`` bytes have arrived."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@types.coroutine
def _resumed(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Await ``coroutine``, which has already been started and is waiting on ``waiting_on``.

    The event loop gets ``waiting_on`` as if the coroutine had handed it over itself, and
    resumes (or cancels) the coroutine exactly as it would have.
    """
    while True:
        try:
            yield waiting_on
        except BaseException as error:
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        return (yield from coroutine.__await__())


class _BodyDeadlines:
    """How long each request may take to send its body: ``seconds`` (``None``: no limit).

    On asyncio, a request pays for one dict entry, not a timer of its own: a single timer per
    endpoint, armed while bodies are being read, cancels the readers past their deadline, at a
    granularity of a quarter of ``seconds`` (at most a second). On another event loop (trio's),
    anyio's ``fail_after``.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.granularity = min(1.0, seconds / 4) if seconds else 0.0
        self.reading: dict[asyncio.Task[Any], float] = {}  # task -> its deadline
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_loop: asyncio.AbstractEventLoop | None = None

    async def read(self, receive: Receive, limit: int) -> bytes:
        """:func:`_read_body`, raising :class:`TimeoutError` once the deadline has passed.

        A body that has already arrived is returned without waiting, and so without a
        deadline; the reader is registered only once it has to wait for the client.
        """
        seconds = self.seconds
        reader = _read_body(receive, limit)
        if seconds is None:
            return await reader
        try:
            waiting_on = reader.send(None)
        except StopIteration as done:
            body: bytes = done.value
            return body
        try:
            task = _current_task()
        except RuntimeError:  # no asyncio loop: another event loop, such as trio's
            with anyio.fail_after(seconds):
                return await _resumed(reader, waiting_on)
        assert task is not None
        reading = self.reading
        reading[task] = _monotonic() + seconds
        if self.timer is None or self.timer_loop is not task.get_loop():
            self._arm(task.get_loop())
        try:
            return await _resumed(reader, waiting_on)
        except asyncio.CancelledError:
            if task not in self.expired:
                raise
            if sys.version_info >= (3, 11):
                task.uncancel()
            raise TimeoutError from None
        finally:
            del reading[task]
            if self.expired:
                self.expired.discard(task)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer_loop = loop
        self.timer = loop.call_later(self.granularity, self._expire)

    def _expire(self) -> None:
        self.timer = None
        loop = self.timer_loop
        assert loop is not None
        now = _monotonic()
        for task, deadline in list(self.reading.items()):
            if deadline <= now and task not in self.expired and not task.done():
                self.expired.add(task)
                task.cancel()
        if self.reading and not loop.is_closed():
            self._arm(loop)


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


def _applied(snapshot: Snapshot, synced_at: str) -> _Answer:
    content = {
        "status": "upserted",
        "account_id": snapshot.account_id,
        "snapshot_id": snapshot.snapshot_id,
        "strategy_version": snapshot.strategy_version,
        "strategy_synced_at": synced_at,
    }
    return _Answer(200, content, "applied")


def _ignored(snapshot: Snapshot) -> _Answer:
    content = {
        "status": "ignored_stale",
        "account_id": snapshot.account_id,
        "snapshot_id": snapshot.snapshot_id,
        "strategy_version": snapshot.strategy_version,
    }
    return _Answer(200, content, "ignored")


_WRONG_CONTENT_TYPE = _Answer(
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


class _Endpoint:
    """The route, as a plain ASGI app (no Request or Response objects on the hot path), and
    the router's error handler, around one app's plugins and counters.

    Every answer has a request id, bound for logging and echoed in ``X-Request-ID``, and goes
    through :meth:`_finished`: outcome counted on :class:`Metrics`, ``request_finished`` told.
    """

    def __init__(
        self,
        plugins: Plugins,
        metrics: Metrics,
        max_body_bytes: int,
        body_timeout: float | None,
    ) -> None:
        self.plugins = plugins
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.deadlines = _BodyDeadlines(body_timeout)
        self.observe = plugins.observes_requests
        self.authenticate = plugins.first("authenticate")
        self.get_account = plugins.first("get_account")
        self.store_upsert = plugins.first("store_upsert")
        self.limit_digits = len(str(max_body_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _Headers(scope)
        request_id = request_id_from_header(headers.request_id)
        bound = bind_request_id(request_id)
        try:
            started = perf_counter() if self.observe else 0.0
            answer = await self._upsert(headers, receive)
            telling = self._finished(answer, request_id, started)
            if telling is not None:
                await telling
        finally:
            unbind_request_id(bound)
        raw_headers, body = answer.encode(request_id)
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The router's own answers: 404 for an unknown path, 405 for another method."""
        assert isinstance(exc, HTTPException)
        outcome = "failed" if exc.status_code >= 500 else "rejected"
        extra = tuple(
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in (exc.headers or {}).items()
        )
        answer = _detail(exc.status_code, exc.detail, outcome, extra)
        request_id = request_id_from_header(_Headers(request.scope).request_id)
        bound = bind_request_id(request_id)
        try:
            telling = self._finished(answer, request_id, perf_counter())
            if telling is not None:
                await telling
        finally:
            unbind_request_id(bound)
        response = Response(status_code=answer.status)
        response.raw_headers, response.body = answer.encode(request_id)
        return response

    def _finished(
        self, answer: _Answer, request_id: str, started: float
    ) -> Coroutine[Any, Any, None] | None:
        """Count ``answer``; the ``request_finished`` call to await, if anyone observes."""
        self.metrics.count(answer.status, answer.outcome)
        if not self.observe:
            return None
        elapsed = perf_counter() - started
        return self.plugins.request_finished(answer.status, answer.outcome, request_id, elapsed)

    async def _upsert(self, headers: _Headers, receive: Receive) -> _Answer:
        plugins = self.plugins
        token = None
        try:
            token = headers.bearer_token()
            principal = None if token is None else await self.authenticate(token)
            if principal is None:
                return _detail(401, "Missing or invalid bearer token", headers=_CHALLENGE)
            limit = self.max_body_bytes
            try:
                if _declares_more_than(headers.content_length, limit, self.limit_digits):
                    raise _BodyTooLarge
                body = await self.deadlines.read(receive, limit)
            except _BodyTooLarge:
                return _detail(413, f"Request body exceeds {limit} bytes")
            except TimeoutError:  # a client trickling its body; the store is never called
                return _detail(408, "Request body not received in time")
            if not _is_json(headers.content_type):
                return _WRONG_CONTENT_TYPE
            try:
                snapshot, synced_at = parse_upsert(body)
            except ValidationError as error:
                return _Answer(422, {"detail": _validation_errors(error)}, "rejected")
            account = await self.get_account(snapshot.account_id, principal)
            if account is None or not account.active:
                return _detail(404, "Account not found or inactive")
            result = await self.store_upsert(snapshot)
            if type(result) is not UpsertResult:
                result = check_upsert_result(result)
        except ClientDisconnect:
            return _Answer(400, None, "rejected")
        except Exception as error:
            _log_failure(error, current_request_id() or "-", token)
            return _detail(500, "Unexpected update failure", "failed")
        if result.applied:
            await plugins.snapshot_applied(snapshot, principal)
            return _applied(snapshot, synced_at)
        await plugins.snapshot_ignored(snapshot, result.current, principal)
        return _ignored(snapshot)


class SnapshotApp(Starlette):
    """The sub-app: a plain Starlette app that hands ``POST {mount}/runtime-snapshots/upsert``
    straight to its endpoint.

    The endpoint answers every outcome itself, so Starlette's error middleware and router have
    nothing to add on that one path; everything else (other methods and paths, the OpenAPI
    document) goes through Starlette as usual, and so does every request once middleware has
    been added to the app.
    """

    def __init__(self, endpoint: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self._upsert = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and not self.user_middleware
            and _route_path(scope) == UPSERT_PATH
        ):
            scope["app"] = self
            await self._upsert(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The request path below the mount point (``root_path``), as Starlette's router sees it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :]
    return path


def create_app(
    *plugins: object,
    api_keys: Iterable[str] | Mapping[str, Any] = (),
    accounts: Iterable[str | Account | Mapping[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    entry_points: bool = True,
    openapi: bool = False,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> SnapshotApp:
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
    endpoint = _Endpoint(manager, metrics, max_body_bytes, body_timeout)
    routes = [Route(UPSERT_PATH, endpoint, methods=["POST"])]
    if openapi:
        document = OpenAPIEndpoint(build_document(UPSERT_PATH, max_body_bytes))
        routes.append(Route(OPENAPI_PATH, document.serve, methods=["GET"]))
    app = SnapshotApp(
        endpoint, routes=routes, exception_handlers={HTTPException: endpoint.http_error}
    )
    app.state.plugins = manager
    app.state.metrics = metrics
    return app
