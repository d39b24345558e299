"""Traces of a stage graph's branches, put together where the branches meet (a join
stage on an agent, or the client joining several final stages)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from splitmq.wire.messages import TraceEntry


def merged_trace(traces: Iterable[Sequence[TraceEntry]]) -> tuple[TraceEntry, ...]:
    """Every stage's entry once (the trunk's is in every branch's trace), in the order
    the stages finished."""
    seen: set[tuple[int, str, int]] = set()
    merged: list[TraceEntry] = []
    for trace in traces:
        for entry in trace:
            mark = (entry.stage, entry.agent_id, entry.attempt)
            if mark not in seen:
                seen.add(mark)
                merged.append(entry)
    return tuple(sorted(merged, key=lambda e: e.finished_ms))
