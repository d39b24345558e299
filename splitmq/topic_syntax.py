"""MQTT topic names and topic filters: their syntax and how a filter matches a name.

The one implementation both ends use: the client transport checks every name and
filter here before anything is sent, the embedded broker checks what clients send
and routes with :func:`matches`, ``splitmq.wire.topics`` re-exports it. Pure string
work below all three (no packets, no numpy), so each may import it. The rules, from
MQTT 3.1.1 and MQTT 5.0 section 4.7:

- names and filters are UTF-8 strings of 1 to 65,535 bytes without U+0000
  (MQTT-1.5.3-1, MQTT-1.5.3-2, MQTT-4.7.3-1, MQTT-4.7.3-2);
- a topic name holds no wildcard (MQTT-3.3.2-2);
- in a filter ``#`` stands alone in the last level (MQTT-4.7.1-2) and ``+`` alone in
  its level (MQTT-4.7.1-3);
- a filter starting with a wildcard does not match a name starting with ``$``
  (MQTT-4.7.2-1); names starting with ``$`` belong to the broker, so a client does
  not publish to them;
- ``$share/GROUP/FILTER`` is a shared subscription (MQTT 5.0 section 4.8.2): GROUP
  is non-empty and holds no ``/``, ``+`` or ``#``; FILTER is a filter as above.

::

    >>> matches("a/+/c", "a/b/c"), matches("a/#", "a"), matches("#", "$SYS/x")
    (True, True, False)
"""

from __future__ import annotations

from typing import Literal

from splitmq.errors import SplitMQError

MAX_TOPIC_BYTES = 65_535
"""The longest name or filter MQTT can carry (a two-byte length prefix)."""
SHARE_PREFIX = "$share/"

TopicKind = Literal["topic name", "topic filter"]


class InvalidTopic(SplitMQError, ValueError):
    """A topic name or filter MQTT forbids; nothing was sent.

    Attributes:
        topic: the offending name or filter (as given).
        kind: ``"topic name"`` or ``"topic filter"``.
        reason: which rule it breaks, in words.
    """

    def __init__(self, topic: str, kind: TopicKind, reason: str):
        self.topic = topic
        self.kind = kind
        self.reason = reason
        shown = topic if len(topic) <= 80 else topic[:77] + "..."
        super().__init__(f"invalid MQTT {kind} {shown!r}: {reason}")


def _check_string(topic: str, kind: TopicKind) -> None:
    if not topic:
        raise InvalidTopic(topic, kind, "it is empty (MQTT 4.7.3: at least one character)")
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTopic(
            topic, kind, "it is not valid UTF-8 (a lone surrogate; MQTT 1.5.3)"
        ) from None
    if size > MAX_TOPIC_BYTES:
        raise InvalidTopic(topic, kind, f"{size} bytes of UTF-8, above MQTT's {MAX_TOPIC_BYTES}")
    if "\x00" in topic:
        raise InvalidTopic(topic, kind, "it holds U+0000 (NUL), which MQTT forbids (1.5.3)")


def check_topic_name(topic: str) -> str:
    """``topic`` if a client may publish to it, else :class:`InvalidTopic`."""
    check_broker_topic_name(topic)
    if topic.startswith("$"):
        raise InvalidTopic(
            topic,
            "topic name",
            "names starting with '$' belong to the broker (MQTT 4.7.2); pick another",
        )
    return topic


def check_broker_topic_name(topic: str) -> str:
    """``topic`` if it is a syntactically valid name (``$`` names allowed: a broker's
    own, or a will a broker must route), else :class:`InvalidTopic`."""
    _check_string(topic, "topic name")
    if "+" in topic or "#" in topic:
        raise InvalidTopic(
            topic, "topic name", "wildcards '+' and '#' belong in filters, not names (3.3.2)"
        )
    return topic


def _check_levels(topic_filter: str, shown: str) -> None:
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise InvalidTopic(
                shown, "topic filter", "'#' must be alone in the last level (MQTT 4.7.1.2)"
            )
        if "+" in level and level != "+":
            raise InvalidTopic(shown, "topic filter", "'+' must fill a whole level (MQTT 4.7.1.3)")


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``(group, filter)`` of a valid ``$share/GROUP/FILTER``, ``(None, filter)`` of a
    valid plain filter; :class:`InvalidTopic` otherwise."""
    _check_string(topic_filter, "topic filter")
    group = None
    plain = topic_filter
    if topic_filter.startswith(SHARE_PREFIX):
        group, slash, plain = topic_filter[len(SHARE_PREFIX) :].partition("/")
        if not group or "+" in group or "#" in group or not slash or not plain:
            raise InvalidTopic(
                topic_filter,
                "topic filter",
                "a shared subscription is $share/GROUP/FILTER with a non-empty GROUP "
                "without wildcards (MQTT 5.0 4.8.2)",
            )
    _check_levels(plain, topic_filter)
    return group, plain


def check_topic_filter(topic_filter: str) -> str:
    """``topic_filter`` if a client may subscribe to it, else :class:`InvalidTopic`."""
    split_shared(topic_filter)
    return topic_filter


def is_valid_topic_name(topic: str) -> bool:
    try:
        check_broker_topic_name(topic)
    except InvalidTopic:
        return False
    return True


def is_valid_filter(topic_filter: str) -> bool:
    try:
        split_shared(topic_filter)
    except InvalidTopic:
        return False
    return True


def matches(topic_filter: str, topic: str) -> bool:
    """Whether the name ``topic`` matches ``topic_filter`` (plain or ``$share/G/...``).

    ``#`` matches its parent level too (``a/#`` matches ``a``); a filter starting with
    a wildcard does not match a name starting with ``$``.
    """
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3:
            return False
        topic_filter = parts[2]
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)
