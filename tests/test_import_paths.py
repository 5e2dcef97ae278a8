"""The documented import paths keep working after the package was laid out by job: each names
the same object as its subpackage."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import runtime_snapshot_mount

DOCUMENTED = [
    ("runtime_snapshot_mount.standalone", "create_app_from_env", "server.standalone"),
    ("runtime_snapshot_mount.cli", "main", "server.cli"),
    ("runtime_snapshot_mount.protocols", "StoreOpener", "extend.protocols"),
    ("runtime_snapshot_mount.protocols", "ManagedStorePlugin", "extend.protocols"),
    ("runtime_snapshot_mount.logging_setup", "log_config", "server.logging_setup"),
    ("runtime_snapshot_mount.testing", "StoreContract", "testing"),
]


@pytest.mark.parametrize(("module", "name", "home"), DOCUMENTED)
def test_a_documented_path_names_the_object_of_its_subpackage(
    module: str, name: str, home: str
) -> None:
    documented = getattr(importlib.import_module(module), name)
    assert documented is getattr(importlib.import_module(f"runtime_snapshot_mount.{home}"), name)


def test_every_public_name_imports_from_the_package() -> None:
    for name in runtime_snapshot_mount.__all__:
        assert getattr(runtime_snapshot_mount, name) is not None, name


def test_the_package_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runtime_snapshot_mount", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("runtime-snapshot-mount ")
