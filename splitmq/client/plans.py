"""Plans the client keeps: a cache keyed by the request's constraints, and the plan
requests waiting for the coordinator's answer. Pure bookkeeping; the client locks.

A plan stays valid while its deployment's epoch is unchanged (``Deployment`` messages
are retained on ``deployments/+``): a new epoch, or the deployment retired, drops
every plan of it. A plan also ages out after ``ttl_s``, so a long-lived client follows
the fleet's batteries and load as the coordinator sees them. An aged plan whose epoch
holds is *stale*, not gone: the client keeps using it while it asks for a fresh one
(stale-while-revalidate), so requests keep flowing while the coordinator is down or
slow, and none waits for a renewal.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from splitmq.client.timers import Timer
from splitmq.wire import Battery, Deployment, DeploymentState, EnergyLevel, Plan, PlanRequest


class PlanKey(NamedTuple):
    """The constraints a plan was asked for: requests with equal keys share plans.

    A named tuple: every request makes one and looks its plan up by it (a dataclass's
    ``__hash__`` and ``__eq__`` are Python functions)."""

    model: str
    version: str | None = None
    max_latency_ms: float | None = None
    min_fidelity: float | None = None
    energy_j: float | None = None
    energy_level: EnergyLevel = EnergyLevel.BALANCED
    task: str | None = None
    """A task instead of a model (``model`` is then ``""``)."""
    min_accuracy: float | None = None
    client_battery: Battery | None = None
    """The client's battery as it asked: a different charge is another key (and plan)."""

    def request(
        self, request_id: str, client_id: str, client_ms: float | None = None
    ) -> PlanRequest:
        """The :class:`PlanRequest` asking for a plan with these constraints (and the
        client's own work per request, ``client_ms``, as it measured it)."""
        return PlanRequest(
            request_id=request_id,
            client_id=client_id,
            model=self.model,
            version=self.version,
            max_latency_ms=self.max_latency_ms,
            min_fidelity=self.min_fidelity,
            energy_j=self.energy_j,
            energy_level=self.energy_level,
            client_battery=self.client_battery,
            task=self.task,
            min_accuracy=self.min_accuracy,
            client_ms=client_ms,
        )


class PlanCache:
    """Plans by :class:`PlanKey`, dropped when their deployment's epoch moves on.

    Times are ``time.monotonic()`` seconds.
    """

    def __init__(self, ttl_s: float = 30.0):
        self.ttl_s = ttl_s
        self._plans: dict[PlanKey, tuple[Plan, float]] = {}
        self._deployments: dict[str, Deployment] = {}

    def get(self, key: PlanKey, now_s: float) -> Plan | None:
        """The plan for ``key`` if it is current and younger than ``ttl_s``."""
        plan, stale = self.lookup(key, now_s)
        return None if stale else plan

    def lookup(self, key: PlanKey, now_s: float) -> tuple[Plan | None, bool]:
        """The plan for ``key`` while its epoch holds, and whether it is stale (older
        than ``ttl_s``: use it, but ask for a fresh one)."""
        entry = self._plans.get(key)
        if entry is None:
            return None, False
        plan, stored_s = entry
        if not self.current(plan):
            del self._plans[key]
            return None, False
        return plan, now_s - stored_s > self.ttl_s

    def forget(self, key: PlanKey) -> None:
        """Drop the plan for ``key`` (the coordinator refused to renew it)."""
        self._plans.pop(key, None)

    def put(self, key: PlanKey, plan: Plan, now_s: float) -> bool:
        """Keep ``plan`` for ``key``; False (not kept) when its epoch is already past."""
        if not self.current(plan):
            return False
        self._plans[key] = (plan, now_s)
        return True

    def current(self, plan: Plan) -> bool:
        """Whether ``plan``'s deployment is not retired and not at a later epoch."""
        known = self._deployments.get(plan.deployment)
        return known is None or (
            known.state is not DeploymentState.RETIRED and plan.epoch >= known.epoch
        )

    def deployment(self, name: str) -> Deployment | None:
        """The latest :class:`Deployment` message seen for ``name``."""
        return self._deployments.get(name)

    def on_deployment(self, deployment: Deployment) -> bool:
        """Note a deployment message; drop the plans it outdates. False if it is stale."""
        name = deployment.deployment
        known = self._deployments.get(name)
        if known is not None and known.epoch > deployment.epoch:
            return False
        self._deployments[name] = deployment
        if deployment.state is DeploymentState.RETIRED:
            self.drop(name)
        else:
            self.drop(name, before_epoch=deployment.epoch)
        return True

    def drop(self, deployment: str, *, before_epoch: int | None = None) -> list[PlanKey]:
        """Forget the plans of ``deployment`` (only those of earlier epochs, if given)."""
        dropped = [
            key
            for key, (plan, _) in self._plans.items()
            if plan.deployment == deployment and (before_epoch is None or plan.epoch < before_epoch)
        ]
        for key in dropped:
            del self._plans[key]
        return dropped

    def __len__(self) -> int:
        return len(self._plans)


@dataclass
class PendingPlan:
    """A plan request sent, and who waits for its answer.

    Attributes:
        plan_request_id: the ``request_id`` of the :class:`PlanRequest`.
        key: the constraints asked for.
        waiters: the request ids (16 bytes) waiting, in the order they joined.
        sent_s: when it was sent (``time.monotonic()``).
        timer: its timeout, cancelled when the answer comes.
    """

    plan_request_id: str
    key: PlanKey
    waiters: list[bytes]
    sent_s: float
    timer: Timer | None = None


class PendingPlans:
    """Plan requests in flight: one per key at a time, however many requests wait."""

    def __init__(self, prefix: str = ""):
        self._prefix = prefix or uuid.uuid4().hex[:8]
        self._sequence = itertools.count(1)
        self._by_id: dict[str, PendingPlan] = {}
        self._by_key: dict[PlanKey, str] = {}

    def join(self, key: PlanKey, waiter: bytes, now_s: float) -> PendingPlan | None:
        """Wait for a plan for ``key``; a new :class:`PendingPlan` when one must be sent.

        Returns None when a plan request for ``key`` is already in flight: ``waiter``
        gets its answer.
        """
        existing = self._by_key.get(key)
        if existing is not None:
            self._by_id[existing].waiters.append(waiter)
            return None
        return self._new(key, [waiter], now_s)

    def revalidate(self, key: PlanKey, now_s: float) -> PendingPlan | None:
        """Ask for a fresh plan for ``key`` with nobody waiting; None if one is in flight."""
        return None if key in self._by_key else self._new(key, [], now_s)

    def _new(self, key: PlanKey, waiters: list[bytes], now_s: float) -> PendingPlan:
        pending = PendingPlan(f"{self._prefix}-{next(self._sequence)}", key, waiters, now_s)
        self._by_id[pending.plan_request_id] = pending
        self._by_key[key] = pending.plan_request_id
        return pending

    def take(self, plan_request_id: str) -> PendingPlan | None:
        """The pending request answered (or given up on) now; None if not (or no longer) ours."""
        pending = self._by_id.pop(plan_request_id, None)
        if pending is not None and self._by_key.get(pending.key) == plan_request_id:
            del self._by_key[pending.key]
        return pending

    def take_all(self) -> Iterable[PendingPlan]:
        pending = list(self._by_id.values())
        self._by_id.clear()
        self._by_key.clear()
        return pending

    def __len__(self) -> int:
        return len(self._by_id)
