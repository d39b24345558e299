"""One representative instance of every wire message, for round-trip tests."""

from __future__ import annotations

import numpy as np

from splitmq.wire import (
    REQUESTER,
    Activation,
    AgentState,
    AgentStatus,
    Battery,
    CommandReply,
    Deployment,
    DeploymentState,
    DeployReply,
    DeployRequest,
    EnergyLevel,
    ErrorCode,
    ErrorMessage,
    FetchFailed,
    FetchShard,
    Lease,
    Link,
    LoadShard,
    Message,
    Objective,
    Ping,
    Plan,
    PlanRefused,
    PlanRequest,
    Pong,
    Result,
    ShardChunk,
    ShardReady,
    StageEdge,
    StagePrediction,
    StageSpec,
    TaskCandidate,
    Telemetry,
    Tensor,
    TensorSpec,
    TraceEntry,
    UnloadShard,
)

REQUEST_ID = bytes(range(16))
SPEC_IN = TensorSpec("input_1", (1, 224, 224, 3), "float32")
SPEC_Q = TensorSpec("block_3/add", (1, 28, 28, 40), "int8", scale=0.0235, zero_point=-128)
TRACE = (
    TraceEntry(0, "rpi-1", 1700000000000.5, 1700000000001.0, 1700000000012.25, 602112, 0),
    TraceEntry(1, "phone-1", 1700000000013.0, 1700000000013.5, 1700000000020.0, 31360, 0),
)


SPEC_L = TensorSpec("tower_l/relu", (1, 8, 8, 12), "float32", size_bytes=3072)
SPEC_R = TensorSpec("tower_r/relu", (1, 8, 8, 12), "float32", size_bytes=3072)
SPEC_OUT = TensorSpec("logits", (1, 10), "float32", size_bytes=40)


def stage_graph_messages() -> list[Message]:
    """The stage graph's optional fields (fan-out, branches, fan-in), set: a trunk
    feeding two branches that a join stage joins, and the activations between them."""
    rng = np.random.default_rng(8)
    left = rng.random((1, 8, 8, 12), dtype=np.float32)
    trunk = StageSpec(
        0,
        0,
        10,
        "a0" * 32,
        1000,
        (SPEC_IN,),
        (SPEC_Q,),
        ("rpi-1",),
        sources=(StageEdge(REQUESTER, (SPEC_IN.name,)),),
        targets=(StageEdge(1, (SPEC_Q.name,)), StageEdge(2, (SPEC_Q.name,))),
    )
    branches = [
        StageSpec(
            stage,
            10,
            30,
            f"b{stage}" * 32,
            2000,
            (SPEC_Q,),
            (spec,),
            (agent, "laptop-1"),
            sources=(StageEdge(0, (SPEC_Q.name,)),),
            targets=(StageEdge(3, (spec.name,)),),
            operators=tuple(range(10 + stage, 30, 2)),
        )
        for stage, spec, agent in ((1, SPEC_L, "rpi-2"), (2, SPEC_R, "phone-1"))
    ]
    join = StageSpec(
        3,
        30,
        40,
        "c3" * 32,
        500,
        (SPEC_L, SPEC_R),
        (SPEC_OUT,),
        ("laptop-1",),
        sources=(StageEdge(1, (SPEC_L.name,)), StageEdge(2, (SPEC_R.name,))),
        targets=(StageEdge(REQUESTER, (SPEC_OUT.name,)),),
    )
    route = (("rpi-1",), ("rpi-2", "laptop-1"), ("phone-1", "laptop-1"), ("laptop-1",))
    return [
        LoadShard(
            "c9",
            "coordinator",
            "d2",
            3,
            "c3" * 32,
            500,
            join.inputs,
            join.outputs,
            sources=join.sources,
            targets=join.targets,
        ),
        Activation(
            request_id=REQUEST_ID,
            attempt=0,
            deployment="d2",
            stage=3,
            route=route,
            callback="splitmq/v1/clients/alice/result",
            deadline_ms=1700000000500,
            tensors=(Tensor(SPEC_L.name, left),),
            trace=TRACE,
            client_id="alice",
            source=1,
        ),
        Result(REQUEST_ID, 0, "d2", (Tensor("logits", left.reshape(1, -1)[:, :10]),), stage=3),
        Deployment(
            deployment="d2",
            model="two_towers",
            version="v2",
            variant="float32",
            epoch=1,
            stages=(trunk, *branches, join),
        ),
    ]


def sample_messages() -> list[Message]:
    rng = np.random.default_rng(7)
    image = rng.random((1, 8, 8, 3), dtype=np.float32)
    quantized = rng.integers(-128, 128, (1, 4, 4, 8), dtype=np.int8)
    return [
        AgentStatus(
            "rpi-1",
            AgentState.ONLINE,
            ts_ms=1700000000000,
            version="0.1.0",
            runtime="ai-edge-litert",
            runtime_version="2.3.0",
            cores=4,
            memory_bytes=4 << 30,
            profile="rpi4",
            site="north-campus",
            cached_shards=("ab" * 32,),
        ),
        AgentStatus("rpi-1", AgentState.OFFLINE),
        AgentStatus(
            "page-1",
            AgentState.ONLINE,
            runtime="litert.js",
            tensor_dtypes=("float32", "int32", "uint8"),
        ),
        Telemetry(
            agent_id="phone-1",
            ts_ms=1700000000000,
            period_s=1.0,
            cpu_pct=37.5,
            mem_free_bytes=1 << 30,
            battery=Battery(81.5, plugged=False, simulated=True),
            profile="phone",
            temperature_c=41.0,
            queue_depth={"d1/0": 2},
            compute_ms={"ab" * 32: 12.5},
            msgs_in=10,
            msgs_out=9,
            bytes_in=1 << 20,
            bytes_out=1 << 19,
            broker_rtt_ms=0.4,
            energy_j=3.25,
            link=Link(bandwidth_mbps=100.0, latency_ms=1.0),
            hop_mbps=2400.5,
        ),
        LoadShard(
            "c1", "coordinator", "d1", 0, "ab" * 32, 123456, (SPEC_IN,), (SPEC_Q,), threads=2
        ),
        UnloadShard("c2", "coordinator", "d1", 0),
        Ping("c3", "coordinator", 1700000000000.25),
        Ping("rtt-2", "rpi-1", 12.5, padding=bytes(range(256)) * 4),
        CommandReply("c1", "rpi-1", ok=False, message="shard digest mismatch"),
        ShardReady("c1", "rpi-1", "d1", 0, "ab" * 32, "ai-edge-litert", 11.75),
        Pong("c3", "rpi-1", 1700000000000.25, 1700000000000.75),
        FetchShard("rpi-1", "ab" * 32, 262144, 262144),
        ShardChunk("ab" * 32, 262144, 1000000, bytes(range(256)) * 4),
        FetchFailed("ab" * 32, "no such shard in the pool"),
        Activation(
            request_id=REQUEST_ID,
            attempt=1,
            deployment="d1",
            stage=1,
            route=(("rpi-1", "laptop-1"), ("phone-1",)),
            callback="splitmq/v1/clients/alice/result",
            deadline_ms=1700000000500,
            tensors=(
                Tensor("input_1", image),
                Tensor("block_3/add", quantized, scale=0.0235, zero_point=-128),
            ),
            trace=TRACE,
            client_id="alice",
        ),
        Result(REQUEST_ID, 0, "d1", (Tensor("logits", image.reshape(1, -1)),), TRACE, "phone-1"),
        ErrorMessage(REQUEST_ID, 0, 1, "phone-1", ErrorCode.SHAPE_MISMATCH, "expected (1, 4)"),
        PlanRequest(
            "p1",
            "alice",
            "mobilenet_v3_large",
            version=None,
            max_latency_ms=150.0,
            min_fidelity=0.98,
            energy_j=2.5,
            energy_level=EnergyLevel.SAVER,
            client_battery=Battery(20.0, plugged=False),
            client_ms=1.25,
        ),
        Plan("p1", "d1", 3, "mobilenet_v3_large", "v1a2b", "int8", (("a",), ("b", "c")), 42.0, 1.5),
        Plan(
            "p1",
            "d1",
            3,
            "mobilenet_v3_large",
            "v1a2b",
            "int8",
            (("a",), ("b", "c")),
            42.0,
            1.5,
            predicted_stages=(
                StagePrediction(0, "a", 0.5, 0.0, 12.0),
                StagePrediction(1, "b", 20.5, 3.25, 5.0),
            ),
            predicted_final_hop_ms=0.75,
            predicted_client_ms=1.25,
        ),
        Plan(  # a task's plan: the member chosen, and every member and variant weighed
            "p3",
            "d2",
            1,
            "digits-medium",
            "8e33",
            "int8",
            (("a",),),
            1.25,
            0.0004,
            task="digits",
            accuracy=0.94,
            candidates=(
                TaskCandidate(
                    "digits-small", "072a", "int8", 0.78, None, 0.5, 1e-4, excluded="min_accuracy"
                ),
                TaskCandidate("digits-medium", "8e33", "int8", 0.94, None, 1.25, 0.0004),
                TaskCandidate("digits-large", "7ac2", "float32", None, 1.0, excluded="unavailable"),
            ),
        ),
        PlanRefused("p2", "mobilenet_v3_large", "energy_j", "needs 3.1 J, budget 0.5 J"),
        Deployment(
            deployment="d1",
            model="mobilenet_v3_large",
            version="v1a2b",
            variant="float32",
            epoch=3,
            stages=(
                StageSpec(
                    0, 0, 40, "ab" * 32, 2_000_000, (SPEC_IN,), (SPEC_Q,), ("rpi-1", "laptop-1")
                ),
                StageSpec(1, 40, 120, "cd" * 32, 3_000_000, (SPEC_Q,), (), ("phone-1",)),
            ),
            state=DeploymentState.ACTIVE,
            created_ms=1700000000000,
            objective="latency",
            sites={"rpi-1": "north-campus", "phone-1": "home"},
        ),
        DeployRequest(
            request_id="r1",
            client_id="ops",
            model="digits",
            version="0a1b2c3d4e5f",
            variant="int8",
            stages=0,
            replicas=2,
            objective=Objective.ENERGY,
            pin_first="alice",
            max_latency_ms=80.0,
            max_shard_bytes=4_000_000,
        ),
        DeployReply(
            "r1",
            ok=False,
            message="best predicted latency 84.2 ms exceeds the gate of 80 ms",
            failed_agents=("rpi-1",),
            predicted_latency_ms=84.2,
        ),
        Lease(
            "splitmq-coordinator-a1b2c3",
            term=7,
            period_s=1.0,
            expiry_s=3.0,
            telemetry_period_s=5.0,
        ),
        *stage_graph_messages(),  # last: test_stage_graph_wire counts them from the end
    ]
