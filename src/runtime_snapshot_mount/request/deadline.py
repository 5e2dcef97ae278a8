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
from contextlib import AbstractContextManager, nullcontext
from time import monotonic
from typing import Any

import anyio

__all__ = ["BodyDeadline"]


class BodyDeadline:
    """Bounds how long a wait inside :meth:`limit` may take, to ``seconds`` (``None``: none)."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError("seconds must be positive, or None")
        self.seconds = seconds
        self.granularity = min(1.0, seconds / 4) if seconds else 0.0
        self.waiting: dict[asyncio.Task[Any], float] = {}  # task -> its deadline
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_loop: asyncio.AbstractEventLoop | None = None

    def limit(self) -> AbstractContextManager[Any]:
        """A context for one wait: it raises :class:`TimeoutError` (the wait cancelled) once
        ``seconds`` pass inside it. Use ``with deadline.limit(): await ...``."""
        if self.seconds is None:
            return _NO_LIMIT
        try:
            task = asyncio.current_task()
        except RuntimeError:  # not on asyncio: trio
            task = None
        if task is None:
            return anyio.fail_after(self.seconds)
        return _Watch(self, task)

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
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
            self.arm(loop)


class _Watch:
    """One task's wait under a :class:`BodyDeadline`."""

    __slots__ = ("deadline", "task")

    def __init__(self, deadline: BodyDeadline, task: asyncio.Task[Any]) -> None:
        self.deadline = deadline
        self.task = task

    def __enter__(self) -> None:
        deadline, task = self.deadline, self.task
        assert deadline.seconds is not None
        deadline.waiting[task] = monotonic() + deadline.seconds
        loop = task.get_loop()
        if deadline.timer is None or deadline.timer_loop is not loop:
            deadline.arm(loop)

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> None:
        deadline, task = self.deadline, self.task
        del deadline.waiting[task]
        if task in deadline.expired:
            deadline.expired.discard(task)
            if kind is asyncio.CancelledError:
                if sys.version_info >= (3, 11):
                    task.uncancel()
                raise TimeoutError from None


_NO_LIMIT = nullcontext()
