"""The wrk check: a trivial HTTP/1.1 responder on a bare uvloop protocol (no ASGI, no
framework), answering every request with a fixed 200 JSON body as soon as its headers and
Content-Length bytes have arrived.

Driven with the same wrk command line and Lua script as every target, it shows how many
requests per second the load generator itself can produce and check: if that is far above the
targets' rates, wrk is not what limits them.

    python bench/trivial_server.py PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import cast

BODY = b'{"status":"upserted","account_id":"x","snapshot_id":"x","strategy_version":1}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            start = head.find(b"content-length:")
            length = 0
            if start >= 0:
                line_end = head.find(b"\r\n", start)
                length = int(head[start + 15 : line_end if line_end >= 0 else None])
            total = end + 4 + length
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            answers += 1
        self.buffer = buffer
        if answers:
            self.transport.write(RESPONSE * answers)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port = int(sys.argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(main(port))
        else:
            uvloop.run(main(port))
