"""The log writer: whole lines in order, never a blocked event loop, every drop reported, and
access lines from plain tuples exactly as their records read."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime_snapshot_mount.request.operations import ACCESS_LOGGER_NAME, AccessLine, access_record
from runtime_snapshot_mount.server.log_writer import (
    DROPPED_MESSAGE,
    BatchedLineHandler,
    BatchWriter,
)
from runtime_snapshot_mount.server.logging_setup import JsonFormatter, TextFormatter


class Recording(io.StringIO):
    """A text stream without a file descriptor that keeps each ``write`` apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.threads: set[str] = set()

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.threads.add(threading.current_thread().name)
        return super().write(text)


def report(count: int) -> bytes:
    return f"dropped {count}\n".encode()


def numbered(count: int, width: int = 60) -> list[bytes]:
    return [f"line {number:06d} ".ljust(width, "x").encode() + b"\n" for number in range(count)]


@pytest.fixture
def pipe() -> Iterator[tuple[BinaryIO, Any]]:
    """A pipe: its read end (binary) and its write end as a text stream."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    yield reader, writer
    for end in (reader, writer):
        with contextlib.suppress(OSError):  # text still buffered for a pipe now closed
            end.close()


PREFILL = b"prefill\n"


def block(output: Any) -> None:
    """Make the pipe behind ``output`` as small as the system allows and fill it, so that the
    next write blocks until someone reads."""
    size = fcntl.fcntl(output.fileno(), fcntl.F_SETPIPE_SZ, select.PIPE_BUF)
    os.write(output.fileno(), PREFILL * (size // len(PREFILL)))


def read_all(reader: BinaryIO) -> list[bytes]:
    """Every line from ``reader`` until the pipe is closed, but those :func:`block` wrote."""
    return [line for line in reader.read().splitlines(keepends=True) if line != PREFILL]


# -- BatchWriter ---------------------------------------------------------------------------


def test_lines_come_out_whole_in_order_in_pieces_of_at_most_pipe_buf() -> None:
    stream = Recording()
    writer = BatchWriter(stream, max_backlog=1 << 30, report=report)
    lines = numbered(500, width=97)
    lines.insert(250, b"y" * (3 * select.PIPE_BUF) + b"\n")  # longer than one atomic write
    for start in range(0, len(lines), 7):
        writer.put(b"".join(lines[start : start + 7]))
    assert writer.flush()
    writer.close()
    assert stream.getvalue().encode() == b"".join(lines)
    for piece in stream.writes:
        assert piece.endswith("\n")
        assert len(piece.encode()) <= select.PIPE_BUF or piece.count("\n") == 1
    assert stream.threads == {"rsm-log-writer"}


def test_a_blocked_pipe_never_blocks_put_and_every_dropped_line_is_reported_once(
    pipe: tuple[BinaryIO, Any],
) -> None:
    reader, output = pipe
    block(output)
    writer = BatchWriter(output, max_backlog=16_384, report=report)
    lines = numbered(2000)  # 120 kB, far more than the full pipe and the backlog hold
    for line in lines:
        writer.put(line)  # nobody reads: put must return all the same
    assert writer.dropped > 0
    received: list[list[bytes]] = []
    reading = threading.Thread(target=lambda: received.append(read_all(reader)))
    reading.start()
    assert writer.flush(timeout=None)  # the reader now takes everything: the report is written
    writer.close()
    output.close()
    reading.join()
    written = received[0]
    reports = [line for line in written if line.startswith(b"dropped ")]
    assert len(reports) == 1
    kept = [line for line in written if not line.startswith(b"dropped ")]
    assert set(kept) <= set(lines)  # whole lines only
    assert kept == sorted(kept)  # in order
    assert len(kept) + int(reports[0].split()[1]) == len(lines)


def test_a_closed_output_loses_lines_without_an_error_or_a_wait(
    pipe: tuple[BinaryIO, Any],
) -> None:
    reader, output = pipe
    reader.close()
    writer = BatchWriter(output, max_backlog=1 << 20, report=report)
    writer.put(b"nobody reads this\n")
    assert writer.flush(timeout=None) is False  # returns at once: the output is gone
    writer.close()


def test_closing_the_stream_neither_stops_the_writer_nor_sends_lines_elsewhere(
    tmp_path: Path,
) -> None:
    stream = (tmp_path / "log").open("w", encoding="utf-8")
    writer = BatchWriter(stream, max_backlog=1 << 20, report=report)
    stream.close()
    with (tmp_path / "other").open("w", encoding="utf-8"):  # likely on the freed number
        writer.put(b"still written\n")
        assert writer.flush()
        writer.close()
    assert (tmp_path / "log").read_text() == "still written\n"
    assert (tmp_path / "other").read_text() == ""


def test_after_close_put_writes_on_the_callers_thread() -> None:
    stream = Recording()
    writer = BatchWriter(stream, max_backlog=1 << 20, report=report)
    writer.put(b"first\n")
    writer.close()
    writer.put(b"late\n")
    assert stream.getvalue() == "first\nlate\n"
    assert threading.current_thread().name in stream.threads


def test_after_a_close_that_timed_out_put_neither_blocks_nor_writes_beside_the_thread(
    pipe: tuple[BinaryIO, Any],
) -> None:
    reader, output = pipe
    block(output)
    writer = BatchWriter(output, max_backlog=1 << 20, report=report)
    writer.put(b"stuck\n")  # the thread now waits in write: nobody reads
    writer.close(timeout=0.2)
    returned = threading.Event()
    putting = threading.Thread(target=lambda: (writer.put(b"late\n"), returned.set()))
    putting.start()
    assert returned.wait(5)  # queued for the thread, not written on the caller's thread
    received: list[list[bytes]] = []
    reading = threading.Thread(target=lambda: received.append(read_all(reader)))
    reading.start()
    assert writer.flush(timeout=None)
    writer.close()
    output.close()
    reading.join()
    assert received[0] == [b"stuck\n", b"late\n"]  # both, once each, in order


# -- BatchedLineHandler --------------------------------------------------------------------


def line_of(number: int, created: float = 1_700_000_000.5) -> AccessLine:
    return (created, "POST", f"/upsert/{number}", 200, "applied", 0.125, f"req-{number}")


def handler_on(stream: io.StringIO, formatter: logging.Formatter) -> BatchedLineHandler:
    handler = BatchedLineHandler(stream)
    handler.setFormatter(formatter)
    return handler


def test_access_lines_wait_for_the_loop_and_are_written_together() -> None:
    stream = Recording()
    handler = handler_on(stream, TextFormatter())

    async def serve() -> None:
        for number in range(200):
            handler.handle_access(line_of(number))
        assert stream.getvalue() == ""  # nothing formatted or written on the request path
        await asyncio.sleep(handler.interval * 2)  # the loop runs the batch before this wakes

    asyncio.run(serve())
    handler.writer.flush()
    written = stream.getvalue().splitlines()
    assert [line.rsplit("[", 1)[1] for line in written] == [f"req-{n}]" for n in range(200)]
    assert len(stream.writes) < 200  # batched: a few pieces, not a write per line
    handler.close()


def test_a_record_from_the_loop_comes_after_the_access_lines_waiting() -> None:
    stream = Recording()
    handler = handler_on(stream, TextFormatter())

    async def serve() -> None:
        handler.handle_access(line_of(1))
        handler.handle_access(line_of(2))
        record = logging.LogRecord("runtime_snapshot_mount", logging.ERROR, "", 0, "x", (), None)
        handler.handle(record)

    asyncio.run(serve())
    handler.close()
    assert [line.split()[3] for line in stream.getvalue().splitlines()] == [
        f"{ACCESS_LOGGER_NAME}:",
        f"{ACCESS_LOGGER_NAME}:",
        "runtime_snapshot_mount:",
    ]


def test_without_a_running_loop_an_access_line_is_written_at_once() -> None:
    stream = Recording()
    handler = handler_on(stream, JsonFormatter())
    handler.handle_access(line_of(7))
    handler.writer.flush()
    assert json.loads(stream.getvalue())["request_id"] == "req-7"
    handler.close()


def test_a_formatter_without_format_access_gets_the_record() -> None:
    stream = Recording()
    handler = handler_on(stream, logging.Formatter("%(name)s %(request_id)s %(message)s"))
    handler.handle_access(line_of(3))
    handler.close()
    assert stream.getvalue() == f"{ACCESS_LOGGER_NAME} req-3 POST /upsert/3 200 applied 0.125ms\n"


def test_a_blocked_output_is_reported_in_the_handlers_format(
    pipe: tuple[BinaryIO, Any],
) -> None:
    reader, output = pipe
    block(output)
    handler = BatchedLineHandler(output, max_backlog=8192)
    handler.setFormatter(JsonFormatter())
    for number in range(1000):
        handler.handle_access(line_of(number))
    received: list[list[bytes]] = []
    reading = threading.Thread(target=lambda: received.append(read_all(reader)))
    reading.start()
    handler.flush()
    handler.close()
    output.close()
    reading.join()
    records = [json.loads(line) for line in received[0]]
    access = [record for record in records if record["logger"] == ACCESS_LOGGER_NAME]
    (dropped,) = [record for record in records if record["logger"] != ACCESS_LOGGER_NAME]
    assert dropped["level"] == "warning"
    count = int(dropped["message"].split()[0])
    assert dropped["message"] == DROPPED_MESSAGE % count
    assert count > 0
    assert len(access) + count == 1000


def test_threads_logging_at_once_give_whole_json_lines(pipe: tuple[BinaryIO, Any]) -> None:
    reader, output = pipe
    handler = BatchedLineHandler(output)
    handler.setFormatter(JsonFormatter())
    received: list[list[bytes]] = []
    reading = threading.Thread(target=lambda: received.append(read_all(reader)))
    reading.start()
    start = threading.Barrier(8)

    def log(thread: int) -> None:
        start.wait()
        for number in range(500):
            if number % 2:
                handler.handle_access(line_of(thread * 1000 + number))
            else:
                args = (thread, number, "é" * (number % 50))
                handler.handle(logging.LogRecord("t", logging.INFO, "", 0, "%d %d %s", args, None))

    threads = [threading.Thread(target=log, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()
    output.close()
    reading.join()
    records = [json.loads(line) for line in received[0]]
    assert len(records) == 8 * 500
    assert sum(record["logger"] == ACCESS_LOGGER_NAME for record in records) == 8 * 250


# -- the access line from its tuple, as from its record -------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(
    created=st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
    method=texts,
    path=texts,
    status=st.integers(100, 599),
    outcome=st.sampled_from(["applied", "ignored", "read", "rejected", "failed"]),
    duration_ms=st.floats(min_value=0, max_value=1e7, allow_nan=False).map(lambda d: round(d, 3)),
    request_id=st.one_of(st.just("-"), st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)),
)
def test_format_access_gives_the_records_line(
    created: float,
    method: str,
    path: str,
    status: int,
    outcome: str,
    duration_ms: float,
    request_id: str,
) -> None:
    line = (created, method, path, status, outcome, duration_ms, request_id)
    for formatter in (TextFormatter(), JsonFormatter()):
        assert formatter.format_access(line) == formatter.format(access_record(line))


def test_finish_writes_what_waits_and_then_each_line_at_once_on_the_callers_thread() -> None:
    stream = Recording()
    handler = handler_on(stream, TextFormatter())
    logger = logging.getLogger("rsm-test-finish")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("waiting")
        handler.finish()
        assert stream.getvalue().endswith("waiting\n")
        logger.warning("after")  # no flush: the process may end by a signal right now
        assert stream.getvalue().endswith("after\n")
        assert threading.current_thread().name in stream.threads
    finally:
        logger.removeHandler(handler)
        handler.close()
