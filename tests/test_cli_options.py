"""What ``serve`` hands to uvicorn: the factory, the settings as its environment variables,
and the server options (uvicorn.run replaced by a recorder, in this process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from rsm_support import logging_restored

from runtime_snapshot_mount.server import cli
from runtime_snapshot_mount.server.standalone import ENVIRONMENT, Settings

BEFORE = {name: os.environ.get(name) for name in ENVIRONMENT}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """uvicorn.run's arguments; the environment and logging are restored afterwards."""
    calls: dict[str, Any] = {}

    def run(app: str, **options: Any) -> None:
        calls["app"] = app
        calls.update(options)

    monkeypatch.setattr(uvicorn, "run", run)
    for name in ENVIRONMENT:  # serve writes them: each is restored (or removed) afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with logging_restored():
        yield calls


def test_serve_passes_the_proxy_options_and_fast_defaults_to_uvicorn(
    recorded: dict[str, Any],
) -> None:
    status = cli.main(
        [
            "serve",
            "--store",
            "memory://",
            "--api-key",
            "k",
            "--root-path",
            "/phonefarm",
            "--proxy-headers",
            "--forwarded-allow-ips",
            "10.0.0.5,10.0.0.6",
            "--port",
            "9001",
        ]
    )
    assert status == 0
    assert recorded["app"] == "runtime_snapshot_mount.standalone:create_app_from_env"
    assert recorded["factory"] is True
    assert recorded["root_path"] == "/phonefarm"
    assert recorded["proxy_headers"] is True
    assert recorded["forwarded_allow_ips"] == "10.0.0.5,10.0.0.6"
    assert recorded["port"] == 9001
    assert recorded["access_log"] is False
    assert (recorded["loop"], recorded["http"], recorded["lifespan"]) == ("auto", "auto", "on")


def test_serve_hands_its_settings_to_the_workers_as_the_factorys_variables(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RSM_API_KEYS", "from-env")
    monkeypatch.setenv("PHONEFARM_API_KEY", "phonefarm")
    status = cli.main(
        [
            "serve",
            "--store",
            "memory://",
            "--api-key",
            "flag",
            "--max-body-bytes",
            "4096",
            "--body-timeout",
            "0",
            "--openapi",
            "--read",
            "--no-access-log",
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ]
    )
    assert status == 0
    settings = Settings.from_environ(os.environ)
    assert settings.api_keys == ("from-env", "phonefarm", "flag")
    assert settings.max_body_bytes == 4096
    assert settings.body_timeout is None
    assert settings.openapi is True
    assert settings.read is True
    assert settings.access_log is False
    assert (settings.log_format, settings.log_level) == ("json", "warning")
    assert settings.create_tables is True  # memory:// lives in the serving process
    assert recorded["log_level"] == "warning"


def test_without_proxy_options_uvicorn_trusts_no_forwarded_headers(
    recorded: dict[str, Any],
) -> None:
    assert cli.main(["serve", "--store", "memory://", "--api-key", "k"]) == 0
    assert recorded["proxy_headers"] is False
    assert recorded["root_path"] == ""
    assert (recorded["host"], recorded["port"], recorded["workers"]) == ("127.0.0.1", 8000, 1)


def test_the_recorder_leaves_no_variable_behind() -> None:
    """Runs after the tests above: serve's variables are as they were before them."""
    assert {name: os.environ.get(name) for name in ENVIRONMENT} == BEFORE
