"""The standalone factory under every common ASGI server, as docs/deployment.md runs it.

Each server starts ``runtime_snapshot_mount.standalone:create_app_from_env`` (or, for daphne,
which cannot call a factory, ``runtime_snapshot_mount.asgi:app``) on a SQLite file, answers the
API page's example request byte for byte, and exits with the documented status on SIGTERM.
"""

from __future__ import annotations

import re
import signal
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from rsm_support import (
    EXAMPLE_APPLIED,
    UPSERT_URL,
    clean_env,
    compact,
    example,
    free_port,
    stop,
    wait_until_listening,
)
from standalone_support import python_module, start
from support_sqlalchemy import EXAMPLES

pytestmark = pytest.mark.sqlite

FACTORY = "runtime_snapshot_mount.standalone:create_app_from_env"
APP_OBJECT = "runtime_snapshot_mount.asgi:app"
EXAMPLE_BODY = (EXAMPLES / "example-request.json").read_bytes()
HEADERS = {"Authorization": "Bearer k", "Content-Type": "application/json"}
POSIX_ONLY = pytest.mark.skipif(
    sys.platform == "win32", reason="gunicorn and uvicorn-worker run on POSIX only"
)


def uvicorn_sigterm_status() -> int:
    """uvicorn 0.29 and later raise the stop signal again once shut down, so a single process
    ends by SIGTERM (status -15 here, 143 in a shell); before 0.29 it exited 0."""
    major, minor = (int(part) for part in re.findall(r"\d+", version("uvicorn"))[:2])
    return -signal.SIGTERM if (major, minor) >= (0, 29) else 0


def command(server: str, port: int) -> list[str]:
    """The command line docs/deployment.md gives for ``server``, on ``port``."""
    bind = f"127.0.0.1:{port}"
    commands = {
        "uvicorn": ["uvicorn", "--factory", FACTORY, "--port", str(port), "--no-access-log"],
        "gunicorn": [
            *("gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b", bind),
            *("--graceful-timeout", "20", f"{FACTORY}()"),
        ],
        "hypercorn": ["hypercorn", "-b", bind, f"{FACTORY}()"],
        "granian": [
            *("granian", "--interface", "asgi", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), FACTORY),
        ],
        "daphne": ["daphne", "-b", "127.0.0.1", "-p", str(port), APP_OBJECT],
    }
    return python_module(*commands[server])


SERVERS = [
    pytest.param("uvicorn", uvicorn_sigterm_status(), id="uvicorn"),
    pytest.param("gunicorn", 0, id="gunicorn", marks=POSIX_ONLY),
    pytest.param("hypercorn", 0, id="hypercorn"),
    pytest.param("granian", 0, id="granian"),
    pytest.param("daphne", 0, id="daphne"),
]


@pytest.mark.parametrize(("server", "status"), SERVERS)
def test_the_server_answers_the_api_example_and_stops_on_sigterm(
    tmp_path: Path, server: str, status: int
) -> None:
    port = free_port()
    env = clean_env(RSM_STORE=f"sqlite:///{tmp_path / 'snapshots.db'}", RSM_API_KEYS="k")
    process, log = start(command(server, port), tmp_path, env)
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            applied = client.post(UPSERT_URL, content=EXAMPLE_BODY, headers=HEADERS)
            assert applied.status_code == 200, log.read_text()
            assert applied.content == compact(EXAMPLE_APPLIED)
            bad = client.post(UPSERT_URL, json=example(strategy_version=0), headers=HEADERS)
            assert bad.status_code == 422
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == status, log.read_text()
    finally:
        stop(process)


@POSIX_ONLY
def test_metrics_under_gunicorn_count_every_upsert_of_every_worker(tmp_path: Path) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set before gunicorn starts, ``/metrics`` sums the
    upserts of both workers, whichever worker answers the scrape."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = clean_env(
        RSM_STORE=f"sqlite:///{tmp_path / 'snapshots.db'}",
        RSM_API_KEYS="k",
        RSM_METRICS="true",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    process, log = start(command("gunicorn", port), tmp_path, env)
    try:
        wait_until_listening(process, port, log)
        close = {**HEADERS, "Connection": "close"}  # a new connection each: either worker
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for version_number in range(1, 21):
                body = example(strategy_version=version_number)
                assert client.post(UPSERT_URL, json=body, headers=close).status_code == 200
            scrapes = [client.get("/metrics", headers={"Connection": "close"}) for _ in range(6)]
    finally:
        stop(process)
    applied = 'runtime_snapshot_mount_requests_total{outcome="applied",status="200"} 20.0'
    for scrape in scrapes:
        assert scrape.status_code == 200
        assert applied in scrape.text, scrape.text
