"""Hostile payloads for the agent: well-formed CBOR that lies, and the strategies that make it.

Shared by the property tests of the agent's handlers (in process) and by the test that
sends them through a real Mosquitto with ``mosquitto_pub``.
"""

from __future__ import annotations

import os
from typing import Any

import cbor2
from hypothesis import strategies as st

from splitmq.wire.topics import RESULTS

CALLBACK = RESULTS.name(client="fuzzer")
FLOAT32_TAG = 85
MULTI_DIM_TAG = 40


def tensor(name: str, shape: list[int], data: bytes, tag: int = FLOAT32_TAG) -> dict[str, Any]:
    return {"name": name, "data": cbor2.CBORTag(MULTI_DIM_TAG, [shape, cbor2.CBORTag(tag, data)])}


def activation(
    tensors: list[Any],
    *,
    deployment: str,
    stage: int = 0,
    route: Any = None,
    callback: Any = CALLBACK,
    deadline_ms: Any = 0,
    request_id: Any = None,
    kind: str = "activation",
    **extra: Any,
) -> bytes:
    """An activation's CBOR with whatever fields are given (nothing checked)."""
    body: dict[str, Any] = {
        "kind": kind,
        "v": 1,
        "request_id": os.urandom(16) if request_id is None else request_id,
        "attempt": 0,
        "deployment": deployment,
        "stage": stage,
        "route": [["fuzz-agent"]] if route is None else route,
        "callback": callback,
        "deadline_ms": deadline_ms,
        "tensors": tensors,
        "trace": [],
        "client_id": "fuzzer",
    }
    body.update(extra)
    return bytes(cbor2.dumps(body))


def hostile_activations(deployment: str, input_name: str, shape: list[int]) -> dict[str, bytes]:
    """Named payloads a stage topic may receive: each must be refused, none computed."""
    elements = 1
    for side in shape:
        elements *= side
    good = b"\x00" * (4 * elements)
    return {
        "garbage": b"\xff\x00garbage\x13\x37" * 7,
        "empty": b"",
        "not a map": bytes(cbor2.dumps([1, 2, 3])),
        "wrong kind": bytes(cbor2.dumps({"kind": "cmd.load", "v": 1, "command_id": "x"})),
        "unknown kind": activation([], deployment=deployment, kind="activation.v9"),
        "future version": activation(
            [tensor(input_name, shape, good)], deployment=deployment, v=99
        ),
        "huge shape": activation(
            [tensor(input_name, [2**31, 2**31, 2**31], good)], deployment=deployment
        ),
        "truncated tensor": activation(
            [tensor(input_name, shape, good[: len(good) // 2])], deployment=deployment
        ),
        "wrong shape": activation(
            [tensor(input_name, [1, 4, 4, 1], b"\x00" * 64)], deployment=deployment
        ),
        "wrong dtype": activation(
            [tensor(input_name, shape, b"\x00" * elements, tag=72)], deployment=deployment
        ),
        "negative dimension": activation(
            [tensor(input_name, [-1, 8], good)], deployment=deployment
        ),
        "wrong tensor name": activation(
            [tensor("not-an-input", shape, good)], deployment=deployment
        ),
        "two tensors": activation(
            [tensor(input_name, shape, good), tensor(input_name, shape, good)],
            deployment=deployment,
        ),
        "no tensors": activation([], deployment=deployment),
        "other stage": activation(
            [tensor(input_name, shape, good)], deployment=deployment, stage=7
        ),
        "unknown deployment": activation([tensor(input_name, shape, good)], deployment="nope"),
        "expired": activation(
            [tensor(input_name, shape, good)], deployment=deployment, deadline_ms=1
        ),
        "bad route": activation(
            [tensor(input_name, shape, good)], deployment=deployment, route=[["fuzz-agent"], ["#"]]
        ),
        "callback elsewhere": activation(
            [tensor(input_name, shape, good)],
            deployment=deployment,
            callback="splitmq/v1/agents/fuzz-agent/cmd",
        ),
        "short request id": activation(
            [tensor(input_name, shape, good)], deployment=deployment, request_id=b"x"
        ),
        "deep nesting": b"\x81" * 5000 + b"\x00",
    }


@st.composite
def lying_activations(draw: st.DrawFn, deployment: str, input_name: str) -> bytes:
    """Activations whose tensors lie about their shape, dtype or bytes."""
    shape = draw(st.lists(st.integers(-2, 2**33), min_size=0, max_size=9))
    data = draw(st.binary(max_size=600))
    tag = draw(st.sampled_from([FLOAT32_TAG, 72, 64, 84, 78, 86, 99]))
    name = draw(st.sampled_from([input_name, "", "x" * 300]))
    stage = draw(st.integers(-1, 3))
    route: Any = draw(
        st.sampled_from(
            [None, [], [[]], [["fuzz-agent"], ["fuzz-agent"]], [["fuzz-agent"], ["+"]], "x"]
        )
    )
    callback = draw(st.sampled_from([CALLBACK, "", "splitmq/v1/clients/#/result", 7]))
    deadline = draw(st.sampled_from([0, 1, -5, 2**62, "soon"]))
    return activation(
        [tensor(name, shape, data, tag)],
        deployment=draw(st.sampled_from([deployment, "", "other"])),
        stage=stage,
        route=route,
        callback=callback,
        deadline_ms=deadline,
    )
