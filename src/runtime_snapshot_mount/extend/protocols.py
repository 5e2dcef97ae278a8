"""Typed shapes of the store plugins, so that mypy checks a plugin author's signatures.

The app finds hooks by name (pluggy), not by type; these protocols only let a type checker
see what :mod:`runtime_snapshot_mount.hookspecs` asks for. Each hook may be a plain method
or an ``async def``: a return type of ``X | Awaitable[X]`` accepts both. To have mypy check
a store, assign one to a variable of the protocol's type, for example at the end of its
module::

    if TYPE_CHECKING:
        _check: ManagedStorePlugin = MyStore("...")

An opener published as an entry point is usually a module; mypy checks a module against a
protocol the same way (``_opener: StoreOpener = my_package.opener``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from ..request.snapshot import Snapshot, UpsertResult

__all__ = ["ManagedStorePlugin", "StoreOpener", "StorePlugin"]


@runtime_checkable
class StorePlugin(Protocol):
    """A store: the two hooks every store implements (see ``hookspecs.store_upsert``)."""

    def store_upsert(self, snapshot: Snapshot) -> UpsertResult | Awaitable[UpsertResult]:
        """Apply ``snapshot`` unless it is stale, atomically; raising means nothing was written."""
        ...

    def store_get(self, account_id: str) -> Snapshot | Awaitable[Snapshot | None] | None:
        """The snapshot stored for ``account_id``, or ``None``."""
        ...


@runtime_checkable
class ManagedStorePlugin(StorePlugin, Protocol):
    """A store that also creates its storage and releases its connections."""

    def store_create_tables(self) -> Awaitable[None] | None:
        """Create the storage if it is missing; a no-op otherwise (never wipes anything)."""
        ...

    def store_close(self) -> Awaitable[None] | None:
        """Release connections, files and threads the store holds."""
        ...


@runtime_checkable
class StoreOpener(Protocol):
    """An opener: turns a ``--store`` URL into a store, or ``None`` for a URL not its own.

    An opener installed as an entry point should implement only this hook, so that
    installing it never adds a store to every app.
    """

    def store_from_url(self, url: str) -> StorePlugin | Awaitable[StorePlugin | None] | None:
        """A store for ``url``, not connected yet; ``None`` (never an exception) otherwise."""
        ...
