"""Alembic support: what the host's ``env.py`` passes to ``context.configure``.

The snapshot table's types (``AccountKey``, ``UTCDateTime``, ``JSONText``) are this package's
own, so that each database gets the column it needs (a binary collation on MariaDB,
``timestamptz`` on PostgreSQL, JSON text on MySQL). Alembic's autogenerate writes a custom type
as ``module.Name()`` but does not import the module, so the migration would fail with a
``NameError``. :func:`alembic_options` returns the keyword arguments that fix this; add them to
both ``context.configure`` calls of the host's ``env.py``, offline and online::

    from runtime_snapshot_mount_sqlalchemy.migrations import alembic_options

    context.configure(url=url, target_metadata=target_metadata, **alembic_options())
    context.configure(connection=connection, target_metadata=target_metadata,
                      **alembic_options())

The migration then names each type by its public path and imports the module it needs, so it
runs as generated on any database (the type still decides the column per dialect when the
migration runs). Alembic is not a dependency of this package: the functions only follow the
``render_item`` protocol Alembic documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from sqlalchemy.types import TypeEngine

from .schema import AccountKey, JSONText, SnapshotJSON, UTCDateTime

__all__ = ["MODULE", "alembic_options", "render_item"]

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

    :func:`alembic_options` passes it to Alembic; a host with its own ``render_item`` passes
    that to :func:`alembic_options`, which then calls this one first and the host's after.
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


RenderItem = Callable[[str, Any, Any], "str | Literal[False]"]
"""Alembic's ``render_item`` hook: ``(type_, obj, autogen_context)`` -> source or ``False``."""

_own_render_item = render_item  # the parameter below takes the name Alembic gives it


def alembic_options(render_item: RenderItem | None = None) -> dict[str, Any]:
    """The keyword arguments this package needs in ``context.configure``, offline and online:
    ``context.configure(..., **alembic_options())``.

    ``render_item``: the host's own ``render_item`` hook, if it has one; it renders whatever
    this package does not (this package's types first, then the host's hook).
    """
    if render_item is None:
        return {"render_item": _own_render_item}
    host_render_item = render_item

    def render_both(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
        rendered = _own_render_item(type_, obj, autogen_context)
        if rendered is False:
            return host_render_item(type_, obj, autogen_context)
        return rendered

    return {"render_item": render_both}
