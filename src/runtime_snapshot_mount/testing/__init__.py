"""The conformance kit for storage plugins.

A storage-plugin author subclasses :class:`StoreContract` in their own test suite and gives
it the fixture ``store``, which returns (or yields) their store plugin, empty or not::

    import pytest
    from runtime_snapshot_mount.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path / "data")

        @pytest.fixture
        def another_store(self, tmp_path):
            return MyStore(tmp_path / "data")  # a second instance on the same storage

Every test then runs against that store through the same plugin manager the app uses.
``another_store`` is a second instance of the store on the *same* storage, opened as another
process would open it (its own connections, its own locks): with it the kit proves that the
check and the write are atomic across instances, not only inside one. Without it those tests
skip and say how to provide it.

``StoreContract`` is the sum of one class per rule family, each in its own module:
:class:`LifecycleRules`, :class:`RoundTripRules`, :class:`StaleRules`,
:class:`ConcurrencyRules` and :class:`CanonicalIdRules`. Subclass one of them instead, with
the same fixtures, to run (or work on) that family alone.

A plugin that opens store URLs for the command line (``store_from_url``) also subclasses
:class:`OpenerContract` and gives it ``opener`` (the plugin, e.g. the entry point's module)
and ``opener_url`` (a URL it opens, on storage the test may write to).

The tests use the ``anyio`` pytest plugin (installed with Starlette); fixtures may be
``async def``. Each test uses fresh account ids, so a store shared between tests is fine.
Every failure names the rule and says what was expected and what was found.
"""

from __future__ import annotations

from ._support import make_snapshot, new_account_id
from .canonical import CanonicalIdRules
from .concurrency import CONCURRENT_WRITERS, CONTENTION_ROUNDS, ConcurrencyRules
from .lifecycle import LifecycleRules
from .opener import FOREIGN_URLS, OpenerContract
from .round_trips import RoundTripRules
from .stale import StaleRules

__all__ = [
    "CONCURRENT_WRITERS",
    "CONTENTION_ROUNDS",
    "FOREIGN_URLS",
    "CanonicalIdRules",
    "ConcurrencyRules",
    "LifecycleRules",
    "OpenerContract",
    "RoundTripRules",
    "StaleRules",
    "StoreContract",
    "make_snapshot",
    "new_account_id",
]


# pytest runs inherited tests from the last base to the first: listed so that the kit runs
# the lifecycle first and the races last.
class StoreContract(ConcurrencyRules, CanonicalIdRules, StaleRules, RoundTripRules, LifecycleRules):
    """Every rule a store must keep (SPEC §3, §4). Subclass it and provide ``store``, and
    ``another_store`` to test atomicity across instances."""
