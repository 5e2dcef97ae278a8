"""A host's ``mypy --strict`` passes on the documented calls: the examples, and a SQLModel host
passing ``User.id`` and ``User.is_active`` (typed ``uuid.UUID`` and ``bool`` by SQLModel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sqlite

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.py")) + sorted(
    (ROOT / "examples" / "sqlmodel-host" / "src").rglob("*.py")
)
TYPED_HOST = Path(__file__).with_name("sqlmodel_typed_host.py")


def test_there_are_examples_to_check() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"fastapi_async_host.py", "fastapi_sync_host.py", "main.py", "models.py"} <= names


def test_mypy_strict_passes_on_the_examples_and_a_sqlmodel_host(
    request: pytest.FixtureRequest,
) -> None:
    pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    options = ["--cache-dir", str(pytest_cache.mkdir("mypy"))] if pytest_cache else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            *options,
            *map(str, EXAMPLES),
            str(TYPED_HOST),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
