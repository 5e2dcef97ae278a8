"""Logging of the standalone server: one format for every line, written off the event loop,
the access record per request, and the options that change them."""

from __future__ import annotations

import io
import json
import logging.config
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rsm_support import EXAMPLE_REQUEST, UPSERT_URL, free_port, stop, wait_until_listening
from standalone_support import COMMAND_SERVE, STORE_URL, lines, loopbound_env, start

from runtime_snapshot_mount import logging_setup
from runtime_snapshot_mount.logging_setup import ACCESS_LOGGER_NAME, DeferredQueueHandler
from runtime_snapshot_mount.operations import bind_request_id, log_access, unbind_request_id

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


def access_record() -> None:
    """The endpoint's access record for one applied upsert, as request ``req-1``."""
    bound = bind_request_id("req-1")
    try:
        log_access(SCOPE, 200, "applied", 0.00125)
    finally:
        unbind_request_id(bound)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured onto a string buffer; restored afterwards."""
    names = ["runtime_snapshot_mount", ACCESS_LOGGER_NAME, "uvicorn.error", "uvicorn.access"]
    saved = [(logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names]
    propagate = [logging.getLogger(n).propagate for n in names]
    logging.getLogger("uvicorn.error").handlers = [logging.NullHandler()]
    buffer = io.StringIO()
    yield buffer
    logging_setup.write_directly()
    for name, (handlers, level), flag in zip(names, saved, propagate, strict=True):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = handlers, flag
        logger.setLevel(level)


def written(buffer: io.StringIO) -> list[str]:
    logging_setup.write_directly()  # waits for the writer thread to write everything queued
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


def test_records_are_written_by_the_listener_thread_not_the_caller(
    stream: io.StringIO,
) -> None:
    writers: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writers.append(threading.current_thread().name)
            return super().write(text)

    recording = Recording()
    logging_setup.configure(stream=recording)
    handlers = logging.getLogger("runtime_snapshot_mount").handlers
    assert [type(handler) for handler in handlers] == [DeferredQueueHandler]
    logging.getLogger("runtime_snapshot_mount").warning("off the loop")
    assert "off the loop" in "".join(written(recording))
    assert writers and threading.main_thread().name not in writers


def test_an_exception_is_formatted_by_the_listener(stream: io.StringIO) -> None:
    logging_setup.configure(log_format="json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("runtime_snapshot_mount").exception("failed")
    (line,) = written(stream)
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_after_write_directly_records_are_still_written(stream: io.StringIO) -> None:
    logging_setup.configure(stream=stream)
    logging_setup.write_directly()
    logging.getLogger("runtime_snapshot_mount").warning("late")
    assert stream.getvalue().rstrip().endswith("late")


def test_uvicorn_log_config_is_a_valid_dict_config(stream: io.StringIO) -> None:
    config = logging_setup.uvicorn_log_config("warning", "json")
    logging.config.dictConfig(config)
    logger = logging.getLogger("uvicorn.error")
    assert logger.level == logging.WARNING
    formatter = logger.handlers[0].formatter
    assert isinstance(formatter, logging_setup.JsonFormatter)


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
    assert any("Finished server process" in message for message in messages)  # none lost


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
