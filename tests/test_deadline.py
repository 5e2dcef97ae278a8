"""The body deadline (deadline.py): one timer per endpoint bounds every reader's wait."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from runtime_snapshot_mount.request.deadline import BodyDeadline

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_wait_past_the_deadline_raises_timeout_error_soon_after_it() -> None:
    deadline = BodyDeadline(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadline.limit():
        await asyncio.sleep(10)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert not deadline.waiting and not deadline.expired


async def test_a_wait_within_the_deadline_returns_its_result() -> None:
    deadline = BodyDeadline(5)
    with deadline.limit():
        await asyncio.sleep(0.01)
        value = "done"
    assert value == "done"
    assert not deadline.waiting


async def test_no_limit_never_times_out() -> None:
    deadline = BodyDeadline(None)
    with deadline.limit():
        await asyncio.sleep(0.05)
    assert deadline.timer is None


async def test_one_timer_serves_many_waiters_each_on_its_own_deadline() -> None:
    deadline = BodyDeadline(0.4)
    outcomes: dict[str, str] = {}

    async def wait(name: str, seconds: float) -> None:
        try:
            with deadline.limit():
                await asyncio.sleep(seconds)
            outcomes[name] = "finished"
        except TimeoutError:
            outcomes[name] = "timed out"

    async with anyio.create_task_group() as group:
        for index in range(50):
            group.start_soon(wait, f"quick-{index}", 0.01)
            group.start_soon(wait, f"slow-{index}", 5)
        await asyncio.sleep(0.05)
        assert len(deadline.waiting) == 50  # the quick ones are done, the slow ones wait
    assert all(outcome == "finished" for name, outcome in outcomes.items() if "quick" in name)
    assert all(outcome == "timed out" for name, outcome in outcomes.items() if "slow" in name)
    assert len(outcomes) == 100 and not deadline.waiting


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadline = BodyDeadline(5)

    async def wait() -> None:
        with deadline.limit():
            await asyncio.sleep(10)

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadline.waiting


async def test_the_timer_stops_once_nobody_waits() -> None:
    deadline = BodyDeadline(0.2)
    with deadline.limit():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # one tick of 0.05 s finds nobody waiting and does not re-arm
    assert deadline.timer is None


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BodyDeadline(0)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_anyio_bounds_the_wait(anyio_backend: str) -> None:
    deadline = BodyDeadline(0.1)
    with pytest.raises(TimeoutError), deadline.limit():
        await anyio.sleep(5)
