"""Topic names and filters (MQTT 3.1.1 / 5.0 section 4.7), and the one matcher the
client, the in-memory transport and the embedded broker's subscription tree share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitmq.embedded_broker.topics import SubscriptionTree
from splitmq.topic_syntax import (
    InvalidTopic,
    check_topic_filter,
    check_topic_name,
    matches,
    split_shared,
)
from splitmq.wire import topics as wire_topics


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("a/+", "wildcards"),
        ("a/#", "wildcards"),
        ("", "empty"),
        ("a\x00b", "NUL"),
        ("x" * 65_536, "65535"),
        ("é" * 32_768, "65535"),  # 65,536 bytes of UTF-8 in 32,768 characters
        ("a\udc80", "UTF-8"),
        ("$SYS/broker", "starting with '\\$'"),
    ],
)
def test_bad_topic_names_say_which_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidTopic, match=rule) as raised:
        check_topic_name(name)
    assert raised.value.kind == "topic name"
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("a/#/b", "'#'"),
        ("a/b#", "'#'"),
        ("a+", "'\\+'"),
        ("a/+b/c", "'\\+'"),
        ("", "empty"),
        ("a\x00", "NUL"),
        ("$share//a", "GROUP"),
        ("$share/g", "GROUP"),
        ("$share/g+/a", "GROUP"),
        ("$share/g/a/#/b", "'#'"),
    ],
)
def test_bad_topic_filters_say_which_rule(topic_filter: str, rule: str) -> None:
    with pytest.raises(InvalidTopic, match=rule):
        check_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/+/c", "a/#", "+/+", "/", "$SYS/#"])
def test_good_filters_pass(topic_filter: str) -> None:
    assert check_topic_filter(topic_filter) == topic_filter
    assert split_shared(f"$share/g/{topic_filter}") == ("g", topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/#", "a", True),  # 4.7.1.2: '#' matches the parent level too
        ("a/+", "a/", True),  # an empty level is a level
        ("a/+", "a", False),
        ("+/+", "/x", True),
        ("#", "$SYS/x", False),  # 4.7.2: wildcards first do not match '$' names
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$share/g/a/+", "a/b", True),
    ],
)
def test_matches_examples_of_the_standard(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_wire_topics_reexports_the_one_matcher() -> None:
    assert wire_topics.matches is matches


LEVEL = st.sampled_from(["a", "b", "", "$x", "c"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "+", "$x"])


@given(
    filters=st.lists(
        st.tuples(st.lists(FILTER_LEVEL, min_size=1, max_size=4), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    topic=st.lists(LEVEL, min_size=1, max_size=5),
)
def test_the_broker_tree_agrees_with_matches(
    filters: list[tuple[list[str], bool]], topic: list[str]
) -> None:
    """The subscription tree is an index over the same rule, never a second rule."""
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    names = []
    for levels, hash_end in filters:
        name = "/".join([*levels, "#"] if hash_end else levels)
        if not name:
            continue  # an empty filter is refused before it could reach the tree
        names.append(name)
        tree.add(name, f"s{len(names) - 1}", 0)
    name = "/".join(topic)
    found = {s for node in tree.match(name) for s in node.subscribers}
    expected = {f"s{i}" for i, f in enumerate(names) if matches(f, name)}
    assert found == expected
