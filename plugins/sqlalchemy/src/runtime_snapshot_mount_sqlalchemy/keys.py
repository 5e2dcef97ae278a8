"""A request's account id as a value of the host's key column, and the key's canonical text.

A request names its account with a string. The host's key column may hold UUIDs, integers or
strings; :func:`conversion_for` gives the function that turns the request's string into a value
of the column's Python type *before* any query, so the database only ever compares two values
of the key's own type (bound with the column's type: no ``CAST`` of the column, so its index
serves the lookup). A
string that names no value of that type (``"abc"`` for an integer key, a non-UUID for a UUID
key) names no account: the conversion raises :class:`ValueError`, and the lookup answers "not
found" without a query.

:func:`canonical_text` renders a row's key as the one id the snapshot is stored under: a UUID's
lowercase hyphenated text, an integer's digits, a string as stored. Every spelling that finds
one row therefore reaches one stored snapshot.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Integer, SmallInteger, Uuid
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["ConvertId", "canonical_text", "conversion_for"]

ConvertId = Callable[[str], Any]
"""Turns a request's account id into a value of the key column; raises :class:`ValueError`
when the id can name no account."""

_INTEGER = re.compile(r"[+-]?[0-9]+")
_BITS = ((BigInteger, 64), (SmallInteger, 16), (Integer, 32))  # subclasses before Integer


def _same(account_id: str) -> str:
    return account_id


def _to_uuid(account_id: str) -> uuid.UUID:
    """Any spelling of a UUID (upper case, without dashes, in braces, ``urn:uuid:``)."""
    return uuid.UUID(account_id)


def _to_uuid_text(account_id: str) -> str:
    """A UUID key whose column binds strings (``Uuid(as_uuid=False)``): its canonical text."""
    return str(uuid.UUID(account_id))


def _integer_in(bits: int) -> ConvertId:
    """Optional sign and ASCII digits (``"007"`` is 7), within a signed ``bits``-bit range:
    a value past the column type's range can be no row's key (and some drivers refuse it)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def to_integer(account_id: str) -> int:
        if _INTEGER.fullmatch(account_id) is None:
            raise ValueError(f"not an integer: {account_id!r}")
        value = int(account_id)
        if not low <= value <= high:
            raise ValueError(f"outside the {bits}-bit range of the key: {account_id!r}")
        return value

    return to_integer


def _layers(type_: TypeEngine[Any]) -> list[TypeEngine[Any]]:
    """``type_``, then the type it decorates, and so on (a ``TypeDecorator``'s ``impl``)."""
    layers = [type_]
    while isinstance(layers[-1], TypeDecorator):
        impl = layers[-1].impl
        layers.append(impl() if isinstance(impl, type) else impl)
    return layers


def _python_type(layers: list[TypeEngine[Any]]) -> type | None:
    """The first ``python_type`` the layers say, or ``None`` when none says one (an untyped
    column, a user-defined type: ``object``, or ``NotImplementedError`` before SQLAlchemy
    2.1)."""
    for layer in layers:
        try:
            found: type = layer.python_type
        except NotImplementedError:
            continue
        if found is not object:
            return found
    return None


def _integer_bits(layers: list[TypeEngine[Any]]) -> int:
    """The width of an integer key type; 64 when it does not say."""
    for layer in layers:
        for sized, bits in _BITS:
            if isinstance(layer, sized):
                return bits
    return 64


def conversion_for(type_: TypeEngine[Any]) -> ConvertId:
    """The conversion for a key column of type ``type_``; :class:`TypeError` for a type whose
    values cannot be read from a string safely (pass ``convert_id=`` for those)."""
    layers = _layers(type_)
    python_type = _python_type(layers)
    if any(isinstance(layer, Uuid) for layer in layers) or python_type is uuid.UUID:
        return _to_uuid if python_type is uuid.UUID else _to_uuid_text
    if python_type is None or python_type is str:
        return _same  # an untyped column compared strings before, and still does
    if python_type is int:
        return _integer_in(_integer_bits(layers))
    raise TypeError(
        f"account keys of Python type {python_type.__name__} ({type_!r}) have no built-in "
        "conversion from the request's string id: pass convert_id=, a function that returns "
        "the key's value or raises ValueError when the id names no account"
    )


def canonical_text(value: Any) -> str:
    """The text a key value is stored under: a UUID in lowercase with dashes, an integer's
    digits, a string unchanged; anything else as :func:`str` renders it."""
    return value if isinstance(value, str) else str(value)
