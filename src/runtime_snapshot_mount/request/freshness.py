"""The stale rule (SPEC §4) as one pure function."""

from __future__ import annotations

from .snapshot import Snapshot

__all__ = ["is_stale"]


def is_stale(incoming: Snapshot, stored: Snapshot | None) -> bool:
    """True when ``incoming`` must be ignored because ``stored`` is strictly later.

    A stored snapshot is later when its ``strategy_version`` is greater, or the versions are
    equal and its ``strategy_synced_at`` is a later instant. Instants are aware UTC datetimes
    at microsecond precision, so they compare as instants, never as strings. An exact replay
    is not stale.
    """
    return stored is not None and stored.freshness > incoming.freshness
