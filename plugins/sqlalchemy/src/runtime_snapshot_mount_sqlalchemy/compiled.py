"""A Core statement compiled once for one dialect, to run on the driver's own connection.

SQLAlchemy's :class:`~sqlalchemy.engine.Connection` compiles a statement once (its compiled
cache) but still spends most of a short request's CPU on the generic work around each
execution: events, the execution context, the cursor result. A
:class:`CompiledStatement` keeps only what the driver needs, taken once from SQLAlchemy's
documented compiler API:

* the SQL text -- :meth:`~sqlalchemy.sql.compiler.SQLCompiler.construct_expanded_state`'s
  :attr:`~sqlalchemy.sql.compiler.ExpandedState.statement`, in the dialect's paramstyle;
* the order of its parameters (:attr:`~sqlalchemy.sql.compiler.ExpandedState.positiontup`;
  for a named paramstyle, the names of :attr:`~sqlalchemy.sql.compiler.ExpandedState.
  parameters`),
  and for each one the bind processor of its type
  (``bind.type.dialect_impl(dialect).bind_processor(dialect)``, the bind parameter as
  :attr:`~sqlalchemy.sql.compiler.SQLCompiler.binds` holds it): the same functions
  SQLAlchemy applies, so a value goes to the driver exactly as SQLAlchemy would send it;
* for each column it returns, its type's result processor
  (``type.dialect_impl(dialect).result_processor(dialect, None)``), so a row comes back as
  SQLAlchemy would return it.

Each request then binds a tuple and calls the driver: ``fetchrow(sql, *parameters)`` on
asyncpg, ``execute(sql, parameters)`` on a PEP 249 cursor. The statement is written once, as
Core, and everything here is derived from it; nothing in this module knows any SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["CompiledStatement"]


class CompiledStatement:
    """``statement`` compiled for ``dialect``, bound positionally.

    ``parameters(values)`` gives the driver's positional parameters for ``values``
    (``named_parameters`` the same as a mapping, for a named paramstyle) (a mapping of bind
    parameter name to value; a parameter with a value in the statement, ``LIMIT 1``'s say,
    keeps it); ``row(record)`` the processed values of one returned row, in the order of
    :attr:`columns` (the statement's ``exported_columns`` keys).
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"{type(statement).__name__} is not a SQL statement")
        defaults = dict(compiled.params)  # every parameter: its own value, or None
        state = compiled.construct_expanded_state(defaults)
        self.dialect = dialect
        self.sql = state.statement
        self.positional = state.positiontup is not None
        names = state.positiontup if state.positiontup is not None else list(state.parameters)
        self._defaults = defaults
        self._binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        ]
        exported: Sequence[Any] = getattr(statement, "exported_columns", ())
        self.columns = tuple(str(column.key) for column in exported)
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in exported
        ]

    def __repr__(self) -> str:
        return f"CompiledStatement({self.sql!r})"

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional parameters for ``values``, processed as SQLAlchemy binds them."""
        defaults = self._defaults
        bound = []
        for name, process in self._binds:
            value = values[name] if name in values else defaults[name]
            bound.append(value if process is None else process(value))
        return bound

    def named_parameters(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The same keyed by name, for a dialect whose paramstyle is named
        (``%(name)s``)."""
        names = (name for name, _ in self._binds)
        return dict(zip(names, self.parameters(values), strict=True))

    def row(self, record: Sequence[Any]) -> dict[str, Any]:
        """One returned row as ``{column key: value}``, processed as SQLAlchemy returns it."""
        return {
            key: value if process is None else process(value)
            for key, process, value in zip(self.columns, self._results, record, strict=True)
        }
