"""Soak test: steady requests for a long time, with periodic faults; nothing may leak or drift.

    python scripts/soak.py --minutes 60            # the real thing (not run in CI)
    python scripts/soak.py --minutes 3 --window 30 # a quick look
    python scripts/soak.py --minutes 5 --window 30 --coordinators 3 --kill-coordinator-every 20

SIGINT or SIGTERM ends it early, still with the summary of the windows so far.

It starts Mosquitto (broker-config/dev.conf), a coordinator process and agent
processes, deploys the digits model (two stages, two replicas), then a client sends
``--rate`` requests per second until the time is up. Every ``--fault-every`` seconds
one fault happens, in turn: an agent killed and restarted, an agent silent for a few
seconds (SIGSTOP), the broker crashing and coming back, the coordinator killed and
restarted, an agent slow for a while (SIGSTOP/SIGCONT duty cycle), an agent replaced
by one with an empty cache.

With ``--coordinators N`` (N > 1) the coordinators share the work under the leader
lease; the coordinator fault then kills a random one of them (often the leader), and
``--kill-coordinator-every S`` adds a loop of its own that SIGKILLs a random
coordinator every S seconds (jittered) and restarts it a moment later. The summary
counts the leader terms seen and any epoch given to two different deployment contents
(there must be none).

Every ``--window`` seconds it prints requests served, errors by code, p50/p99 latency
and the resident memory of each process; at the end a summary compares the first
windows with the last ones (latency and memory drift) and writes everything as JSON.
The model pool is trained and converted on the spot (TensorFlow: ``pip install
.[convert]``) unless ``--pool`` names one that has ``digits``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from splitmq import processes
from splitmq.client import Client, ClientConfig, InferenceError, InferenceResult
from splitmq.mosquitto import Mosquitto, config_dir
from splitmq.transport import MqttTransport, parse_broker_url
from splitmq.watch import Watcher
from splitmq.wire import (
    Deployment,
    DeployReply,
    DeployRequest,
    Lease,
    encode,
)
from splitmq.wire.topics import DEPLOY_REPLIES, DEPLOY_REQUESTS, DEPLOYMENTS, LEASE, STATUS

log = logging.getLogger("soak")
OPERATOR = "soak-ops"
MiB = 1 << 20


@dataclass
class Window:
    """What one reporting window saw."""

    start_s: float
    served: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    percentiles_ms: tuple[float | None, float | None] | None = None

    def close(self) -> None:
        """Keep p50 and p99, drop the samples: the soak runs in the client's process,
        whose memory it reports, so it must not grow with the samples of an hour."""
        self.percentiles_ms = (_pct(self.latencies_ms, 50), _pct(self.latencies_ms, 99))
        self.latencies_ms = []

    def row(self) -> dict[str, Any]:
        p50_ms, p99_ms = self.percentiles_ms or (
            _pct(self.latencies_ms, 50),
            _pct(self.latencies_ms, 99),
        )
        return {
            "t_s": round(self.start_s, 1),
            "served": self.served,
            "errors": dict(self.errors),
            "p50_ms": p50_ms,
            "p99_ms": p99_ms,
            "faults": self.faults,
            "rss_mb": self.rss_mb,
        }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


class Soak:
    """The processes, the faults and the measures."""

    def __init__(self, args: argparse.Namespace, workdir: Path, pool: Path):
        self.args = args
        self.workdir = workdir
        self.pool = pool
        self.rng = random.Random(args.seed)
        self.broker = Mosquitto(config_dir() / "dev.conf", workdir / "broker")
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.coordinators: dict[str, subprocess.Popen[bytes]] = {}
        self.observer: MqttTransport | None = None
        self.watcher: Watcher | None = None
        self.lock = threading.Lock()
        self.started_s = time.monotonic()
        self.windows: list[Window] = []

    # -- processes ----------------------------------------------------------------------

    def start_agent(self, agent_id: str, *, wipe: bool = False) -> None:
        cache = self.workdir / "caches" / agent_id
        if wipe:
            shutil.rmtree(cache, ignore_errors=True)
        command = processes.agent_command(
            ["--broker", self.broker.url()],
            agent_id,
            cache,
            profile="host",
            telemetry_period_s=0.5,
            python=sys.executable,
        )
        self.agents[agent_id] = processes.spawn(command, self.workdir / f"{agent_id}.log")

    def start_coordinator(self, name: str = "coordinator") -> None:
        log_file = self.workdir / f"{name}.log"
        before = log_file.read_text().count("serving the pool") if log_file.exists() else 0
        command = processes.coordinator_command(
            ["--broker", self.broker.url()],
            self.pool,
            extra=("--watch-period", "0.5", "--ready-timeout", "20"),
        )
        process = self.coordinators[name] = processes.spawn(command, log_file)
        deadline = time.monotonic() + 60
        while log_file.read_text().count("serving the pool") <= before:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the coordinator did not start: see {log_file}")
            time.sleep(0.05)

    def kill(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is not None:
            processes.kill(process)

    def pids(self) -> dict[str, int]:
        pids = {a: p.pid for a, p in self.agents.items() if p.poll() is None}
        pids.update({c: p.pid for c, p in self.coordinators.items() if p.poll() is None})
        process = self.broker._process
        if process is not None and process.poll() is None:
            pids["mosquitto"] = process.pid
        pids["client"] = os.getpid()
        return pids

    def rss_mb(self) -> dict[str, float]:
        sizes = {}
        for name, pid in self.pids().items():
            try:
                sizes[name] = round(psutil.Process(pid).memory_info().rss / MiB, 1)
            except psutil.Error:
                continue
        return sizes

    # -- the retained state ---------------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        assert self.watcher is not None  # up() made it
        try:
            self.watcher.wait(predicate, timeout_s, what)
        except TimeoutError as error:
            raise SystemExit(str(error)) from None

    def up(self) -> None:
        self.broker.start()
        self.observer = MqttTransport(
            parse_broker_url(self.broker.url(), reconnect_min_s=0.05, reconnect_max_s=1.0)
        )
        self.observer.start()
        watcher = self.watcher = Watcher(self.observer).watch(STATUS).watch(DEPLOYMENTS)
        watcher.watch(DEPLOY_REPLIES, client=OPERATOR).watch(LEASE)
        for index in range(self.args.coordinators):
            self.start_coordinator("coordinator" if index == 0 else f"coordinator-{index + 1}")
        for index in range(self.args.agents):
            self.start_agent(f"soak-{index + 1}")

        self.wait(lambda: all(watcher.online(a) for a in self.agents), 60, "the agents")
        request = DeployRequest(
            uuid.uuid4().hex, OPERATOR, "digits", stages=2, replicas=2, ready_timeout_s=30
        )
        self.observer.publish(DEPLOY_REQUESTS.name(), encode(request)).wait(10)
        reply = watcher.wait_answer(request.request_id, 60)
        if not isinstance(reply, DeployReply):
            raise SystemExit(f"not a deploy reply: {reply}")
        if not reply.ok:
            raise SystemExit(f"deployment refused: {reply.message}")
        print(reply.message, flush=True)

    def down(self) -> None:
        started = [*self.agents.values(), *self.coordinators.values()]
        processes.stop(started)
        if self.observer is not None:
            self.observer.close()
        self.broker.stop()

    # -- faults ------------------------------------------------------------------------

    def replica(self) -> str:
        deployments = list(self.watcher.deployments.values()) if self.watcher else []
        deployment = deployments[-1] if deployments else None
        replicas = [a for s in deployment.stages for a in s.replicas] if deployment else []
        alive = [a for a in replicas if a in self.agents and self.agents[a].poll() is None]
        return self.rng.choice(alive or list(self.agents))

    def fault_kill_agent(self) -> str:
        victim = self.replica()
        self.kill(self.agents[victim])
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.start_agent(victim)
        return f"killed and restarted {victim}"

    def fault_silent_agent(self) -> str:
        victim = self.replica()
        self.agents[victim].send_signal(signal.SIGSTOP)
        time.sleep(4.0)
        self.agents[victim].send_signal(signal.SIGCONT)
        return f"{victim} silent for 4 s"

    def fault_broker_restart(self) -> str:
        self.broker.kill()
        time.sleep(2.0)
        self.broker.start()
        return "broker crashed, back after 2 s"

    def fault_coordinator_restart(self) -> str:
        victim = self.rng.choice(sorted(self.coordinators))
        self.kill(self.coordinators[victim])
        time.sleep(3.0)
        self.start_coordinator(victim)
        return f"{victim} killed, restarted after 3 s"

    def run_coordinator_kills(self, stop: threading.Event) -> None:
        """SIGKILL a random coordinator every ``--kill-coordinator-every`` s (jittered)."""
        every = self.args.kill_coordinator_every
        while not stop.wait(self.rng.uniform(0.5 * every, 1.5 * every)):
            victim = self.rng.choice(sorted(self.coordinators))
            self.kill(self.coordinators[victim])
            time.sleep(self.rng.uniform(0.2, 3.0))
            self.start_coordinator(victim)
            with self.lock:
                self.windows[-1].faults.append(f"{victim} killed (kill loop), restarted")

    def fault_slow_agent(self) -> str:
        victim = self.replica()
        process = self.agents[victim]
        end = time.monotonic() + 6.0
        while time.monotonic() < end and process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        return f"{victim} slow (runs 15 % of the time) for 6 s"

    def fault_replace_agent(self) -> str:
        victim = self.replica()
        self.kill(self.agents[victim])
        time.sleep(1.0)
        self.start_agent(victim, wipe=True)
        return f"replaced {victim} with an empty cache"

    def run_faults(self, stop: threading.Event) -> None:
        faults = [
            self.fault_kill_agent,
            self.fault_silent_agent,
            self.fault_broker_restart,
            self.fault_coordinator_restart,
            self.fault_slow_agent,
            self.fault_replace_agent,
        ]
        turn = 0
        while not stop.wait(self.args.fault_every):
            what = faults[turn % len(faults)]()
            turn += 1
            with self.lock:
                self.windows[-1].faults.append(what)
            log.info("fault: %s", what)

    # -- requests ------------------------------------------------------------------------

    def record(self, future: Future[InferenceResult]) -> None:
        error = future.exception()
        with self.lock:
            window = self.windows[-1]
            if error is None:
                window.served += 1
                window.latencies_ms.append(future.result().latency_ms)
            elif isinstance(error, InferenceError):
                window.errors[error.code] += 1
            else:
                window.errors[type(error).__name__] += 1

    def run(self) -> dict[str, Any]:
        from splitmq.converter.digits import load_split

        images = load_split()[2][:64]
        config = ClientConfig(model="digits", deadline_s=self.args.deadline, plan_timeout_s=2.0)
        client = Client(self.broker.url(), "soak-client", config=config)
        client.start()
        stop = threading.Event()
        total_s = self.args.minutes * 60.0
        window_s = self.args.window
        self.started_s = time.monotonic()
        self.windows.append(Window(0.0))
        faults = threading.Thread(target=self.run_faults, args=(stop,), daemon=True)
        faults.start()
        kills = threading.Thread(target=self.run_coordinator_kills, args=(stop,), daemon=True)
        if self.args.kill_coordinator_every > 0:
            kills.start()
        sent = skipped = 0
        next_window = window_s
        print(
            f"{'t (s)':>6} {'served':>7} {'errors':<28} {'p50 ms':>7} {'p99 ms':>7}  "
            "memory MB (the faults of each window under it)",
            flush=True,
        )
        ended = threading.Event()  # SIGINT or SIGTERM: end early, with the summary
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: ended.set())
        try:
            while (now := time.monotonic() - self.started_s) < total_s and not ended.is_set():
                if now >= next_window:
                    self.close_window(next_window)
                    next_window += window_s
                due = self.started_s + sent / self.args.rate
                if due > time.monotonic():
                    time.sleep(min(0.05, due - time.monotonic()))
                    continue
                sent += 1
                if client.in_flight >= self.args.max_in_flight:
                    skipped += 1  # the client keeps a bounded number in flight
                    continue
                future = client.infer_async(images[sent % len(images)])
                future.add_done_callback(self.record)
        finally:
            stop.set()
            faults.join(60)
            if kills.is_alive():
                kills.join(60)
            deadline = time.monotonic() + self.args.deadline + 2
            while client.in_flight and time.monotonic() < deadline:
                time.sleep(0.1)
            self.close_window(time.monotonic() - self.started_s)
            client.close()
        return self.summary(sent, skipped)

    def close_window(self, at_s: float) -> None:
        with self.lock:
            window = self.windows[-1]
            window.close()
            window.rss_mb = self.rss_mb()
            self.windows.append(Window(at_s))
        row = window.row()
        errors = ", ".join(f"{k} {v}" for k, v in sorted(row["errors"].items())) or "-"
        memory = " ".join(f"{k}={v:.0f}" for k, v in sorted(row["rss_mb"].items()))
        print(
            f"{at_s:6.0f} {row['served']:7d} {errors:<28} {row['p50_ms'] or 0:7.1f} "
            f"{row['p99_ms'] or 0:7.1f}  {memory}",
            flush=True,
        )
        for fault in row["faults"]:
            print(f"{'':6} fault: {fault}", flush=True)

    def summary(self, sent: int, skipped: int) -> dict[str, Any]:
        rows = [w.row() for w in self.windows if w.served or w.errors]
        served = sum(r["served"] for r in rows)
        errors: Counter[str] = Counter()
        for row in rows:
            errors.update(row["errors"])
        # Drift: the first third of the windows against the last third (faults happen in
        # both alike: they run in a fixed rotation).
        measured = [r for r in rows if r["p50_ms"] is not None]
        third = max(1, len(measured) // 3)
        head, tail = measured[:third], measured[-third:]

        def median(rows: list[dict[str, Any]], key: str) -> float | None:
            values = [r[key] for r in rows if r[key] is not None]
            return round(float(np.median(values)), 2) if values else None

        memory_first = rows[0]["rss_mb"] if rows else {}
        memory_last = rows[-1]["rss_mb"] if rows else {}
        growth = {
            name: round(memory_last[name] - size, 1)
            for name, size in memory_first.items()
            if name in memory_last
        }
        epochs: dict[tuple[str, int], Deployment] = {}
        given_twice = 0
        terms: set[int] = set()
        if self.watcher is not None:
            for deployment in self.watcher.of(Deployment):
                first = epochs.setdefault((deployment.deployment, deployment.epoch), deployment)
                given_twice += first != deployment
            terms = {lease.term for lease in self.watcher.of(Lease) if not lease.released}
        return {
            "minutes": self.args.minutes,
            "coordinators": self.args.coordinators,
            "leader_terms": len(terms),
            "epochs_given_twice": given_twice,
            "rate_per_s": self.args.rate,
            "requests": sent,
            "not_sent_in_flight_bound": skipped,
            "served": served,
            "errors": dict(errors),
            "p50_ms_first_third": median(head, "p50_ms"),
            "p50_ms_last_third": median(tail, "p50_ms"),
            "p99_ms_first_third": median(head, "p99_ms"),
            "p99_ms_last_third": median(tail, "p99_ms"),
            "rss_growth_mb": growth,
            "windows": rows,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (60)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (40)")
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds (30)")
    parser.add_argument("--window", type=float, default=60.0, help="report every (60 s)")
    parser.add_argument("--agents", type=int, default=4, help="agent processes (4)")
    parser.add_argument("--deadline", type=float, default=10.0, help="per request (10 s)")
    parser.add_argument("--max-in-flight", type=int, default=400, help="client bound (400)")
    parser.add_argument("--pool", type=Path, help="a model pool with digits (default: train)")
    parser.add_argument("--workdir", type=Path, help="logs and caches (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="the JSON report (default WORKDIR/soak.json)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--coordinators", type=int, default=1, help="coordinator processes sharing the lease (1)"
    )
    parser.add_argument(
        "--kill-coordinator-every",
        type=float,
        default=0.0,
        help="SIGKILL a random coordinator about every S seconds (0: never)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="splitmq-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pool = args.pool
    if pool is None:  # in a process of its own: TensorFlow stays out of the client's memory
        print("training and converting the digits model...", flush=True)
        pool = workdir / "pool"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from splitmq.converter.digits import train_and_convert; "
                "train_and_convert(sys.argv[1], epochs=3, variants=('float32',))",
                str(pool),
            ],
            check=True,
            stdout=(workdir / "convert.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
    soak = Soak(args, workdir, pool)
    try:
        soak.up()
        report = soak.run()
    finally:
        soak.down()
    out = args.out or workdir / "soak.json"
    out.write_text(json.dumps(report, indent=2))
    total = report["served"] + sum(report["errors"].values())
    print(
        f"\n{report['served']} of {total} requests served "
        f"({100.0 * report['served'] / max(1, total):.2f} %), errors {report['errors']}\n"
        f"median of the windows' p50, first third {report['p50_ms_first_third']} ms, last third "
        f"{report['p50_ms_last_third']} ms; p99 {report['p99_ms_first_third']} ms, then "
        f"{report['p99_ms_last_third']} ms\n"
        f"memory growth first to last window (MB): {report['rss_growth_mb']}\n"
        f"coordinators {report['coordinators']}: {report['leader_terms']} leader terms, "
        f"{report['epochs_given_twice']} epochs given twice\n"
        f"report: {out}; logs: {workdir}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
