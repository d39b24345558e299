"""Counters an agent bumps from several threads.

Apart from :mod:`splitmq.agent.requests`, which is compiled: interpreted classes (the
agent's counters, a join's) subclass these, and a compiled class cannot be."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Counters bumped from several threads (subclasses name them as int fields)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)
