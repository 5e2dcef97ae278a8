"""The plugin manager: one per app, built-ins registered last, checks at start-up.

Hooks are called one way: through the typed methods of :class:`Plugins`. pluggy's own hook
call (``manager.hook.name(...)``) is not used, because it calls every implementation
synchronously: an ``async def`` implementation's result would be its coroutine, never awaited,
and a *first result* hook would stop at it even when it awaits to ``None``. So at start-up
:class:`Plugins` asks pluggy for each hook's implementations, in the order pluggy would call
them, and each call awaits whatever an implementation returns if it is awaitable (has
``__await__``: a coroutine, a future or a task).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from importlib.metadata import entry_points
from typing import Any, NamedTuple

import pluggy

from ..request.snapshot import Account, Snapshot, UpsertResult
from . import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "ConfigurationError", "Plugins"]

ENTRY_POINT_GROUP = hookspecs.PROJECT
logger = logging.getLogger("runtime_snapshot_mount")


class ConfigurationError(Exception):
    """The app cannot start as configured; the message is one line saying why."""


class _Impl(NamedTuple):
    """One hook implementation, ready to call with the hook's arguments in the spec's order."""

    function: Callable[..., Any]
    picks: tuple[int, ...] | None  # which spec arguments it takes; None: all, in order
    is_async: bool
    where: str  # plugin.hook, for messages


def _describe(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _implementations(hook: pluggy.HookCaller) -> tuple[_Impl, ...]:
    """The implementations of ``hook`` in the order pluggy would call them."""
    found: list[_Impl] = []
    spec_args = tuple(hook.spec.argnames) if hook.spec else ()
    for impl in reversed(hook.get_hookimpls()):
        where = f"{_describe(impl.plugin)}.{hook.name}"
        if impl.hookwrapper or impl.wrapper:
            raise ConfigurationError(f"hook wrappers are not supported: {where}")
        for name, parameter in inspect.signature(impl.function).parameters.items():
            if name in spec_args and parameter.default is not inspect.Parameter.empty:
                raise ConfigurationError(
                    f"{where}: parameter {name!r} has a default value, so it would never be passed"
                )
        argnames = tuple(impl.argnames)
        picks = None if argnames == spec_args else tuple(spec_args.index(n) for n in argnames)
        is_async = inspect.iscoroutinefunction(impl.function)
        found.append(_Impl(impl.function, picks, is_async, where))
    return tuple(found)


async def _first(impls: tuple[_Impl, ...], *args: Any, expect: type | None = None) -> Any:
    """The first result that is not ``None`` (pluggy's ``firstresult``, each one awaited);
    ``expect``: the type it must have (:class:`TypeError` otherwise)."""
    result = None
    for function, picks, is_async, _ in impls:
        result = function(*(args if picks is None else [args[index] for index in picks]))
        if is_async or hasattr(result, "__await__"):  # a plain function may return one too
            result = await result
        if result is not None:
            break
    if expect is not None and not isinstance(result, expect):
        hook = impls[0].where if impls else "the hook"
        raise TypeError(f"{hook} returned {type(result).__name__}, not {expect.__name__}")
    return result


class _Done:
    """Awaits to ``None`` at once: what a hook that no plugin implements returns."""

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE = _Done()


async def _each(impls: tuple[_Impl, ...], *args: Any, observers: bool = False) -> None:
    """Call every implementation, awaiting each result. ``observers``: one that raises is
    logged and never changes the response; otherwise the first error propagates."""
    for function, picks, is_async, where in impls:
        try:
            result = function(*(args if picks is None else [args[index] for index in picks]))
            if is_async or hasattr(result, "__await__"):
                await result
        except Exception:
            if not observers:
                raise
            logger.exception("observer %s raised; the response is unchanged", where)


def _register_entry_points(manager: pluggy.PluginManager) -> None:
    """Register the plugins of installed distributions (group ``runtime_snapshot_mount``).

    A plugin object that is already registered (passed to ``create_app`` and also installed)
    is used once, not refused.
    """
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if manager.get_plugin(entry_point.name) is not None or manager.is_blocked(entry_point.name):
            continue
        plugin = entry_point.load()
        if not manager.is_registered(plugin):
            manager.register(plugin, name=entry_point.name)


class Plugins:
    """The plugins of one app, with one typed async method per hook.

    ``plugins`` are registered first, then those of installed entry points (unless
    ``entry_points`` is false), then ``builtins``, whose implementations should be marked
    ``trylast`` so that the others win. The set is fixed once built.
    """

    def __init__(
        self,
        plugins: Iterable[object] = (),
        *,
        builtins: Iterable[object] = (),
        entry_points: bool = True,
        require_store: bool = True,
    ) -> None:
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        try:
            for plugin in plugins:
                if manager.is_registered(plugin):
                    raise ConfigurationError(f"the plugin {_describe(plugin)} is passed twice")
                manager.register(plugin)
            if entry_points:
                _register_entry_points(manager)
            for plugin in builtins:
                manager.register(plugin)
            manager.check_pending()
        except (pluggy.PluginValidationError, ValueError) as error:
            raise ConfigurationError(" ".join(str(error).split())) from None
        self.manager = manager
        hook = manager.hook
        self._authenticate = _implementations(hook.authenticate)
        self._get_account = _implementations(hook.get_account)
        self._store_upsert = _implementations(hook.store_upsert)
        self._store_get = _implementations(hook.store_get)
        self._store_ping = _implementations(hook.store_ping)
        self._snapshot_applied = _implementations(hook.snapshot_applied)
        self._snapshot_ignored = _implementations(hook.snapshot_ignored)
        self._request_finished = _implementations(hook.request_finished)
        self._store_from_url = _implementations(hook.store_from_url)
        self._store_create_tables = _implementations(hook.store_create_tables)
        self._store_close = _implementations(hook.store_close)
        self.store = self._the_store() if require_store else None

    def _the_store(self) -> object:
        hook = self.manager.hook
        upserts = [impl.plugin for impl in hook.store_upsert.get_hookimpls()]
        reads = [impl.plugin for impl in hook.store_get.get_hookimpls()]
        if not upserts:
            raise ConfigurationError(
                "no store: pass a store plugin such as MemoryStore() to create_app"
            )
        if len(upserts) > 1:
            names = ", ".join(sorted(_describe(p) for p in upserts))
            raise ConfigurationError(f"more than one store is active ({names}); keep exactly one")
        if reads != upserts:
            raise ConfigurationError(
                f"the store {_describe(upserts[0])} must implement both store_upsert and store_get"
            )
        return upserts[0]

    def require(self, *hook_names: str) -> None:
        """Fail with a one-line reason unless each named hook has an implementation."""
        for name in hook_names:
            if not getattr(self, f"_{name}"):
                raise ConfigurationError(
                    f"no plugin implements {name!r}: "
                    "pass api_keys= and accounts= or plugins that implement it"
                )

    def plugin_names(self) -> list[str]:
        """The registered plugins, for diagnostics."""
        return [_describe(p) for p in self.manager.get_plugins()]

    @property
    def observes_requests(self) -> bool:
        """True when some plugin implements :func:`~.hookspecs.request_finished`."""
        return bool(self._request_finished)

    # -- one typed method per hook ---------------------------------------------------------
    # Each returns the coroutine of _first/_each, to await (one coroutine per hook call).

    def authenticate(self, token: str) -> Coroutine[Any, Any, Any | None]:
        return _first(self._authenticate, token)

    def get_account(self, account_id: str, principal: Any) -> Coroutine[Any, Any, Account | None]:
        return _first(self._get_account, account_id, principal)

    def store_upsert(self, snapshot: Snapshot) -> Coroutine[Any, Any, UpsertResult]:
        return _first(self._store_upsert, snapshot, expect=UpsertResult)

    def store_get(self, account_id: str) -> Coroutine[Any, Any, Snapshot | None]:
        return _first(self._store_get, account_id)

    async def store_ping(self) -> bool:
        """True when the store answers a cheap check; without a ``store_ping`` implementation,
        a ``store_get`` of an account id that no client can send (it is empty) is the check."""
        if not self._store_ping:
            await self.store_get("")
            return True
        return bool(await _first(self._store_ping))

    def store_from_url(self, url: str) -> Coroutine[Any, Any, Any | None]:
        return _first(self._store_from_url, url)

    def store_create_tables(self) -> Coroutine[Any, Any, None]:
        return _each(self._store_create_tables)

    def store_close(self) -> Coroutine[Any, Any, None]:
        return _each(self._store_close)

    def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> Awaitable[None]:
        if not self._snapshot_applied:
            return _DONE
        return _each(self._snapshot_applied, snapshot, principal, observers=True)

    @property
    def observes_ignored(self) -> bool:
        """True when some plugin implements ``snapshot_ignored``."""
        return bool(self._snapshot_ignored)

    def snapshot_ignored(
        self, snapshot: Snapshot, current: Snapshot, principal: Any
    ) -> Awaitable[None]:
        if not self._snapshot_ignored:
            return _DONE
        return _each(self._snapshot_ignored, snapshot, current, principal, observers=True)

    def request_finished(
        self, status: int, outcome: str, request_id: str, duration_s: float
    ) -> Coroutine[Any, Any, None]:
        return _each(
            self._request_finished, status, outcome, request_id, duration_s, observers=True
        )
