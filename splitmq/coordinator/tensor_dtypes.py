"""Which agents can pass a variant's tensors: the dtypes at its shards' boundaries.

A shard's inputs and outputs cross the wire, so the agent's runtime must hand them in
and out; inside a shard any dtype runs. Most runtimes pass any dtype, and their agents
declare nothing (``AgentStatus.tensor_dtypes`` left ``None``); LiteRT.js in a page
passes only float32, int32 and uint8, and refuses any other at load. Before a
deployment the cut is not chosen yet, so a variant's boundaries are all of them: its
model inputs and outputs and the frontier of every cut point. When a stage is healed
its cut is known: its own inputs and outputs. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from splitmq.coordinator.planner import AgentView
from splitmq.wire import StageSpec, TensorSpec
from splitmq.wire.manifest import Variant


def _dtypes(tensors: Iterable[TensorSpec]) -> frozenset[str]:
    return frozenset(t.dtype for t in tensors)


def variant_dtypes(variant: Variant) -> frozenset[str]:
    """Every dtype that may cross a boundary of ``variant``'s shards, wherever it is cut."""
    return _dtypes(
        (
            *variant.inputs,
            *variant.outputs,
            *(t for point in variant.cut_points for t in point.frontier),
        )
    )


def stage_dtypes(stage: StageSpec) -> frozenset[str]:
    """The dtypes of ``stage``'s inputs and outputs."""
    return _dtypes((*stage.inputs, *stage.outputs))


def cannot_pass(agent: AgentView, dtypes: frozenset[str]) -> frozenset[str]:
    """The dtypes of ``dtypes`` that ``agent`` cannot pass (none when it declared nothing)."""
    if agent.tensor_dtypes is None:
        return frozenset()
    return dtypes - frozenset(agent.tensor_dtypes)


def why_left_out(agent: AgentView, dtypes: frozenset[str], variant: str) -> str:
    """``page-1 (litert.js) passes only float32, int32, uint8; int8 variant boundaries
    carry int8``."""
    runtime = f" ({agent.runtime})" if agent.runtime else ""
    passes = ", ".join(sorted(agent.tensor_dtypes or ())) or "no tensor"
    missing = ", ".join(sorted(cannot_pass(agent, dtypes)))
    return (
        f"{agent.agent_id}{runtime} passes only {passes}; "
        f"{variant} variant boundaries carry {missing}"
    )
