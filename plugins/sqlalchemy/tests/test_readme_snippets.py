"""The READMEs' code blocks run as written.

Each ``python`` block of the root README and of the plugin's README is executed here, in a
fresh working directory, and the app it builds is driven over ASGI; the quick start's shell
lines are run against a real ``serve`` process. The other blocks are run elsewhere: the
install and wheel-building lines by ``tests/test_packaging.py``, the Alembic ``env.py``
fragment by ``test_sqlalchemy_alembic.py`` (whose ``env.py`` is checked to contain it), the
tox lines by CI itself (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from support_sqlalchemy import EXAMPLE_REQUEST, free_port
from test_sqlalchemy_alembic import ENV_PY

pytestmark = pytest.mark.sqlite

ROOT = Path(__file__).resolve().parents[3]
UPSERTED = {
    "status": "upserted",
    "account_id": "account_user095916355",
    "snapshot_id": "snapshot-2026-03-22-001",
    "strategy_version": 7,
    "strategy_synced_at": "2026-03-22T08:30:00.000Z",
}


def blocks(readme: Path, language: str) -> list[str]:
    """The fenced code blocks of ``readme`` in ``language``, in order."""
    text = readme.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


ROOT_PYTHON = blocks(ROOT / "README.md", "python")
PLUGIN_PYTHON = blocks(ROOT / "plugins" / "sqlalchemy" / "README.md", "python")


def run_block(source: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Import one block as a module file in ``directory`` (its working directory too); returns
    the module's namespace."""
    monkeypatch.chdir(directory)
    path = directory / "readme_snippet.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("readme_snippet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_snippet", module)  # the ORM resolves annotations
    spec.loader.exec_module(module)
    return vars(module)


async def post(app: Any, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        headers = {"Authorization": f"Bearer {token}"}
        return await client.post(path, json=body, headers=headers)


def test_the_readmes_have_the_blocks_this_file_runs() -> None:
    assert len(ROOT_PYTHON) == 7
    assert len(PLUGIN_PYTHON) == 5
    compile(PLUGIN_PYTHON[3], "driver-path", "exec")  # the host engine's lines (no server here)
    assert "from runtime_snapshot_mount_sqlalchemy.migrations import alembic_options" in ENV_PY
    assert ENV_PY.count("**alembic_options(),") == 2  # offline and online
    assert PLUGIN_PYTHON[2].splitlines()[0] in ENV_PY


@pytest.mark.anyio
async def test_mounting_the_memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = run_block(ROOT_PYTHON[0], tmp_path, monkeypatch)["host"]
    body = {**EXAMPLE_REQUEST, "account_id": "acct-1"}
    response = await post(host, "/phonefarm/runtime-snapshots/upsert", "previous-key", body)
    assert response.status_code == 200 and response.json()["status"] == "upserted"
    response = await post(host, "/phonefarm/runtime-snapshots/upsert", "other", body)
    assert response.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    "source", [ROOT_PYTHON[1], PLUGIN_PYTHON[0]], ids=["root-readme", "plugin-readme"]
)
async def test_the_sqlalchemy_host_creates_its_tables_and_a_first_account(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = run_block(source, tmp_path, monkeypatch)
    response = await post(
        namespace["host"], "/phonefarm/runtime-snapshots/upsert", "secret", EXAMPLE_REQUEST
    )
    assert response.status_code == 200 and response.json() == UPSERTED
    unknown = {**EXAMPLE_REQUEST, "account_id": "nobody"}
    response = await post(
        namespace["host"], "/phonefarm/runtime-snapshots/upsert", "secret", unknown
    )
    assert response.status_code == 404
    assert (tmp_path / "host.db").exists()
    namespace["engine"].dispose()


@pytest.mark.anyio
async def test_a_uuid_keyed_host_stores_every_spelling_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore
    from sqlalchemy import insert

    from runtime_snapshot_mount import create_app

    namespace = run_block(ROOT_PYTHON[1] + "\n" + ROOT_PYTHON[2], tmp_path, monkeypatch)
    engine, user = namespace["engine"], uuid.uuid4()
    namespace["Base"].metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(namespace["User"]), [{"id": user, "is_active": True}])
    store = SQLAlchemyStore(engine, table=namespace["snapshots"])
    app = create_app(store, namespace["users"], api_keys=["secret"], entry_points=False)
    path = "/runtime-snapshots/upsert"
    assert (await post(app, path, "secret", EXAMPLE_REQUEST)).status_code == 404
    for spelling, version in ((str(user).upper(), 7), (user.hex, 6), (str(user), 8)):
        body = {**EXAMPLE_REQUEST, "account_id": spelling, "strategy_version": version}
        response = await post(app, path, "secret", body)
        assert response.status_code == 200 and response.json()["account_id"] == spelling
    stored = await store.store_get(str(user))
    assert stored is not None and stored.strategy_version == 8
    assert await store.store_get(user.hex) is None
    engine.dispose()


@pytest.mark.anyio
async def test_a_host_conversion_decides_which_ids_name_a_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import insert

    namespace = run_block(PLUGIN_PYTHON[1], tmp_path, monkeypatch)
    engine, accounts, user = namespace["engine"], namespace["accounts"], uuid.uuid4()
    namespace["Base"].metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(namespace["User"]), [{"id": user, "is_active": True}])
    found = await accounts.get_account(user.hex.upper(), None)
    assert found is not None and found.account_id == str(user)
    assert await accounts.get_account(str(user), None) is None  # dashes: not the farm's form
    engine.dispose()


@pytest.mark.anyio
async def test_a_host_building_the_app_in_its_lifespan_imports_without_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import never fails on configuration; the start-up does, naming the empty key
    list; with the setting present the mounted app answers the example."""
    from runtime_snapshot_mount import ConfigurationError

    monkeypatch.delenv("PHONEFARM_API_KEYS", raising=False)
    host = run_block(ROOT_PYTHON[3], tmp_path, monkeypatch)["host"]
    with pytest.raises(ConfigurationError, match="api_keys is empty"):
        async with host.router.lifespan_context(host):
            pass
    monkeypatch.setenv("PHONEFARM_API_KEYS", "current-key,previous-key")
    host = run_block(ROOT_PYTHON[3], tmp_path, monkeypatch)["host"]
    body = {**EXAMPLE_REQUEST, "account_id": "acct-1"}
    async with host.router.lifespan_context(host):
        response = await post(host, "/phonefarm/runtime-snapshots/upsert", "previous-key", body)
    assert response.status_code == 200 and response.json()["status"] == "upserted"


@pytest.mark.anyio
async def test_a_host_engine_opts_in_to_group_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime_snapshot_mount import create_app

    namespace = run_block(PLUGIN_PYTHON[4], tmp_path, monkeypatch)
    store = namespace["store"]
    app = create_app(store, api_keys=["secret"], accounts=[EXAMPLE_REQUEST["account_id"]])
    response = await post(app, "/runtime-snapshots/upsert", "secret", EXAMPLE_REQUEST)
    assert response.status_code == 200 and response.json() == UPSERTED
    assert store.writer is not None
    stored = await store.store_get(EXAMPLE_REQUEST["account_id"])
    assert stored is not None and stored.snapshot_id == EXAMPLE_REQUEST["snapshot_id"]
    await store.store_close()
    namespace["engine"].dispose()


@pytest.mark.anyio
async def test_the_prometheus_snippet_exports_what_the_app_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    host = run_block(ROOT_PYTHON[4], tmp_path, monkeypatch)["host"]
    body = {**EXAMPLE_REQUEST, "account_id": "acct-1"}
    assert (await post(host, "/phonefarm/runtime-snapshots/upsert", "key", body)).status_code == 200
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        scraped = await client.get("/metrics/")
    assert scraped.status_code == 200
    line = 'runtime_snapshot_mount_requests_total{outcome="applied",status="200"} 1.0'
    assert line in scraped.text


@pytest.mark.anyio
async def test_the_tenant_accounts_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = run_block(ROOT_PYTHON[5], tmp_path, monkeypatch)["app"]
    body = {**EXAMPLE_REQUEST, "account_id": "acct-1"}
    assert (await post(app, "/runtime-snapshots/upsert", "key-a", body)).status_code == 200
    assert (await post(app, "/runtime-snapshots/upsert", "key-b", body)).status_code == 404


def test_the_conformance_kit_snippet_passes(tmp_path: Path) -> None:
    (tmp_path / "test_my_store.py").write_text(ROOT_PYTHON[6], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_store.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d{2,} passed", done.stdout)


def test_the_quick_start_serves_the_example_and_show_prints_it(tmp_path: Path) -> None:
    """The quick start's serve, curl and show lines, as written, in a copy of the examples
    (only the port is moved off 8000, which other programs may hold)."""
    shell = blocks(ROOT / "README.md", "sh")
    setup = next(block for block in shell if "runtime-snapshot-mount serve" in block)
    requests = next(block for block in shell if block.startswith("curl "))
    serve_line = setup.split("&&")[-1].strip()
    assert serve_line.startswith(".venv/bin/runtime-snapshot-mount serve ")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    bin_dir = Path(sys.executable).parent
    port = free_port()

    def command(line: str) -> list[str]:
        words = shlex.split(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        if words[0].startswith(".venv/bin/"):
            words[0] = str(bin_dir / words[0].removeprefix(".venv/bin/"))
        return words

    server = subprocess.Popen(
        [*command(serve_line), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        curl_text, show_line = requests.split("\n#", 1)[0], requests.strip().splitlines()[-1]
        expected = json.loads(requests.split("\n# ", 1)[1].splitlines()[0])
        curl = command(textwrap.dedent(curl_text).replace("\\\n", " "))
        answered = subprocess.run(curl, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert json.loads(answered.stdout) == expected == UPSERTED
        shown = subprocess.run(command(show_line), cwd=tmp_path, capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["snapshot_id"] == "snapshot-2026-03-22-001"
    finally:
        server.terminate()
        server.wait(timeout=30)
