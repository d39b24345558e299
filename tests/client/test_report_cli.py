"""``splitmq report`` run through its own argparse parser: tables, JSON, exports, plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from splitmq.client.report_cli import add_parser, format_table
from splitmq.client.results_db import ResultsDB
from tests.client.records_fixtures import (
    BASE_MS,
    failed_record,
    ok_record,
    sample_records,
    sample_telemetry,
    stage0,
)
from tests.helpers import needs


def report(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="splitmq")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    code: int = args.run(args)
    return code


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "results.db"
    with ResultsDB(path) as db:
        db.record_many(sample_records())
        db.record_many([ok_record("other-0", BASE_MS + 10_000, [stage0()], 5, run="bench")])
        db.record_samples(sample_telemetry())
    return path


def row(output: str, label: str) -> list[str]:
    """The cells of the first table row starting with ``label``."""
    for line in output.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_table_of_one_run(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report("--db", str(db_path), "--run", "demo") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"splitmq report: {db_path}, run demo\n")
    assert "2023-11-14 22:13:20.000 UTC to 2023-11-14 22:13:20.900 UTC" in out
    # run, requests, ok, failed, retried, extra attempts, recovered, span, throughput
    assert row(out, "demo") == ["7", "5", "2", "2", "2", "1", "0.90", "5.56"]
    assert row(out, "overloaded") == ["1"] and row(out, "deadline") == ["1"]
    header = next(line for line in out.splitlines() if line.startswith("latency (ms)"))
    assert header.split()[2:] == ["n", "mean", "p50", "p95", "p99", "min", "max"]
    assert row(out, "end to end") == ["5", "128.0", "120.0", "188.0", "197.6", "80.0", "200.0"]
    # stage, n, transfer p50/p95, queueing p50/p95, compute p50/p95, served by
    assert row(out, "1") == [
        "5",
        "8.0",
        "8.0",
        "1.0",
        "1.0",
        "50.0",
        "124.0",
        "laptop-1:1",
        "phone-1:4",
    ]
    assert row(out, "to client") == ["5", "9.0", "9.0", "-", "-", "-", "-"]
    assert "synchronised clocks" in out
    # agent, stages, share, requests, J/inference, energy, battery start/end, telemetry J
    assert row(out, "rpi-1") == ["5", "50.0", "5", "0.5000", "2.5000", "79.5", "78.5", "4.00"]
    assert row(out, "all devices") == ["10", "5", "0.9000", "4.5000"]
    assert row(out, "mean per request") == ["3,429", "29", "3,457", "4,000", "1,040", "5,040"]
    assert row(out, "end to end latency") == ["5", "1.20"]
    assert row(out, "energy (J)") == ["3", "1.50"]
    assert "no request carries the parts of its prediction (per stage)" in out
    assert "other-0" not in out and "bench" not in out


def test_without_a_run_every_run_is_reported(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report("--db", str(db_path)) == 0
    out = capsys.readouterr().out
    assert ", runs demo, bench\n" in out
    assert row(out, "demo, bench")[:3] == ["8", "6", "2"]


def test_json_instead_of_the_table(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report("--db", str(db_path), "--run", "demo", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency_ms"]["p95"] == pytest.approx(188.0)
    assert data["stages"][1]["compute_ms"]["p50"] == 50.0
    assert [a["agent_id"] for a in data["agents"]] == ["laptop-1", "phone-1", "rpi-1"]


def test_report_from_an_export_matches_the_database(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "demo.jsonl"
    assert report("--db", str(db_path), "--run", "demo", "--export-jsonl", str(export)) == 0
    from_db = capsys.readouterr().out
    assert f"exported 7 requests to {export}" in from_db
    assert report("--jsonl", str(export)) == 0
    from_export = capsys.readouterr().out
    assert from_export.startswith(f"splitmq report: {export}, runs demo\n")

    def body(text: str) -> list[str]:
        lines = text.splitlines()
        heading = next(i for i, line in enumerate(lines) if line.startswith("splitmq report:"))
        return lines[heading + 1 :]

    assert body(from_export) == body(from_db)
    assert row(from_export, "rpi-1")[-3:] == ["79.5", "78.5", "4.00"]  # telemetry came along


@needs("matplotlib", "client")
def test_plots_are_written_and_named(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "plots"
    assert report("--db", str(db_path), "--run", "demo", "--plots", str(out_dir), "--json") == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the note goes to stderr, so stdout stays JSON
    assert f"plots in {out_dir}/: latency_distribution.png" in captured.err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "battery.png",
        "latency_distribution.png",
        "latency_over_time.png",
        "stage_breakdown.png",
    ]


def test_unknown_run_lists_the_runs(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report("--db", str(db_path), "--run", "nope") == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert report("--db", str(db_path), "--run", "nope") == 2
    assert "runs: 'demo', 'bench'" in capsys.readouterr().err


def test_missing_database_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.db"
    assert report("--db", str(missing)) == 2
    assert f"no results database at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_empty_and_all_failed_databases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    ResultsDB(empty).close()
    assert report("--db", str(empty)) == 0
    assert "no requests to report" in capsys.readouterr().out
    failed = tmp_path / "failed.db"
    with ResultsDB(failed) as db:
        db.record(failed_record("f", BASE_MS, BASE_MS + 40, "overloaded", attempts=3))
    assert report("--db", str(failed)) == 0
    out = capsys.readouterr().out
    assert "no successful request" in out
    assert row(out, "demo") == ["1", "0", "1", "1", "2", "0", "0.04", "0.00"]
    assert "end to end" not in out


def test_format_table_aligns_columns() -> None:
    table = format_table(["name", "size (B)"], [["a", "1"], ["longer", "1,000"], ["short"]])
    assert table.splitlines() == [
        "name    size (B)",
        "----------------",
        "a              1",
        "longer     1,000",
        "short",
    ]
