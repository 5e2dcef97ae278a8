"""SQLite's connection settings as a SQL construct, compiled by SQLAlchemy like any statement.

A SQLite connection's journal mode and durability are set by a statement of SQLite's own, for
which neither the ``sqlite3`` module nor SQLAlchemy has a call. :class:`SQLitePragma` is that
statement as a construct of SQLAlchemy's compiler extension
(:func:`sqlalchemy.ext.compiler.compiles`): it compiles for the SQLite dialect only, and takes
only the settings and values the store uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

__all__ = ["SYNCHRONOUS_MODES", "WAL", "SQLitePragma"]

SYNCHRONOUS_MODES = ("full", "normal")
"""The ``synchronous`` values a store may ask for (``?synchronous=`` on its URL)."""

_VALUES = {"journal_mode": ("wal",), "synchronous": SYNCHRONOUS_MODES}


class SQLitePragma(Executable, ClauseElement):
    """Sets the connection's ``name`` to ``value``: ``journal_mode`` to ``wal``, or
    ``synchronous`` to one of :data:`SYNCHRONOUS_MODES` (in any case). Any other setting or
    value is a :class:`ValueError`."""

    inherit_cache = False  # each instance is compiled where it is used, once

    def __init__(self, name: str, value: str) -> None:
        allowed = _VALUES.get(name)
        if allowed is None:
            raise ValueError(f"the setting must be one of {', '.join(_VALUES)}, not {name!r}")
        value = value.lower()
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        self.name = name
        self.value = value


@compiles(SQLitePragma, "sqlite")
def _compile_pragma(element: SQLitePragma, compiler: SQLCompiler, **kw: Any) -> str:
    return f"PRAGMA {element.name}={element.value.upper()}"


WAL = SQLitePragma("journal_mode", "wal")
"""Write-ahead logging: readers never wait for the writer. A SQLite file keeps this mode."""
