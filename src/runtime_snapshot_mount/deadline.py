"""How long a client may take to send its body: one timer per endpoint, not one per request.

A request pays for one dict entry while it waits for its body. A single timer per
:class:`BodyDeadline`, armed only while some request is reading, cancels the readers past their
deadline, at a granularity of a quarter of the limit (at most a second); the cancelled reader
sees :class:`TimeoutError`. On an event loop other than asyncio's (trio's), anyio's
``fail_after`` does the same with a timer per request.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from time import monotonic
from typing import Any, TypeVar

import anyio

__all__ = ["BodyDeadline"]

T = TypeVar("T")


class BodyDeadline:
    """Bounds how long :meth:`run` may wait, to ``seconds`` (``None``: no bound)."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError("seconds must be positive, or None")
        self.seconds = seconds
        self.granularity = min(1.0, seconds / 4) if seconds else 0.0
        self.waiting: dict[asyncio.Task[Any], float] = {}  # task -> its deadline
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_loop: asyncio.AbstractEventLoop | None = None

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work``; raise :class:`TimeoutError` (and cancel it) once ``seconds`` pass."""
        if self.seconds is None:
            return await work
        try:
            task = asyncio.current_task()
        except RuntimeError:  # not on asyncio: trio
            task = None
        if task is None:
            with anyio.fail_after(self.seconds):
                return await work
        self.waiting[task] = monotonic() + self.seconds
        loop = task.get_loop()
        if self.timer is None or self.timer_loop is not loop:
            self._arm(loop)
        try:
            return await work
        except asyncio.CancelledError:
            if task not in self.expired:
                raise
            if sys.version_info >= (3, 11):
                task.uncancel()
            raise TimeoutError from None
        finally:
            del self.waiting[task]
            self.expired.discard(task)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer_loop = loop
        self.timer = loop.call_later(self.granularity, self._expire)

    def _expire(self) -> None:
        """Cancel every waiter past its deadline; re-arm while any is waiting."""
        self.timer = None
        now = monotonic()
        for task, deadline in list(self.waiting.items()):
            if deadline <= now and task not in self.expired and not task.done():
                self.expired.add(task)
                task.cancel()
        loop = self.timer_loop
        if self.waiting and loop is not None and not loop.is_closed():
            self._arm(loop)
