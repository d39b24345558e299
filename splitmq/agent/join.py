"""A stage graph on the agent: the join that collects a request's branches, and the
fan-out that sends each target stage the tensors it reads.

A stage whose load command lists several ``sources`` is a *join*. Its activations
arrive one per source (``Activation.source``) and wait in :class:`Joins`, per
(deployment, stage, request, attempt), until every source is in; then they are merged
into one activation that runs the shard like any other. While they wait:

- a second activation from a source already in is a duplicate (QoS 1 may deliver
  twice; a retried branch may overtake the first run): dropped;
- an activation for a request whose join already ran is late: dropped;
- the tensors held by every waiting request are bounded (``join_max_bytes``): an
  activation past the bound is refused at once as ``join_full`` (the requester
  retries the request elsewhere);
- ``join_wait_ms`` after the first source arrived -- or three times the usual spread
  between a join's first and last branch when that is longer; never past the request's
  deadline -- every source still missing is reported to the requester as ``branch_missing`` with
  that branch's stage, so the requester retries that branch alone; the others wait on,
  until the request's deadline, when what is left is dropped.

A stage whose load command lists ``targets`` sends each target only the tensors of its
edge, on the target's topic from the route (:func:`fan_out`); the requester's edge
(``REQUESTER``) becomes a :class:`~splitmq.wire.Result` naming the stage, so a client
joins the outputs of several branches itself. A branch retry (``Activation.branch``)
goes along one path: a stage with several targets sends it to that branch alone.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from splitmq.agent.counters import Counters
from splitmq.agent.requests import RequestFailed, now_ms
from splitmq.wire import (
    REQUESTER,
    Activation,
    ErrorCode,
    ErrorMessage,
    Message,
    Result,
    StageEdge,
    Tensor,
    TraceEntry,
)
from splitmq.wire.topics import hop_topic
from splitmq.wire.traces import merged_trace

log = logging.getLogger(__name__)

RETRY_SHIFT = 20
"""A branch retry's number is folded into the de-duplication key above the attempt's
bits: ``attempt + retry << RETRY_SHIFT``."""

DONE_ENTRIES = 4096
"""Joins that ran, remembered to drop their late branches."""

SPREAD_MARGIN = 3.0
"""A join waits at least this many times the usual spread between its first and last
branch (smoothed over the requests whose branches all came) before it reports one
missing: branches of unequal cost are not taken for lost."""

SPREAD_WEIGHT = 0.2
"""Weight of the newest request in the smoothed spread."""

DROP_AFTER_WAITS = 10
"""With no deadline, a join gives up waiting after this many ``join_wait_ms``."""

JoinKey = tuple[str, int, bytes, int]  # deployment, stage, request id, attempt
Report = Callable[[Activation, ErrorMessage], None]


def seen_key(activation: Activation) -> tuple[bytes, int, int]:
    """What a stage de-duplicates on: (request, stage, attempt), a branch retry apart."""
    attempt = activation.attempt + ((activation.retry or 0) << RETRY_SHIFT)
    return (activation.request_id, activation.stage, attempt)


def is_join(sources: Sequence[StageEdge] | None) -> bool:
    return sources is not None and len(sources) > 1


@dataclass
class _Waiting:
    """One request's branches arrived so far at one join."""

    key: JoinKey
    wanted: tuple[int, ...]
    arrived: dict[int, Activation]
    sizes: dict[int, int]
    first_ms: float
    notify_ms: float
    drop_ms: float
    notified: bool = False


@dataclass
class JoinStats(Counters):
    duplicates: int = 0
    late: int = 0
    missing_reported: int = 0
    refused_full: int = 0

    def counts(self) -> dict[str, int] | None:
        """The counters as telemetry carries them (``Telemetry.joins``); None while all
        are zero."""
        with self.lock:
            counts = {
                "duplicates": self.duplicates,
                "late": self.late,
                "missing": self.missing_reported,
                "refused_full": self.refused_full,
            }
        return counts if any(counts.values()) else None


class Joins:
    """The requests waiting at this agent's join stages (see the module docstring).

    Args:
        agent_id: this agent, named in the errors it reports.
        wait_ms: ``AgentConfig.join_wait_ms``.
        max_bytes: ``AgentConfig.join_max_bytes``.
        report: publishes an error on a request's callback topic (off the lock).
        stopping: set when the agent stops; the expiry thread ends.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        wait_ms: float,
        max_bytes: int,
        report: Report,
        stopping: threading.Event,
    ) -> None:
        self.agent_id = agent_id
        self.wait_ms = wait_ms
        self.max_bytes = max_bytes
        self.stats = JoinStats()
        self._report = report
        self._stopping = stopping
        self._waiting: dict[JoinKey, _Waiting] = {}
        self._done: OrderedDict[JoinKey, None] = OrderedDict()
        self._bytes = 0
        self._spread: dict[tuple[str, int], float] = {}  # smoothed first-to-last arrival, ms
        self._events: list[tuple[float, int, JoinKey]] = []
        self._order = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def held_bytes(self) -> int:
        with self._cond:
            return self._bytes

    def pending(self) -> int:
        with self._cond:
            return len(self._waiting)

    def offer(
        self, sources: Sequence[StageEdge], activation: Activation, size: int
    ) -> Activation | None:
        """Take one branch's activation; the merged activation once every source is in,
        else None (waiting, or dropped as a duplicate or late).

        Raises:
            RequestFailed: ``join_full`` (the bound on held tensors), or a source this
                stage does not read from (``bad_message``).
        """
        wanted = [edge.stage for edge in sources]
        source = REQUESTER if activation.source is None else activation.source
        if source not in wanted:
            raise RequestFailed(
                ErrorCode.BAD_MESSAGE,
                f"stage {activation.stage} joins stages {wanted}; this activation comes from "
                f"stage {source}",
            )
        key: JoinKey = (
            activation.deployment,
            activation.stage,
            activation.request_id,
            activation.attempt,
        )
        with self._cond:
            if key in self._done:
                self.stats.add("late")
                log.info(
                    "dropped a late branch %d of %s: the join ran",
                    source,
                    activation.request_id.hex(),
                )
                return None
            waiting = self._waiting.get(key)
            if waiting is not None and source in waiting.arrived:
                self.stats.add("duplicates")
                log.info(
                    "dropped a duplicate of branch %d of %s", source, activation.request_id.hex()
                )
                return None
            if self._bytes + size > self.max_bytes:
                self.stats.add("refused_full")
                raise RequestFailed(
                    ErrorCode.JOIN_FULL,
                    f"join stage {activation.stage} on {self.agent_id} holds "
                    f"{self._bytes} bytes of branches waiting; {size} more would pass its "
                    f"bound of {self.max_bytes} (join_max_bytes): retry on a fallback, or "
                    "give the agent a larger --join-max-mb",
                )
            if waiting is None:
                now = now_ms()
                deadline = float(activation.deadline_ms or 0)
                wait = max(self.wait_ms, SPREAD_MARGIN * self._spread.get(key[:2], 0.0))
                notify = now + wait
                drop = deadline if deadline else now + DROP_AFTER_WAITS * wait
                waiting = _Waiting(key, tuple(wanted), {}, {}, now, min(notify, drop), drop)
                self._waiting[key] = waiting
                self._schedule(waiting.notify_ms, key)
                self._schedule(waiting.drop_ms, key)
            waiting.arrived[source] = activation
            waiting.sizes[source] = size
            self._bytes += size
            if len(waiting.arrived) < len(wanted):
                return None
            if not waiting.notified:  # a spread seen with every branch healthy
                spread = now_ms() - waiting.first_ms
                known = self._spread.get(key[:2])
                self._spread[key[:2]] = (
                    spread if known is None else known + SPREAD_WEIGHT * (spread - known)
                )
            self._finish(key)
        return merge([waiting.arrived[s] for s in wanted])

    def _finish(self, key: JoinKey) -> None:
        waiting = self._waiting.pop(key)
        self._bytes -= sum(waiting.sizes.values())
        self._done[key] = None
        while len(self._done) > DONE_ENTRIES:
            self._done.popitem(last=False)

    # -- expiry --------------------------------------------------------------------------

    def _schedule(self, when_ms: float, key: JoinKey) -> None:
        self._order += 1
        heapq.heappush(self._events, (when_ms, self._order, key))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"agent-{self.agent_id}-joins", daemon=True
            )
            self._thread.start()
        self._cond.notify()

    def _run(self) -> None:
        while not self._stopping.is_set():
            reports: list[tuple[Activation, ErrorMessage]] = []
            with self._cond:
                now = now_ms()
                while self._events and self._events[0][0] <= now:
                    _, _, key = heapq.heappop(self._events)
                    reports.extend(self._expire(key, now))
                wait_s = (self._events[0][0] - now) / 1000.0 if self._events else 1.0
            for activation, error in reports:
                self._report(activation, error)
            with self._cond:
                if not reports:
                    self._cond.wait(min(max(wait_s, 0.001), 1.0))

    def _expire(self, key: JoinKey, now: float) -> list[tuple[Activation, ErrorMessage]]:
        waiting = self._waiting.get(key)
        if waiting is None:
            return []
        if now >= waiting.drop_ms:
            log.info(
                "join %s/%d dropped request %s: branches %s never came",
                key[0],
                key[1],
                key[2].hex(),
                sorted(waiting.arrived),
            )
            self._finish(key)
            if waiting.notified:
                return []
        elif waiting.notified or now < waiting.notify_ms:
            return []
        waiting.notified = True
        some = next(iter(waiting.arrived.values()))
        missing = [s for s in waiting.wanted if s not in waiting.arrived]
        with self.stats.lock:
            self.stats.missing_reported += len(missing)
        waited = now - waiting.first_ms
        return [
            (
                some,
                ErrorMessage(
                    request_id=some.request_id,
                    attempt=some.attempt,
                    stage=stage,
                    agent_id=self.agent_id,
                    code=ErrorCode.BRANCH_MISSING,
                    message=(
                        f"join stage {some.stage} on {self.agent_id} waited {waited:.0f} ms for "
                        f"branch stage {stage} (it has {sorted(waiting.arrived)}): retry that "
                        "branch on its fallback"
                    ),
                    deployment=some.deployment,
                ),
            )
            for stage in missing
        ]


def merge(parts: Sequence[Activation]) -> Activation:
    """One activation from every source's: their tensors, and their traces (each stage's
    entry once), on the route of the latest (a retried branch's route names its fallback)."""
    tensors: list[Tensor] = [t for part in parts for t in part.tensors]
    latest = max(parts, key=lambda p: p.retry or 0)
    return replace(
        latest,
        tensors=tuple(tensors),
        trace=merged_trace(part.trace for part in parts),
        source=None,
        branch=None,
        retry=None,
    )


# -- fan-out --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One message a graph stage sends: an activation to a stage, or the requester's
    share of the outputs."""

    topic: str
    message: Message


def fan_out_topics(
    activation: Activation,
    targets: Sequence[StageEdge],
    *,
    namespace: str,
    sites: dict[str, str],
    here: str,
) -> dict[int, str]:
    """Each target stage's topic from the route, checked before computing: a branch
    retry's path keeps only the branch where a stage fans out."""
    chosen = [edge for edge in targets if edge.stage != REQUESTER]
    if activation.branch is not None and len(targets) > 1:
        chosen = [edge for edge in chosen if edge.stage == activation.branch]
    topics = {}
    for edge in chosen:
        if not 0 <= edge.stage < len(activation.route) or not activation.route[edge.stage]:
            raise RequestFailed(
                ErrorCode.BAD_MESSAGE, f"the route names no agent for stage {edge.stage}"
            )
        try:
            topics[edge.stage] = hop_topic(
                namespace,
                deployment=activation.deployment,
                stage=edge.stage,
                agent=activation.route[edge.stage][0],
                sites=sites,
                here=here,
            )
        except ValueError as error:
            raise RequestFailed(ErrorCode.BAD_MESSAGE, f"bad route: {error}") from None
    return topics


def fan_out(
    activation: Activation,
    targets: Sequence[StageEdge],
    topics: dict[int, str],
    outputs: Sequence[Tensor],
    *,
    trace: tuple[TraceEntry, ...],
    agent_id: str,
) -> list[Outgoing]:
    """The messages of a graph stage's outputs: per target its edge's tensors."""
    by_name = {t.name: t for t in outputs}
    messages: list[Outgoing] = []
    for edge in targets:
        tensors = tuple(by_name[name] for name in edge.tensors if name in by_name)
        if edge.stage == REQUESTER:
            if activation.branch is not None and len(targets) > 1:
                continue  # a branch retry: the requester has these already
            result = Result(
                request_id=activation.request_id,
                attempt=activation.attempt,
                deployment=activation.deployment,
                tensors=tensors,
                trace=trace,
                agent_id=agent_id,
                stage=activation.stage,
            )
            messages.append(Outgoing(activation.callback, result))
            continue
        topic = topics.get(edge.stage)
        if topic is None:
            continue
        forward = Activation(
            request_id=activation.request_id,
            attempt=activation.attempt,
            deployment=activation.deployment,
            stage=edge.stage,
            route=activation.route,
            callback=activation.callback,
            deadline_ms=activation.deadline_ms,
            tensors=tensors,
            trace=trace,
            client_id=activation.client_id,
            source=activation.stage,
            branch=activation.branch,
            retry=activation.retry,
        )
        messages.append(Outgoing(topic, forward))
    return messages
