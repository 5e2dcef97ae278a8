"""The plugin manager: one per app, built-ins registered last, checks at start-up."""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, NamedTuple

import pluggy

from . import hookspecs
from .snapshot import Account, Snapshot, UpsertResult

__all__ = ["ENTRY_POINT_GROUP", "ConfigurationError", "Plugins"]

ENTRY_POINT_GROUP = hookspecs.PROJECT
logger = logging.getLogger("runtime_snapshot_mount")


class _Impl(NamedTuple):
    """One hook implementation, ready to call with the hook's arguments in the spec's order."""

    function: Callable[..., Any]
    picks: tuple[int, ...] | None  # which spec arguments it takes; None: all, in order
    is_async: bool


def check_upsert_result(result: object) -> UpsertResult:
    """``result`` if it is an :class:`UpsertResult`, else :class:`TypeError` naming it."""
    if not isinstance(result, UpsertResult):
        raise TypeError(f"store_upsert returned {type(result).__name__}, not UpsertResult")
    return result


class ConfigurationError(Exception):
    """The app cannot start as configured; the message is one line saying why."""


def _describe(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _impls(hook: pluggy.HookCaller) -> tuple[_Impl, ...]:
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
        found.append(_Impl(impl.function, picks, is_async))
    return tuple(found)


async def _call(impl: _Impl, args: tuple[Any, ...]) -> Any:
    function, picks, is_async = impl
    if picks is not None:
        args = tuple([args[index] for index in picks])
    if is_async:
        return await function(*args)
    result = function(*args)
    if result is not None and inspect.isawaitable(result):
        result = await result
    return result


_PLAIN_TYPES: set[type] = {type(None)}  # types seen not to be awaitable


def _awaitable(result: object) -> bool:
    """``inspect.isawaitable(result)``, remembered per type for the types hooks return."""
    kind = type(result)
    if kind in _PLAIN_TYPES:
        return False
    if inspect.isawaitable(result):
        return True
    if kind is not types.GeneratorType and len(_PLAIN_TYPES) < 1024:
        _PLAIN_TYPES.add(kind)  # a generator may be awaitable or not, object by object
    return False


async def _sole(function: Callable[..., Any], *args: Any) -> Any:
    """``_first`` for one plain implementation that takes every argument."""
    result = function(*args)
    if _awaitable(result):
        result = await result
    return result


async def _first(impls: tuple[_Impl, ...], *args: Any) -> Any:
    """The first result that is not ``None``, as pluggy's ``firstresult`` (each one awaited)."""
    for function, picks, is_async in impls:
        result = function(*(args if picks is None else [args[index] for index in picks]))
        if is_async or _awaitable(result):
            result = await result
        if result is not None:
            return result
    return None


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
                manager.register(plugin)
            if entry_points:
                manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            for plugin in builtins:
                manager.register(plugin)
            manager.check_pending()
        except pluggy.PluginValidationError as error:
            raise ConfigurationError(" ".join(str(error).split())) from None
        self.manager = manager
        hook = manager.hook
        self._authenticate = _impls(hook.authenticate)
        self._get_account = _impls(hook.get_account)
        self._store_upsert = _impls(hook.store_upsert)
        self._store_get = _impls(hook.store_get)
        self._snapshot_applied = _impls(hook.snapshot_applied)
        self._snapshot_ignored = _impls(hook.snapshot_ignored)
        self._request_finished = _impls(hook.request_finished)
        self._store_from_url = _impls(hook.store_from_url)
        self._store_create_tables = _impls(hook.store_create_tables)
        self._store_close = _impls(hook.store_close)
        if require_store:
            self.store = self._the_store()

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

    def first(self, hook_name: str) -> Callable[..., Awaitable[Any]]:
        """The first-result hook ``hook_name`` as one async callable, taking the hook's
        arguments in order; what the typed methods below call, without their own layer (and
        a sole implementation that takes every argument is called as it is)."""
        impls: tuple[_Impl, ...] = getattr(self, f"_{hook_name}")
        if len(impls) == 1 and impls[0].picks is None:
            function, _, is_async = impls[0]
            return function if is_async else partial(_sole, function)
        return partial(_first, impls)

    def plugin_names(self) -> list[str]:
        """The registered plugins, for diagnostics."""
        return [_describe(p) for p in self.manager.get_plugins()]

    async def authenticate(self, token: str) -> Any | None:
        return await _first(self._authenticate, token)

    async def get_account(self, account_id: str, principal: Any) -> Account | None:
        result: Account | None = await _first(self._get_account, account_id, principal)
        return result

    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        return check_upsert_result(await _first(self._store_upsert, snapshot))

    async def store_get(self, account_id: str) -> Snapshot | None:
        result: Snapshot | None = await _first(self._store_get, account_id)
        return result

    async def store_from_url(self, url: str) -> Any | None:
        return await _first(self._store_from_url, url)

    async def store_create_tables(self) -> None:
        for impl in self._store_create_tables:
            await _call(impl, ())

    async def store_close(self) -> None:
        for impl in self._store_close:
            await _call(impl, ())

    async def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        if self._snapshot_applied:
            await self._observe(self._snapshot_applied, snapshot, principal)

    async def snapshot_ignored(self, snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
        if self._snapshot_ignored:
            await self._observe(self._snapshot_ignored, snapshot, current, principal)

    @property
    def observes_requests(self) -> bool:
        """True when some plugin implements :func:`~.hookspecs.request_finished`."""
        return bool(self._request_finished)

    async def request_finished(
        self, status: int, outcome: str, request_id: str, duration_s: float
    ) -> None:
        """Tell every ``request_finished`` observer about an answered request."""
        await self._observe(self._request_finished, status, outcome, request_id, duration_s)

    @staticmethod
    async def _observe(impls: tuple[_Impl, ...], *args: Any) -> None:
        for impl in impls:
            try:
                await _call(impl, args)
            except Exception:
                logger.exception("observer %s raised; the response is unchanged", impl.function)
