"""The loads: wrk with ``bench/upsert.lua`` for the measured runs, and a small keep-alive
HTTP/1.1 client in Python for readiness, seeding the stale load, and the soak."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
from dataclasses import dataclass
from typing import Any

from .common import BENCH, TOKEN, body, pinned


@dataclass
class Wrk:
    """wrk running upsert.lua against one server; ``expect`` is the status every 200 should
    carry (``upserted`` or ``ignored_stale``)."""

    port: int
    path: str
    connections: int
    expect: str
    accounts: int
    cpu: int | None

    def command(self, seconds: float, base: int) -> list[str]:
        """The load for ``seconds``; its versions count up from ``base``."""
        cmd = ["wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s"]
        cmd += ["--timeout", "30s", "-s", str(BENCH / "upsert.lua")]
        cmd += [f"http://127.0.0.1:{self.port}{self.path}", "--", str(base)]
        cmd += [str(self.accounts), TOKEN, "1", self.expect]
        return pinned(self.cpu, cmd)

    def run(self, seconds: float, base: int) -> tuple[dict[str, Any], float]:
        """One run: its figures (upsert.lua's ``BENCH_JSON``) and the CPU seconds wrk used."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = self.command(seconds, base)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        for line in done.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                return json.loads(line.removeprefix("BENCH_JSON ")), used
        raise RuntimeError(f"wrk printed no figures: {done.stdout[-300:]} {done.stderr[-300:]}")


class Client:
    """One keep-alive HTTP/1.1 connection that POSTs upserts: small enough that one Python
    process drives several servers."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, data: bytes) -> tuple[int, dict[str, Any]]:
        """Send one upsert; its status and JSON answer. Raises on a transport failure."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(self.head + b"%d\r\n\r\n" % len(data) + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        content = await reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").strip() == "close":
            self.close()
        return int(lines[0].split()[1]), json.loads(content or b"{}")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
        self.streams = None


async def send(port: int, path: str, versions: dict[str, int], expect: str = "") -> None:
    """Upsert each account at its version over 8 connections: each answer must be 200, with
    the status ``expect`` if one is given."""
    items = list(versions.items())

    async def part(first: int) -> None:
        client = Client(port, path)
        try:
            for account, version in items[first::8]:
                status, answer = await client.post(body(account, version))
                if status != 200 or expect not in ("", answer.get("status")):
                    raise RuntimeError(f"upserting {account} answered {status}: {answer}")
        finally:
            client.close()

    await asyncio.wait_for(asyncio.gather(*map(part, range(8))), 300)
