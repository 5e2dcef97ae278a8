"""Logging of the standalone server: one format for every line, and one logging set-up.

``text`` lines read ``TIME LEVEL LOGGER: MESSAGE [REQUEST_ID]``; ``json`` writes one JSON
object per line for log shippers. :func:`log_config` is the one ``logging.config.dictConfig``:
the ``runtime_snapshot_mount`` loggers and uvicorn's own loggers share one
:class:`~.log_writer.BatchedLineHandler`, so their formats never mix and no line is written
on the event loop. The access line is formatted from its plain tuple
(:meth:`TextFormatter.format_access`, :meth:`JsonFormatter.format_access`), exactly as its
record would be. Nothing here changes the :mod:`logging` module's own switches
(``logging.logProcesses`` and the like), so a server's own formats keep working. Hosts that
mount the sub-app configure logging themselves and never call this.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from ..request.operations import (
    ACCESS_FIELDS,
    ACCESS_LOGGER_NAME,
    ACCESS_MESSAGE,
    LOGGER_NAME,
    AccessLine,
)
from . import log_writer

__all__ = [
    "ACCESS_FIELDS",
    "ACCESS_LOGGER_NAME",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SERVER_LOGGER_NAMES",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "flush",
    "log_config",
]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SERVER_LOGGER_NAMES = ("uvicorn", "uvicorn.error", "uvicorn.access")

_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_INFO = logging.getLevelName(logging.INFO)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in ACCESS_FIELDS if name in record.__dict__}


class _Seconds:
    """``strftime(pattern)`` of a time's whole second, made once per second, not per line."""

    def __init__(self, pattern: str, converter: Callable[[float], time.struct_time]) -> None:
        self.pattern = pattern
        self.converter = converter
        self.last: tuple[int, str] = (-1, "")

    def __call__(self, created: float) -> tuple[str, int]:
        """The second's text and the milliseconds, as :class:`logging.LogRecord` counts them."""
        second = int(created)
        last = self.last
        if last[0] != second:
            last = self.last = (second, time.strftime(self.pattern, self.converter(second)))
        return last[1], int((created - second) * 1000)


_ACCESS_TEXT = f"%s,%03d {_INFO} {ACCESS_LOGGER_NAME}: {ACCESS_MESSAGE}"
_ACCESS_TEXT_WITH_ID = _ACCESS_TEXT + " [%s]"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE [REQUEST_ID]`` (the access record's message reads
    ``METHOD PATH STATUS OUTCOME DURATIONms``); ``TIME`` is local, ``YYYY-MM-DD
    HH:MM:SS,mmm``, as :class:`logging.Formatter` writes it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._seconds = _Seconds("%Y-%m-%d %H:%M:%S", self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time, with the part before the comma made once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, milliseconds = self._seconds(record.created)
        return f"{second},{milliseconds:03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = record.__dict__.get("request_id")
        if request_id and request_id != "-":
            line += f" [{request_id}]"
        return line

    def format_access(self, line: AccessLine) -> str:
        """The line :meth:`format` gives the access record of ``line`` (one ``%`` format)."""
        created, method, path, status, outcome, duration_ms, request_id = line
        second, milliseconds = self._seconds(created)
        if request_id == "-" or not request_id:
            return _ACCESS_TEXT % (second, milliseconds, method, path, status, outcome, duration_ms)
        values = (second, milliseconds, method, path, status, outcome, duration_ms, request_id)
        return _ACCESS_TEXT_WITH_ID % values


def _json_access_template() -> str:
    """The access line of :class:`JsonFormatter` with a ``{}`` for each value."""
    names = ["time", "level", "logger", "message", *ACCESS_FIELDS]
    return "{{" + ", ".join(f"{_ENCODER.encode(name)}: {{}}" for name in names) + "}}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, RFC 3339), ``level``, ``logger``,
    ``message``, the access fields present on the record, and ``exception`` when there is one."""

    _access = _json_access_template()
    _access_head = (_ENCODER.encode(_INFO.lower()), _ENCODER.encode(ACCESS_LOGGER_NAME))

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def _time(self, created: float) -> str:
        second, milliseconds = self._seconds(created)
        return f"{second}.{milliseconds:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": self._time(record.created),
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
        return _ENCODER.encode(line)

    def format_access(self, line: AccessLine) -> str:
        """The line :meth:`format` gives the access record of ``line``."""
        created, method, path, status, outcome, duration_ms, request_id = line
        encode = _ENCODER.encode
        message = ACCESS_MESSAGE % (method, path, status, outcome, duration_ms)
        return self._access.format(
            f'"{self._time(created)}"',
            *self._access_head,
            encode(message),
            encode(method),
            encode(path),
            int(status),
            encode(outcome),
            float(duration_ms),
            encode(request_id),
        )


def _formatter_name(log_format: str) -> str:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    return f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"


def log_config(
    level: str = "info",
    log_format: str = "text",
    access_log: bool = True,
    *,
    server_loggers: Iterable[str] = SERVER_LOGGER_NAMES,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """The standalone server's ``logging.config.dictConfig``: the ``runtime_snapshot_mount``
    loggers and the ``server_loggers`` (uvicorn's) write ``log_format`` lines to ``stream``
    (stderr) through one :class:`~.log_writer.BatchedLineHandler`.

    ``level`` applies to everything but the access log, which ``access_log`` alone turns on
    (``INFO`` records on ``runtime_snapshot_mount.access``) or off. ``serve`` gives it to
    uvicorn as its ``log_config`` (applied before the app is loaded, and in each worker
    process); :func:`configure` applies it.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    handler = {
        "()": f"{log_writer.__name__}.{log_writer.BatchedLineHandler.__name__}",
        "formatter": "lines",
        "stream": "ext://sys.stderr" if stream is None else stream,
    }
    loggers = {name: level.upper() for name in (LOGGER_NAME, *server_loggers)}
    loggers[ACCESS_LOGGER_NAME] = "INFO" if access_log else "CRITICAL"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"lines": {"()": _formatter_name(log_format)}},
        "handlers": {"lines": handler},
        "loggers": {
            name: {"handlers": ["lines"], "level": value, "propagate": False}
            for name, value in loggers.items()
        },
    }


def configure(
    *,
    level: str = "info",
    log_format: str = "text",
    access_log: bool = True,
    stream: TextIO | None = None,
) -> None:
    """Apply :func:`log_config` (``logging.config.dictConfig``), for uvicorn's loggers that
    have handlers: one without (its access log when switched off, or a logger that passes its
    records on to ``uvicorn``) is left as it is.

    Calling it again replaces the previous set-up; the previous handler writes what it holds
    as ``dictConfig`` closes it. What waits is written at exit (:func:`logging.shutdown`).
    """
    server = [logging.getLogger(name) for name in SERVER_LOGGER_NAMES]
    config = log_config(
        level,
        log_format,
        access_log,
        server_loggers=[logger.name for logger in server if logger.handlers],
        stream=stream,
    )
    for logger in server:  # else dictConfig would reset it, as a child of a logger it sets up
        config["loggers"].setdefault(logger.name, {"propagate": logger.propagate})
    logging.config.dictConfig(config)


def finish() -> None:
    """At the app's shutdown: write every line waiting, and from then on each line at once.

    The server may end the process by a signal before a writer thread could write its last
    lines (a uvicorn worker raises SIGTERM again, with its default action, once it has shut
    down), so the handlers of the ``runtime_snapshot_mount`` and uvicorn loggers stop their
    threads; handlers of other kinds are flushed.
    """
    names = (LOGGER_NAME, ACCESS_LOGGER_NAME, *SERVER_LOGGER_NAMES)
    handlers = {handler for name in names for handler in logging.getLogger(name).handlers}
    for handler in handlers:
        if isinstance(handler, log_writer.BatchedLineHandler):
            handler.finish()
        else:
            handler.flush()


def flush() -> None:
    """Write every line waiting in the handlers of the ``runtime_snapshot_mount`` loggers
    (at shutdown); waits at most a few seconds for an output that is blocked."""
    for name in (LOGGER_NAME, ACCESS_LOGGER_NAME):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
