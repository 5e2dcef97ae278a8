"""The core's conformance kit against the JSON-file store and its opener."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_snapshot_mount_jsonfile import JsonFileStore, opener

from runtime_snapshot_mount.testing import OpenerContract, StoreContract


class TestJsonFileStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> JsonFileStore:
        store = JsonFileStore(tmp_path / "snapshots")
        await store.store_create_tables()
        return store

    @pytest.fixture
    def another_store(self, tmp_path: Path) -> JsonFileStore:
        """A second instance on the same directory: its own files and its own locks."""
        return JsonFileStore(tmp_path / "snapshots")


class TestJsonFileOpener(OpenerContract):
    @pytest.fixture
    def opener(self) -> object:
        return opener

    @pytest.fixture
    def opener_url(self, tmp_path: Path) -> str:
        return f"jsonfile://{tmp_path}/opened"


@pytest.mark.parametrize(
    ("url", "directory"),
    [
        ("jsonfile:///var/lib/snapshots", "/var/lib/snapshots"),
        ("jsonfile:relative/dir", "relative/dir"),
        ("jsonfile://relative/dir", "relative/dir"),
    ],
)
def test_jsonfile_urls_name_a_directory(url: str, directory: str) -> None:
    store = opener.store_from_url(url)
    assert isinstance(store, JsonFileStore)
    assert store.directory == Path(directory)


def test_a_jsonfile_url_without_a_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="names a directory"):
        opener.store_from_url("jsonfile://")
