"""Checks of the bench itself (not of the product's speed): ``.venv/bin/pytest bench``."""

from __future__ import annotations

import json
from pathlib import Path

from runtime_snapshot_mount_sqlalchemy import snapshot_table
from sqlalchemy import MetaData, create_engine
from starlette.testclient import TestClient

from bench import apps, report
from bench.common import PATH, account_id, body
from bench.report import Run
from bench.servers import BY_NAME, TARGETS


def test_every_ratio_has_its_ceiling_in_the_same_run_before_it() -> None:
    assert len(BY_NAME) == len(TARGETS)
    order = [t.name for t in TARGETS]
    for t in TARGETS:
        if t.ceiling:
            assert order.index(t.ceiling) < order.index(t.name), t.name
            assert t.load == BY_NAME[t.ceiling].load or t.ceiling == "ceiling-http", t.name


def test_the_sqlite_ceiling_keeps_the_stale_rule_on_the_plugins_table(tmp_path: Path) -> None:
    path = tmp_path / "ceiling.db"
    engine = create_engine(f"sqlite:///{path}")
    snapshot_table(MetaData(), "snapshots").create(engine)
    engine.dispose()
    with TestClient(apps.sqlite_ceiling(str(path), "snapshots")) as client:
        answers = [
            client.post(PATH, content=body(account_id(1), version)).json()["status"]
            for version in (5, 4, 5, 6)
        ]
        later = body(account_id(1), 6, strategy_synced_at="2026-03-22T08:30:00.000001Z")
        answers.append(client.post(PATH, content=later).json()["status"])
    assert answers == ["upserted", "ignored_stale", "upserted", "upserted", "upserted"]


def test_the_report_divides_medians_and_judges_the_goal() -> None:
    def run(rps: float) -> Run:
        figures = [rps, 1.0, 2.0, 0, 0, 100.0, -1.0, 0.0]
        return dict(zip(report.FIGURES, figures, strict=True)) | {"wrk": 0.1}

    runs = {"ceiling-http": [run(1000), run(900), run(1100)], "memory": [run(950), run(920)]}
    table = report.rows([BY_NAME["ceiling-http"], BY_NAME["memory"]], runs, 32)
    assert table[1][-2:] == ["0.94 of ceiling-http", ">= 0.92: meets"]
    assert report.markdown(table).count("\n") == 3
    assert json.loads(body(account_id(3), 9))["account_id"] == "account_user000000003"


def test_the_readme_summary_needs_every_target_and_replaces_only_its_part() -> None:
    def run(rps: float, non_200: float = 0) -> Run:
        figures = [rps, 1.0, 2.0, non_200, 0, 100.0, -1.0, 0.0]
        return dict(zip(report.FIGURES, figures, strict=True)) | {"wrk": 0.1}

    runs = {t.name: [run(1000)] for t in TARGETS}
    runs["memory-stale"] = [run(800)]
    runs["sqlite@64"] = [run(900, non_200=3)]
    lines = report.summary(runs)
    assert len(lines) == 2 + len(report.SUMMARY)
    assert "| 1.00 / 0.80 | ≥ 0.92 |" in lines[2]
    assert lines[5].endswith("| 3 non-200 | 0 non-200 |")
    assert lines[-1].endswith("| 1.00 | reported |")
    del runs["host-async-stale"]
    assert report.summary(runs) == []
    text = f"intro\n{report.SUMMARY_START}\nold\n{report.SUMMARY_END}\nrest\n"
    assert report.replace_between(text, ["a", "b"]) == (
        f"intro\n{report.SUMMARY_START}\na\nb\n{report.SUMMARY_END}\nrest\n"
    )
