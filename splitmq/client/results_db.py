"""The results database: every request with its attempts and trace, and agents' telemetry.

One SQLite file (stdlib :mod:`sqlite3`, WAL journal, so a report can read while a client
writes), safe to share between threads: the client records from its worker thread while
another thread reads. ``":memory:"`` (or :meth:`ResultsDB.memory`) keeps it in memory.

Schema (version :data:`SCHEMA_VERSION`, in the ``meta`` table)::

    meta           key TEXT PRIMARY KEY, value TEXT           -- schema_version
    requests       request_id TEXT PRIMARY KEY, run, model, version, variant, deployment,
                   epoch, sent_ms, finished_ms, ok, error_code, error_message, bytes_sent,
                   bytes_received, predicted_latency_ms, predicted_energy_j,
                   top (JSON [[class, score], ...]), predicted_stages (JSON
                   [{stage, agent_id, transfer_ms, queueing_ms, compute_ms}, ...]),
                   predicted_final_hop_ms, task, accuracy
    attempts       (request_id, attempt) PRIMARY KEY, route (JSON list of agent ids),
                   sent_ms, outcome, message
    trace_entries  (request_id, position) PRIMARY KEY, stage, agent_id, received_ms,
                   started_ms, finished_ms, bytes_in, bytes_out, attempt, energy_j
    task_candidates (request_id, position) PRIMARY KEY, model, version, variant,
                   accuracy, agreement, predicted_latency_ms, predicted_energy_j, excluded
                   -- a task request's plan: every member and variant it weighed
    telemetry      (agent_id, ts_ms) UNIQUE, battery_pct, plugged, simulated, cpu_pct,
                   energy_j, mem_free_bytes

Recording a request whose id is already stored replaces it. Times are epoch ms. A file
of an earlier schema version is brought to this one on opening (version 1 to 2: the
predicted stages; 2 to 3: the task and the served variant's accuracy; 3 to 4: the
members a task's plan weighed; the columns and tables added are empty for the requests
it held).

The JSON lines export holds one object per line, tagged by ``kind``: ``request`` (every
field of a :class:`RequestRecord`, its ``attempts`` and ``trace`` as lists of objects)
and ``telemetry`` (a :class:`TelemetrySample`). Request ids are already hex strings;
any bytes value would be written as hex.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from splitmq.client.records import AttemptRecord, RequestRecord, TelemetrySample
from splitmq.errors import SplitMQError
from splitmq.wire import StagePrediction, TaskCandidate, Telemetry, TraceEntry

__all__ = [
    "DEFAULT_PATH",
    "SCHEMA_VERSION",
    "ResultsDB",
    "ResultsDBError",
    "record_from_json",
    "record_to_json",
]

SCHEMA_VERSION = 4
DEFAULT_PATH = Path("splitmq-results.db")
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    run TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    variant TEXT NOT NULL,
    deployment TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    sent_ms REAL NOT NULL,
    finished_ms REAL NOT NULL,
    ok INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    bytes_sent INTEGER NOT NULL,
    bytes_received INTEGER NOT NULL,
    predicted_latency_ms REAL,
    predicted_energy_j REAL,
    top TEXT NOT NULL,
    predicted_stages TEXT,
    predicted_final_hop_ms REAL,
    task TEXT NOT NULL DEFAULT '',
    accuracy REAL
);
CREATE INDEX IF NOT EXISTS requests_by_run ON requests (run, sent_ms);
CREATE TABLE IF NOT EXISTS attempts (
    request_id TEXT NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    route TEXT NOT NULL,
    sent_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (request_id, attempt)
);
CREATE TABLE IF NOT EXISTS trace_entries (
    request_id TEXT NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    received_ms REAL NOT NULL,
    started_ms REAL NOT NULL,
    finished_ms REAL NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    energy_j REAL NOT NULL,
    PRIMARY KEY (request_id, position)
);
CREATE TABLE IF NOT EXISTS task_candidates (
    request_id TEXT NOT NULL REFERENCES requests (request_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    variant TEXT NOT NULL,
    accuracy REAL,
    agreement REAL,
    predicted_latency_ms REAL,
    predicted_energy_j REAL,
    excluded TEXT,
    PRIMARY KEY (request_id, position)
);
CREATE TABLE IF NOT EXISTS telemetry (
    agent_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    battery_pct REAL NOT NULL,
    plugged INTEGER NOT NULL,
    simulated INTEGER NOT NULL,
    cpu_pct REAL NOT NULL,
    energy_j REAL NOT NULL,
    mem_free_bytes INTEGER NOT NULL,
    UNIQUE (agent_id, ts_ms)
);
"""

# Columns of ``requests`` in the order of the INSERT; every RequestRecord field is stored
# either here or in a child table (a test checks that no field is forgotten).
REQUEST_COLUMNS = (
    "request_id",
    "run",
    "model",
    "version",
    "variant",
    "deployment",
    "epoch",
    "sent_ms",
    "finished_ms",
    "ok",
    "error_code",
    "error_message",
    "bytes_sent",
    "bytes_received",
    "predicted_latency_ms",
    "predicted_energy_j",
    "top",
    "predicted_stages",
    "predicted_final_hop_ms",
    "task",
    "accuracy",
)
_MIGRATIONS = {
    "1": (
        "ALTER TABLE requests ADD COLUMN predicted_stages TEXT",
        "ALTER TABLE requests ADD COLUMN predicted_final_hop_ms REAL",
    ),
    "2": (
        "ALTER TABLE requests ADD COLUMN task TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE requests ADD COLUMN accuracy REAL",
    ),
    "3": (),  # the task_candidates table: created with the schema's other new tables
}
"""Statements bringing a file of a former schema version to the next one."""
CHILD_FIELDS = ("attempts", "trace", "candidates")
TRACE_COLUMNS = tuple(f.name for f in fields(TraceEntry))
CANDIDATE_COLUMNS = tuple(f.name for f in fields(TaskCandidate))
TELEMETRY_COLUMNS = tuple(f.name for f in fields(TelemetrySample))


class ResultsDBError(SplitMQError):
    """A results database or export that cannot be read or written.

    Attributes:
        path: the file concerned.
        reason: what is wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ResultsDB:
    """Requests, attempts, traces and telemetry in one SQLite file; thread-safe.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, timeout_s: float = 10.0):
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            self._connection = sqlite3.connect(
                self.path, timeout=timeout_s, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise ResultsDBError(self.path, f"cannot open the results database: {error}") from None
        try:
            self._prepare()
        except sqlite3.Error as error:
            self._connection.close()
            raise ResultsDBError(self.path, f"not a results database: {error}") from None
        except ResultsDBError:
            self._connection.close()
            raise

    @classmethod
    def memory(cls) -> ResultsDB:
        """A database kept in memory (tests, a report made from a JSON lines export)."""
        return cls(MEMORY)

    def _prepare(self) -> None:
        connection = self._connection
        if self.path != MEMORY:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        # Check the version before creating anything, so a newer file is left untouched.
        has_meta = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta:
            self._migrate()
            self._check_version()
        connection.executescript(_SCHEMA)
        with connection:
            # OR IGNORE: two processes may create the same new file at once.
            connection.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        self._check_version()

    def _migrate(self) -> None:
        """Bring a file of an earlier schema version to :data:`SCHEMA_VERSION`."""
        while True:
            found = self._connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            steps = _MIGRATIONS.get(found[0]) if found is not None else None
            if steps is None:
                return
            with self._connection:
                for statement in steps:
                    self._connection.execute(statement)
                self._connection.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (str(int(found[0]) + 1),),
                )

    def _check_version(self) -> None:
        found = self._connection.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        if found is not None and found[0] != str(SCHEMA_VERSION):
            raise ResultsDBError(
                self.path,
                f"schema version {found[0]}, this splitmq reads version {SCHEMA_VERSION}: "
                "use the splitmq that wrote it, or export it with that one (JSON lines)",
            )

    # --- context and lifetime -------------------------------------------------------

    def close(self) -> None:
        """Close the file; the object cannot be used afterwards."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsDB({self.path!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._connection:
                    yield self._connection
            except sqlite3.Error as error:
                raise ResultsDBError(self.path, f"cannot write: {error}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one state of the file, whatever other connections write."""
        with self._lock:
            try:
                self._connection.execute("BEGIN")
            except sqlite3.Error as error:
                raise ResultsDBError(self.path, f"cannot read: {error}") from None
            try:
                yield
            finally:
                self._connection.rollback()

    def _query(self, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection.execute(sql, tuple(parameters)).fetchall()
            except sqlite3.Error as error:
                raise ResultsDBError(self.path, f"cannot read: {error}") from None

    # --- writing ------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        """Store a finished request with its attempts and trace (replacing one with its id)."""
        self.record_many((record,))

    def record_many(self, records: Iterable[RequestRecord]) -> int:
        """Store several requests in one transaction; returns how many."""
        count = 0
        with self._transaction() as connection:
            for record in records:
                _insert_request(connection, record)
                count += 1
        return count

    def record_telemetry(self, telemetry: Telemetry | TelemetrySample) -> None:
        """Keep a telemetry sample (a repeat of an agent's ``ts_ms`` is ignored: retained)."""
        self.record_samples((telemetry,))

    def record_samples(self, samples: Iterable[Telemetry | TelemetrySample]) -> int:
        """Keep several telemetry samples in one transaction; returns how many were given."""
        rows = [
            _sample_row(s if isinstance(s, TelemetrySample) else TelemetrySample.from_telemetry(s))
            for s in samples
        ]
        placeholders = ", ".join("?" * len(TELEMETRY_COLUMNS))
        with self._transaction() as connection:
            connection.executemany(
                f"INSERT OR IGNORE INTO telemetry ({', '.join(TELEMETRY_COLUMNS)}) "
                f"VALUES ({placeholders})",
                rows,
            )
        return len(rows)

    # --- reading ------------------------------------------------------------------------

    def requests(
        self, run: str | None = None, since_ms: float | None = None
    ) -> list[RequestRecord]:
        """Stored requests in the order they were sent, optionally of one run only.

        ``since_ms`` keeps requests first sent at or after that time (epoch ms).
        """
        where: list[str] = []
        parameters: list[Any] = []
        if run is not None:
            where.append("run = ?")
            parameters.append(run)
        if since_ms is not None:
            where.append("sent_ms >= ?")
            parameters.append(since_ms)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        selected = f"SELECT request_id FROM requests{condition}"
        with self._snapshot():
            rows = self._query(
                f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests{condition} "
                "ORDER BY sent_ms, request_id",
                parameters,
            )
            attempts = self._query(
                "SELECT request_id, attempt, route, sent_ms, outcome, message FROM attempts "
                f"WHERE request_id IN ({selected}) ORDER BY request_id, attempt",
                parameters,
            )
            trace = self._query(
                f"SELECT request_id, {', '.join(TRACE_COLUMNS)} FROM trace_entries "
                f"WHERE request_id IN ({selected}) ORDER BY request_id, position",
                parameters,
            )
            candidates = self._query(
                f"SELECT request_id, {', '.join(CANDIDATE_COLUMNS)} FROM task_candidates "
                f"WHERE request_id IN ({selected}) ORDER BY request_id, position",
                parameters,
            )
        attempts_of: dict[str, list[AttemptRecord]] = {}
        for request_id, attempt, route, sent_ms, outcome, message in attempts:
            attempts_of.setdefault(request_id, []).append(
                AttemptRecord(attempt, tuple(json.loads(route)), sent_ms, outcome, message)
            )
        trace_of: dict[str, list[TraceEntry]] = {}
        for request_id, *values in trace:
            trace_of.setdefault(request_id, []).append(TraceEntry(*values))
        candidates_of: dict[str, list[TaskCandidate]] = {}
        for request_id, *values in candidates:
            candidates_of.setdefault(request_id, []).append(TaskCandidate(*values))
        return [
            _request_from_row(
                row,
                attempts_of.get(row[0], ()),
                trace_of.get(row[0], ()),
                candidates_of.get(row[0], ()),
            )
            for row in rows
        ]

    def telemetry(
        self,
        agent: str | None = None,
        since_ms: float | None = None,
        until_ms: float | None = None,
    ) -> list[TelemetrySample]:
        """Telemetry samples by agent then time, optionally of one agent, in ``[since, until]``."""
        where: list[str] = []
        parameters: list[Any] = []
        for condition, value in (
            ("agent_id = ?", agent),
            ("ts_ms >= ?", since_ms),
            ("ts_ms <= ?", until_ms),
        ):
            if value is not None:
                where.append(condition)
                parameters.append(value)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT {', '.join(TELEMETRY_COLUMNS)} FROM telemetry{condition} "
            "ORDER BY agent_id, ts_ms",
            parameters,
        )
        return [
            TelemetrySample(
                agent_id=row[0],
                ts_ms=row[1],
                battery_pct=row[2],
                plugged=bool(row[3]),
                simulated=bool(row[4]),
                cpu_pct=row[5],
                energy_j=row[6],
                mem_free_bytes=row[7],
            )
            for row in rows
        ]

    def runs(self) -> list[str]:
        """The run labels stored, in the order their first request was sent."""
        rows = self._query("SELECT run FROM requests GROUP BY run ORDER BY MIN(sent_ms), run")
        return [row[0] for row in rows]

    # --- JSON lines -------------------------------------------------------------------

    def export_jsonl(
        self, path_or_file: str | Path | IO[str], run: str | None = None, telemetry: bool = True
    ) -> int:
        """Write requests (one JSON object a line), then telemetry; returns the request count.

        With ``run``, only that run's requests, and the telemetry taken while it ran (from
        its first send to its last finish).
        """
        records = self.requests(run=run)
        samples: list[TelemetrySample] = []
        if telemetry:
            if run is None:
                samples = self.telemetry()
            elif records:
                samples = self.telemetry(
                    since_ms=min(r.sent_ms for r in records),
                    until_ms=max(r.finished_ms for r in records),
                )
        lines = [json.dumps(record_to_json(r), default=_json_default) for r in records]
        lines += [json.dumps({"kind": "telemetry", **asdict(s)}) for s in samples]
        text = "".join(line + "\n" for line in lines)
        if isinstance(path_or_file, str | Path):
            try:
                Path(path_or_file).write_text(text, encoding="utf-8")
            except OSError as error:
                raise ResultsDBError(path_or_file, f"cannot write the export: {error}") from None
        else:
            path_or_file.write(text)
        return len(records)

    def import_jsonl(self, path_or_file: str | Path | IO[str]) -> int:
        """Store the requests and telemetry of a JSON lines export; returns the request count."""
        name = str(getattr(path_or_file, "name", "<stream>"))
        if isinstance(path_or_file, str | Path):
            name = str(path_or_file)
            try:
                text = Path(path_or_file).read_text(encoding="utf-8")
            except OSError as error:
                raise ResultsDBError(name, f"cannot read the export: {error}") from None
        else:
            text = path_or_file.read()
        records: list[RequestRecord] = []
        samples: list[Telemetry | TelemetrySample] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                kind = data.get("kind", "request")
                if kind == "request":
                    records.append(record_from_json(data))
                elif kind == "telemetry":
                    samples.append(_from_mapping(TelemetrySample, data))
                else:
                    raise ValueError(f"unknown kind {kind!r} (request, telemetry)")
            except (ValueError, TypeError, KeyError) as error:
                raise ResultsDBError(name, f"line {number}: {error}") from None
        self.record_many(records)
        self.record_samples(samples)
        return len(records)


# --- rows and JSON -------------------------------------------------------------------------


def record_to_json(record: RequestRecord) -> dict[str, Any]:
    """A request as a JSON-ready object, tagged ``kind: request``."""
    return {"kind": "request", **asdict(record)}


def record_from_json(data: Mapping[str, Any]) -> RequestRecord:
    """A request from :func:`record_to_json`'s object; unknown keys are ignored."""
    values = {
        name: value
        for name, value in data.items()
        if name in _field_names(RequestRecord) and name not in CHILD_FIELDS
    }
    values["attempts"] = tuple(
        AttemptRecord(
            attempt=int(a["attempt"]),
            route=tuple(a.get("route", ())),
            sent_ms=float(a["sent_ms"]),
            outcome=str(a["outcome"]),
            message=str(a.get("message", "")),
        )
        for a in data.get("attempts", ())
    )
    values["trace"] = tuple(_from_mapping(TraceEntry, t) for t in data.get("trace", ()))
    values["candidates"] = tuple(
        _from_mapping(TaskCandidate, c) for c in data.get("candidates") or ()
    )
    values["predicted_stages"] = tuple(
        _from_mapping(StagePrediction, p) for p in data.get("predicted_stages") or ()
    )
    values["top"] = tuple((int(c), float(s)) for c, s in data.get("top", ()))
    return RequestRecord(**values)


_T = TypeVar("_T")


def _field_names(cls: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _from_mapping(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """``cls`` from the keys of ``data`` it knows (newer writers may add some)."""
    known = _field_names(cls)
    return cls(**{k: v for k, v in data.items() if k in known})


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot write a {type(value).__name__} to JSON")


def _insert_request(connection: sqlite3.Connection, record: RequestRecord) -> None:
    request_id = record.request_id
    connection.execute("DELETE FROM attempts WHERE request_id = ?", (request_id,))
    connection.execute("DELETE FROM trace_entries WHERE request_id = ?", (request_id,))
    connection.execute("DELETE FROM task_candidates WHERE request_id = ?", (request_id,))
    connection.execute("DELETE FROM requests WHERE request_id = ?", (request_id,))
    row = [_column(record, name) for name in REQUEST_COLUMNS]
    connection.execute(
        f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})",
        row,
    )
    connection.executemany(
        "INSERT INTO attempts (request_id, attempt, route, sent_ms, outcome, message) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (request_id, a.attempt, json.dumps(a.route), a.sent_ms, a.outcome, a.message)
            for a in record.attempts
        ],
    )
    connection.executemany(
        f"INSERT INTO trace_entries (request_id, position, {', '.join(TRACE_COLUMNS)}) "
        f"VALUES (?, ?, {', '.join('?' * len(TRACE_COLUMNS))})",
        [
            (request_id, position, *(getattr(entry, name) for name in TRACE_COLUMNS))
            for position, entry in enumerate(record.trace)
        ],
    )
    connection.executemany(
        f"INSERT INTO task_candidates (request_id, position, {', '.join(CANDIDATE_COLUMNS)}) "
        f"VALUES (?, ?, {', '.join('?' * len(CANDIDATE_COLUMNS))})",
        [
            (request_id, position, *(getattr(entry, name) for name in CANDIDATE_COLUMNS))
            for position, entry in enumerate(record.candidates)
        ],
    )


def _column(record: RequestRecord, name: str) -> Any:
    """A request's value for one column of ``requests``: JSON for the nested ones."""
    if name == "top":
        return json.dumps(record.top)
    if name == "predicted_stages":
        stages = record.predicted_stages
        return json.dumps([asdict(p) for p in stages]) if stages else None
    return getattr(record, name)


def _request_from_row(
    row: tuple[Any, ...],
    attempts: Iterable[AttemptRecord],
    trace: Iterable[TraceEntry],
    candidates: Iterable[TaskCandidate] = (),
) -> RequestRecord:
    values = dict(zip(REQUEST_COLUMNS, row, strict=True))
    values["ok"] = bool(values["ok"])
    values["top"] = tuple((int(c), float(s)) for c, s in json.loads(values["top"]))
    stages = json.loads(values["predicted_stages"] or "[]")
    values["predicted_stages"] = tuple(_from_mapping(StagePrediction, p) for p in stages)
    return RequestRecord(
        **values, attempts=tuple(attempts), trace=tuple(trace), candidates=tuple(candidates)
    )


def _sample_row(sample: TelemetrySample) -> tuple[Any, ...]:
    return tuple(getattr(sample, name) for name in TELEMETRY_COLUMNS)
