"""Route fallbacks, retry decisions and per-attempt timeouts: pure, from tables."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitmq.client.routes import (
    OFFLINE,
    PROBE_EVERY,
    TIMEOUT,
    Failure,
    GiveUp,
    Hop,
    Hops,
    HopTimes,
    Knowledge,
    Liveness,
    Replan,
    Retry,
    RetryBudget,
    after_failure,
    attempt_timeout_s,
    backoff_s,
    by_speed,
    choose_route,
    deadline_allows,
    firsts,
    retryable,
    samples,
    smoothed,
)
from splitmq.wire import TraceEntry

PLAN = (("a", "a2", "a3"), ("b", "b2"))
BUDGET = RetryBudget(attempts_made=1, max_attempts=3, remaining_s=5.0, predicted_latency_ms=10.0)


@pytest.mark.parametrize(
    ("knowledge", "dead", "route", "spent"),
    [
        (Knowledge(), (), PLAN, ()),
        (Knowledge(failed=((0, "a"),)), (), (("a2", "a3", "a"), ("b", "b2")), ()),
        (Knowledge(failed=((1, "a"),)), (), PLAN, ()),  # a failed at another stage only
        (Knowledge(), ("b",), (("a", "a2", "a3"), ("b2", "b")), ()),
        (Knowledge(failed=((1, "b2"),)), ("b",), (("a", "a2", "a3"), ("b2", "b")), (1,)),
        (  # suspects go after the others; the one suspected longest ago first
            Knowledge(suspects=((0, "a2"), (0, "a"), (1, "b"))),
            (),
            (("a3", "a2", "a"), ("b2", "b")),
            (),
        ),
        (  # every agent a suspect: not spent, the oldest suspect first
            Knowledge(suspects=((1, "b2"), (1, "b"))),
            (),
            (("a", "a2", "a3"), ("b2", "b")),
            (),
        ),
        (  # all failed: spent; failed ones in the order they failed, then the dead
            Knowledge(failed=((0, "a3"), (0, "a"))),
            ("a2",),
            (("a3", "a", "a2"), ("b", "b2")),
            (0,),
        ),
        (  # a failed suspect counts as failed
            Knowledge(failed=((1, "b"),), suspects=((1, "b"),)),
            (),
            (("a", "a2", "a3"), ("b2", "b")),
            (),
        ),
    ],
)
def test_choose_route(
    knowledge: Knowledge,
    dead: tuple[str, ...],
    route: tuple[tuple[str, ...], ...],
    spent: tuple[int, ...],
) -> None:
    assert choose_route(PLAN, knowledge, dead) == (route, spent)


def test_knowledge_keeps_the_order_things_happened_in() -> None:
    knowledge = Knowledge().fail(0, "a").fail(1, "b").fail(0, "a")
    assert knowledge.failed == ((1, "b"), (0, "a"))
    suspected = knowledge.suspect((("a2",), ("b2",))).suspect((("a3",), ("b2",)))
    assert suspected.suspects == ((0, "a2"), (0, "a3"), (1, "b2"))
    assert firsts((("x", "y"), ("z",))) == ("x", "z")


@pytest.mark.parametrize(
    ("failure", "budget", "dead", "step"),
    [
        (  # an error names the stage and agent: the next fallback at that stage
            Failure("overloaded", "busy", 1, "b"),
            BUDGET,
            (),
            Retry((("a", "a2", "a3"), ("b2", "b"))),
        ),
        (Failure(OFFLINE, "gone", 0, "a"), BUDGET, (), Retry((("a2", "a3", "a"), ("b", "b2")))),
        (  # a timeout with a dead agent on the route: explained, no plan needed
            Failure(TIMEOUT),
            BUDGET,
            ("b",),
            Retry((("a", "a2", "a3"), ("b2", "b"))),
        ),
        (  # a timeout with nothing known: ask the coordinator
            Failure(TIMEOUT),
            BUDGET,
            ("a3",),
            Replan("an attempt timed out and no agent of its route is known dead"),
        ),
        (
            Failure("unknown_deployment", "", 0, "a"),
            BUDGET,
            (),
            Replan("unknown_deployment: the plan is stale"),
        ),
        (
            Failure("shape_mismatch", "bad input", 0, "a"),
            BUDGET,
            (),
            GiveUp("shape_mismatch", "bad input"),
        ),
        (Failure("bad_message", "garbled", 0, "a"), BUDGET, (), GiveUp("bad_message", "garbled")),
        (  # at a later stage another route may do: retried
            Failure("shape_mismatch", "frontier", 1, "b"),
            BUDGET,
            (),
            Retry((("a", "a2", "a3"), ("b2", "b"))),
        ),
        (
            Failure("send_failed", "too big", final=True),
            BUDGET,
            (),
            GiveUp("send_failed", "too big"),
        ),
        (
            Failure("internal", "", 1, "b"),
            RetryBudget(3, 3, 5.0, 10.0),
            (),
            GiveUp("attempts_spent", "all 3 attempts failed"),
        ),
        (
            Failure("internal", "", 1, "b"),
            RetryBudget(1, 3, 0.005, 10.0),
            (),
            GiveUp(
                "deadline",
                "5 ms remain before the deadline, below the plan's predicted latency of 10 ms",
            ),
        ),
        (
            Failure("internal", "", 1, "b"),
            RetryBudget(1, 3, -1.0),
            (),
            GiveUp("deadline", "the deadline passed"),
        ),
    ],
)
def test_after_failure(
    failure: Failure, budget: RetryBudget, dead: tuple[str, ...], step: object
) -> None:
    route = (("a",), ("b",))
    decision = after_failure(route, PLAN, Knowledge(), failure, budget=budget, dead=dead)
    assert decision.step == step


def test_an_unexplained_timeout_makes_suspects_and_the_next_route_rotates() -> None:
    route = choose_route(PLAN, Knowledge())[0]
    decision = after_failure(route, PLAN, Knowledge(), Failure(TIMEOUT), budget=BUDGET)
    assert isinstance(decision.step, Replan)
    assert decision.knowledge.suspects == ((0, "a"), (1, "b"))
    rotated, spent = choose_route(PLAN, decision.knowledge)
    assert firsts(rotated) == ("a2", "b2") and spent == ()
    again = after_failure(rotated, PLAN, decision.knowledge, Failure(TIMEOUT), budget=BUDGET)
    assert firsts(choose_route(PLAN, again.knowledge)[0]) == ("a3", "b")  # b: oldest suspect


def test_a_stage_whose_fallbacks_are_spent_asks_for_a_plan() -> None:
    knowledge = Knowledge(failed=((1, "b"),))
    decision = after_failure(
        (("a",), ("b2",)), PLAN, knowledge, Failure("internal", "", 1, "b2"), budget=BUDGET
    )
    assert decision.step == Replan("the fallbacks of stage 1 are spent")
    assert decision.knowledge.failed == ((1, "b"), (1, "b2"))


@pytest.mark.parametrize(
    ("code", "stage", "expected"),
    [
        ("shape_mismatch", 0, False),
        ("bad_message", 0, False),
        ("shape_mismatch", 2, True),
        ("overloaded", 0, True),
        ("internal", 0, True),
        ("deadline_exceeded", 1, True),
        (TIMEOUT, None, True),
    ],
)
def test_retryable(code: str, stage: int | None, expected: bool) -> None:
    assert retryable(code, stage) is expected


@pytest.mark.parametrize(
    ("predicted_ms", "remaining_s", "observed_ms", "last", "expected_s"),
    [
        (100.0, 10.0, None, False, 3 * 0.1 + 0.25),
        (1.0, 10.0, None, False, 0.5),  # the minimum
        (100.0, 0.4, None, False, 0.4),  # never past the deadline
        (100.0, 10.0, 400.0, False, 3 * 0.4 + 0.25),  # queues seen lately count
        (100.0, 10.0, 20.0, False, 3 * 0.1 + 0.25),  # the plan's prediction is a floor
        (100.0, 7.5, None, True, 7.5),  # the last attempt waits until the deadline
        (100.0, -1.0, None, True, 0.0),
    ],
)
def test_attempt_timeout(
    predicted_ms: float,
    remaining_s: float,
    observed_ms: float | None,
    last: bool,
    expected_s: float,
) -> None:
    timeout = attempt_timeout_s(
        predicted_ms,
        remaining_s,
        observed_ms=observed_ms,
        last=last,
        factor=3.0,
        margin_s=0.25,
        minimum_s=0.5,
    )
    assert timeout == pytest.approx(expected_s)


def test_deadline_and_smoothing() -> None:
    assert deadline_allows(0.2, 150.0) and not deadline_allows(0.1, 150.0)
    assert not deadline_allows(0.0, 0.0)
    assert smoothed(None, 10.0) == 10.0 and smoothed(10.0, 20.0) == pytest.approx(12.0)


def test_liveness_from_statuses_and_telemetry() -> None:
    live = Liveness(stale_periods=3.0, min_stale_s=1.0)
    live.telemetry("fast", seen_s=100.0, period_s=0.1)  # stale after 1 s (the minimum)
    live.telemetry("slow", seen_s=100.0, period_s=2.0)  # stale after 6 s
    live.telemetry("slow", seen_s=90.0, period_s=2.0)  # an older, retained one: ignored
    assert live.dead(100.5) == frozenset()
    assert live.dead(101.5) == {"fast"}
    assert live.dead(106.5) == {"fast", "slow"}
    live.status("gone", online=False)
    assert "gone" in live.dead(100.0)
    live.status("gone", online=True)
    assert "gone" not in live.dead(100.0) and "never-heard-of" not in live.dead(1e9)


def test_the_wait_before_going_back_to_a_busy_agent() -> None:
    assert backoff_s(1, 10.0, minimum_s=0.05, jitter=1.0) == 0.05  # the minimum
    assert backoff_s(1, 200.0, minimum_s=0.05, jitter=1.0) == 0.2  # the expected latency
    assert backoff_s(3, 200.0, minimum_s=0.05, jitter=1.0) == 0.8  # doubled per refusal
    assert backoff_s(2, 200.0, minimum_s=0.05, jitter=0.5) == 0.2


def test_a_trace_tells_each_agents_transfer_in_and_work() -> None:
    a = TraceEntry(stage=0, agent_id="a", received_ms=1010, started_ms=1011, finished_ms=1015)
    b = TraceEntry(stage=1, agent_id="b", received_ms=1020, started_ms=1020, finished_ms=1030)
    # b's work runs on to the client's receipt
    assert samples((a, b), 1000.0, 1035.0) == [(0, "a", 10.0, 5.0), (1, "b", 5.0, 15.0)]
    ahead = replace(a, received_ms=1110, started_ms=1111, finished_ms=1115)  # 100 ms ahead
    assert samples((ahead, b), 1000.0, 1035.0) == [(0, "a", 35.0, 5.0), (1, "b", 0.0, 15.0)]
    local = replace(b, agent_id="a")  # handed over in memory: no transfer
    assert samples((a, local), 1000.0, 1035.0) == [(0, "a", 10.0, 5.0), (1, "a", None, 15.0)]


def hops(**ms: float) -> Hops:
    """Stage 0 observations, all taken at time 0: ``hops(a=300, a2=5)``."""
    return {(0, agent): Hop(value, 0.0) for agent, value in ms.items()}


@pytest.mark.parametrize(
    ("observed", "order"),
    [
        (hops(), ["a", "a2", "a3"]),  # nothing known: the plan's order
        (hops(a=300.0), ["a", "a2", "a3"]),  # slow, but nothing to compare it with
        (hops(a=300.0, a2=5.0), ["a2", "a3", "a"]),  # clearly slower: last
        (hops(a=30.0, a2=20.0), ["a", "a2", "a3"]),  # less than twice
        (hops(a=30.0, a2=12.0), ["a", "a2", "a3"]),  # twice, but by less than 20 ms
        (hops(a=300.0, a2=100.0, a3=5.0), ["a3", "a", "a2"]),  # both slower than a3
    ],
)
def test_an_agent_clearly_slower_than_another_replica_goes_last(
    observed: Hops, order: list[str]
) -> None:
    assert by_speed(0, ["a", "a2", "a3"], observed) == order
    assert by_speed(1, ["a", "a2", "a3"], observed) == ["a", "a2", "a3"]  # another stage's


def test_a_probe_measures_the_replica_known_least_of() -> None:
    observed = {(0, "a"): Hop(300.0, 5.0), (0, "a2"): Hop(5.0, 9.0)}
    assert by_speed(0, ["a", "a2", "a3"], observed, probe=True) == ["a3", "a2", "a"]  # never seen
    assert by_speed(0, ["a", "a2"], observed, probe=True) == ["a", "a2"]  # routed around
    assert by_speed(0, ["a", "a2"], {(0, "a"): Hop(5.0, 1.0)}, probe=True) == ["a2", "a"]
    fine = {(0, "a"): Hop(5.0, 5.0), (0, "a2"): Hop(6.0, 1.0)}
    assert by_speed(0, ["a", "a2"], fine, probe=True) == ["a", "a2"]  # nothing to learn


def test_the_route_avoids_a_slow_replica_only_among_the_untried_live_ones() -> None:
    observed = hops(a=300.0, a2=5.0, a3=6.0)
    assert choose_route(PLAN, Knowledge(), (), observed) == ((("a2", "a3", "a"), PLAN[1]), ())
    assert choose_route(PLAN, Knowledge(), ("a2", "a3"), observed)[0][0] == ("a", "a2", "a3")
    failed = Knowledge(failed=((0, "a2"), (0, "a3")))
    assert choose_route(PLAN, failed, (), observed)[0][0] == ("a", "a2", "a3")
    failure = Failure("internal", "", 1, "b")
    decision = after_failure(
        (("a2",), ("b",)), PLAN, Knowledge(), failure, budget=BUDGET, hops=observed
    )
    assert decision.step == Retry((("a2", "a3", "a"), ("b2", "b")))


def test_an_observation_ages() -> None:
    hop = Hop(100.0, 10.0)
    assert hop.updated(0.0, 10.0) == Hop(80.0, 10.0)  # samples often: smoothed
    assert hop.updated(0.0, 11.0, half_life_s=1.0) == Hop(50.0, 11.0)  # 1 s later: half
    assert hop.updated(0.0, 20.0, half_life_s=1.0).ms < 0.1  # long ago: the new sample


def entry(stage: int, agent_id: str, received_ms: float, finished_ms: float) -> TraceEntry:
    return TraceEntry(stage, agent_id, received_ms, received_ms, finished_ms)


def test_a_hop_is_the_work_at_a_stage_plus_the_agents_transfer() -> None:
    times = HopTimes()
    # sent at 1000: a read it 300 ms late, then ran stage 1 itself; a2 and b2 did not wait
    times.observe("d", (entry(0, "a", 1300, 1305), entry(1, "a", 1305, 1310)), 1000, 1312, 5.0)
    times.observe("d", (entry(0, "a2", 1002, 1007), entry(1, "b2", 1008, 1010)), 1000, 1012, 5.0)
    assert times.of("d") == {
        (0, "a"): Hop(300.0 + 5.0, 5.0),
        (1, "a"): Hop(300.0 + 7.0, 5.0),  # seen only after itself, slow all the same
        (0, "a2"): Hop(2.0 + 5.0, 5.0),
        (1, "b2"): Hop(1.0 + 4.0, 5.0),
    }
    assert times.of("other") == {}


def test_a_slow_primary_is_left_and_probed_until_it_recovers() -> None:
    """A client sending 50 requests a second: ``a`` takes 200 ms per hop, then recovers."""
    plan = (("a", "a2"),)
    times, now_s, through_a = HopTimes(), 0.0, []
    for made in range(1, 1001):
        probe = made % PROBE_EVERY == 0
        first = choose_route(plan, Knowledge(), (), times.of("d"), probe=probe)[0][0][0]
        through_a.append(first == "a")
        slow = first == "a" and made <= 500
        finished = 1000.0 + (200.0 if slow else 5.0)
        times.observe("d", (entry(0, first, 1000.0, finished),), 1000.0, finished, now_s)
        now_s += 0.02
    # the plan's primary, until the first probe measures a2; then a gets only the probes
    assert all(through_a[: PROBE_EVERY - 1]) and not through_a[PROBE_EVERY - 1]
    assert sum(through_a[PROBE_EVERY:500]) == (500 - PROBE_EVERY) // PROBE_EVERY
    assert all(through_a[700:])  # recovered: a few probes (4 s) later, the plan's order


@settings(max_examples=300, deadline=None)
@given(
    route=st.lists(st.lists(st.sampled_from("abcd"), max_size=4), min_size=1, max_size=4),
    hop_ms=st.dictionaries(
        st.tuples(st.integers(0, 3), st.sampled_from("abcd")),
        st.sampled_from([0.5, 1.0, 3.0, 50.0, 400.0]),
        max_size=8,
    ),
    probe=st.booleans(),
)
def test_a_first_attempt_is_routed_as_the_general_rule_routes_it(
    route: list[list[str]], hop_ms: dict[tuple[int, str], float], probe: bool
) -> None:
    """With nothing failed, suspected or dead, choose_route takes a shorter way: the same
    choice as its general rule, which a failure at no stage of the route forces."""
    planned = tuple(tuple(agents) for agents in route)
    hops = {key: Hop(ms, at_s=float(i)) for i, (key, ms) in enumerate(hop_ms.items())}
    general = choose_route(planned, Knowledge(failed=((99, "z"),)), (), hops, probe=probe)
    assert choose_route(planned, Knowledge(), (), hops, probe=probe) == general
