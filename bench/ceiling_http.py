"""The HTTP ceiling: a bare Starlette route on the best stack (see ``ceiling_server.py``).

It reads the body, parses it as JSON and answers the same-shaped JSON as an applied upsert,
with no authentication, no validation and no store: what Starlette on uvicorn costs per
request before the product does anything of its own.
"""

from __future__ import annotations

import json

from ceiling_server import UPSERT_PATH, answer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def upsert(request: Request) -> Response:
    return answer(json.loads(await request.body()), applied=True)


def create_app() -> Starlette:
    return Starlette(routes=[Route(UPSERT_PATH, upsert, methods=["POST"])])
