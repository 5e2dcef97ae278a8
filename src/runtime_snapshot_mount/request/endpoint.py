"""The sub-app's endpoints. :class:`UpsertEndpoint` is SPEC §2 top to bottom:
token -> size -> body -> account -> store -> observers -> answer.

Every endpoint answers through :meth:`Endpoint.__call__`: the request gets an id (bound for
logging, echoed in ``X-Request-ID``), and its answer is counted, told to ``request_finished``
observers, and written to the access log, then sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
from time import perf_counter
from typing import Any

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from ..extend.plugins import Plugins
from . import answers
from .answers import Answer
from .body import BodyTooLarge, ClientDisconnect, RequestHeaders, is_json, read_body
from .deadline import BodyDeadline
from .operations import (
    LOGGER_NAME,
    Metrics,
    bind_request_id,
    current_request_id,
    log_access,
    request_id_from_header,
    unbind_request_id,
)
from .snapshot import Snapshot, parse_upsert

__all__ = ["Endpoint", "HealthEndpoint", "ReadEndpoint", "RouteError", "UpsertEndpoint"]

HEALTH_TIMEOUT = 2.0
logger = logging.getLogger(LOGGER_NAME)


class Endpoint:
    """An ASGI endpoint of one app: subclasses say how to :meth:`answer` a request.

    ``observed``: whether its answers are counted and told to ``request_finished``.
    """

    observed = True

    def __init__(self, plugins: Plugins, metrics: Metrics) -> None:
        self.plugins = plugins
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders(scope)
        request_id = request_id_from_header(headers.request_id)
        bound = bind_request_id(request_id)
        try:
            started = perf_counter()
            answer = await self.answer(scope, headers, receive)
            elapsed = perf_counter() - started
            if self.observed:
                self.metrics.count(answer.status, answer.outcome)
            if self.observed and self.plugins.observes_requests:
                await self.plugins.request_finished(
                    answer.status, answer.outcome, request_id, elapsed
                )
            log_access(scope, answer.status, answer.outcome, elapsed)
        finally:
            unbind_request_id(bound)
        await answer.send(send, request_id)

    async def answer(self, scope: Scope, headers: RequestHeaders, receive: Receive) -> Answer:
        raise NotImplementedError


class TokenEndpoint(Endpoint):
    """An endpoint behind the bearer-token check: 401 unless a plugin accepts the token, then
    :meth:`authorized_answer`; anything failing in either answers 500, logged without the
    token."""

    async def answer(self, scope: Scope, headers: RequestHeaders, receive: Receive) -> Answer:
        token = headers.bearer_token()
        try:
            principal = None if token is None else await self.plugins.authenticate(token)
            if principal is None:
                return answers.UNAUTHORIZED
            return await self.authorized_answer(principal, scope, headers, receive)
        except ClientDisconnect:
            return answers.DISCONNECTED
        except Exception as error:
            log_failure(error, token)
            return answers.FAILED

    async def authorized_answer(
        self, principal: Any, scope: Scope, headers: RequestHeaders, receive: Receive
    ) -> Answer:
        raise NotImplementedError


class UpsertEndpoint(TokenEndpoint):
    """``POST {mount}/runtime-snapshots/upsert``."""

    def __init__(
        self,
        plugins: Plugins,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        body_timeout: float | None,
    ) -> None:
        super().__init__(plugins, metrics)
        self.max_body_bytes = max_body_bytes
        self.deadline = BodyDeadline(body_timeout)

    async def authorized_answer(
        self, principal: Any, scope: Scope, headers: RequestHeaders, receive: Receive
    ) -> Answer:
        plugins = self.plugins
        try:
            with self.deadline.limit():
                body = await read_body(receive, headers, self.max_body_bytes)
        except BodyTooLarge:
            return answers.too_large(self.max_body_bytes)
        except TimeoutError:  # a client trickling its body; the store is never called
            return answers.BODY_TIMEOUT
        if not is_json(headers.content_type):
            return answers.WRONG_CONTENT_TYPE
        try:
            snapshot, synced_at = parse_upsert(body)
        except ValidationError as error:
            return answers.invalid(error)
        account = await plugins.get_account(snapshot.account_id, principal)
        if account is None or not account.active:
            return answers.ACCOUNT_NOT_FOUND
        stored = under_account(snapshot, account.account_id)
        result = await plugins.store_upsert(stored)
        # observers see what is stored; the answer, what was sent (they never raise)
        if result.applied:
            await plugins.snapshot_applied(stored, principal)
            return answers.applied(snapshot, synced_at)
        if plugins.observes_ignored:
            await self.report_ignored(stored, result.current, principal)
        return answers.ignored(snapshot)

    async def report_ignored(
        self, snapshot: Snapshot, current: Snapshot | None, principal: Any
    ) -> None:
        """Call the ``snapshot_ignored`` observers with the later stored snapshot, read now
        if the store did not report it; a failed read is logged and calls none."""
        plugins = self.plugins
        if current is None:
            try:
                current = await plugins.store_get(snapshot.account_id)
            except Exception:
                logger.exception(
                    "the snapshot_ignored observers were not called: reading the stored"
                    " snapshot failed (request %s)",
                    current_request_id(),
                )
                return
        if current is not None:
            await plugins.snapshot_ignored(snapshot, current, principal)


class ReadEndpoint(TokenEndpoint):
    """``GET {mount}/runtime-snapshots/{account_id}`` (opt-in): the same token check and account
    visibility as the upsert, then the snapshot stored under the account's canonical id, naming
    the account as the request spelt it."""

    async def authorized_answer(
        self, principal: Any, scope: Scope, headers: RequestHeaders, receive: Receive
    ) -> Answer:
        account_id: str = scope["path_params"]["account_id"]
        account = await self.plugins.get_account(account_id, principal)
        if account is None or not account.active:
            return answers.ACCOUNT_NOT_FOUND
        snapshot = await self.plugins.store_get(account.account_id)
        if snapshot is None:
            return answers.SNAPSHOT_NOT_FOUND
        return answers.stored(under_account(snapshot, account_id))


class HealthEndpoint(Endpoint):
    """``GET {mount}/healthz``: 200 when the store answers a cheap check in time, else 503.
    No token; not counted (probes would drown the counters)."""

    observed = False

    async def answer(self, scope: Scope, headers: RequestHeaders, receive: Receive) -> Answer:
        try:
            healthy = await asyncio.wait_for(self.plugins.store_ping(), HEALTH_TIMEOUT)
        except Exception:
            logger.warning("health check: the store did not answer", exc_info=True)
            return answers.UNAVAILABLE
        return answers.HEALTHY if healthy else answers.UNAVAILABLE


class RouteError(Endpoint):
    """What the router answers itself: 404 for an unknown path, 405 for another method."""

    def __init__(self, plugins: Plugins, metrics: Metrics, answer: Answer) -> None:
        super().__init__(plugins, metrics)
        self.fixed = answer

    async def answer(self, scope: Scope, headers: RequestHeaders, receive: Receive) -> Answer:
        return self.fixed


def under_account(snapshot: Snapshot, account_id: str) -> Snapshot:
    """``snapshot`` with ``account_id`` (itself when it already has it): the store keeps a
    snapshot under the account's canonical id (:attr:`Account.account_id`), while answers
    name the account as the request spelt it."""
    if snapshot.account_id == account_id:
        return snapshot
    return dataclasses.replace(snapshot, account_id=account_id)


def log_failure(error: Exception, token: str | None) -> None:
    """One log line with the traceback; the request's bearer token never appears in it."""
    message = "request failed; answered 500 (request %s)"
    if token:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        if token in text:
            redacted = text.replace(token, "[redacted token]").rstrip()
            logger.error(message + "\n%s", current_request_id(), redacted)
            return
    logger.exception(message, current_request_id())
