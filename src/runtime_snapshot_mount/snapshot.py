"""The request model that validates an upsert body, and the value types the hooks exchange."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from .timestamps import format_instant, parse_instant

__all__ = [
    "MAX_PERSONALITY_DEPTH",
    "MAX_VERSION",
    "Account",
    "Principal",
    "Snapshot",
    "SnapshotRequest",
    "UpsertResult",
    "parse_upsert",
]

MAX_VERSION = 2**63 - 1
MAX_PERSONALITY_DEPTH = 32


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


class SyncedAt(str):
    """A ``strategy_synced_at`` string as the request sent it, with the instant it names."""

    instant: datetime

    def __new__(cls, text: str, instant: datetime) -> SyncedAt:
        value = super().__new__(cls, text)
        value.instant = instant
        return value


def _check_synced_at(value: str) -> SyncedAt:
    return SyncedAt(value, parse_instant(value))


# The field types of SPEC §3 as pydantic-core checks them, and with the checks that need Python.
_MAX_TEXT, _MAX_LABEL, _MAX_SKILLS = 255, 1000, 256
Text = Annotated[str, Field(min_length=1, max_length=_MAX_TEXT), AfterValidator(check_text)]
Label = Annotated[str, Field(max_length=_MAX_LABEL), AfterValidator(check_text)]


class SnapshotRequest(BaseModel):
    """The body of ``POST /runtime-snapshots/upsert`` (SPEC §3); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    account_id: Text
    ugc_account_id: Text
    snapshot_id: Text
    strategy_version: Annotated[int, Field(ge=1, le=MAX_VERSION)]
    content_hash: Text
    strategy_synced_at: Annotated[str, AfterValidator(_check_synced_at)]
    """The request's string, unchanged (a :class:`SyncedAt` carrying its instant)."""
    stage: Label | None = None
    active_action: Label | None = None
    active_skills: Annotated[list[Text], Field(max_length=_MAX_SKILLS)] | None = None
    personality: Annotated[dict[str, Any], AfterValidator(_check_personality)]

    def to_snapshot(self) -> Snapshot:
        """The stored value this request asks for."""
        return Snapshot(
            account_id=self.account_id,
            ugc_account_id=self.ugc_account_id,
            snapshot_id=self.snapshot_id,
            strategy_version=self.strategy_version,
            content_hash=self.content_hash,
            strategy_synced_at=_instant(self.strategy_synced_at),
            stage=self.stage,
            active_action=self.active_action,
            active_skills=None if self.active_skills is None else tuple(self.active_skills),
            personality=self.personality,
        )


def _instant(text: str) -> datetime:
    return text.instant if isinstance(text, SyncedAt) else parse_instant(text)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One account's runtime-strategy snapshot as a store keeps it.

    ``strategy_synced_at`` is an aware UTC instant at microsecond precision.
    """

    account_id: str
    ugc_account_id: str
    snapshot_id: str
    strategy_version: int
    content_hash: str
    strategy_synced_at: datetime
    stage: str | None
    active_action: str | None
    active_skills: tuple[str, ...] | None
    personality: dict[str, Any]

    @property
    def freshness(self) -> tuple[int, datetime]:
        """``(strategy_version, strategy_synced_at)``: the stale rule orders snapshots by this."""
        return (self.strategy_version, self.strategy_synced_at)

    def to_json(self) -> dict[str, Any]:
        """The request fields as JSON values (``strategy_synced_at`` as RFC 3339 in UTC)."""
        return {
            "account_id": self.account_id,
            "ugc_account_id": self.ugc_account_id,
            "snapshot_id": self.snapshot_id,
            "strategy_version": self.strategy_version,
            "content_hash": self.content_hash,
            "strategy_synced_at": format_instant(self.strategy_synced_at),
            "stage": self.stage,
            "active_action": self.active_action,
            "active_skills": None if self.active_skills is None else list(self.active_skills),
            "personality": self.personality,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """The snapshot that :meth:`to_json` gave ``data`` for: its inverse, for stores that keep
        snapshots as JSON. ``data`` is trusted (what a store wrote); it is not validated."""
        skills = data.get("active_skills")
        return cls(
            account_id=data["account_id"],
            ugc_account_id=data["ugc_account_id"],
            snapshot_id=data["snapshot_id"],
            strategy_version=data["strategy_version"],
            content_hash=data["content_hash"],
            strategy_synced_at=parse_instant(data["strategy_synced_at"]),
            stage=data.get("stage"),
            active_action=data.get("active_action"),
            active_skills=None if skills is None else tuple(skills),
            personality=data["personality"],
        )


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What a store's atomic upsert did.

    ``applied`` is true when the incoming snapshot was written; ``current`` is the snapshot
    stored once the upsert finished (the incoming one when applied, the later one when not).
    """

    applied: bool
    current: Snapshot


@dataclass(frozen=True, slots=True)
class Account:
    """An account as the accounts hook reports it."""

    account_id: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a bearer token belongs to. Hosts may return any object of their own instead."""

    name: str


def _sent_instant(text: str, info: cs.ValidationInfo) -> datetime:
    """``strategy_synced_at``'s instant; the text as sent goes to the caller's context."""
    sent: Any = info.context
    sent["strategy_synced_at"] = text
    return parse_instant(text)


def _snapshot_validator() -> SchemaValidator:
    """Builds a :class:`Snapshot` straight from JSON bytes with :class:`SnapshotRequest`'s
    field rules, except the per-string U+0000/surrogate checks (see :func:`parse_upsert`)."""
    text = cs.str_schema(min_length=1, max_length=_MAX_TEXT, strict=True)
    label = cs.with_default_schema(
        cs.nullable_schema(cs.str_schema(max_length=_MAX_LABEL, strict=True)), default=None
    )
    skills = cs.tuple_schema([text], variadic_item_index=0, max_length=_MAX_SKILLS, strict=True)
    fields = [
        cs.dataclass_field("account_id", text),
        cs.dataclass_field("ugc_account_id", text),
        cs.dataclass_field("snapshot_id", text),
        cs.dataclass_field("strategy_version", cs.int_schema(ge=1, le=MAX_VERSION, strict=True)),
        cs.dataclass_field("content_hash", text),
        cs.dataclass_field(
            "strategy_synced_at",
            cs.with_info_after_validator_function(_sent_instant, cs.str_schema(strict=True)),
        ),
        cs.dataclass_field("stage", label),
        cs.dataclass_field("active_action", label),
        cs.dataclass_field(
            "active_skills", cs.with_default_schema(cs.nullable_schema(skills), default=None)
        ),
        cs.dataclass_field(
            "personality",
            cs.no_info_after_validator_function(
                _check_personality,
                cs.dict_schema(cs.str_schema(strict=True), cs.any_schema(), strict=True),
            ),
        ),
    ]
    arguments = cs.dataclass_args_schema("Snapshot", fields, extra_behavior="ignore")
    names = [field["name"] for field in fields]
    schema = cs.dataclass_schema(Snapshot, arguments, names, slots=True, frozen=True, strict=True)
    return SchemaValidator(schema)


_validate_snapshot = _snapshot_validator().validate_json
_ESCAPED_NUL = b"\\u0000"


def parse_upsert(body: bytes) -> tuple[Snapshot, str]:
    """The snapshot an upsert body asks to store, and its ``strategy_synced_at`` as sent.

    Exactly :meth:`SnapshotRequest.model_validate_json` then
    :meth:`~SnapshotRequest.to_snapshot`, raising the same :class:`~pydantic.ValidationError`;
    most bodies take a shorter way there. The JSON parser already refuses lone surrogates, and
    U+0000 can only arrive written as ``\\u0000``, so a body without that escape needs no
    per-string check: pydantic-core checks the fields and builds the :class:`Snapshot` in one
    pass, calling Python only to parse the time and walk the personality. Anything that pass
    refuses, and every body with the escape, goes through :class:`SnapshotRequest`, which
    gives the reasons.
    """
    if _ESCAPED_NUL not in body:
        sent: dict[str, str] = {}
        try:
            snapshot: Snapshot = _validate_snapshot(body, context=sent)
        except ValueError:  # pydantic-core's ValidationError is one
            pass
        else:
            return snapshot, sent["strategy_synced_at"]
    request = SnapshotRequest.model_validate_json(body)
    return request.to_snapshot(), request.strategy_synced_at
