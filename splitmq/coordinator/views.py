"""The planner's views of live deployments, from the deployments and the registry.

A stage's compute time on an agent is what that agent measured for it (smoothed
telemetry, else the benchmark it ran on load); for a replica not measured yet it is
estimated from the stage's FLOPs (manifest) and the agent's speed (registry). Its queue
depth there is the one the agent's last telemetry reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from splitmq.coordinator.planner import DeploymentView, StageView
from splitmq.coordinator.registry import FLOPS_PER_MS_PER_GFLOPS, Registry
from splitmq.wire import Deployment, DeploymentState, StageEdge, StageSpec, TensorSpec
from splitmq.wire.manifest import Variant

VariantLookup = Callable[[str, str, str], Variant | None]
"""``(model, version, variant) -> Variant`` from the pool (None when it is not there)."""


def tensor_bytes(spec: TensorSpec) -> int:
    """Bytes of one tensor of ``spec`` (unknown dimensions count as 1)."""
    count = math.prod(max(1, d) for d in spec.shape)
    itemsize = 1 if spec.dtype == "bool" else np.dtype(spec.dtype).itemsize
    return count * itemsize


def edge_bytes(edges: Sequence[StageEdge] | None, specs: Sequence[TensorSpec]) -> int:
    """Bytes a stage receives (or sends) over ``edges``: in a stage graph each edge
    carries its own tensors (a tensor two targets read is sent twice); in a chain
    (``None``) every tensor once."""
    if edges is None:
        return sum(tensor_bytes(s) for s in specs)
    sizes = {s.name: tensor_bytes(s) for s in specs}
    return sum(sizes.get(name, 0) for edge in edges for name in edge.tensors)


def fidelity(variant: Variant | None) -> float:
    """A variant's top-1 agreement with float32 (1.0 for the reference or when unknown)."""
    if variant is None or variant.fidelity is None:
        return 1.0
    return variant.fidelity.top1_agreement


def stage_view(
    deployment: Deployment, stage: StageSpec, registry: Registry, variant: Variant | None
) -> StageView:
    ops = (
        range(stage.start_op, stage.end_op) if stage.operators is None else stage.operators
    )  # a stage graph's stage runs a set of operators, not a range
    flops = sum(variant.operators[i].flops for i in ops) if variant else 0
    compute: dict[str, float] = {}
    queued: dict[str, int] = {}
    for agent in stage.replicas:
        depth = registry.queue_depth(deployment.deployment, stage.stage, agent)
        if depth > 0:
            queued[agent] = depth
        measured = registry.compute_ms(deployment.deployment, stage.stage, agent)
        if measured is None and flops:
            measured = flops / (registry.speed_gflops(agent) * FLOPS_PER_MS_PER_GFLOPS)
        if measured is not None:
            compute[agent] = measured
    return StageView(
        stage=stage.stage,
        replicas=stage.replicas,
        compute_ms=compute,
        input_bytes=edge_bytes(stage.sources, stage.inputs),
        output_bytes=edge_bytes(stage.targets, stage.outputs),
        queue_depth=queued,
        sources=None if stage.sources is None else tuple(e.stage for e in stage.sources),
        targets=None if stage.targets is None else tuple(e.stage for e in stage.targets),
    )


def deployment_views(
    deployments: Iterable[Deployment], registry: Registry, lookup: VariantLookup
) -> list[DeploymentView]:
    """Views of the active deployments."""
    views = []
    for deployment in deployments:
        if deployment.state is not DeploymentState.ACTIVE or not deployment.stages:
            continue
        variant = lookup(deployment.model, deployment.version, deployment.variant)
        views.append(
            DeploymentView(
                deployment=deployment.deployment,
                epoch=deployment.epoch,
                model=deployment.model,
                version=deployment.version,
                variant=deployment.variant,
                fidelity=fidelity(variant),
                stages=tuple(
                    stage_view(deployment, s, registry, variant) for s in deployment.stages
                ),
            )
        )
    return views
