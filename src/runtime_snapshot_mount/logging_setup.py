"""Log handling for the standalone server: one format for every line, written off the event loop.

The request path only puts the record on a queue (:class:`DeferredQueueHandler`); a
:class:`LineWriter` thread formats every record waiting and writes them in one go. ``text``
lines read ``TIME LEVEL LOGGER: MESSAGE [REQUEST_ID]``; ``json`` writes one JSON object per
line for log shippers. :func:`configure` gives the ``runtime_snapshot_mount`` loggers and
uvicorn's own loggers the same handler, so their formats never mix. Hosts that mount the
sub-app configure logging themselves and never call this.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from logging.handlers import QueueHandler
from typing import Any, TextIO

from .operations import ACCESS_LOGGER_NAME, LOGGER_NAME, RequestIdFilter

__all__ = [
    "ACCESS_FIELDS",
    "ACCESS_LOGGER_NAME",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SERVER_LOGGER_NAMES",
    "DeferredQueueHandler",
    "JsonFormatter",
    "LineWriter",
    "TextFormatter",
    "configure",
    "uvicorn_log_config",
    "write_directly",
]

ACCESS_FIELDS = ("method", "path", "status", "outcome", "duration_ms", "request_id")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SERVER_LOGGER_NAMES = ("uvicorn", "uvicorn.error", "uvicorn.access")

_state: dict[str, Any] = {}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in ACCESS_FIELDS if name in record.__dict__}


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE [REQUEST_ID]`` (the access record's message reads
    ``METHOD PATH STATUS OUTCOME DURATIONms``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``YYYY-MM-DD HH:MM:SS,mmm`` in local time, as :class:`logging.Formatter` writes it,
        with the part before the comma made once per second, not once per line."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = record.__dict__.get("request_id")
        if request_id and request_id != "-":
            line += f" [{request_id}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, RFC 3339), ``level``, ``logger``,
    ``message``, the access fields present on the record, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        instant = datetime.fromtimestamp(record.created, tz=timezone.utc)
        line: dict[str, Any] = {
            "time": instant.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _extras(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def _formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


class DeferredQueueHandler(QueueHandler):
    """A :class:`QueueHandler` that leaves the formatting to the listener thread.

    The stock handler formats the message while enqueuing, on the caller's thread (the
    event loop); this one only attaches the request id, which must be read in the caller's
    context. The queue never leaves the process, so the record need not be picklable.
    """

    def __init__(self, target: queue.SimpleQueue[Any]) -> None:
        super().__init__(target)
        self.addFilter(RequestIdFilter())

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as it is: the listener formats it."""
        return record


class LineWriter:
    """The writer thread: takes every record waiting on ``records``, formats them with
    ``writer``'s formatter and writes them with one ``write`` and one ``flush`` (a line each,
    one system call for the lot), then rests ``pause`` seconds before it looks again, so that
    under load it wakes (and takes the interpreter from the event loop) a few dozen times a
    second, not once per request. :meth:`stop` writes what is left."""

    _STOP = object()
    pause = 0.02

    def __init__(self, records: queue.SimpleQueue[Any], writer: logging.StreamHandler[Any]) -> None:
        self.records = records
        self.writer = writer
        self.thread = threading.Thread(target=self._run, name="rsm-log-writer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.records.put(self._STOP)
        self.thread.join()

    def _run(self) -> None:
        while True:
            batch = [self.records.get()]
            while len(batch) < 4096:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            stopping = any(record is self._STOP for record in batch)
            self._write([record for record in batch if record is not self._STOP])
            if stopping:
                return
            time.sleep(self.pause)

    def _write(self, records: list[logging.LogRecord]) -> None:
        lines = []
        for record in records:
            if self.writer.filter(record):
                try:
                    lines.append(self.writer.format(record))
                except Exception:
                    self.writer.handleError(record)
        if lines:
            stream = self.writer.stream
            stream.write("\n".join(lines) + "\n")
            stream.flush()


def _loggers(names: Iterable[str]) -> list[logging.Logger]:
    return [logging.getLogger(name) for name in names]


def configure(
    *,
    level: str = "info",
    log_format: str = "text",
    access_log: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Send the ``runtime_snapshot_mount`` and uvicorn loggers, formatted as ``log_format``,
    to ``stream`` (stderr) through a queue and one writer thread. A uvicorn logger without
    handlers (its access log when switched off) is left alone.

    ``level`` applies to everything but the access log, which ``access_log`` alone turns on
    (``INFO`` records on ``runtime_snapshot_mount.access``) or off. Calling it again replaces
    the previous set-up. The listener is stopped, and what it holds written, at exit.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    write_directly()
    writer = logging.StreamHandler(sys.stderr if stream is None else stream)
    writer.setFormatter(_formatter(log_format))
    writer.addFilter(RequestIdFilter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = DeferredQueueHandler(records)
    listener = LineWriter(records, writer)
    listener.start()
    # What each record would otherwise look up on the request path, and no line prints.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
    if not _state.get("atexit"):
        atexit.register(write_directly)
        _state["atexit"] = True
    _state.update(listener=listener, handler=handler, writer=writer)
    numeric_level = logging.getLevelName(level.upper())
    for logger in _loggers(SERVER_LOGGER_NAMES):
        if logger.handlers:  # one the server switched off (uvicorn's access log) stays off
            logger.handlers = [handler]
            logger.setLevel(numeric_level)
    ours = logging.getLogger(LOGGER_NAME)
    ours.handlers = [handler]
    ours.propagate = False
    ours.setLevel(numeric_level)
    access = logging.getLogger(ACCESS_LOGGER_NAME)
    access.handlers = []
    access.propagate = True
    access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)


def write_directly() -> None:
    """Stop the writer thread once it has written every queued record, and let the loggers
    write on the caller's thread from now on (at shutdown, so that no line is lost)."""
    listener: LineWriter | None = _state.pop("listener", None)
    handler = _state.pop("handler", None)
    writer = _state.pop("writer", None)
    if listener is None:
        return
    listener.stop()
    for logger in _loggers((LOGGER_NAME, *SERVER_LOGGER_NAMES)):
        logger.handlers = [writer if item is handler else item for item in logger.handlers]


def uvicorn_log_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's own loggers in the same format, for
    uvicorn's ``log_config`` (it applies before the app is loaded, and in the parent of the
    worker processes)."""
    _formatter(log_format)
    formatter = f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"server": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "server",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
            for name in SERVER_LOGGER_NAMES
        },
    }
