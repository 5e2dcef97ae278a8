"""The entry-point plugin: opens ``jsonfile:`` URLs for the command line's ``--store``.

It implements only ``store_from_url``, so installing the distribution never adds a store to
anyone's app; a host that wants the store passes ``JsonFileStore(...)`` to ``create_app``.
"""

from __future__ import annotations

from runtime_snapshot_mount import hookimpl

from .store import JsonFileStore

__all__ = ["SCHEME", "store_from_url"]

SCHEME = "jsonfile:"


@hookimpl
def store_from_url(url: str) -> JsonFileStore | None:
    """A store for ``jsonfile:///absolute/dir`` or ``jsonfile:relative/dir``; ``None`` for
    any other URL. Touches nothing on disk."""
    if not url.startswith(SCHEME):
        return None
    path = url[len(SCHEME) :]
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise ValueError("a jsonfile: URL names a directory, e.g. jsonfile:///var/lib/snapshots")
    return JsonFileStore(path)
