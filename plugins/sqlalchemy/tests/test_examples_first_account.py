"""The example hosts create what they need: their tables and, from ``PHONEFARM_ACCOUNTS``, a
first account, so the command in their docstrings accepts the API page's example as is (and a
restart adds nothing twice)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support_sqlalchemy import EXAMPLE_REQUEST
from test_sqlalchemy_examples import load_example

pytestmark = [pytest.mark.sqlite, pytest.mark.anyio]


@pytest.mark.parametrize(
    ("name", "scheme"),
    [("fastapi_sync_host", "sqlite"), ("fastapi_async_host", "sqlite+aiosqlite")],
)
async def test_the_documented_environment_serves_the_example(
    name: str, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = load_example(name)
    assert "PHONEFARM_ACCOUNTS=account_user095916355" in (host.__doc__ or "")
    monkeypatch.setenv("DATABASE_URL", f"{scheme}:///{tmp_path / 'host.db'}")
    monkeypatch.setenv("PHONEFARM_API_KEY", "secret")
    monkeypatch.setenv("PHONEFARM_ACCOUNTS", "account_user095916355")
    auth = {"Authorization": "Bearer secret"}
    for expected in ("upserted", "upserted"):  # the second start finds the account there
        app = host.app_from_environment()
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
                response = await client.post(
                    "/phonefarm/runtime-snapshots/upsert", json=EXAMPLE_REQUEST, headers=auth
                )
        assert response.status_code == 200 and response.json()["status"] == expected
