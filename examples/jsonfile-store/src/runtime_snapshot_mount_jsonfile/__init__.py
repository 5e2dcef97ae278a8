"""An example store plugin for runtime-snapshot-mount: one JSON file per account.

``JsonFileStore(directory)`` is the store; ``jsonfile:///path/to/directory`` opens one from
the command line (``serve --store jsonfile:///var/lib/snapshots``) through the entry point.
"""

from typing import TYPE_CHECKING

from .store import JsonFileStore

__all__ = ["JsonFileStore"]

if TYPE_CHECKING:  # mypy checks the hooks' signatures against the core's protocols
    from runtime_snapshot_mount.protocols import StoreOpener

    from . import opener

    _opener: StoreOpener = opener
