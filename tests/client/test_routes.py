"""Route fallbacks, retry decisions and per-attempt timeouts: pure, from tables."""

from __future__ import annotations

import pytest

from splitmq.client.routes import (
    OFFLINE,
    TIMEOUT,
    Failure,
    GiveUp,
    Knowledge,
    Liveness,
    Replan,
    Retry,
    RetryBudget,
    after_failure,
    attempt_timeout_s,
    backoff_s,
    choose_route,
    deadline_allows,
    firsts,
    retryable,
    smoothed,
)

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
