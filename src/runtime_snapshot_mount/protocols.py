"""The plugin contract as typing protocols, for mypy; they live in
:mod:`runtime_snapshot_mount.extend.protocols`."""

from .extend.protocols import ManagedStorePlugin, StoreOpener, StorePlugin

__all__ = ["ManagedStorePlugin", "StoreOpener", "StorePlugin"]
