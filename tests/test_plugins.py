"""Plugins: sync and async hooks, first-result semantics, start-up checks, entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rsm_support import (
    ACCOUNT,
    EXAMPLE_APPLIED,
    EXAMPLE_REQUEST,
    INACTIVE_ACCOUNT,
    NOT_FOUND_BODY,
    TOKEN,
    UNAUTHORIZED_BODY,
    client_for,
    compact,
    example,
    install_entry_point,
    make_app,
    post_json,
)

from runtime_snapshot_mount import (
    Account,
    ConfigurationError,
    MemoryStore,
    Principal,
    Snapshot,
    StaticAccounts,
    UpsertResult,
    create_app,
    hookimpl,
)

# -- plugin objects passed to create_app ------------------------------------------------


class AsyncStore:
    """A store whose hooks are ``async def``, around a memory store."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.upserts: list[Snapshot] = []

    @hookimpl
    async def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        self.upserts.append(snapshot)
        return self.inner.store_upsert(snapshot)

    @hookimpl
    async def store_get(self, account_id: str) -> Snapshot | None:
        return self.inner.store_get(account_id)


class SyncAuth:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    @hookimpl
    def authenticate(self, token: str) -> Any:
        self.tokens.append(token)
        return Principal("sync-user") if token == "sync-token" else None


class AsyncAuth:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    @hookimpl
    async def authenticate(self, token: str) -> Any:
        self.tokens.append(token)
        return Principal("async-user") if token == "async-token" else None


class AsyncAccounts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    async def get_account(self, account_id: str, principal: Any) -> Account | None:
        self.calls.append((account_id, principal))
        if account_id == "async-inactive":
            return Account(account_id, active=False)
        return Account(account_id) if account_id.startswith("async-") else None


class SyncAccounts:
    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return Account(account_id) if account_id.startswith("sync-") else None


@pytest.mark.anyio
async def test_sync_and_async_hookimpls_of_every_kind_serve_requests() -> None:
    store, sync_auth, async_auth, accounts = AsyncStore(), SyncAuth(), AsyncAuth(), AsyncAccounts()
    app = create_app(store, sync_auth, async_auth, accounts, SyncAccounts(), entry_points=False)
    async with client_for(app) as client:
        by_async = await post_json(client, example(account_id="async-1"), token="async-token")
        by_sync = await post_json(client, example(account_id="sync-1"), token="sync-token")
        unknown = await post_json(client, example(account_id="nobody"), token="sync-token")
        inactive = await post_json(client, example(account_id="async-inactive"), token="sync-token")
        stranger = await post_json(client, EXAMPLE_REQUEST, token="nobody-token")
    assert by_async.json() == {**EXAMPLE_APPLIED, "account_id": "async-1"}
    assert by_sync.json() == {**EXAMPLE_APPLIED, "account_id": "sync-1"}
    assert unknown.content == inactive.content == NOT_FOUND_BODY
    assert stranger.content == UNAUTHORIZED_BODY
    assert [s.account_id for s in store.upserts] == ["async-1", "sync-1"]
    stored = store.inner.store_get("async-1")
    assert stored is not None and stored.personality == EXAMPLE_REQUEST["personality"]
    assert ("async-1", Principal("async-user")) in accounts.calls
    assert "nobody-token" in sync_auth.tokens and "nobody-token" in async_auth.tokens


class AsyncNoneAuth:
    """An ``async def`` authenticate that always awaits to None (and runs first)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(tryfirst=True)
    async def authenticate(self, token: str) -> Any:
        self.calls += 1
        return None


@pytest.mark.anyio
async def test_async_authenticate_returning_none_falls_through_to_the_next(
    store: MemoryStore,
) -> None:
    first, second = AsyncNoneAuth(), AsyncAuth()
    app = create_app(store, first, second, accounts=[ACCOUNT], entry_points=False)
    async with client_for(app) as client:
        response = await post_json(client, EXAMPLE_REQUEST, token="async-token")
    assert response.content == compact(EXAMPLE_APPLIED)
    assert first.calls == 1 and second.tokens == ["async-token"]


@pytest.mark.anyio
async def test_async_authenticate_returning_none_is_not_taken_as_a_principal(
    store: MemoryStore,
) -> None:
    none_auth = AsyncNoneAuth()
    app = create_app(store, none_auth, accounts=[ACCOUNT], entry_points=False)
    async with client_for(app) as client:
        response = await post_json(client, EXAMPLE_REQUEST, token="anything")
    assert response.status_code == 401
    assert response.content == UNAUTHORIZED_BODY
    assert none_auth.calls == 1
    assert store.store_get(ACCOUNT) is None


class AsyncNoneAccounts:
    @hookimpl(tryfirst=True)
    async def get_account(self, account_id: str, principal: Any) -> Account | None:
        return None


@pytest.mark.anyio
async def test_async_get_account_returning_none_falls_through_or_answers_404(
    store: MemoryStore,
) -> None:
    alone = create_app(store, AsyncNoneAccounts(), api_keys=[TOKEN], entry_points=False)
    with_builtin = make_app(MemoryStore(), AsyncNoneAccounts())
    async with client_for(alone) as client:
        assert (await post_json(client, EXAMPLE_REQUEST)).content == NOT_FOUND_BODY
    async with client_for(with_builtin) as client:
        assert (await post_json(client, EXAMPLE_REQUEST)).content == compact(EXAMPLE_APPLIED)


class TenantAuth:
    PRINCIPALS: ClassVar[dict[str, str]] = {"alice-token": "alice", "bob-token": "bob"}

    @hookimpl
    def authenticate(self, token: str) -> Any:
        return self.PRINCIPALS.get(token)


class TenantAccounts:
    """Each principal sees only the accounts that start with its name."""

    def __init__(self) -> None:
        self.principals: list[Any] = []

    @hookimpl
    async def get_account(self, account_id: str, principal: Any) -> Account | None:
        self.principals.append(principal)
        return Account(account_id) if account_id.startswith(f"{principal}-") else None


@pytest.mark.anyio
async def test_get_account_receives_the_principal_and_limits_what_it_sees(
    store: MemoryStore,
) -> None:
    accounts = TenantAccounts()
    app = create_app(store, TenantAuth(), accounts, entry_points=False)
    async with client_for(app) as client:
        own = await post_json(client, example(account_id="alice-1"), token="alice-token")
        others = await post_json(client, example(account_id="bob-1"), token="alice-token")
        bobs = await post_json(client, example(account_id="bob-1"), token="bob-token")
    assert own.json()["status"] == "upserted"
    assert others.status_code == 404 and others.content == NOT_FOUND_BODY
    assert bobs.json()["status"] == "upserted"
    assert accounts.principals == ["alice", "alice", "bob"]
    stored = store.store_get("bob-1")
    assert stored is not None


class HostTokens:
    @hookimpl
    def authenticate(self, token: str) -> Any:
        return Principal("host") if token == "host-session-token" else None


class HostAccounts:
    @hookimpl
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return Account(account_id) if account_id == INACTIVE_ACCOUNT else None


@pytest.mark.anyio
async def test_builtins_yield_to_user_plugins(store: MemoryStore) -> None:
    app = make_app(store, HostTokens(), HostAccounts())
    async with client_for(app) as client:
        # a token the static list does not have, accepted by the host's plugin
        by_host = await post_json(client, EXAMPLE_REQUEST, token="host-session-token")
        # the static list still answers when the host's plugin returns None
        by_static = await post_json(client, example(strategy_version=8), token=TOKEN)
        # the host's accounts win over the static list, which marks this one inactive
        revived = await post_json(client, example(account_id=INACTIVE_ACCOUNT))
    assert by_host.content == compact(EXAMPLE_APPLIED)
    assert by_static.json()["status"] == "upserted"
    assert revived.json()["status"] == "upserted"


class PrincipalRecorder:
    def __init__(self) -> None:
        self.principals: list[Any] = []

    @hookimpl
    def snapshot_applied(self, snapshot: Snapshot, principal: Any) -> None:
        self.principals.append(principal)


@pytest.mark.anyio
async def test_api_keys_mapping_names_the_principal_each_token_answers(
    store: MemoryStore,
) -> None:
    recorder = PrincipalRecorder()
    keys = {"key-a": Principal("farm-a"), "key-b": "farm-b"}
    app = make_app(store, recorder, api_keys=keys)
    async with client_for(app) as client:
        await post_json(client, example(strategy_version=1), token="key-a")
        await post_json(client, example(strategy_version=2), token="key-b")
        rejected = await post_json(client, example(strategy_version=3), token=TOKEN)
    assert recorder.principals == [Principal("farm-a"), "farm-b"]
    assert rejected.status_code == 401


# -- one plugin manager per app ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_plugin_registered_in_one_app_is_not_seen_by_another() -> None:
    recorder = PrincipalRecorder()
    first = make_app(MemoryStore(), recorder, HostTokens())
    second = make_app(MemoryStore())
    assert first.state.plugins is not second.state.plugins
    async with client_for(second) as client:
        applied = await post_json(client, EXAMPLE_REQUEST)
        host_token = await post_json(client, EXAMPLE_REQUEST, token="host-session-token")
    assert applied.status_code == 200
    assert host_token.status_code == 401
    assert recorder.principals == []
    async with client_for(first) as client:
        await post_json(client, EXAMPLE_REQUEST, token="host-session-token")
    assert recorder.principals == [Principal("host")]


@pytest.mark.anyio
async def test_two_apps_keep_separate_stores_and_tokens() -> None:
    store_a, store_b = MemoryStore(), MemoryStore()
    app_a = make_app(store_a, api_keys=["token-a"])
    app_b = make_app(store_b, api_keys=["token-b"])
    async with client_for(app_a) as a, client_for(app_b) as b:
        assert (await post_json(a, EXAMPLE_REQUEST, token="token-b")).status_code == 401
        assert (await post_json(a, EXAMPLE_REQUEST, token="token-a")).status_code == 200
        assert (await post_json(b, EXAMPLE_REQUEST, token="token-b")).status_code == 200
    assert len(store_a) == len(store_b) == 1


# -- start-up errors --------------------------------------------------------------------


class Misspelt:
    @hookimpl
    def store_upsrt(self, snapshot: Snapshot) -> None:
        pass


class DefaultedParameter:
    @hookimpl
    def authenticate(self, token: str = "") -> Any:
        return Principal("x")


class DefaultedPrincipal:
    @hookimpl
    def get_account(self, account_id: str, principal: Any = None) -> Account:
        return Account(account_id)


class UnknownParameter:
    @hookimpl
    def authenticate(self, tokn: str) -> Any:
        return None


class Wrapper:
    @hookimpl(wrapper=True)
    def authenticate(self, token: str) -> Any:
        return (yield)


class UpsertOnlyStore:
    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        return UpsertResult(applied=True, current=snapshot)


def start(*plugins: object, **options: Any) -> Any:
    options.setdefault("api_keys", [TOKEN])
    options.setdefault("accounts", [ACCOUNT])
    return create_app(*plugins, entry_points=False, **options)


@pytest.mark.parametrize(
    ("plugins", "options", "mentions"),
    [
        pytest.param((), {}, "store", id="no-store"),
        pytest.param((MemoryStore(), MemoryStore()), {}, "store", id="two-stores"),
        pytest.param((MemoryStore(), AsyncStore()), {}, "store", id="two-kinds-of-store"),
        pytest.param((UpsertOnlyStore(),), {}, "store_get", id="store-without-store-get"),
        pytest.param((MemoryStore(), Misspelt()), {}, "store_upsrt", id="misspelt-hookimpl"),
        pytest.param((MemoryStore(), DefaultedParameter()), {}, "token", id="defaulted-token"),
        pytest.param(
            (MemoryStore(), DefaultedPrincipal()), {}, "principal", id="defaulted-principal"
        ),
        pytest.param((MemoryStore(), UnknownParameter()), {}, "tokn", id="unknown-parameter"),
        pytest.param((MemoryStore(), Wrapper()), {}, "wrapper", id="hook-wrapper"),
        pytest.param((MemoryStore(),), {"api_keys": None}, "authenticate", id="no-authentication"),
        pytest.param((MemoryStore(),), {"api_keys": []}, "api_keys is empty", id="empty-key-list"),
        pytest.param((MemoryStore(),), {"api_keys": {}}, "api_keys is empty", id="empty-key-map"),
        pytest.param((MemoryStore(),), {"accounts": None}, "get_account", id="no-accounts"),
        pytest.param((MemoryStore(),), {"api_keys": [""]}, "", id="empty-api-key"),
        pytest.param((MemoryStore(),), {"max_body_bytes": 0}, "max_body_bytes", id="zero-limit"),
    ],
)
def test_misconfiguration_fails_at_start_up_with_a_one_line_reason(
    plugins: tuple[object, ...], options: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        start(*plugins, **options)
    message = str(caught.value)
    assert message.strip()
    assert "\n" not in message and "\r" not in message
    assert mentions in message


def test_no_authentication_at_all_is_refused_even_with_accounts() -> None:
    with pytest.raises(ConfigurationError, match="authenticate"):
        create_app(MemoryStore(), accounts=[ACCOUNT], entry_points=False)


@pytest.mark.anyio
async def test_empty_accounts_list_starts_and_answers_404_for_every_account() -> None:
    store = MemoryStore()
    async with client_for(start(store, accounts=[])) as client:
        response = await post_json(client, EXAMPLE_REQUEST)
    assert response.content == NOT_FOUND_BODY
    assert store.store_get(ACCOUNT) is None


# -- entry points -----------------------------------------------------------------------


@pytest.fixture
def entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed distribution whose entry point registers an authenticate+observer plugin.

    Yields the module name; the module keeps ``CALLS`` of its observer.
    """
    module = f"rsm_entry_point_plugin_{uuid.uuid4().hex}"
    install_entry_point(
        tmp_path,
        module,
        textwrap.dedent(
            """
            from runtime_snapshot_mount import Principal, hookimpl

            CALLS = []


            class Plugin:
                @hookimpl
                def authenticate(self, token):
                    return Principal("entry-point") if token == "entry-point-token" else None

                @hookimpl
                def snapshot_applied(self, snapshot, principal):
                    CALLS.append((snapshot.account_id, principal))


            plugin = Plugin()
            """
        ),
        name="rsm_entry_point_test",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    yield module
    sys.modules.pop(module, None)


@pytest.mark.anyio
async def test_entry_point_plugin_is_loaded_with_entry_points_true(
    entry_point_plugin: str, store: MemoryStore
) -> None:
    app = create_app(store, api_keys=[TOKEN], accounts=[ACCOUNT], entry_points=True)
    assert "rsm_entry_point_test" in [
        app.state.plugins.manager.get_name(p) for p in app.state.plugins.manager.get_plugins()
    ]
    async with client_for(app) as client:
        response = await post_json(client, EXAMPLE_REQUEST, token="entry-point-token")
        await post_json(client, example(strategy_version=8), token=TOKEN)
    assert response.content == compact(EXAMPLE_APPLIED)
    calls = sys.modules[entry_point_plugin].CALLS
    assert calls == [(ACCOUNT, Principal("entry-point")), (ACCOUNT, Principal("api-key"))]


@pytest.mark.anyio
async def test_entry_point_plugin_is_skipped_with_entry_points_false(
    entry_point_plugin: str, store: MemoryStore
) -> None:
    app = create_app(store, api_keys=[TOKEN], accounts=[ACCOUNT], entry_points=False)
    async with client_for(app) as client:
        response = await post_json(client, EXAMPLE_REQUEST, token="entry-point-token")
    assert response.status_code == 401
    assert entry_point_plugin not in sys.modules


def test_entry_point_plugin_alone_can_provide_authentication(
    entry_point_plugin: str, store: MemoryStore
) -> None:
    create_app(store, accounts=[ACCOUNT], entry_points=True)
    with pytest.raises(ConfigurationError, match="authenticate"):
        create_app(store, accounts=[ACCOUNT], entry_points=False)


@pytest.mark.anyio
async def test_a_plugin_passed_to_create_app_and_installed_is_used_once(
    entry_point_plugin: str, store: MemoryStore
) -> None:
    installed = importlib.import_module(entry_point_plugin).plugin
    app = create_app(store, installed, api_keys=[TOKEN], accounts=[ACCOUNT], entry_points=True)
    manager = app.state.plugins.manager
    assert [p for p in manager.get_plugins() if p is installed] == [installed]
    async with client_for(app) as client:
        response = await post_json(client, EXAMPLE_REQUEST, token="entry-point-token")
    assert response.content == compact(EXAMPLE_APPLIED)
    assert [(ACCOUNT, Principal("entry-point"))] == sys.modules[entry_point_plugin].CALLS


def test_a_plugin_passed_twice_is_a_one_line_configuration_error(store: MemoryStore) -> None:
    accounts = StaticAccounts([ACCOUNT])
    with pytest.raises(ConfigurationError, match="passed twice") as raised:
        create_app(store, accounts, accounts, api_keys=[TOKEN], entry_points=False)
    assert "\n" not in str(raised.value)
