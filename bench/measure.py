"""Measurement: process CPU and memory with psutil, and a py-spy profile read from the
speedscope file py-spy writes."""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .common import pinned

DATABASES = frozenset({"postgres", "mariadbd", "mysqld"})
PACKAGES = "runtime-snapshot-mount starlette fastapi uvicorn uvloop httptools pydantic SQLAlchemy"
PACKAGES += " asyncpg psycopg asyncmy"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (``--workers 2``)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                total += sum(process.cpu_times()[:2])
    return total


def database_cpu_seconds() -> float:
    """CPU time of the database servers' processes, plus what exited children of their main
    process (PostgreSQL backends of closed connections) used."""
    found = {p.pid: p for p in psutil.process_iter(["name", "ppid", "cpu_times"])}
    total = 0.0
    for process in found.values():
        times, parent = process.info["cpu_times"], found.get(process.info["ppid"])
        if process.info["name"] in DATABASES and times is not None:
            total += times.user + times.system
            if parent is None or parent.info["name"] not in DATABASES:
                total += times.children_user + times.children_system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0)


def wait_for_quiet(limit: float, max_wait: float) -> None:
    """Wait at most ``max_wait`` s until the machine uses less than ``limit`` of one core."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        if psutil.cpu_percent(interval=1) * psutil.cpu_count() / 100 < limit:
            return


def rss(pid: int) -> int:
    """A process's resident set in bytes; 0 once it has ended."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def machine() -> str:
    """The machine, the wrk and the packages, in one line."""
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    versions = [f"{name} {installed.get(name.lower(), '-')}" for name in PACKAGES.split()]
    return (
        f"{psutil.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {wrk.strip()}; {', '.join(versions)}"
    )


def record(pid: int, seconds: float, path: Path, cpu: int | None) -> None:
    """Sample ``pid`` and its subprocesses with py-spy into a speedscope file: the thread
    holding the interpreter lock, i.e. where the Python CPU time of all threads goes."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "200"]
    cmd += ["--duration", str(round(seconds)), "--format", "speedscope", "-o", str(path)]
    subprocess.run(pinned(cpu, cmd), capture_output=True, timeout=seconds + 60, check=True)


def where_time_goes(path: Path, top: int = 12) -> list[str]:
    """Lines summing up a speedscope profile: the share of the samples by package of the
    innermost frame, and the functions with the most self and total time."""
    data = json.loads(path.read_text())
    names = [f"{f['name']} ({package(f.get('file') or '')})" for f in data["shared"]["frames"]]
    own: collections.Counter[str] = collections.Counter()
    inside: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    stacks = [stack for profile in data["profiles"] for stack in profile["samples"] if stack]
    for stack in stacks:
        own[names[stack[-1]]] += 1
        packages[names[stack[-1]].rsplit("(", 1)[1][:-1]] += 1
        inside.update({names[index] for index in stack})

    def share(counts: list[tuple[str, int]]) -> str:
        return ", ".join(f"{name} {count / len(stacks):.0%}" for name, count in counts)

    product = [(k, v) for k, v in inside.most_common() if "(runtime_snapshot_mount" in k][:top]
    return [
        f"  {len(stacks)} samples of the thread holding the interpreter lock; by package: "
        + share(packages.most_common(8)),
        f"  most self time: {share(own.most_common(top))}",
        f"  the product's functions by total time (with callees): {share(product)}",
    ]


def package(file: str) -> str:
    """A source file's package: the folder after site-packages, src or the standard library."""
    parts = Path(file).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("site-packages", "src") or parts[i].startswith("python3."):
            return parts[i + 1].removesuffix(".py") if i + 1 < len(parts) else "?"
    return Path(file).parent.name or file
