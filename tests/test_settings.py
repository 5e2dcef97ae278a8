"""The settings declared once: the docs' table, the command line and the environment all
come from the same declarations, and agree."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from runtime_snapshot_mount import ConfigurationError
from runtime_snapshot_mount.server.settings import (
    ENVIRONMENT,
    ServeOptions,
    Settings,
    add_arguments,
    from_arguments,
    markdown_table,
    options,
)

DEPLOYMENT = Path(__file__).parents[1] / "docs" / "deployment.md"
GENERATED = re.compile(r"<!-- options: generated[^\n]*-->\n(.*?)<!-- options: end -->", re.S)


def test_the_deployment_docs_show_the_generated_option_table() -> None:
    found = GENERATED.search(DEPLOYMENT.read_text(encoding="utf-8"))
    assert found is not None, "docs/deployment.md lost its generated option table"
    assert found.group(1) == markdown_table(), (
        "regenerate the table: python -m runtime_snapshot_mount.server.settings"
    )


def test_every_option_has_a_flag_or_a_variable_and_is_in_the_table() -> None:
    table = markdown_table()
    for cls in (Settings, ServeOptions):
        for field, spec in options(cls):
            assert spec.flag or spec.env, field.name
            assert (f"`{spec.flag}`" if spec.flag else f"`{spec.env[0]}`") in table


def test_the_environment_lists_every_variable_the_settings_write() -> None:
    written = Settings(api_keys=("k",)).to_environ()
    assert set(written) <= set(ENVIRONMENT)
    assert Settings.from_environ(written) == Settings(api_keys=("k",))


@pytest.mark.parametrize(
    ("flag", "variable", "text", "value"),
    [
        ("--max-body-bytes", "RSM_MAX_BODY_BYTES", "2048", 2048),
        ("--body-timeout", "RSM_BODY_TIMEOUT", "2.5", 2.5),
        ("--body-timeout", "RSM_BODY_TIMEOUT", "0", None),
        ("--log-level", "RSM_LOG_LEVEL", "WARNING", "warning"),
        ("--log-format", "RSM_LOG_FORMAT", "json", "json"),
        ("--store", "RSM_STORE", "memory://", "memory://"),
    ],
)
def test_a_flag_and_its_variable_read_the_same_text_alike(
    flag: str, variable: str, text: str, value: object
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, "serve")
    from_flag, _ = from_arguments(parser.parse_args([flag, text]), {"RSM_API_KEYS": "k"})
    from_variable = Settings.from_environ({"RSM_API_KEYS": "k", variable: text})
    name = variable.removeprefix("RSM_").lower()
    assert getattr(from_flag, name) == getattr(from_variable, name) == value


def test_a_bad_flag_value_is_named_by_its_flag() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, "serve")
    args = parser.parse_args(["--port", "99999"])
    with pytest.raises(ConfigurationError, match=r"--port must be a port number in 0-65535"):
        from_arguments(args, {"RSM_API_KEYS": "k"})


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("max_body_bytes", 0, "--max-body-bytes (RSM_MAX_BODY_BYTES) must be at least 1"),
        ("body_timeout", -1.0, "--body-timeout (RSM_BODY_TIMEOUT) must be a number of seconds"),
        ("log_format", "xml", "--log-format (RSM_LOG_FORMAT) must be a log format"),
    ],
)
def test_settings_made_in_python_are_checked_like_the_environments(
    field: str, value: object, named: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        Settings(api_keys=("k",), **{field: value})
