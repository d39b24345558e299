"""The results database: round trips, filters, telemetry, threads, schema, JSON lines."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest

from splitmq.client import results_db
from splitmq.client.records import AttemptRecord, RequestRecord, TelemetrySample
from splitmq.client.results_db import ResultsDB, ResultsDBError, record_from_json
from splitmq.wire import Battery, StagePrediction, TaskCandidate, Telemetry, TraceEntry
from tests.client.records_fixtures import (
    BASE_MS,
    failed_record,
    ok_record,
    sample_records,
    sample_telemetry,
    stage0,
    stage1,
)

FULL = RequestRecord(
    request_id="0f" * 16,
    model="mobilenet",
    sent_ms=BASE_MS + 0.25,
    finished_ms=BASE_MS + 98.125,
    ok=True,
    attempts=(
        AttemptRecord(0, ("rpi-1", "phone-1"), BASE_MS + 0.25, "overloaded", "queue full"),
        AttemptRecord(1, ("rpi-2", "phone-1"), BASE_MS + 20.5, "result"),
    ),
    version="2",
    variant="float16",
    deployment="mobilenet-7",
    epoch=4,
    error_code="overloaded",
    error_message="first attempt refused",
    bytes_sent=150_528,
    bytes_received=4_004,
    predicted_latency_ms=90.5,
    predicted_energy_j=1.25,
    predicted_stages=(
        StagePrediction(0, "rpi-2", 0.5, 0.0, 35.5),
        StagePrediction(1, "phone-1", 4.25, 1.5, 30.0),
    ),
    predicted_final_hop_ms=2.75,
    trace=(
        TraceEntry(0, "rpi-2", BASE_MS + 21, BASE_MS + 22, BASE_MS + 60, 150_528, 1, 65_536, 0.75),
        TraceEntry(1, "phone-1", BASE_MS + 64, BASE_MS + 64.5, BASE_MS + 95, 65_536, 1, 4004, 0.3),
    ),
    top=((281, 0.625), (282, 0.25)),
    run="bench",
    task="imagenet",
    accuracy=0.75,
    candidates=(
        TaskCandidate("mobilenet-small", "1", "int8", 0.5, None, 20.25, 0.125, "min_accuracy"),
        TaskCandidate("mobilenet", "2", "float16", 0.75, 0.875, 90.5, 1.25),
        TaskCandidate("resnet", "3", "float32", agreement=1.0, excluded="unavailable"),
    ),
)


def test_the_full_record_sets_every_field() -> None:
    # So the round trips below would notice a field that is not stored.
    for field in fields(RequestRecord):
        default = field.default if field.default is not MISSING else None
        assert getattr(FULL, field.name) not in (default, None, "", 0, ()), field.name


def test_every_record_field_has_a_place_in_the_schema() -> None:
    stored = set(results_db.REQUEST_COLUMNS) | set(results_db.CHILD_FIELDS)
    assert {f.name for f in fields(RequestRecord)} == stored


def test_round_trip_of_every_field() -> None:
    with ResultsDB.memory() as db:
        db.record(FULL)
        assert db.requests() == [FULL]


def test_round_trip_through_a_file_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsDB(path) as db:
        db.record_many(sample_records())
        db.record_telemetry(sample_telemetry()[0])
    with ResultsDB(path) as db:
        assert db.requests() == sample_records()
        assert db.telemetry() == [sample_telemetry()[0]]


def test_file_is_wal_and_schema_versioned(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    ResultsDB(path).close()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(results_db.SCHEMA_VERSION),)
    finally:
        connection.close()


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    ResultsDB(path).close()
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.close()
    with pytest.raises(ResultsDBError, match="schema version 99") as caught:
        ResultsDB(path)
    assert caught.value.path == str(path)


def test_a_version_1_file_is_brought_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsDB(path) as db:
        db.record_many(sample_records())
    connection = sqlite3.connect(path)
    with connection:  # as version 1 wrote it: no predicted parts, no task
        connection.execute("ALTER TABLE requests DROP COLUMN predicted_stages")
        connection.execute("ALTER TABLE requests DROP COLUMN predicted_final_hop_ms")
        connection.execute("ALTER TABLE requests DROP COLUMN task")
        connection.execute("ALTER TABLE requests DROP COLUMN accuracy")
        connection.execute("DROP TABLE task_candidates")
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    connection.close()
    with ResultsDB(path) as db:
        assert db.requests() == sample_records()
        db.record(FULL)
        assert db.requests(run="bench") == [FULL]


def test_a_version_2_file_gets_the_task_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsDB(path) as db:
        db.record_many(sample_records())
    connection = sqlite3.connect(path)
    with connection:  # as version 2 wrote it: no task, no accuracy
        connection.execute("ALTER TABLE requests DROP COLUMN task")
        connection.execute("ALTER TABLE requests DROP COLUMN accuracy")
        connection.execute("DROP TABLE task_candidates")
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    connection.close()
    with ResultsDB(path) as db:
        assert db.requests() == sample_records()
        served = replace(FULL, request_id="task-0", task="digits", accuracy=0.875)
        db.record(served)
        assert db.requests(run="bench")[-1] == served


def test_a_version_3_file_gets_the_members_a_plan_weighed(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsDB(path) as db:
        db.record_many(sample_records())
    connection = sqlite3.connect(path)
    with connection:  # as version 3 wrote it: no task_candidates table
        connection.execute("DROP TABLE task_candidates")
        connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    connection.close()
    with ResultsDB(path) as db:
        assert db.requests() == sample_records()
        db.record(FULL)
        assert db.requests(run="bench") == [FULL]
        db.record(replace(FULL, candidates=FULL.candidates[:1]))  # replaced, not added to
        assert db.requests(run="bench")[0].candidates == FULL.candidates[:1]


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the results you are looking for\n" * 100)
    with pytest.raises(ResultsDBError, match="not a results database"):
        ResultsDB(path)


def test_filters_by_run_and_time_and_lists_runs() -> None:
    later = [
        ok_record("late-0", BASE_MS + 5000, [stage0()], 1, run="bench"),
        failed_record("late-1", BASE_MS + 6000, BASE_MS + 6001, "deadline", run="bench"),
    ]
    with ResultsDB.memory() as db:
        db.record_many([*later, *sample_records()])
        assert [r.request_id for r in db.requests()][:2] == ["ok-0", "ok-1"]
        assert db.requests(run="bench") == later
        assert db.requests(run="demo") == sample_records()
        assert db.requests(run="nope") == []
        assert [r.request_id for r in db.requests(since_ms=BASE_MS + 550)] == [
            "fail-1",
            "late-0",
            "late-1",
        ]
        assert [r.request_id for r in db.requests("demo", BASE_MS + 400)] == [
            "ok-4",
            "fail-0",
            "fail-1",
        ]
        assert db.runs() == ["demo", "bench"]


def test_recording_an_id_again_replaces_it_and_its_children() -> None:
    first = ok_record("same", BASE_MS, [stage0(), stage1("phone-1", 20, 0.25)], 9)
    again = ok_record("same", BASE_MS, [stage0()], 3, retry_after_ms=5)
    with ResultsDB.memory() as db:
        db.record(first)
        db.record(again)
        assert db.requests() == [again]


def test_telemetry_from_messages_and_samples_without_repeats() -> None:
    message = Telemetry(
        agent_id="phone-1",
        ts_ms=int(BASE_MS) + 700,
        period_s=1.0,
        cpu_pct=37.5,
        mem_free_bytes=1 << 30,
        battery=Battery(81.5, plugged=False, simulated=True),
        energy_j=3.25,
    )
    with ResultsDB.memory() as db:
        db.record_samples(sample_telemetry())
        db.record_telemetry(message)
        db.record_telemetry(message)  # retained: seen again on subscribing
        phone = db.telemetry(agent="phone-1")
        assert phone[-1] == TelemetrySample(
            "phone-1", int(BASE_MS) + 700, 81.5, False, True, 37.5, 3.25, 1 << 30
        )
        assert len(phone) == 2
        assert len(db.telemetry()) == 6
        window = db.telemetry(since_ms=BASE_MS, until_ms=BASE_MS + 500)
        assert [(s.agent_id, s.ts_ms - int(BASE_MS)) for s in window] == [
            ("phone-1", 100),
            ("rpi-1", 0),
            ("rpi-1", 500),
        ]


def test_concurrent_writers_and_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    writers, per_writer = 6, 40
    start = threading.Barrier(writers + 1)
    errors: list[BaseException] = []
    seen: list[int] = []

    def write(db: ResultsDB, writer: int) -> None:
        hops = [stage0(), stage1("phone-1", writer, 0.1)]
        try:
            start.wait(timeout=10)
            for i in range(per_writer):
                db.record(ok_record(f"w{writer}-{i:03d}", BASE_MS + i, hops, 2))
                db.record_telemetry(TelemetrySample(f"agent-{writer}", i, 50.0 - i, False))
        except BaseException as error:
            errors.append(error)

    shared = ResultsDB(path)
    own = ResultsDB(path)  # a second connection to the same file, as another process would
    threads = [
        threading.Thread(target=write, args=(shared if w % 2 else own, w)) for w in range(writers)
    ]
    for thread in threads:
        thread.start()
    start.wait(timeout=10)
    while any(t.is_alive() for t in threads):
        snapshot = shared.requests()
        seen.append(len(snapshot))
        # Never a request without its children: each is written in one transaction.
        assert all(len(r.trace) == 2 and len(r.attempts) == 1 for r in snapshot)
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert seen == sorted(seen)  # a reader never sees a request disappear
    stored = shared.requests()
    assert len(stored) == writers * per_writer
    assert len(shared.telemetry()) == writers * per_writer
    for item in stored:
        assert len(item.trace) == 2 and item.trace[1].agent_id == "phone-1"
    own.close()
    shared.close()


def test_jsonl_round_trip_through_a_file(tmp_path: Path) -> None:
    export = tmp_path / "results.jsonl"
    with ResultsDB.memory() as db:
        db.record_many([FULL, *sample_records()])
        db.record_samples(sample_telemetry())
        assert db.export_jsonl(export) == 8
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["request"] * 8 + ["telemetry"] * 5
    assert lines[0]["trace"][0]["agent_id"] == "rpi-1"  # ok-0 is sent first
    with ResultsDB.memory() as copy:
        assert copy.import_jsonl(export) == 8
        records = sample_records()
        assert copy.requests() == [records[0], FULL, *records[1:]]  # in the order sent
        assert sorted(copy.telemetry(), key=lambda s: (s.ts_ms, s.agent_id)) == sorted(
            sample_telemetry(), key=lambda s: (s.ts_ms, s.agent_id)
        )


def test_jsonl_export_of_one_run_keeps_its_telemetry_only() -> None:
    out = io.StringIO()
    with ResultsDB.memory() as db:
        db.record_many([FULL, *sample_records()])
        db.record_samples(sample_telemetry())
        assert db.export_jsonl(out, run="demo") == 7
    kinds = [json.loads(line)["kind"] for line in out.getvalue().splitlines()]
    # The rpi-1 sample taken a second before the run is left out.
    assert kinds == ["request"] * 7 + ["telemetry"] * 4
    with ResultsDB.memory() as copy:
        copy.import_jsonl(io.StringIO(out.getvalue()))
        assert copy.runs() == ["demo"]


def test_jsonl_ignores_unknown_keys_and_rejects_unknown_kinds() -> None:
    data = results_db.record_to_json(FULL) | {"from_the_future": 1}
    data["trace"][0]["gpu_temperature_c"] = 71.0
    assert record_from_json(data) == FULL
    with ResultsDB.memory() as db:
        with pytest.raises(ResultsDBError, match="line 2: unknown kind 'plan'"):
            db.import_jsonl(io.StringIO(json.dumps(data) + "\n" + '{"kind": "plan"}\n'))
        with pytest.raises(ResultsDBError, match="line 1"):
            db.import_jsonl(io.StringIO("{not json\n"))
        with pytest.raises(ResultsDBError, match="cannot read the export"):
            db.import_jsonl(Path("/nonexistent/results.jsonl"))
        assert db.requests() == []  # a bad export stores nothing


def test_bytes_would_be_written_as_hex() -> None:
    assert json.dumps({"id": b"\x01\xab"}, default=results_db._json_default) == '{"id": "01ab"}'
