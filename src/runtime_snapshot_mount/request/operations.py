"""What an operator watches: request ids on log records, and counters of outcomes.

Every request the sub-app answers gets a request id: the client's ``X-Request-ID`` when it is
a sane token (1-64 characters of ``[A-Za-z0-9._-]``), a new 32-hex-digit id otherwise. The id
is echoed in the ``X-Request-ID`` response header and is :func:`current_request_id` while the
request is handled, so every record of the ``runtime_snapshot_mount`` logger carries it as
``record.request_id`` (``"-"`` outside a request). A host that wants the id on its own log
lines adds :class:`RequestIdFilter` to its handler and ``%(request_id)s`` to its format.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar, Token
from time import time
from typing import Any

__all__ = [
    "ACCESS_FIELDS",
    "ACCESS_LOGGER_NAME",
    "ACCESS_MESSAGE",
    "LOGGER_NAME",
    "OUTCOMES",
    "REQUEST_ID_PATTERN",
    "AccessHandler",
    "AccessLine",
    "Metrics",
    "RequestIdFilter",
    "access_record",
    "bind_request_id",
    "current_request_id",
    "log_access",
    "new_request_id",
    "request_id_from_header",
    "unbind_request_id",
]

LOGGER_NAME = "runtime_snapshot_mount"
ACCESS_LOGGER_NAME = "runtime_snapshot_mount.access"
OUTCOMES = ("applied", "ignored", "read", "rejected", "failed")

REQUEST_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
"""A sane request id, as a client may send one in ``X-Request-ID``."""
_SANE_ID = re.compile(REQUEST_ID_PATTERN, re.ASCII)
_request_id: ContextVar[str | None] = ContextVar("runtime_snapshot_mount_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or ``None`` outside a request."""
    return _request_id.get()


def bind_request_id(request_id: str) -> Token[str | None]:
    """Make ``request_id`` current in this context; pass the result to :func:`unbind_request_id`."""
    return _request_id.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    """Restore the request id that was current before :func:`bind_request_id`."""
    _request_id.reset(token)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)


_prefix: str
_counter: Iterator[int]
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """A new request id: 32 hex digits, unique across processes (random prefix, counter).

    Cheaper than :func:`uuid.uuid4` on the hot path, and as unique for correlating log lines.
    """
    return f"{_prefix}{next(_counter):016x}"


def request_id_from_header(value: str | None) -> str:
    """``value`` when it is a sane request id (1-64 of ``[A-Za-z0-9._-]``), else a new one."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return new_request_id()


ACCESS_FIELDS = ("method", "path", "status", "outcome", "duration_ms", "request_id")
"""The access record's attributes, in the order an :data:`AccessLine` holds them."""
ACCESS_MESSAGE = "%s %s %d %s %.3fms"
"""The access record's message: method, path, status, outcome and duration in milliseconds."""

AccessLine = tuple[float, str, str, int, str, float, str]
"""One answered request as the access log needs it: the time (``time.time()``), then the
values of :data:`ACCESS_FIELDS`."""

_access = logging.getLogger(ACCESS_LOGGER_NAME)


class AccessHandler(logging.Handler):
    """A handler that also takes an access line as a plain :data:`AccessLine`.

    When such a handler is all the access logger sends to (the logger's only handler, no
    filter on the logger or the handler, no propagation, a handler level of ``INFO`` or
    below), :func:`log_access` hands it the tuple and builds no record: what it writes must
    be what :func:`access_record` would give. This one builds that record and handles it.
    """

    def handle_access(self, line: AccessLine) -> None:
        """Write ``line`` as this handler writes its record."""
        self.handle(access_record(line))


def access_record(line: AccessLine) -> logging.LogRecord:
    """The ``INFO`` record of the access logger for ``line``, made at ``line``'s time, with
    :data:`ACCESS_FIELDS` as attributes.

    It is handed on without ``Logger.info``'s search of the stack for the caller's file and
    line, which would cost more than the rest of the record; its ``pathname`` is this module.
    """
    created, method, path, status, outcome, duration_ms, request_id = line
    record = logging.LogRecord(
        ACCESS_LOGGER_NAME,
        logging.INFO,
        __file__,
        0,
        ACCESS_MESSAGE,
        (method, path, status, outcome, duration_ms),
        None,
        "log_access",
    )
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    record.method, record.path, record.status = method, path, status
    record.outcome, record.duration_ms, record.request_id = outcome, duration_ms, request_id
    return record


def log_access(scope: Any, status: int, outcome: str, duration_s: float) -> None:
    """The access line for an answered request (in the request's logging context).

    An :class:`AccessHandler` that is all the access logger sends to gets the plain
    :data:`AccessLine`; otherwise the logger handles the :func:`access_record`, so a host's
    handlers, filters and propagation apply as to any record.
    """
    if not _access.isEnabledFor(logging.INFO):
        return
    method: str = scope.get("method", "-")
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if not path.startswith(root_path):
        path = root_path + path
    line = (
        time(),
        method,
        path,
        status,
        outcome,
        round(duration_s * 1000, 3),
        _request_id.get() or "-",
    )
    handlers = _access.handlers
    if len(handlers) == 1 and not _access.propagate and not _access.filters:
        handler = handlers[0]
        if isinstance(handler, AccessHandler) and not handler.filters:
            if handler.level <= logging.INFO:
                handler.handle_access(line)
            return
    _access.handle(access_record(line))


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the current request's id (``"-"`` outside a request).

    It never drops a record. The ``runtime_snapshot_mount`` logger has one already; add one to
    a handler to give every record that handler formats a ``request_id``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the request id; always keep the record."""
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        return True


class Metrics:
    """Counters of what the app answered, kept on ``app.state.metrics`` for the host to read.

    ``applied`` and ``ignored`` count 200 answers of the upsert, ``read`` those of the
    read-back, ``rejected`` counts 4xx answers by status, ``failed`` counts 5xx answers.
    Updated on the event loop only; :meth:`snapshot` reads them.
    """

    __slots__ = ("_rejected", "applied", "failed", "ignored", "read")

    def __init__(self) -> None:
        self.applied = 0
        self.ignored = 0
        self.read = 0
        self.failed = 0
        self._rejected: dict[int, int] = {}

    def count(self, status: int, outcome: str) -> None:
        """Count one answer with ``status`` and ``outcome`` (one of :data:`OUTCOMES`)."""
        if outcome == "applied":
            self.applied += 1
        elif outcome == "ignored":
            self.ignored += 1
        elif outcome == "read":
            self.read += 1
        elif outcome == "failed":
            self.failed += 1
        else:
            self._rejected[status] = self._rejected.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters now: ``{"applied", "ignored", "read", "rejected": {"401": n, ...},
        "failed"}``."""
        return {
            "applied": self.applied,
            "ignored": self.ignored,
            "read": self.read,
            "rejected": {str(status): n for status, n in sorted(self._rejected.items())},
            "failed": self.failed,
        }


logging.getLogger(LOGGER_NAME).addFilter(RequestIdFilter())
