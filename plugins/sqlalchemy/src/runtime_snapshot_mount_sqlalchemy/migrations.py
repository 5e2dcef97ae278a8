"""Alembic support: render the snapshot table's column types into migration scripts.

The table's types (``AccountKey``, ``UTCDateTime``, ``JSONText``) are this package's own, so
that each database gets the column it needs (a binary collation on MariaDB, ``timestamptz`` on
PostgreSQL, JSON text on MySQL). Alembic's autogenerate writes a custom type as
``module.Name()`` but does not import the module, so the migration fails with a ``NameError``.
Pass :func:`render_item` to ``context.configure`` in the host's ``env.py``::

    from runtime_snapshot_mount_sqlalchemy.migrations import render_item

    context.configure(connection=connection, target_metadata=target_metadata,
                      render_item=render_item)

The migration then names each type by its public path and imports the module it needs, so it
runs as generated on any database (the type still decides the column per dialect when the
migration runs). Alembic is not a dependency of this package: the function only follows the
``render_item`` protocol Alembic documents.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from sqlalchemy.types import TypeEngine

from .schema import AccountKey, JSONText, SnapshotJSON, UTCDateTime

__all__ = ["MODULE", "render_item"]

MODULE = "runtime_snapshot_mount_sqlalchemy.schema"
"""The module the rendered types are imported from, in every migration that uses them."""

_TYPES: tuple[type[TypeEngine[Any]], ...] = (AccountKey, UTCDateTime, JSONText)


class AutogenContext(Protocol):
    """The part of Alembic's ``AutogenContext`` that :func:`render_item` uses."""

    imports: set[str]


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render this package's column types as ``runtime_snapshot_mount_sqlalchemy.schema.Name()``
    (the JSON columns, with their per-database variants, as ``schema.snapshot_json()``) and
    add their import; ``False`` (Alembic's default rendering) for anything else.

    A host with its own ``render_item`` calls this one first and falls back to its own when it
    returns ``False``.
    """
    if type_ != "type":
        return False
    if isinstance(obj, SnapshotJSON):
        expression = f"{MODULE}.snapshot_json()"
    elif type(obj) in _TYPES:
        expression = f"{MODULE}.{type(obj).__name__}()"
    else:
        return False
    autogen_context.imports.add(f"import {MODULE}")
    return expression
