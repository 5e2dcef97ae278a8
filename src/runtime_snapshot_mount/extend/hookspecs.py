"""The whole plugin contract of runtime-snapshot-mount.

A plugin is any object or module whose functions are marked with
:data:`runtime_snapshot_mount.hookimpl` and named after one of the hooks below. It comes
from an argument of :func:`runtime_snapshot_mount.create_app` or from an installed
distribution's entry point in the group ``runtime_snapshot_mount``.

Every implementation may be a plain function or an ``async def``; whatever it returns is
awaited if it is awaitable. Plain implementations run on the event loop: one that blocks
(a synchronous database driver, say) should be ``async def`` and hand its blocking work to a
thread (``anyio.to_thread.run_sync``). A hook marked *first result* calls implementations in
pluggy's order (``tryfirst`` ones first, built-ins last) and stops at the first one whose
awaited result is not ``None``. Hook wrappers are not supported.

An exception raised by any hook except the observers makes the request fail with SPEC's 500
``{"detail": "Unexpected update failure"}``; the traceback is logged, never sent.

The store lifecycle
-------------------
A store instance lives on one event loop, and its hooks are called in this order:

1. **open** -- the instance is made: by the host (``SQLAlchemyStore(engine)``) or, for the
   command line, by :func:`store_from_url`. Nothing connects yet.
2. **create tables** -- :func:`store_create_tables`, at most once per instance, before it
   serves; optional (a host may use its own migrations instead).
3. **serve** -- any number of concurrent :func:`store_upsert`, :func:`store_get` and
   :func:`store_ping` calls, all on the loop of the first call.
4. **close** -- :func:`store_close`, once, on that same loop; no call follows it.

``runtime-snapshot-mount serve`` runs steps 1, 2 and 4 on a store of its own in the parent
process before any worker starts (so tables are created once, not by racing workers), then in
each worker process, on the server's event loop: 1 at start-up, 3 while serving, 4 at
shutdown. A store made in one process is never used in another.
"""

from __future__ import annotations

from typing import Any

import pluggy

from ..request.snapshot import Account, Snapshot, UpsertResult

PROJECT = "runtime_snapshot_mount"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def authenticate(token: str) -> Any | None:
    """Return the principal that the bearer ``token`` belongs to, or ``None`` if it is invalid.

    Called first on every request, before the body is read, with the token that follows
    ``Bearer`` in the ``Authorization`` header (never called when that header is missing or
    malformed). The principal is any object except ``None``; it is passed on to
    :func:`get_account` and the observers. Compare secrets in constant time
    (:func:`hmac.compare_digest`). First result.
    """


@hookspec(firstresult=True)
def get_account(account_id: str, principal: Any) -> Account | None:
    """Return the account ``account_id`` as ``principal`` may see it, or ``None``.

    Called after the body is validated. ``None`` (unknown, or not visible to this principal)
    and an inactive :class:`~runtime_snapshot_mount.Account` both answer 404
    ``Account not found or inactive``; so should an id that cannot name an account of the
    host's key type (a non-UUID for a UUID key), never an exception. First result.

    The returned ``Account.account_id`` is the account's **canonical id**: the store keeps the
    snapshot under it, and the read-back reads it from there. Return the same text for every
    spelling of ``account_id`` that names this account (a UUID's lowercase hyphenated text,
    say, for ``"6B1F..."`` and ``"6b1f..."``), so that they share one stored snapshot and one
    stale rule. Returning ``account_id`` unchanged keeps each spelling apart. Answers still
    name the account as the request spelt it.
    """


@hookspec(firstresult=True)
def store_upsert(snapshot: Snapshot) -> UpsertResult:  # type: ignore[empty-body]
    """Apply ``snapshot`` unless it is stale, in one atomic step per account.

    ``snapshot.account_id`` is the account's canonical id (what :func:`get_account` returned).
    The store compares ``snapshot`` with the one it holds for ``snapshot.account_id`` by the
    stale rule (:func:`runtime_snapshot_mount.is_stale`), writes it unless it is stale, and
    returns an :class:`~runtime_snapshot_mount.UpsertResult` saying whether it was applied and
    what is stored now (an ignored snapshot's ``current`` may be ``None``: the store need not
    read the later snapshot back, see :func:`snapshot_ignored`). The check and the write must
    be atomic against every other writer, in this process and in others sharing the same
    storage. Raising means nothing was
    written. Exactly one plugin in an app implements this hook and :func:`store_get`.
    """


@hookspec(firstresult=True)
def store_get(account_id: str) -> Snapshot | None:
    """Return the snapshot stored for ``account_id``, or ``None`` if there is none."""


@hookspec(firstresult=True)
def store_ping() -> bool | None:
    """Answer a cheap check that the store can serve (``SELECT 1``, say): ``True`` if it can.

    Called by ``GET {mount}/healthz`` under a short timeout; ``False``, raising, or not
    answering in time make it answer 503. Optional: without an implementation the health
    check reads an account id that no request can store (the empty string) with
    :func:`store_get`. First result.
    """


@hookspec
def snapshot_applied(snapshot: Snapshot, principal: Any) -> None:
    """Observe a snapshot that the store applied, after the store call returned.

    ``snapshot`` is what was stored: its ``account_id`` is the account's canonical id, which
    may differ from the request's spelling.

    Every implementation is called. One that raises is logged and never changes the response.
    """


@hookspec
def snapshot_ignored(snapshot: Snapshot, current: Snapshot, principal: Any) -> None:
    """Observe an incoming ``snapshot`` that was ignored because ``current`` is later.

    Both name the account by its canonical id, as the store keeps it (``snapshot.account_id``
    may differ from the request's spelling).

    ``current`` is the store's ``UpsertResult.current`` when the store read it back; otherwise
    the app reads it with :func:`store_get` after the upsert -- only when some implementation
    of this hook is registered, so an app without one never pays for that read. Stored
    snapshots only get later, so what it reads is later than ``snapshot`` too (an account whose
    row was deleted meanwhile calls no observer). Every implementation is called. One that
    raises is logged and never changes the response.
    """


@hookspec
def request_finished(status: int, outcome: str, request_id: str, duration_s: float) -> None:
    """Observe one answered request, to export metrics (the app also keeps ``app.state.metrics``).

    Called once per request that the sub-app answers, except ``GET openapi.json``, when the
    answer is decided and before it is sent, so keep it quick. ``status`` is the HTTP status;
    ``outcome`` is ``"applied"`` or ``"ignored"`` (200), ``"rejected"`` (4xx) or ``"failed"``
    (500); ``request_id`` is the id echoed in the ``X-Request-ID`` header; ``duration_s`` is the
    time spent handling the request, in seconds. Every implementation is called. One that raises
    is logged and never changes the response.
    """


@hookspec
def store_create_tables() -> None:
    """Create the store's tables (or other storage) if they are missing; a no-op otherwise.

    Called by the command line's ``serve`` (and ``create-tables``) once, on a store instance of
    its own, before any worker starts. A host app that wants it calls
    ``await app.state.plugins.store_create_tables()``. Must be idempotent.
    """


@hookspec
def store_close() -> None:
    """Release the store's connections; the last call an instance gets (see the lifecycle).

    Called when the standalone server shuts down, in each worker, on its event loop.
    """


@hookspec(firstresult=True)
def store_from_url(url: str) -> Any | None:
    """Return a store plugin for the store URL ``url``, or ``None`` if this plugin cannot open it.

    Used by the command line (``--store``). It should not connect yet: the store is used on
    another event loop, and in each worker process. First result.
    """
