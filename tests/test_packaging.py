"""Both distributions build (sdist, and a wheel from that sdist) and install from a folder of
wheels into fresh virtual environments, as a user outside a clone installs them:

- ``pip install 'runtime-snapshot-mount[sqlalchemy]'``, then the plugin's ``[postgresql,mysql]``;
- ``pip install runtime-snapshot-mount-sqlalchemy`` alone (the core comes with it).

Each environment then runs the command line and imports the store. The folder of wheels is an
extra source (``--find-links``); everything else comes from the package index. Select with
``-m packaging``; it takes a minute or two. Without a reachable index it skips, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import runtime_snapshot_mount

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "sqlalchemy"
VERSION = runtime_snapshot_mount.__version__


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` outside this test's own environment; fail with its output if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def fresh_venv(path: Path) -> Path:
    """A new virtual environment at ``path``; returns its ``bin`` (``Scripts``) directory."""
    run(sys.executable, "-m", "venv", path)
    return path / ("Scripts" if os.name == "nt" else "bin")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with both sdists and the wheels built from them."""
    base = tmp_path_factory.mktemp("packaging")
    builder = fresh_venv(base / "builder")
    installed = subprocess.run(
        [str(builder / "python"), "-m", "pip", "install", "--quiet", "build"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if installed.returncode != 0:
        reason = f"cannot install 'build' from the package index: {installed.stderr[-300:]}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason} (CI=true: the packaging test must run)", pytrace=False)
        pytest.skip(reason)
    folder = base / "wheels"
    for project in (ROOT, PLUGIN):
        run(builder / "python", "-m", "build", "--outdir", folder, project)
    return folder


def test_both_distributions_build_an_sdist_and_a_wheel_with_the_license_and_one_version(
    wheels: Path,
) -> None:
    names = sorted(path.name for path in wheels.iterdir())
    assert names == [
        f"runtime_snapshot_mount-{VERSION}-py3-none-any.whl",
        f"runtime_snapshot_mount-{VERSION}.tar.gz",
        f"runtime_snapshot_mount_sqlalchemy-{VERSION}-py3-none-any.whl",
        f"runtime_snapshot_mount_sqlalchemy-{VERSION}.tar.gz",
    ]
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            files = archive.namelist()
            metadata = next(name for name in files if name.endswith(".dist-info/METADATA"))
            text = archive.read(metadata).decode()
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in files)
        assert "License-Expression: MIT" in text
        if wheel.name.startswith("runtime_snapshot_mount-"):  # every module, the kit's too
            source = ROOT / "src"
            modules = {path.relative_to(source).as_posix() for path in source.rglob("*.py")}
            assert modules <= set(files), sorted(modules - set(files))
        if wheel.name.startswith("runtime_snapshot_mount_sqlalchemy"):
            requirements = [
                Requirement(line.partition(":")[2].strip())
                for line in text.splitlines()
                if line.startswith("Requires-Dist:")
            ]
            core = [r for r in requirements if r.name == "runtime-snapshot-mount" and not r.marker]
            assert len(core) == 1 and core[0].specifier.contains(VERSION, prereleases=True)
    for sdist in wheels.glob("*.tar.gz"):
        with tarfile.open(sdist) as archive:
            members = {name.partition("/")[2] for name in archive.getnames()}
        assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= members
    for readme in (ROOT / "README.md", PLUGIN / "README.md"):
        links = re.findall(r"\]\(([^)]+)\)", readme.read_text(encoding="utf-8"))
        assert not [link for link in links if link.startswith("..") or "SPEC.md" in link]


WORKS = textwrap.dedent(
    """
    import asyncio, sys
    from runtime_snapshot_mount import Snapshot, __version__
    from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore

    async def main(url):
        store = SQLAlchemyStore(url)
        await store.store_create_tables()
        snapshot = Snapshot.from_json({
            "account_id": "a1", "ugc_account_id": "u1", "snapshot_id": "s1",
            "strategy_version": 7, "content_hash": "h",
            "strategy_synced_at": "2026-03-22T08:30:00.000Z", "personality": {"tone": "calm"},
        })
        assert (await store.store_upsert(snapshot)).applied
        assert await store.store_get("a1") == snapshot
        await store.store_close()
        print(__version__)

    asyncio.run(main(sys.argv[1]))
    """
)


def assert_it_works(bin_dir: Path, directory: Path) -> None:
    """The command line and the store, from the installed wheels (not from this checkout)."""
    cli = bin_dir / "runtime-snapshot-mount"
    assert run(cli, "--version").stdout.strip() == f"runtime-snapshot-mount {VERSION}"
    store = f"sqlite:///{directory / 'snapshots.db'}"
    run(cli, "create-tables", "--store", store)
    run(cli, "create-tables", "--store", store)
    where = run(bin_dir / "python", "-c", "import runtime_snapshot_mount as m; print(m.__file__)")
    assert str(ROOT) not in where.stdout
    printed = run(bin_dir / "python", "-c", WORKS, f"sqlite:///{directory / 'store.db'}")
    assert printed.stdout.strip() == VERSION


def test_the_core_with_the_sqlalchemy_extra_then_the_drivers_install_and_work(
    wheels: Path, tmp_path: Path
) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip = (bin_dir / "python", "-m", "pip", "install", "--quiet", "--find-links", wheels)
    run(*pip, "runtime-snapshot-mount[sqlalchemy]")
    assert_it_works(bin_dir, tmp_path)
    run(*pip, "runtime-snapshot-mount-sqlalchemy[postgresql,mysql]")
    drivers = (
        "import asyncpg, psycopg, pymysql, asyncmy\n"
        "from runtime_snapshot_mount_sqlalchemy import SQLAlchemyStore\n"
        "for url in ('postgresql+asyncpg://u@h/d', 'postgresql+psycopg://u@h/d',\n"
        "            'mysql+asyncmy://u@h/d', 'mysql+pymysql://u@h/d'):\n"
        "    print(SQLAlchemyStore(url).engine.dialect.driver)\n"
    )
    printed = run(bin_dir / "python", "-c", drivers).stdout.split()
    assert printed == ["asyncpg", "psycopg", "asyncmy", "pymysql"]


def test_the_plugin_alone_brings_the_core_and_works(wheels: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip = (bin_dir / "python", "-m", "pip", "install", "--quiet", "--find-links", wheels)
    run(*pip, "runtime-snapshot-mount-sqlalchemy")
    assert_it_works(bin_dir, tmp_path)
