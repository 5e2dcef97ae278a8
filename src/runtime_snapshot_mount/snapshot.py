"""The request model that validates an upsert body, and the value types the hooks exchange."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import NotRequired, TypedDict

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
_TextField = Annotated[str, Field(min_length=1, max_length=255)]
_LabelField = Annotated[str, Field(max_length=1000)]
_Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
_SKILLS_MAX = Field(max_length=256)
Text = Annotated[_TextField, AfterValidator(check_text)]
Label = Annotated[_LabelField, AfterValidator(check_text)]


class SnapshotRequest(BaseModel):
    """The body of ``POST /runtime-snapshots/upsert`` (SPEC §3); unknown fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    account_id: Text
    ugc_account_id: Text
    snapshot_id: Text
    strategy_version: _Version
    content_hash: Text
    strategy_synced_at: Annotated[str, AfterValidator(_check_synced_at)]
    """The request's string, unchanged (a :class:`SyncedAt` carrying its instant)."""
    stage: Label | None = None
    active_action: Label | None = None
    active_skills: Annotated[list[Text], _SKILLS_MAX] | None = None
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


class _Fields(TypedDict):
    """:class:`SnapshotRequest`'s fields with only the checks that pydantic-core makes."""

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")  # type: ignore[misc]

    account_id: _TextField
    ugc_account_id: _TextField
    snapshot_id: _TextField
    strategy_version: _Version
    content_hash: _TextField
    strategy_synced_at: str
    stage: NotRequired[_LabelField | None]
    active_action: NotRequired[_LabelField | None]
    active_skills: NotRequired[Annotated[list[_TextField], _SKILLS_MAX] | None]
    personality: dict[str, Any]


_validate_fields = TypeAdapter(_Fields).validator.validate_json
_ESCAPED_NUL = b"\\u0000"


def parse_upsert(body: bytes) -> tuple[Snapshot, str]:
    """The snapshot an upsert body asks to store, and its ``strategy_synced_at`` as sent.

    Exactly :meth:`SnapshotRequest.model_validate_json` then
    :meth:`~SnapshotRequest.to_snapshot`, raising the same :class:`~pydantic.ValidationError`;
    most bodies take a shorter way there.
    The JSON parser already refuses lone surrogates, and U+0000 can only arrive written as
    ``\\u0000``, so a body without that escape needs no per-string check: pydantic-core checks
    the fields, then one Python pass parses the time and walks the personality. Anything that
    pass refuses, and every body with the escape, goes through :class:`SnapshotRequest`, which
    gives the reasons.
    """
    if _ESCAPED_NUL not in body:
        try:
            fields = _validate_fields(body)
            synced_at = fields["strategy_synced_at"]
            instant = parse_instant(synced_at)
            personality = fields["personality"]
            _check_container(personality, 1)
        except ValueError:  # pydantic's ValidationError is one too
            pass
        else:
            skills = fields.get("active_skills")
            snapshot = Snapshot(
                fields["account_id"],
                fields["ugc_account_id"],
                fields["snapshot_id"],
                fields["strategy_version"],
                fields["content_hash"],
                instant,
                fields.get("stage"),
                fields.get("active_action"),
                None if skills is None else tuple(skills),
                personality,
            )
            return snapshot, synced_at
    request = SnapshotRequest.model_validate_json(body)
    return request.to_snapshot(), request.strategy_synced_at


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
