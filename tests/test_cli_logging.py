"""Logging of the standalone server: one format for every line, written off the event loop,
the access record per request, and the options that change them."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import logging.config
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rsm_support import (
    EXAMPLE_REQUEST,
    UPSERT_URL,
    clean_env,
    free_port,
    logging_restored,
    stop,
    wait_until_listening,
)
from standalone_support import COMMAND_SERVE, STORE_URL, lines, loopbound_env, start

from runtime_snapshot_mount.request.operations import bind_request_id, log_access, unbind_request_id
from runtime_snapshot_mount.server import logging_setup
from runtime_snapshot_mount.server.log_writer import BatchedLineHandler
from runtime_snapshot_mount.server.logging_setup import ACCESS_LOGGER_NAME

AUTH = {"Authorization": "Bearer k"}
ACCESS = {
    "method": "POST",
    "path": UPSERT_URL,
    "status": 200,
    "outcome": "applied",
    "duration_ms": 1.25,
    "request_id": "req-1",
}
SCOPE = {"type": "http", "method": "POST", "path": UPSERT_URL, "root_path": ""}
NAMES = ["runtime_snapshot_mount", ACCESS_LOGGER_NAME, "uvicorn", "uvicorn.error", "uvicorn.access"]


def access_record() -> None:
    """The endpoint's access record for one applied upsert, as request ``req-1``."""
    bound = bind_request_id("req-1")
    try:
        log_access(SCOPE, 200, "applied", 0.00125)
    finally:
        unbind_request_id(bound)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured onto a string buffer; the loggers restored, and the handlers the
    test's set-up made closed, afterwards."""
    with logging_restored(NAMES):
        logging.getLogger("uvicorn.error").handlers = [logging.NullHandler()]
        yield io.StringIO()


def written(buffer: io.StringIO) -> list[str]:
    logging_setup.flush()  # waits for the writer thread to write everything waiting
    return buffer.getvalue().splitlines()


def test_json_lines_carry_the_access_fields(stream: io.StringIO) -> None:
    logging_setup.configure(log_format="json", stream=stream)
    access_record()
    (line,) = written(stream)
    record: dict[str, Any] = json.loads(line)
    assert record["logger"] == ACCESS_LOGGER_NAME
    assert record["level"] == "info"
    assert record["time"].endswith("Z")
    assert {name: record[name] for name in ACCESS} == ACCESS


def test_text_access_line_reads_method_path_status_outcome_duration_and_id(
    stream: io.StringIO,
) -> None:
    logging_setup.configure(log_format="text", stream=stream)
    access_record()
    (line,) = written(stream)
    assert line.endswith(f"{ACCESS_LOGGER_NAME}: POST {UPSERT_URL} 200 applied 1.250ms [req-1]")


def test_uvicorns_loggers_get_the_same_format(stream: io.StringIO) -> None:
    logging_setup.configure(log_format="json", stream=stream)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
    (line,) = written(stream)
    assert json.loads(line)["message"] == "Started server process [7]"
    assert json.loads(line)["logger"] == "uvicorn.error"


def test_a_switched_off_uvicorn_access_log_stays_off(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").handlers = []
    logging_setup.configure(log_format="json", stream=stream)
    assert logging.getLogger("uvicorn.access").handlers == []


def test_no_access_log_drops_access_records_but_keeps_the_rest(stream: io.StringIO) -> None:
    logging_setup.configure(access_log=False, stream=stream)
    access_record()
    logging.getLogger("runtime_snapshot_mount").warning("kept")
    assert [line.endswith("kept") for line in written(stream)] == [True]


def test_the_log_level_filters_everything_but_the_access_log(stream: io.StringIO) -> None:
    logging_setup.configure(level="warning", stream=stream)
    logging.getLogger("runtime_snapshot_mount").info("dropped")
    access_record()
    (line,) = written(stream)
    assert "200 applied" in line


def test_lines_are_written_by_the_writer_thread_not_the_caller(stream: io.StringIO) -> None:
    writers: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writers.append(threading.current_thread().name)
            return super().write(text)

    recording = Recording()
    logging_setup.configure(stream=recording)
    handlers = logging.getLogger("runtime_snapshot_mount").handlers
    assert [type(handler) for handler in handlers] == [BatchedLineHandler]
    assert logging.getLogger(ACCESS_LOGGER_NAME).handlers == handlers
    logging.getLogger("runtime_snapshot_mount").warning("off the loop")
    access_record()
    assert "off the loop" in "".join(written(recording))
    assert writers and threading.current_thread().name not in writers


def test_an_exception_is_formatted_in_full(stream: io.StringIO) -> None:
    logging_setup.configure(log_format="json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("runtime_snapshot_mount").exception("failed")
    (line,) = written(stream)
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_logging_modules_switches_are_left_alone(stream: io.StringIO) -> None:
    switches = ["logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"]
    before = {name: getattr(logging, name, None) for name in switches}
    logging_setup.configure(stream=stream)
    assert {name: getattr(logging, name, None) for name in switches} == before
    # a server's own format (gunicorn's, hypercorn's) that prints the process id still works
    server = logging.getLogger("test.server")
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("[%(process)d] [%(thread)d] %(message)s"))
    server.addHandler(handler)
    try:
        server.warning("Running on http://127.0.0.1:8000")
    finally:
        server.removeHandler(handler)
    assert (
        output.getvalue()
        == f"[{os.getpid()}] [{threading.get_ident()}] Running on http://127.0.0.1:8000\n"
    )


def test_a_hosts_handler_on_the_access_logger_gets_the_record_too(
    stream: io.StringIO,
) -> None:
    logging_setup.configure(stream=stream)
    host: list[logging.LogRecord] = []

    class HostHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            host.append(record)

    handler = HostHandler()
    access = logging.getLogger(ACCESS_LOGGER_NAME)
    access.addHandler(handler)
    try:
        access_record()
    finally:
        access.removeHandler(handler)
    (record,) = host
    assert {name: getattr(record, name) for name in ACCESS} == ACCESS
    (line,) = written(stream)
    assert line.endswith("200 applied 1.250ms [req-1]")


def test_a_level_set_on_the_access_logger_afterwards_applies(stream: io.StringIO) -> None:
    logging_setup.configure(stream=stream)
    logging.getLogger(ACCESS_LOGGER_NAME).setLevel(logging.WARNING)
    access_record()
    assert written(stream) == []


def test_after_close_lines_are_still_written(stream: io.StringIO) -> None:
    logging_setup.configure(stream=stream)
    for handler in logging.getLogger("runtime_snapshot_mount").handlers:
        handler.close()
    logging.getLogger("runtime_snapshot_mount").warning("late")
    assert stream.getvalue().rstrip().endswith("late")


def test_log_config_is_one_valid_dict_config(stream: io.StringIO) -> None:
    logging.config.dictConfig(logging_setup.log_config("warning", "json", stream=stream))
    for name in ("uvicorn.error", "runtime_snapshot_mount"):
        logger = logging.getLogger(name)
        assert logger.level == logging.WARNING
        (handler,) = logger.handlers
        assert isinstance(handler, BatchedLineHandler)
        assert isinstance(handler.formatter, logging_setup.JsonFormatter)
    assert logging.getLogger(ACCESS_LOGGER_NAME).level == logging.INFO


# -- the served process -----------------------------------------------------------------


def serve_and_post(directory: Path, *options: str) -> tuple[list[str], list[str]]:
    """Serve on the lifecycle-checking store, post the example twice, stop the server;
    returns the log's lines and the request ids the answers carried."""
    port = free_port()
    command = [*COMMAND_SERVE, "--store", STORE_URL, "--port", str(port), "--api-key", "k"]
    process, log = start([*command, *options], directory, loopbound_env(directory))
    ids = []
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(2):
                response = client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH)
                assert response.status_code == 200
                ids.append(response.headers["x-request-id"])
    finally:
        stop(process)
    return list(lines(log)), ids


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_json_writes_only_json_lines_with_an_access_record_per_request(
    tmp_path: Path, workers: str
) -> None:
    log_lines, ids = serve_and_post(tmp_path, "--log-format", "json", "--workers", workers)
    records = [json.loads(line) for line in log_lines]  # every line, uvicorn's included
    loggers = {record["logger"] for record in records}
    assert {"uvicorn.error", "runtime_snapshot_mount"} <= loggers
    assert "uvicorn.access" not in loggers
    access = [record for record in records if record["logger"] == ACCESS_LOGGER_NAME]
    assert sorted(record["request_id"] for record in access) == sorted(ids)
    assert {(record["status"], record["method"]) for record in access} == {(200, "POST")}
    messages = [record["message"] for record in records]
    started = {m.replace("Started", "Finished") for m in messages if "Started server" in m}
    assert len(started) == int(workers)
    # none lost: a worker's last lines are written before uvicorn ends it with SIGTERM again
    assert started <= set(messages)


def test_serve_text_writes_an_access_line_with_the_request_id(tmp_path: Path) -> None:
    log_lines, ids = serve_and_post(tmp_path)
    access = [line for line in log_lines if f"{ACCESS_LOGGER_NAME}:" in line]
    assert len(access) == 2
    for line, request_id in zip(access, ids, strict=True):
        assert f"POST {UPSERT_URL} 200 applied" in line
        assert line.endswith(f"[{request_id}]")
    assert not any('"POST /runtime-snapshots/upsert HTTP/1.1"' in line for line in log_lines)


def test_serve_no_access_log_writes_no_access_line(tmp_path: Path) -> None:
    log_lines, _ = serve_and_post(tmp_path, "--no-access-log")
    assert not [line for line in log_lines if ACCESS_LOGGER_NAME in line]
    assert any("Application startup complete" in line for line in log_lines)


def test_serve_log_level_warning_hides_uvicorns_info_lines(tmp_path: Path) -> None:
    log_lines, _ = serve_and_post(tmp_path, "--log-level", "warning", "--no-access-log")
    assert not any("Application startup complete" in line for line in log_lines)
    assert any("every account id is accepted" in line for line in log_lines)


async def post_many(port: int, count: int, in_flight: int) -> list[str]:
    """Post the example ``count`` times, ``in_flight`` at once; the answers' request ids."""
    limits = httpx.Limits(max_connections=in_flight)
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(in_flight)

        async def post() -> str:
            async with gate:
                response = await client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH)
            assert response.status_code == 200
            return response.headers["x-request-id"]

        return list(await asyncio.gather(*(post() for _ in range(count))))


def test_serve_json_lines_parse_under_concurrency(tmp_path: Path) -> None:
    port = free_port()
    command = [*COMMAND_SERVE, "--store", STORE_URL, "--port", str(port), "--api-key", "k"]
    options = ["--log-format", "json", "--workers", "2"]  # two processes on one output
    process, log = start([*command, *options], tmp_path, loopbound_env(tmp_path))
    try:
        wait_until_listening(process, port, log)
        ids = asyncio.run(post_many(port, 600, in_flight=48))
    finally:
        stop(process)
    assert process.returncode == 0
    records = [json.loads(line) for line in lines(log)]  # every line whole, none torn
    access = [record for record in records if record["logger"] == ACCESS_LOGGER_NAME]
    assert sorted(record["request_id"] for record in access) == sorted(ids)


def test_serve_answers_while_nobody_reads_its_log_and_writes_every_line_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [*COMMAND_SERVE, "--store", "memory://", "--port", str(port), "--api-key", "k"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        unread = tmp_path / "the log is in the unread pipe"
        unread.touch()
        wait_until_listening(process, port, unread)
        # far more lines than the pipe holds, and nobody reads it: requests are answered all
        # the same, and lines wait in the server when SIGTERM comes
        ids = asyncio.run(post_many(port, 1500, in_flight=16))
        capacity = fcntl.fcntl(process.stderr.fileno(), fcntl.F_GETPIPE_SZ)
        process.send_signal(signal.SIGTERM)
        _, output = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 0
    assert len(output) > capacity
    text = output.decode()
    access = [line for line in text.splitlines() if f" {ACCESS_LOGGER_NAME}: " in line]
    assert sorted(line.rsplit(" [", 1)[1].rstrip("]") for line in access) == sorted(ids)
    assert "dropped" not in text
    assert "Finished server process" in text
