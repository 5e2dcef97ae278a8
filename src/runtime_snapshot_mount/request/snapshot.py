"""The snapshot: one definition that validates an upsert body, is what stores keep, and is what
the OpenAPI document describes. Also the small value types the hooks exchange.

:class:`Snapshot`'s annotations carry SPEC §3's field rules. pydantic builds one validator from
them that turns the request's JSON bytes straight into a ``Snapshot`` (:func:`parse_upsert`), and
the same annotations give the JSON schema of the request body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import CoreSchema
from pydantic_core import core_schema as cs

from .timestamps import format_instant, parse_instant

__all__ = [
    "MAX_LABEL",
    "MAX_PERSONALITY_DEPTH",
    "MAX_SKILLS",
    "MAX_TEXT",
    "MAX_VERSION",
    "SNAPSHOT_FIELDS",
    "Account",
    "Principal",
    "Snapshot",
    "UpsertResult",
    "parse_upsert",
]

MAX_VERSION = 2**63 - 1
"""The largest ``strategy_version`` (a signed 64-bit integer)."""
MAX_PERSONALITY_DEPTH = 32
"""How many levels of objects and arrays ``personality`` may nest, itself being level 1."""
MAX_TEXT = 255
"""The longest id or hash, in characters (``account_id``, ``snapshot_id``, a skill...)."""
MAX_LABEL = 1000
"""The longest ``stage`` or ``active_action``, in characters."""
MAX_SKILLS = 256
"""The most ``active_skills`` a snapshot lists."""


def check_text(value: str) -> str:
    """Reject U+0000 and lone surrogates, which no JSON column of any database accepts."""
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain lone surrogates") from None
    return value


def _check_container(value: dict[str, Any] | list[Any], depth: int) -> None:
    """Check one object or array ``depth`` levels deep, and everything inside it."""
    if depth > MAX_PERSONALITY_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_PERSONALITY_DEPTH} levels")
    if type(value) is dict:
        for key in value:
            if "\x00" in key or not key.isascii():
                check_text(key)
        items: Any = value.values()
    else:
        items = value
    for item in items:  # scalars checked inline: one call per container, not per value
        kind = type(item)
        if kind is str:
            if "\x00" in item or not item.isascii():
                check_text(item)
        elif kind is float:
            if not math.isfinite(item):
                raise ValueError("must contain only finite numbers")
        elif kind is dict or kind is list:
            _check_container(item, depth + 1)


def _check_personality(value: dict[str, Any]) -> dict[str, Any]:
    _check_container(value, 1)
    return value


def _sent_instant(text: str, info: cs.ValidationInfo) -> datetime:
    """The instant ``strategy_synced_at`` names; the text as sent goes to the caller's context
    (a dict), since the applied answer repeats it unchanged."""
    sent = info.context
    if isinstance(sent, dict):
        sent["strategy_synced_at"] = text
    return parse_instant(text)


def _instant_schema(source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
    return cs.with_info_after_validator_function(_sent_instant, cs.str_schema(strict=True))


def _skills_schema(source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
    """A JSON array of texts, kept as a tuple (a stored snapshot is immutable)."""
    items = handler.generate_schema(Annotated[list[Text], Field(max_length=MAX_SKILLS)])
    return cs.no_info_after_validator_function(tuple, items)


# SPEC §3's field types.
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(check_text)]
Label = Annotated[str, Field(max_length=MAX_LABEL), AfterValidator(check_text)]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
Instant = Annotated[
    datetime,
    GetPydanticSchema(_instant_schema),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 date-time with an offset (Z or +HH:MM), returned unchanged.",
            "examples": ["2026-03-22T08:30:00.000Z"],
        }
    ),
]
Skills = Annotated[tuple[str, ...], GetPydanticSchema(_skills_schema)]
Personality = Annotated[
    dict[str, Any],
    AfterValidator(_check_personality),
    Field(
        description=(
            f"Any JSON object, at most {MAX_PERSONALITY_DEPTH} levels deep; stored and returned "
            "as the same JSON value."
        )
    ),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One account's runtime-strategy snapshot: the upsert body, validated, as stores keep it.

    ``strategy_synced_at`` is an aware UTC instant at microsecond precision; ``active_skills``
    is a tuple. Unknown fields of a body are ignored.
    """

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore", title="SnapshotRequest")

    account_id: Text
    ugc_account_id: Text
    snapshot_id: Text
    strategy_version: Version
    content_hash: Text
    strategy_synced_at: Instant
    stage: Label | None = None
    active_action: Label | None = None
    active_skills: Skills | None = None
    personality: Personality

    @property
    def freshness(self) -> tuple[int, datetime]:
        """``(strategy_version, strategy_synced_at)``: the stale rule orders snapshots by this."""
        return (self.strategy_version, self.strategy_synced_at)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (``strategy_synced_at`` as RFC 3339 in UTC), in order."""
        data = {name: getattr(self, name) for name in SNAPSHOT_FIELDS}
        data["strategy_synced_at"] = format_instant(self.strategy_synced_at)
        if self.active_skills is not None:
            data["active_skills"] = list(self.active_skills)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """The inverse of :meth:`to_json`, for stores that keep snapshots as JSON. ``data`` is
        trusted (what a store wrote); it is not validated."""
        values = {name: data[name] for name in SNAPSHOT_FIELDS if name in data}
        values["strategy_synced_at"] = parse_instant(data["strategy_synced_at"])
        if values.get("active_skills") is not None:
            values["active_skills"] = tuple(values["active_skills"])
        return cls(**values)


SNAPSHOT_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(Snapshot))
"""The names of a snapshot's fields, in order: the request's fields, and a store's columns."""

SNAPSHOT_SCHEMA: TypeAdapter[Snapshot] = TypeAdapter(Snapshot)
"""The validator and JSON schema built from :class:`Snapshot`'s annotations."""

_validate_json = SNAPSHOT_SCHEMA.validate_json


def parse_upsert(body: bytes) -> tuple[Snapshot, str]:
    """The snapshot an upsert body asks to store, and its ``strategy_synced_at`` as sent.

    Raises :class:`pydantic.ValidationError` listing every field that breaks its rule.
    """
    sent: dict[str, str] = {}
    snapshot = _validate_json(body, context=sent)
    return snapshot, sent["strategy_synced_at"]


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What a store's atomic upsert did.

    ``applied`` is true when the incoming snapshot was written. ``current`` is the snapshot
    stored once the upsert finished: the incoming one when applied; when ignored, the later
    stored one if the store read it, or ``None`` -- a store need not read anything back to
    ignore a stale snapshot, and the app reads it with ``store_get`` only for a registered
    ``snapshot_ignored`` observer.
    """

    applied: bool
    current: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """An account as the accounts hook reports it.

    ``account_id`` is the account's canonical id: its snapshot is stored under it, whichever
    spelling of the id a request used (see the ``get_account`` hook).
    """

    account_id: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a bearer token belongs to. Hosts may return any object of their own instead."""

    name: str
