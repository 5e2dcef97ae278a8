"""The standalone server's log output: whole lines, written in batches by a thread of its own.

:class:`BatchedLineHandler` is a :class:`logging.Handler` that turns each record into one line
(with its formatter) and hands the bytes to a :class:`BatchWriter`, whose thread does the
blocking ``write``. Access lines arrive as plain tuples (:class:`~.operations.AccessHandler`):
they wait in a buffer and are formatted together on the event loop every ``interval``
seconds, so a request costs a tuple and an append, not a :class:`logging.LogRecord`.

What the writer guarantees: every line is written whole, in ``write`` calls of at most
``PIPE_BUF`` bytes cut at line ends, so lines of several processes sharing one pipe never
mix. When the output blocks (a full pipe, a stalled disk) the event loop never waits:
up to ``max_backlog`` bytes wait in memory, later lines are dropped and counted, and once the
output takes lines again one warning says how many were lost. ``flush`` and ``close`` (at
shutdown, and by :func:`logging.shutdown` at exit) write everything that waits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO

from ..request.operations import (
    LOGGER_NAME,
    AccessHandler,
    AccessLine,
    RequestIdFilter,
    access_record,
)

__all__ = ["DROPPED_MESSAGE", "BatchWriter", "BatchedLineHandler"]

DROPPED_MESSAGE = "%d log lines were dropped: the log output did not take them in time"
"""The warning written once the output takes lines again after some were dropped."""

_ATOMIC_WRITE = select.PIPE_BUF
_SHUTDOWN_WAIT_S = 5.0


class _TextOutput:
    """Bytes written to a text stream, decoded (a stream without a file descriptor, such
    as :class:`io.StringIO`, or any stream once the writer is closed)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, data: memoryview) -> int:
        self.stream.write(bytes(data).decode("utf-8", "replace"))
        self.stream.flush()
        return len(data)

    def close(self) -> None:
        """Leave the stream open: it is not ours."""


class _FileOutput:
    """Bytes written to a copy of a stream's file descriptor: one system call per write, no
    buffer of Python's in between, and never a descriptor that closing the stream frees for
    another file."""

    def __init__(self, fd: int) -> None:
        self.file = io.FileIO(os.dup(fd), "w")

    def write(self, data: memoryview) -> int:
        written = self.file.write(data)
        if written is None:  # someone made the file non-blocking: wait, then again
            select.select([], [self.file], [])
            return 0
        return written

    def close(self) -> None:
        self.file.close()


def _output(stream: TextIO) -> _TextOutput | _FileOutput:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return _TextOutput(stream)
    stream.flush()  # what Python's buffer holds goes first
    return _FileOutput(fd)


class BatchWriter:
    """Writes chunks of whole lines (bytes ending in ``\\n``) to ``stream`` on a thread of its
    own, in the order :meth:`put` got them.

    At most ``max_backlog`` bytes wait (or are being written); a chunk that does not fit is
    dropped and its lines counted, and once everything waiting has been written, the line
    ``report(count)`` returns is written. :meth:`close` writes what waits and stops the
    thread; once it has stopped, :meth:`put` writes to ``stream`` on the caller's thread (a
    thread still stuck on a blocked output after ``close`` keeps taking the chunks, so
    :meth:`put` never waits for the output). A process forked
    from this one starts a thread of its own on its first :meth:`put`.
    """

    def __init__(self, stream: TextIO, *, max_backlog: int, report: Callable[[int], bytes]) -> None:
        self.max_backlog = max_backlog
        self._stream = stream
        self._output = _output(stream)
        self._report = report
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._changed = threading.Condition(threading.Lock())
        self._chunks: list[bytes] = []
        self._backlog = 0  # bytes waiting or being written
        self._dropped = 0  # lines dropped and not reported yet
        self._failing = False  # the last write failed: the output is gone
        self._stalled = False  # a wait for the output timed out, and nothing was written since
        self._closed = False
        self._running = True  # the thread takes chunks (False once it has stopped for good)
        self._thread = threading.Thread(target=self._run, name="rsm-log-writer", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped whose report is not written yet."""
        return self._dropped

    def put(self, chunk: bytes) -> None:
        """Queue ``chunk`` (whole lines) to be written, or drop it if the backlog is full."""
        if self._pid != os.getpid():
            self._start()
        with self._changed:
            if self._running:
                if self._backlog and self._backlog + len(chunk) > self.max_backlog:
                    self._dropped += chunk.count(b"\n")
                else:
                    self._chunks.append(chunk)
                    self._backlog += len(chunk)
                    self._changed.notify_all()
                return
        self._write_lines(chunk)

    def _settled(self) -> bool:
        if not self._thread.is_alive():
            return True
        return not self._backlog and (not self._dropped or self._failing)

    def flush(self, timeout: float | None = _SHUTDOWN_WAIT_S) -> bool:
        """Wait until everything put so far, and the report of lines dropped, is written (at
        most ``timeout`` seconds, none after a wait that timed out until the output takes a
        line again); returns whether every line was written or reported."""
        with self._changed:
            self._stalled = not self._changed.wait_for(
                self._settled, 0 if self._stalled else timeout
            )
            return not (self._backlog or self._dropped)

    def close(self, timeout: float | None = _SHUTDOWN_WAIT_S) -> None:
        """Write what waits (at most ``timeout`` seconds), then stop the thread; from then
        on, lines go to the stream itself."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._pid == os.getpid() and self._thread is not threading.current_thread():
            self._thread.join(0 if self._stalled else timeout)
        if not self._thread.is_alive():
            output, self._output = self._output, _TextOutput(self._stream)
            output.close()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._chunks or self._closed)
                if not self._chunks:
                    self._running = False
                    return
                data = b"".join(self._chunks)
                self._chunks.clear()
            written = self._write_lines(data)
            with self._changed:
                self._backlog -= len(data)
                self._failing, self._stalled = not written, False
                report = self._dropped if written and not self._chunks else 0
                self._changed.notify_all()
            if report:
                line = self._report(report)
                with self._changed:
                    self._dropped -= report
                    self._chunks.append(line)  # never dropped itself
                    self._backlog += len(line)

    def _write_lines(self, data: bytes) -> bool:
        """Write ``data`` in pieces of at most ``PIPE_BUF`` bytes cut after a line (a longer
        line alone); returns False, with the lines left counted as dropped, if the output
        fails (closed, full disk)."""
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            stop = start + _ATOMIC_WRITE
            if stop < end:
                cut = data.rfind(b"\n", start, stop)
                stop = cut + 1 if cut >= start else data.find(b"\n", stop) + 1 or end
            else:
                stop = end
            try:
                while start < stop:
                    start += self._output.write(view[start:stop])
            except (OSError, ValueError):
                with self._changed:
                    self._dropped += data.count(b"\n", start)
                return False
        return True


class BatchedLineHandler(AccessHandler):
    """Each record as one line on ``stream`` (stderr), written by a :class:`BatchWriter`.

    A record is formatted on the caller's thread. Access lines (:meth:`handle_access`) wait
    in a buffer and are formatted together on the running event loop every ``interval``
    seconds, by the formatter's ``format_access(line)`` when it has one (the same text its
    ``format`` gives the :func:`~.operations.access_record`). A record from the thread that
    logs access lines is written after the access lines waiting, so the output keeps the
    order. Each record without a ``request_id`` gets the current one (``"-"`` outside a
    request).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 0.01,
        max_backlog: int = 4 << 20,
    ) -> None:
        super().__init__()
        self.interval = interval
        self._pending: deque[AccessLine] = deque()
        self._armed: asyncio.AbstractEventLoop | None = None
        self._in_order = threading.Lock()
        self._request_ids = RequestIdFilter()
        self.writer = BatchWriter(
            sys.stderr if stream is None else stream, max_backlog=max_backlog, report=self._report
        )

    def handle_access(self, line: AccessLine) -> None:
        """Buffer ``line``; the running loop formats and writes the buffer within
        ``interval`` seconds (without a running loop: now)."""
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_pending()
            return
        if self._armed is not loop:
            self._armed = loop
            loop.call_later(self.interval, self._tick)

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and hand its line to the writer, after the access lines waiting."""
        try:
            self._request_ids.filter(record)
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._write_pending(line)

    def flush(self) -> None:
        """Write everything waiting, the access lines included (at most a few seconds if the
        output is blocked)."""
        self._write_pending()
        self.writer.flush()

    def finish(self) -> None:
        """Write everything waiting, then stop the writer's thread: from then on each line
        is written at once, on the thread that logs it (the handler stays open)."""
        self.flush()
        self.writer.close()

    def close(self) -> None:
        """Write everything waiting, then stop the writer's thread."""
        try:
            self.finish()
        finally:
            super().close()

    def _tick(self) -> None:
        self._armed = None
        self._write_pending()

    def _write_pending(self, then: str = "") -> None:
        """Format the access lines waiting and hand them, with ``then``, to the writer."""
        with self._in_order:
            pending = self._pending
            lines = []
            format_access: Callable[[AccessLine], str] | None = getattr(
                self.formatter, "format_access", None
            )
            while pending:
                line = pending.popleft()
                try:
                    if format_access is None:
                        lines.append(self.format(access_record(line)))
                    else:
                        lines.append(format_access(line))
                except Exception:
                    self.handleError(access_record(line))
            if lines:
                lines.append(then)
                then = "\n".join(lines)
            if then:
                self.writer.put(then.encode("utf-8", "backslashreplace"))

    def _report(self, dropped: int) -> bytes:
        record = logging.LogRecord(
            LOGGER_NAME, logging.WARNING, __file__, 0, DROPPED_MESSAGE, (dropped,), None
        )
        record.request_id = "-"
        return (self.format(record) + "\n").encode("utf-8", "backslashreplace")
