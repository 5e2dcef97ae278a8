"""The opener rules (``store_from_url``): ``None``, never an error, for URLs the plugin does not
own; the opener is not a store itself; and the store it opens serves a whole lifecycle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ..extend.memory import MemoryStore
from ..extend.plugins import ConfigurationError, Plugins
from ._support import (
    OnAsyncio,
    check,
    check_result,
    check_snapshot,
    fail,
    make_snapshot,
    new_account_id,
    shorten,
    show,
)

FOREIGN_URLS = (
    "",
    "not a url",
    "://",
    "?table=snapshots",
    "conformance-nobody+driver://user:secret@127.0.0.1:1/nothing?table=x",
    "conformance-nobody:///tmp/nothing",
    "http://example.invalid/runtime-snapshots",
    "file:///nonexistent/runtime-snapshots",
    "%zz://broken",
    "x" * 5000,
)
"""URLs no store plugin should own: an opener must return ``None`` for each, never raise."""


_OPENER_MISSING = (
    "no `{name}` fixture: an OpenerContract subclass defines `opener`, returning the plugin "
    "that implements `store_from_url` (e.g. the module your entry point names), and "
    "`opener_url`, returning a URL it opens on storage the test may write to"
)


class OpenerContract(OnAsyncio):
    """What an opener (``store_from_url``) must do. Subclass it and provide ``opener`` and
    ``opener_url``; override ``foreign_urls`` to add URLs that look like yours but are not."""

    @pytest.fixture
    def opener(self) -> Any:
        """Override: the plugin (object or module) that implements ``store_from_url``."""
        pytest.skip(_OPENER_MISSING.format(name="opener"))

    @pytest.fixture
    def opener_url(self) -> str:
        """Override: a URL ``opener`` opens, on storage this test may create and write to."""
        pytest.skip(_OPENER_MISSING.format(name="opener_url"))

    @pytest.fixture
    def foreign_urls(self) -> Sequence[str]:
        """URLs the opener must answer ``None`` for; :data:`FOREIGN_URLS` unless overridden."""
        return FOREIGN_URLS

    @pytest.fixture
    def opener_plugins(self, opener: Any) -> Plugins:
        return Plugins([opener], entry_points=False, require_store=False)

    @pytest.mark.anyio
    async def test_opener_returns_none_for_urls_it_does_not_own(
        self, opener_plugins: Plugins, foreign_urls: Sequence[str]
    ) -> None:
        for url in foreign_urls:
            shown = shorten(url)
            try:
                found = await opener_plugins.store_from_url(url)
            except Exception as error:
                fail(
                    f"store_from_url({shown}) raised {type(error).__name__}: {error}\n"
                    "  expected: None (a URL this plugin does not own; another plugin may)"
                )
            check(
                found is None,
                f"store_from_url({shown}): expected None for a URL this plugin does not own, "
                f"found {show(found)}",
            )

    def test_opener_is_not_a_store_itself(self, opener: Any) -> None:
        try:
            Plugins([opener, MemoryStore()], entry_points=False)
        except ConfigurationError as error:
            fail(
                "the opener must implement store_from_url only, so that installing its entry "
                "point never adds a store to every app; with another store the app says: "
                f"{error}"
            )

    @pytest.mark.anyio
    async def test_opened_store_serves_a_whole_lifecycle(
        self, opener_plugins: Plugins, opener_url: str
    ) -> None:
        store = await opener_plugins.store_from_url(opener_url)
        check(store is not None, f"store_from_url({opener_url!r}): expected a store, found None")
        try:
            plugins = Plugins([store], entry_points=False)
        except ConfigurationError as error:
            fail(f"store_from_url({opener_url!r}) returned {store!r}, not a store: {error}")
        try:
            await plugins.store_create_tables()
            await plugins.store_create_tables()
            snapshot = make_snapshot(new_account_id())
            check_result(
                await plugins.store_upsert(snapshot), True, snapshot, "upsert into the opened store"
            )
            check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                "store_get from the opened store",
            )
            await plugins.store_create_tables()
            check_snapshot(
                await plugins.store_get(snapshot.account_id),
                snapshot,
                "store_get after store_create_tables ran again: it must keep what is stored",
            )
        finally:
            await plugins.store_close()
