"""The command line's exit statuses and its stop on SIGTERM, run as real processes."""

from __future__ import annotations

import signal
from importlib import metadata
from pathlib import Path

import pytest
from rsm_support import (
    COMMAND,
    assert_refused,
    clean_env,
    free_port,
    run_cli,
    stop,
    wait_until_listening,
)
from standalone_support import start

# -- --version and --help -------------------------------------------------------------


def test_version_prints_the_installed_version_and_exits_0(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"runtime-snapshot-mount {metadata.version('runtime-snapshot-mount')}"
    )


def test_serve_help_shows_every_default(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", cwd=tmp_path, env=clean_env(COLUMNS="400"))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for shown in [
        "(default: 127.0.0.1)",
        "(default: 8000)",
        "(default: 1)",
        "default sqlite:///runtime-snapshots.db]",
        "default 1048576]",
        "default 30]",
        "RSM_LOG_FORMAT; default text]",
        "RSM_LOG_LEVEL; default info]",
    ]:
        assert shown in text, shown


def test_show_help_names_its_exit_statuses(tmp_path: Path) -> None:
    result = run_cli("show", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Exit status 1" in " ".join(result.stdout.split())


# -- invalid option values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "word"),
    [
        ("--port", "99999", "port"),
        ("--port", "-1", "port"),
        ("--port", "eighty", "port"),
        ("--workers", "0", "workers"),
        ("--max-body-bytes", "ten", "max-body-bytes"),
        ("--body-timeout", "-3", "body-timeout"),
        ("--body-timeout", "nan", "body-timeout"),
        ("--log-format", "xml", "log-format"),
        ("--log-level", "loud", "log-level"),
    ],
)
def test_an_invalid_option_value_exits_2_with_one_line(
    tmp_path: Path, option: str, value: str, word: str
) -> None:
    result = run_cli("serve", "--api-key", "k", "--store", "memory://", option, value, cwd=tmp_path)
    assert_refused(result, 2, word)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_option_exits_2_with_one_line(tmp_path: Path) -> None:
    assert_refused(run_cli("serve", "--colour", cwd=tmp_path), 2, "--colour")


def test_no_subcommand_exits_2_with_one_line(tmp_path: Path) -> None:
    assert_refused(run_cli(cwd=tmp_path), 2, "command")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RSM_MAX_BODY_BYTES", "lots"),
        ("RSM_BODY_TIMEOUT", "soon"),
        ("RSM_OPENAPI", "maybe"),
        ("RSM_LOG_FORMAT", "xml"),
    ],
)
def test_an_invalid_environment_value_exits_2_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = clean_env(**{variable: value})
    result = run_cli("serve", "--api-key", "k", "--store", "memory://", cwd=tmp_path, env=env)
    assert_refused(result, 2, variable if variable != "RSM_LOG_FORMAT" else "log format")


def test_an_api_key_with_a_comma_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--api-key", "a,b", "--store", "memory://", cwd=tmp_path)
    assert_refused(result, 2, "comma")


# -- in-memory SQLite -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"])
def test_several_workers_on_an_in_memory_sqlite_database_exit_2(tmp_path: Path, url: str) -> None:
    result = run_cli("serve", "--api-key", "k", "--store", url, "--workers", "2", cwd=tmp_path)
    assert_refused(result, 2, "--workers", url)
    assert list(tmp_path.iterdir()) == []


# -- show creates nothing ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["typo.db", "missing/dir/typo.db"])
def test_show_on_a_missing_sqlite_file_exits_2_and_creates_nothing(
    tmp_path: Path, name: str
) -> None:
    result = run_cli("show", "account_x", "--store", f"sqlite:///{name}", cwd=tmp_path)
    assert_refused(result, 2, "no database file", name)
    assert list(tmp_path.iterdir()) == []


def test_show_on_a_missing_absolute_sqlite_file_exits_2_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "absent.db"
    result = run_cli("show", "account_x", "--store", f"sqlite:///{path}", cwd=tmp_path)
    assert_refused(result, 2, str(path))
    assert list(tmp_path.iterdir()) == []


def test_show_takes_the_store_from_rsm_store(tmp_path: Path) -> None:
    env = clean_env(RSM_STORE="sqlite:///from-environment.db")
    result = run_cli("show", "account_x", cwd=tmp_path, env=env)
    assert_refused(result, 2, "from-environment.db")


# -- SIGTERM and SIGINT ------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_before_any_request_exits_0_without_a_traceback(
    tmp_path: Path, signum: signal.Signals
) -> None:
    port = free_port()
    command = [*COMMAND, "serve", "--store", "memory://", "--port", str(port), "--api-key", "k"]
    process, log = start(command, tmp_path, clean_env())
    try:
        wait_until_listening(process, port, log)
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        stop(process)
    assert "Traceback" not in log.read_text()
