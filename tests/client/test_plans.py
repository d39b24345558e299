"""The plan cache and the plan requests in flight: pure bookkeeping."""

from __future__ import annotations

from splitmq.client.plans import PendingPlans, PlanCache, PlanKey
from splitmq.wire import Deployment, DeploymentState, EnergyLevel, Plan

KEY = PlanKey("digits", max_latency_ms=50.0)


def a_plan(deployment: str = "d", epoch: int = 1) -> Plan:
    return Plan("p", deployment, epoch, "digits", "v1", "float32", (("a",),), 1.0, 0.1)


def a_deployment(
    name: str = "d", epoch: int = 1, state: DeploymentState = DeploymentState.ACTIVE
) -> Deployment:
    return Deployment(name, "digits", "v1", "float32", epoch, (), state)


def test_a_plan_is_kept_while_its_epoch_holds_and_its_ttl_runs() -> None:
    cache = PlanCache(ttl_s=30.0)
    plan = a_plan()
    assert cache.put(KEY, plan, now_s=0.0)
    assert cache.get(KEY, 10.0) is plan
    assert cache.get(PlanKey("digits"), 10.0) is None  # other constraints, other plans
    assert cache.get(KEY, 31.0) is None, "older than its ttl: not fresh"
    assert cache.lookup(KEY, 31.0) == (plan, True), "but kept, stale, while its epoch holds"
    assert cache.lookup(KEY, 10.0) == (plan, False)
    cache.put(KEY, plan, now_s=31.0)
    assert cache.get(KEY, 32.0) is plan, "renewed"
    cache.forget(KEY)
    assert cache.lookup(KEY, 32.0) == (None, False) and len(cache) == 0


def test_a_new_epoch_or_a_retirement_drops_plans() -> None:
    cache = PlanCache()
    cache.put(KEY, a_plan(epoch=1), 0.0)
    other = PlanKey("digits", energy_level=EnergyLevel.SAVER)
    cache.put(other, a_plan("e"), 0.0)
    assert cache.on_deployment(a_deployment(epoch=1))
    assert cache.get(KEY, 1.0) is not None, "the same epoch keeps the plan"
    assert cache.on_deployment(a_deployment(epoch=2))
    assert cache.get(KEY, 1.0) is None and cache.get(other, 1.0) is not None
    assert not cache.on_deployment(a_deployment(epoch=1)), "an older message is stale"
    assert cache.deployment("d") == a_deployment(epoch=2)
    assert not cache.put(KEY, a_plan(epoch=1), 2.0), "a plan of a past epoch is not kept"
    assert cache.put(KEY, a_plan(epoch=2), 2.0)
    cache.on_deployment(a_deployment(epoch=2, state=DeploymentState.RETIRED))
    assert cache.get(KEY, 3.0) is None and not cache.put(KEY, a_plan(epoch=2), 3.0)
    cache.drop("e")
    assert cache.get(other, 3.0) is None


def test_waiters_for_one_key_share_one_plan_request() -> None:
    pending = PendingPlans("alice")
    first = pending.join(KEY, b"1" * 16, now_s=0.0)
    assert first is not None and first.plan_request_id == "alice-1"
    assert pending.join(KEY, b"2" * 16, now_s=0.1) is None
    other = pending.join(PlanKey("mnist"), b"3" * 16, now_s=0.2)
    assert other is not None and other.plan_request_id == "alice-2"
    answered = pending.take("alice-1")
    assert answered is not None and answered.waiters == [b"1" * 16, b"2" * 16]
    assert pending.take("alice-1") is None, "an answer counts once"
    again = pending.join(KEY, b"4" * 16, now_s=1.0)
    assert again is not None and again.plan_request_id == "alice-3"
    assert len(pending) == 2 and len(list(pending.take_all())) == 2 and len(pending) == 0
    request = KEY.request("alice-3", "alice")
    assert (request.model, request.max_latency_ms, request.client_id) == ("digits", 50.0, "alice")


def test_a_stale_plan_is_revalidated_by_one_request_with_nobody_waiting() -> None:
    pending = PendingPlans("alice")
    renewal = pending.revalidate(KEY, now_s=0.0)
    assert renewal is not None and renewal.waiters == []
    assert pending.revalidate(KEY, now_s=0.1) is None, "one renewal in flight per key"
    assert pending.join(KEY, b"1" * 16, now_s=0.2) is None, "a waiter joins the renewal"
    assert pending.take(renewal.plan_request_id) is renewal and renewal.waiters == [b"1" * 16]
    assert pending.revalidate(KEY, now_s=1.0) is not None
    request = KEY.request("alice-3", "alice")
    assert (request.model, request.max_latency_ms, request.client_id) == ("digits", 50.0, "alice")
