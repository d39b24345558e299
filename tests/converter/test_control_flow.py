"""Models with control flow (WHILE, IF) are cut between top-level operators.

A shard holding a ``WHILE`` or ``IF`` carries the subgraphs it runs (and those they run
in turn); chained shards give the unsplit model's bits. The small nested model here is
built from a ``tf.function`` (a loop whose body branches, then a branch); the Keras
recurrent models (LSTM, GRU) are in ``test_recurrent.py``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from splitmq.converter import (
    CutPointError,
    Graph,
    UncuttableGraphError,
    cut,
    cut_graph,
    run_chain,
    run_model,
)
from splitmq.converter.graph import read_model
from tests.converter.conftest import build_accumulator

pytestmark = pytest.mark.slow

# Inputs that send the data through both branches of both IFs.
INPUTS = [np.full((1, 4), v, np.float32) for v in (-3.0, 0.5, 4.0)]


@pytest.fixture(scope="session")
def nested_control_flow() -> bytes:
    """MUL, WHILE (3 trips; its body runs an IF), SUM, GREATER, IF, ADD."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def model(x: tf.Tensor) -> tf.Tensor:
        x = x * 2.0

        def body(i: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            positive = tf.reduce_sum(v) > 0.0
            return i + 1, tf.cond(positive, lambda: v * 1.5 + 1.0, lambda: v - 1.0)

        _, y = tf.while_loop(lambda i, v: i < 3, body, [tf.constant(0), x])
        y = tf.cond(tf.reduce_sum(y) > 10.0, lambda: tf.nn.relu(y), lambda: y * 3.0)
        return y + 1.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    return bytes(converter.convert())


def test_nested_control_flow_chain_bit_exact(nested_control_flow: bytes) -> None:
    graph = Graph.load(nested_control_flow)
    assert {"WHILE", "IF"} <= set(graph.op_types)
    assert len(graph.model.subgraphs) > 3
    name = graph.tensor_name(graph.model_inputs[0])
    candidates = graph.candidate_cut_points()
    for x in INPUTS:
        expected = run_model(nested_control_flow, {name: x})
        for count in (1, 2, 3):
            for points in itertools.combinations(candidates, count):
                produced = run_chain(cut_graph(graph, list(points)), {name: x})
                for key, value in expected.items():
                    assert np.array_equal(produced[key], value), f"{key} differs at {points}"


def test_a_shard_carries_the_subgraphs_its_operators_run(nested_control_flow: bytes) -> None:
    graph = Graph.load(nested_control_flow)
    loop = graph.op_types.index("WHILE")
    branch = graph.op_types.index("IF")
    nested = graph.reached_subgraphs([loop])
    # cond, body, and the body's two branches: carried in turn.
    assert len(nested) == 4
    shards = cut_graph(graph, [loop, loop + 1, branch])
    counts = [len(read_model(s.data).subgraphs) for s in shards]
    assert counts == [1, 1 + len(nested), 1, 1 + len(graph.reached_subgraphs([branch]))]
    # The shard's WHILE names its own (renumbered) cond and body, which hold the loop.
    holder = read_model(shards[1].data)
    options = holder.subgraphs[0].operators[0].builtinOptions
    assert {options.condSubgraphIndex, options.bodySubgraphIndex} <= {1, 2, 3, 4}
    original = {graph.subgraph_name(i) for i in nested}
    assert {(s.name or b"").decode() for s in holder.subgraphs[1:]} == original


def test_flops_and_parameters_count_the_subgraphs(nested_control_flow: bytes) -> None:
    graph = Graph.load(nested_control_flow)
    operators = graph.operators()
    loop = operators[graph.op_types.index("WHILE")]
    assert graph.trip_count(loop.index) == 3
    assert loop.subgraphs == tuple(graph.reached_subgraphs([loop.index]))
    # cond: LESS on a scalar (1 FLOP), run 4 times. body: two scalar ADDs (the loop
    # counters, 2), SUM (4), GREATER (1), IF (its dearer branch: MUL + ADD on 4
    # elements = 8), run 3 times: 4 + 3 * 15.
    assert loop.flops == 4 * 1 + 3 * 15
    # The body's weights (1.5, 1.0, 0.0 and the SUM axis...) count towards the WHILE.
    assert loop.param_bytes > 0
    branch = operators[graph.op_types.index("IF")]
    assert branch.flops == 4  # the dearer of RELU (4) and MUL by 3 (4)


def test_a_cut_inside_a_subgraph_is_refused_naming_the_operator(
    nested_control_flow: bytes,
) -> None:
    graph = Graph.load(nested_control_flow)
    loop = graph.op_types.index("WHILE")
    body = graph.reached_subgraphs([loop])[1]
    with pytest.raises(UncuttableGraphError, match=rf"operator {loop} \(WHILE\) runs it") as caught:
        cut(nested_control_flow, [(body, 1)])
    assert caught.value.operator == "WHILE" and caught.value.op_index == loop
    with pytest.raises(CutPointError, match="no operator of the main subgraph runs"):
        cut(nested_control_flow, [(99, 1)])
    # (0, k) is the top-level cut point k.
    assert [s.end for s in cut(nested_control_flow, [(0, loop)])] == [loop, graph.num_operators]


def test_state_inside_a_subgraph_is_refused_naming_the_operator(
    nested_control_flow: bytes,
) -> None:
    model = read_model(nested_control_flow)
    graph = Graph(model)
    loop = graph.op_types.index("WHILE")
    body = graph.reached_subgraphs([loop])[1]
    model.subgraphs[body].tensors[
        int(model.subgraphs[body].operators[0].inputs[0])
    ].isVariable = True
    with pytest.raises(UncuttableGraphError, match=f"runs subgraph {body}") as caught:
        cut_graph(Graph(model), [loop])
    assert caught.value.op_index == loop


def test_resource_variables_are_refused_naming_the_operator() -> None:
    model = build_accumulator()
    with pytest.raises(UncuttableGraphError, match="resource variables") as caught:
        cut(model, [2])
    assert caught.value.operator in {"CALL_ONCE", "VAR_HANDLE"}
