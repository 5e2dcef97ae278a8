"""Reading a request: the headers the endpoints use, and the body under its size limit."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

__all__ = ["BodyTooLarge", "ClientDisconnect", "RequestHeaders", "is_json", "read_body"]


class BodyTooLarge(Exception):
    """The body is (or declares itself) larger than the limit."""


class RequestHeaders:
    """The request headers the endpoints read, found in one pass over the ASGI scope (the
    first of each wins)."""

    __slots__ = ("authorization", "content_length", "content_type", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.authorization = self.content_type = self.content_length = self.request_id = ""
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = self.authorization or value.decode("latin-1")
            elif key == b"content-type":
                self.content_type = self.content_type or value.decode("latin-1")
            elif key == b"content-length":
                self.content_length = self.content_length or value.decode("latin-1")
            elif key == b"x-request-id":
                self.request_id = self.request_id or value.decode("latin-1")

    def bearer_token(self) -> str | None:
        """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive), or None."""
        scheme, _, token = self.authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token


def is_json(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters ignored)."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _declares_more_than(content_length: str, limit: int) -> bool:
    """True when a Content-Length value is a decimal number greater than ``limit``."""
    if not (content_length.isdigit() and content_length.isascii()):
        return False  # absent or malformed: the streamed size decides
    digits = content_length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_body(receive: Receive, headers: RequestHeaders, limit: int) -> bytes:
    """The whole body, refused (:class:`BodyTooLarge`) as soon as it declares or streams more
    than ``limit`` bytes; :class:`ClientDisconnect` if the client goes away first."""
    if _declares_more_than(headers.content_length, limit):
        raise BodyTooLarge
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
