"""``create_app``, and the sub-app it returns: a small ASGI dispatcher over a fixed route table.

A request's whole path: :meth:`SnapshotApp.__call__` -> :meth:`SnapshotApp.dispatch` (path and
method) -> an endpoint of :mod:`.endpoint` -> an answer of :mod:`.answers`. Middleware a host adds
with :meth:`SnapshotApp.add_middleware` wraps the dispatcher; the path is the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from ..extend.memory import MemoryStoreOpener
from ..extend.plugins import ConfigurationError, Plugins
from ..extend.static import StaticAccounts, StaticTokens
from . import answers
from .endpoint import HealthEndpoint, ReadEndpoint, RouteError, UpsertEndpoint
from .openapi import OPENAPI_PATH, OpenAPIEndpoint, build_document
from .operations import Metrics
from .snapshot import Account

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "HEALTH_PATH",
    "READ_PREFIX",
    "UPSERT_PATH",
    "SnapshotApp",
    "create_app",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
UPSERT_PATH = "/runtime-snapshots/upsert"
READ_PREFIX = "/runtime-snapshots/"  # GET READ_PREFIX + account_id, when read=True
HEALTH_PATH = "/healthz"

Routes = Mapping[str, Mapping[str, ASGIApp]]  # path -> method -> endpoint


class SnapshotApp:
    """The sub-app. ``routes`` maps each path to its endpoints by method; ``read``, if given,
    answers ``GET READ_PREFIX + account_id``; ``not_found`` and ``method_not_allowed`` answer
    the rest. ``state`` holds the app's ``plugins`` and ``metrics``.
    """

    def __init__(
        self,
        routes: Routes,
        *,
        read: ASGIApp | None,
        not_found: ASGIApp,
        method_not_allowed: Mapping[str, ASGIApp],
    ) -> None:
        self.routes = routes
        self.read = None if read is None else {"GET": read, "HEAD": read}
        self.not_found = not_found
        self.method_not_allowed = method_not_allowed  # path -> its 405 answer
        self.state = State()
        self.app: ASGIApp = self.dispatch

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        """Wrap the app in ``middleware_class(app, *args, **kwargs)`` (the last added runs
        first), as Starlette's ``add_middleware`` does."""
        self.app = middleware_class(self.app, *args, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self.app(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand an HTTP request to the endpoint for its path and method."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: nothing here takes one
            await send({"type": "websocket.close", "code": 1000})
            return
        path = route_path(scope)
        methods = self.routes.get(path)
        if methods is None and self.read is not None and _is_read_path(path):
            scope["path_params"] = {"account_id": path[len(READ_PREFIX) :]}
            methods, path = self.read, READ_PREFIX
        if methods is None:
            await self.not_found(scope, receive, send)
            return
        endpoint = methods.get(scope["method"]) or self.method_not_allowed[path]
        await endpoint(scope, receive, send)


def route_path(scope: Scope) -> str:
    """The request path below the mount point (``root_path``): where a mounted app routes."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :]
    return path


def _is_read_path(path: str) -> bool:
    account_id = path[len(READ_PREFIX) :]
    return path.startswith(READ_PREFIX) and bool(account_id) and "/" not in account_id


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: the app needs no lifespan (mounted, it gets none)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    *plugins: object,
    api_keys: Iterable[str] | Mapping[str, Any] | None = None,
    accounts: Iterable[str | Account | Mapping[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    entry_points: bool = True,
    openapi: bool = False,
    read: bool = False,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> SnapshotApp:
    """Build the sub-app that serves ``POST /runtime-snapshots/upsert``; mount it anywhere.

    ``plugins`` are plugin objects or modules (exactly one of them, or of the installed
    entry-point plugins, must be a store, e.g. :class:`MemoryStore`). ``api_keys`` adds the
    built-in bearer-token check (a list of tokens, or a mapping of token to principal; an
    empty one is a :class:`ConfigurationError`, since it would refuse every request);
    ``accounts`` adds the built-in account list. Built-ins yield to the plugins' own
    ``authenticate`` and ``get_account``. ``entry_points=False`` skips installed plugins.
    ``openapi=True`` also serves the OpenAPI 3.1 document at ``{mount}/openapi.json``
    (no token needed). ``read=True`` also serves ``GET {mount}/runtime-snapshots/{account_id}``
    (the stored snapshot, with the upsert's token check and account visibility).
    ``body_timeout`` is how many seconds a client has to send the whole body once
    authenticated (``None``: no limit); a slower one gets 408 and the store is not called.
    ``GET {mount}/healthz`` is always on and needs no token.

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
    if api_keys is not None:
        keys = api_keys if isinstance(api_keys, Mapping) else list(api_keys)
        if not keys:
            raise ConfigurationError(
                "api_keys is empty: pass at least one accepted bearer token, or leave api_keys "
                "out and register a plugin that implements authenticate"
            )
        builtins.append(StaticTokens(keys))
    if accounts is not None:
        builtins.append(StaticAccounts(accounts))
    manager = Plugins(plugins, builtins=builtins, entry_points=entry_points)
    manager.require("authenticate", "get_account")
    metrics = Metrics()

    upsert = UpsertEndpoint(
        manager, metrics, max_body_bytes=max_body_bytes, body_timeout=body_timeout
    )
    health = HealthEndpoint(manager, metrics)
    routes: dict[str, dict[str, ASGIApp]] = {
        UPSERT_PATH: {"POST": upsert},
        HEALTH_PATH: {"GET": health, "HEAD": health},
    }
    if openapi:
        document = OpenAPIEndpoint(build_document(UPSERT_PATH, max_body_bytes, read=read))
        routes[OPENAPI_PATH] = {"GET": document, "HEAD": document}
    refusals: dict[str, ASGIApp] = {
        path: RouteError(manager, metrics, answers.method_not_allowed(", ".join(methods)))
        for path, methods in routes.items()
    }
    refusals[READ_PREFIX] = RouteError(manager, metrics, answers.method_not_allowed("GET, HEAD"))
    app = SnapshotApp(
        routes,
        read=ReadEndpoint(manager, metrics) if read else None,
        not_found=RouteError(manager, metrics, answers.NOT_FOUND),
        method_not_allowed=refusals,
    )
    app.state.plugins = manager
    app.state.metrics = metrics
    return app
