"""The topic table: names, filters, parsing and MQTT matching."""

from __future__ import annotations

import pytest

from splitmq.wire import Activation, AgentStatus, Deployment, Telemetry
from splitmq.wire.topics import (
    COMMANDS,
    DEPLOYMENTS,
    PLAN_REQUESTS,
    RESULTS,
    STAGE,
    STATUS,
    TELEMETRY,
    TOPICS,
    matches,
)


def test_names_and_filters() -> None:
    assert STATUS.name(agent="rpi-1") == "splitmq/v1/agents/rpi-1/status"
    assert STAGE.name("lab/v1", deployment="d1", stage=2, agent="any") == "lab/v1/stage/d1/2/any"
    assert STAGE.filter(deployment="d1") == "splitmq/v1/stage/d1/+/+"
    assert TELEMETRY.filter() == "splitmq/v1/agents/+/telemetry"
    assert (
        PLAN_REQUESTS.shared_filter("coordinators")
        == "$share/coordinators/splitmq/v1/plans/request"
    )


def test_parse_is_the_inverse_of_name() -> None:
    topic = STAGE.name(deployment="d1", stage=3, agent="phone-1")
    assert STAGE.parse(topic) == {"deployment": "d1", "stage": "3", "agent": "phone-1"}
    assert STAGE.parse("splitmq/v1/stage/d1/3") is None
    assert STATUS.parse(TELEMETRY.name(agent="a")) is None
    assert STATUS.parse("other/v1/agents/a/status") is None


def test_every_topic_knows_its_payload_qos_and_retain() -> None:
    assert STATUS.retain and DEPLOYMENTS.retain and TELEMETRY.retain
    assert not STAGE.retain and not RESULTS.retain and not COMMANDS.retain
    assert Activation in STAGE.payload
    assert AgentStatus in STATUS.payload and Telemetry in TELEMETRY.payload
    assert Deployment in DEPLOYMENTS.payload
    assert all(t.qos in (0, 1) and t.description for t in TOPICS)
    patterns = [t.pattern for t in TOPICS]
    assert len(patterns) == len(set(patterns))


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "x#", "$sys", "nul\x00"])
def test_levels_that_would_change_the_topic_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be a topic level"):
        STATUS.name(agent=bad)


def test_missing_and_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="needs"):
        STAGE.name(deployment="d")
    with pytest.raises(ValueError, match="no parameter"):
        STATUS.name(agent="a", stage=1)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$share/g/a/+", "a/b", True),
        ("$share/g/a/+", "b/b", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected
