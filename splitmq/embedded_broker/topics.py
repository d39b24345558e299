"""The subscription tree (the syntax of names and filters, and what a filter
matches, live in :mod:`splitmq.topic_syntax`, shared with the client).

The tree holds one node per filter level; a node keeps the plain subscribers of its
filter and the shared-subscription groups (``$share/GROUP/filter``) on it. Matching a
topic walks the exact, ``+`` and ``#`` branches, so its cost follows the depth of the
topic, not the number of subscriptions. Topics starting with ``$`` are not matched by
a filter starting with a wildcard (MQTT 4.7.2).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from splitmq.topic_syntax import (
    InvalidTopic,
    is_valid_filter,
    is_valid_topic_name,
    matches,
    split_shared,
)

Subscriber = TypeVar("Subscriber", bound=Hashable)
Options = TypeVar("Options")

InvalidFilter = InvalidTopic
"""A topic filter the broker cannot subscribe (the SUBACK says so)."""

__all__ = [
    "InvalidFilter",
    "Node",
    "SharedGroup",
    "SubscriptionTree",
    "is_valid_filter",
    "is_valid_topic_name",
    "matches",
    "split_shared",
]


class SharedGroup(Generic[Subscriber, Options]):
    """The members of one ``$share/GROUP/filter``; each message goes to one of them."""

    def __init__(self, name: str):
        self.name = name
        self.members: dict[Subscriber, Options] = {}
        self._turn = 0

    def pick(self, accepts: Callable[[Subscriber], bool]) -> tuple[Subscriber, Options]:
        """The next member in turn that ``accepts``, else simply the next in turn.

        ``accepts`` lets a full queue pass its turn to a member with room.
        """
        members = list(self.members.items())
        start = self._turn % len(members)
        for offset in range(len(members)):
            index = (start + offset) % len(members)
            if accepts(members[index][0]):
                self._turn = index + 1
                return members[index]
        self._turn = start + 1
        return members[start]


@dataclass
class Node(Generic[Subscriber, Options]):
    """One level of the tree: the subscriptions whose filter ends here."""

    children: dict[str, Node[Subscriber, Options]] = field(default_factory=dict)
    subscribers: dict[Subscriber, Options] = field(default_factory=dict)
    groups: dict[str, SharedGroup[Subscriber, Options]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.children or self.subscribers or self.groups)


class SubscriptionTree(Generic[Subscriber, Options]):
    """Filters by level; see the module docstring."""

    def __init__(self) -> None:
        self._root: Node[Subscriber, Options] = Node()

    def add(self, topic_filter: str, subscriber: Subscriber, options: Options) -> bool:
        """Subscribe (``$share/`` filters join their group); True if it replaced one."""
        group_name, plain = split_shared(topic_filter)
        node = self._root
        for level in plain.split("/"):
            node = node.children.setdefault(level, Node())
        members = node.subscribers
        if group_name is not None:
            members = node.groups.setdefault(group_name, SharedGroup(group_name)).members
        existed = subscriber in members
        members[subscriber] = options
        return existed

    def remove(self, topic_filter: str, subscriber: Subscriber) -> bool:
        """Unsubscribe; False if there was no such subscription."""
        group_name, plain = split_shared(topic_filter)
        path = [self._root]
        for level in plain.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        node = path[-1]
        if group_name is None:
            removed = node.subscribers.pop(subscriber, None) is not None
        else:
            group = node.groups.get(group_name)
            removed = group is not None and group.members.pop(subscriber, None) is not None
            if group is not None and not group.members:
                del node.groups[group_name]
        self._prune(path, plain.split("/"))
        return removed

    def match(self, topic: str) -> Iterator[Node[Subscriber, Options]]:
        """Every node whose filter matches ``topic``."""
        levels = topic.split("/")
        return self._walk(self._root, levels, 0, topic.startswith("$"))

    def _walk(
        self, node: Node[Subscriber, Options], levels: list[str], index: int, dollar: bool
    ) -> Iterator[Node[Subscriber, Options]]:
        wildcards_allowed = not (dollar and index == 0)
        if wildcards_allowed and (rest := node.children.get("#")) is not None:
            yield rest  # '#' also matches the parent level: 'a/#' matches 'a'
        if index == len(levels):
            yield node
            return
        if wildcards_allowed and (plus := node.children.get("+")) is not None:
            yield from self._walk(plus, levels, index + 1, dollar)
        if (exact := node.children.get(levels[index])) is not None:
            yield from self._walk(exact, levels, index + 1, dollar)

    @staticmethod
    def _prune(path: list[Node[Subscriber, Options]], levels: list[str]) -> None:
        for depth in range(len(levels), 0, -1):
            if not path[depth].empty():
                return
            del path[depth - 1].children[levels[depth - 1]]
