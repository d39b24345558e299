"""Honest equality: bit-identical only when every stage ran as the reference did;
otherwise the variant's stated tolerance, arg-max equal; the largest difference told."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest

from splitmq.client import equality as eq
from splitmq.client.infer_cli import infer_inputs
from splitmq.client.inputs import load_inputs
from splitmq.wire import AgentState, AgentStatus

from ..agent.conftest import CutModel
from .conftest import ClientFleet

X86 = eq.ComputeKind("x86_64", "litert", "2.3.0", "builtin")


def status(agent: str, machine: str | None, kernels: str | None = "builtin") -> AgentStatus:
    return AgentStatus(
        agent,
        AgentState.ONLINE,
        runtime="litert",
        runtime_version="2.3.0",
        machine=machine,
        kernels=kernels,
    )


def test_stages_run_as_the_reference_call_for_bit_identity() -> None:
    rule, why = eq.rule_for([X86, X86], X86)
    assert rule is eq.Rule.IDENTICAL and "x86_64" in why


@pytest.mark.parametrize(
    "other",
    [
        eq.ComputeKind("aarch64", "litert", "2.3.0", "builtin"),
        eq.ComputeKind("x86_64", "litert", "2.3.0", "xnnpack"),
        eq.ComputeKind("x86_64", "litert", "2.2.0", "builtin"),
        eq.ComputeKind("wasm32", "litert.js", "2.0.0", "wasm"),
        None,  # an agent that does not say
    ],
)
def test_any_stage_run_otherwise_calls_for_the_tolerance(other: eq.ComputeKind | None) -> None:
    rule, why = eq.rule_for([X86, other], X86)
    assert rule is eq.Rule.TOLERANCE
    assert (str(other) if other else "unknown") in why


def test_a_status_without_machine_or_kernels_gives_no_kind() -> None:
    assert eq.ComputeKind.of(status("a", None)) is None
    assert eq.ComputeKind.of(status("a", "x86_64", None)) is None
    assert eq.ComputeKind.of(status("a", "x86_64")) == X86


def test_bit_identity_allows_no_difference_at_all() -> None:
    expected = {"y": np.array([[0.1, 0.9]], dtype=np.float32)}
    ulp = {"y": np.nextafter(expected["y"], np.float32(1))}
    same = eq.compare(expected, expected, eq.Rule.IDENTICAL)
    assert same.equal and same.max_abs_diff == 0.0
    off = eq.compare(ulp, expected, eq.Rule.IDENTICAL)
    assert not off.equal and 0 < off.max_abs_diff < 1e-7 and off.argmax_equal


def test_float32_tolerance_takes_an_ulp_not_a_real_difference() -> None:
    expected = {"y": np.array([[0.1, 0.9]], dtype=np.float32)}
    ulp = {"y": np.nextafter(expected["y"], np.float32(1))}
    assert eq.compare(ulp, expected, eq.Rule.TOLERANCE).equal
    far = {"y": expected["y"] + np.float32(1e-3)}
    assert not eq.compare(far, expected, eq.Rule.TOLERANCE).equal


def test_a_changed_top_class_fails_the_tolerance_however_small() -> None:
    expected = {"y": np.array([[0.5, 0.5000001]], dtype=np.float32)}
    flipped = {"y": np.array([[0.5000001, 0.5]], dtype=np.float32)}
    result = eq.compare(flipped, expected, eq.Rule.TOLERANCE)
    assert not result.equal and not result.argmax_equal


def test_int8_answers_may_be_one_quantization_step_apart() -> None:
    expected = {"y": np.array([[-3, 100]], dtype=np.int8)}
    one = {"y": np.array([[-2, 99]], dtype=np.int8)}
    two = {"y": np.array([[-1, 100]], dtype=np.int8)}
    assert eq.compare(one, expected, eq.Rule.TOLERANCE, "int8").max_abs_diff == 1
    assert eq.compare(one, expected, eq.Rule.TOLERANCE, "int8").equal
    assert not eq.compare(two, expected, eq.Rule.TOLERANCE, "int8").equal


def test_check_takes_the_kinds_from_the_agents_statuses() -> None:
    statuses = {"pi": status("pi", "aarch64"), "pc": status("pc", "x86_64")}
    expected = {"y": np.array([[0.1, 0.9]], dtype=np.float32)}
    comparison, why = eq.check(
        expected, expected, stage_agents=["pi", "pc"], status_of=statuses.get, reference=X86
    )
    assert comparison.rule is eq.Rule.TOLERANCE and "aarch64" in why


def test_the_tally_says_each_rule_and_the_largest_difference() -> None:
    tally = eq.Tally("float32")
    tally.add(eq.Comparison(eq.Rule.IDENTICAL, True, 0.0, True))
    tally.add(eq.Comparison(eq.Rule.TOLERANCE, True, 1.2e-7, True), "stages ran as aarch64")
    tally.add(eq.Comparison(eq.Rule.TOLERANCE, False, 3e-3, False), "stages ran as aarch64")
    lines = tally.lines()
    assert lines[0] == "1/1 bit-identical to the unsplit model"
    assert lines[1].startswith("1/2 within the float32 tolerance")
    assert "aarch64" in lines[2] and lines[-1].endswith("0.003")
    assert (tally.total, tally.equal) == (3, 2)


def test_infer_with_a_reference_says_the_rule_and_the_largest_difference(
    fleet_with_coordinator: ClientFleet, digits: CutModel, tmp_path: Path
) -> None:
    env = fleet_with_coordinator
    env.on_one_agent(digits)
    np.save(tmp_path / "one.npy", digits.image)
    (tmp_path / "model.tflite").write_bytes(digits.model)
    out = StringIO()
    failed = infer_inputs(
        env.client(),
        load_inputs([tmp_path / "one.npy"]),
        out=out,
        reference=tmp_path / "model.tflite",
    )
    assert failed == 0
    lines = out.getvalue().splitlines()
    # an x86 agent with this machine's runtime and builtin kernels: the strict rule
    assert lines[-3].startswith("against the unsplit model here (x86_64 litert ")
    assert lines[-2:] == [
        "1/1 bit-identical to the unsplit model",
        "largest difference from the unsplit model: 0",
    ]
