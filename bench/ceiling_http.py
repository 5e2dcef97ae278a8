"""Target (a), the HTTP ceiling: a bare Starlette route on the same server settings.

It reads the body, parses it as JSON and answers the same-shaped JSON as an applied upsert,
with no authentication, no validation and no store: what Starlette on uvicorn costs per
request before the product does anything of its own.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

UPSERT_PATH = "/runtime-snapshots/upsert"


async def upsert(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse(
        {
            "status": "upserted",
            "account_id": body["account_id"],
            "snapshot_id": body["snapshot_id"],
            "strategy_version": body["strategy_version"],
            "strategy_synced_at": body["strategy_synced_at"],
        }
    )


def create_app() -> Starlette:
    return Starlette(routes=[Route(UPSERT_PATH, upsert, methods=["POST"])])
