"""Streaming many requests through a fleet while one of its agents is killed, and checking
that every request ended exactly once, correctly or with a clear error."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from splitmq.client import (
    Client,
    ClientConfig,
    InferenceError,
    InferenceResult,
    RequestRecord,
)
from splitmq.wire import Deployment, Plan

from .conftest import MODEL, Fleet


class Records:
    """A client recorder: every finished request's record."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def __call__(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)


@dataclass
class KillRun:
    """What a stream with a kill in the middle gave."""

    items: list[InferenceResult | InferenceError]
    ordered: bool
    records: list[RequestRecord]
    plan: Plan
    victim: str
    killed_s: float
    started_s: float
    finished_s: float
    duplicates: int
    unknown: int

    @property
    def results(self) -> list[InferenceResult]:
        return [item for item in self.items if isinstance(item, InferenceResult)]

    @property
    def errors(self) -> list[InferenceError]:
        return [item for item in self.items if isinstance(item, InferenceError)]

    def summary(self) -> str:
        codes = Counter(error.code for error in self.errors)
        retried = sum(1 for r in self.records if len(r.attempts) > 1)
        return (
            f"{len(self.results)}/{len(self.items)} results, errors {dict(codes)}, "
            f"{retried} requests retried, {self.duplicates} duplicate results dropped, "
            f"victim {self.victim} killed after {self.killed_s - self.started_s:.2f} s, "
            f"stream took {self.finished_s - self.started_s:.2f} s"
        )


def stream_with_a_kill(
    fleet: Fleet,
    images: np.ndarray,
    count: int,
    *,
    kill_after: int,
    max_in_flight: int,
    ordered: bool,
    config: ClientConfig | None = None,
) -> KillRun:
    """Stream ``count`` requests (image ``i % len(images)`` for input ``i``); SIGKILL the
    first agent of the plan's route once ``kill_after`` items came back."""
    records = Records()
    config = config or ClientConfig(model=MODEL, deadline_s=10.0)
    inputs = (images[index % len(images)] for index in range(count))
    items: list[InferenceResult | InferenceError] = []
    plan: Plan | None = None
    victim, killed_s = "", 0.0
    with Client(fleet.url, namespace=fleet.namespace, config=config, recorder=records) as client:
        started_s = time.monotonic()
        for item in client.stream(inputs, ordered=ordered, max_in_flight=max_in_flight):
            items.append(item)
            if isinstance(item, InferenceResult):
                plan = item.plan
            if not victim and len(items) >= kill_after and plan is not None:
                victim = plan.route[0][0]
                killed_s = fleet.kill(victim)
        finished_s = time.monotonic()
        duplicates, unknown = client.duplicates, client.unknown
    assert plan is not None and victim, "no result came back before the kill"
    return KillRun(
        items,
        ordered,
        records.snapshot(),
        plan,
        victim,
        killed_s,
        started_s,
        finished_s,
        duplicates,
        unknown,
    )


def check_every_request_ended_once(run: KillRun, count: int, reference: np.ndarray) -> None:
    """One item per input, each a bit-exact result or an InferenceError with a reason;
    one record per request and no request id twice."""
    indices = [item.index for item in run.items]
    assert sorted(i for i in indices if i is not None) == list(range(count)), "lost or doubled"
    assert len(indices) == count
    if run.ordered:
        assert indices == list(range(count)), "not in input order"
    for result in run.results:
        assert result.index is not None
        (output,) = result.outputs.values()
        expected = reference[result.index % len(reference)]
        assert np.array_equal(output, expected), f"input {result.index}: wrong output"
        assert result.record.ok and len(result.trace) == len(run.plan.route)
    for error in run.errors:
        assert isinstance(error, InferenceError) and error.code and error.reason, error
        assert not error.record.ok and error.record.error_code == error.code
    answered = [item.record.request_id for item in run.items]
    assert len(set(answered)) == count, "two inputs ended as the same request"
    assert len(run.records) == count, "the recorder saw a request end twice, or never"
    assert {r.request_id for r in run.records} == set(answered)


def healed_without(fleet: Fleet, victim: str, timeout_s: float) -> tuple[float, Deployment]:
    """The first epoch past the deployed one that no longer names ``victim``."""
    return fleet.watch.deployment_after(
        fleet.deployment.epoch,
        lambda d: (
            d.deployment == fleet.deployment.deployment
            and all(victim not in stage.replicas for stage in d.stages)
            and all(stage.replicas for stage in d.stages)
        ),
        timeout_s,
    )


def check_served_after_healing(
    fleet: Fleet,
    healed: Deployment,
    victim: str,
    images: np.ndarray,
    reference: np.ndarray,
    *,
    count: int = 10,
) -> None:
    """A new client gets plans of the healed epoch, and exact answers without ``victim``."""
    config = ClientConfig(model=MODEL, deadline_s=10.0)
    with Client(fleet.url, namespace=fleet.namespace, config=config) as client:
        items = list(client.stream(images[:count], max_in_flight=4))
    for item in items:
        assert isinstance(item, InferenceResult), item
        assert item.plan.epoch >= healed.epoch
        assert victim not in {entry.agent_id for entry in item.trace}
        (output,) = item.outputs.values()
        assert item.index is not None and np.array_equal(output, reference[item.index])
