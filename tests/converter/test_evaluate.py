"""Evaluating a task's members (converter/evaluate.py, ``splitmq evaluate``) on the
shipped digits members: accuracy with labels, agreement with the reference member
without, the manifest rewritten in place, bad data refused. LiteRT only: no TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from splitmq.cli import main
from splitmq.converter.errors import CalibrationError, ModelReadError
from splitmq.converter.evaluate import evaluate
from splitmq.converter.manifest import load_manifest
from splitmq.converter.pool import open_entry
from splitmq.converter.task import task_members
from splitmq.wire.manifest import Manifest
from tests.data import POOL_DIR, TASK, TASK_MEMBERS, digits_test

SAMPLES = 120


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """A copy of the shipped pool with the task's members only."""
    for name in TASK_MEMBERS:
        shutil.copytree(POOL_DIR / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    x, y = digits_test()
    path = tmp_path / "digits-eval.npz"
    np.savez(path, x=x[:SAMPLES], y=y[:SAMPLES])
    return path


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    x, _ = digits_test()
    path = tmp_path / "digits-unlabelled.npz"
    np.savez(path, x=x[:SAMPLES])
    return path


def forget_labels(pool: Path) -> None:
    """Make the members look converted without labels: no accuracy anywhere."""
    for entry in task_members(pool, TASK):
        variants = {
            name: replace(v, fidelity=replace(v.fidelity, accuracy=None) if v.fidelity else None)
            for name, v in entry.manifest.variants.items()
        }
        manifest = replace(entry.manifest, labels=False, evaluation=None, variants=variants)
        (entry.path / "manifest.json").write_text(manifest.dumps())


def test_the_task_lists_its_members(pool: Path) -> None:
    assert sorted(e.name for e in task_members(pool, TASK)) == sorted(TASK_MEMBERS)
    assert task_members(pool, "faces") == []


def test_labels_give_every_variant_its_accuracy_the_same_as_at_conversion(
    pool: Path, tmp_path: Path
) -> None:
    x, y = digits_test()  # the calibration set the members were converted with
    data = tmp_path / "all.npz"
    np.savez(data, x=x, y=y)
    before = {e.name: e.manifest for e in task_members(pool, TASK)}
    entries = evaluate(pool, None, data, task=TASK)
    assert sorted(e.name for e in entries) == sorted(TASK_MEMBERS)
    for entry in entries:
        evaluation = entry.manifest.evaluation
        assert evaluation is not None and evaluation.labelled and evaluation.samples == len(x)
        assert evaluation.runtime.startswith("ai-edge-litert")
        for variant, score in evaluation.variants.items():
            fidelity = before[entry.name].variants[variant].fidelity
            assert fidelity is not None and score.accuracy == fidelity.accuracy
        # written to disk, the version unchanged
        assert load_manifest(entry.path) == entry.manifest
        assert entry.version == before[entry.name].version


def test_one_member_on_a_subset(pool: Path, labelled: Path) -> None:
    (entry,) = evaluate(pool, "digits-medium", labelled)
    accuracy = entry.manifest.accuracy("float32")
    assert accuracy is not None and 0.8 < accuracy <= 1.0
    assert entry.manifest.evaluation is not None
    assert entry.manifest.evaluation.data == "digits-eval.npz"
    assert entry.manifest.evaluation.samples == SAMPLES
    # the others are untouched
    assert open_entry(pool, "digits-small").manifest.evaluation == (
        open_entry(POOL_DIR, "digits-small").manifest.evaluation
    )


def test_without_labels_accuracy_is_unknown_and_agreement_is_with_the_largest(
    pool: Path, unlabelled: Path
) -> None:
    forget_labels(pool)
    entries = {e.name: e.manifest for e in evaluate(pool, None, unlabelled, task=TASK)}
    for manifest in entries.values():
        assert manifest.evaluation is not None and not manifest.evaluation.labelled
        assert all(manifest.accuracy(v) is None for v in manifest.variants)
        assert manifest.evaluation.reference is not None
        assert manifest.evaluation.reference.startswith("digits-large/")
    assert entries["digits-large"].agreement("float32") == 1.0
    small = entries["digits-small"].agreement("float32")
    medium = entries["digits-medium"].agreement("float32")
    assert small is not None and medium is not None and small < medium < 1.0


def test_without_labels_agreement_is_with_the_most_accurate_member_measured(
    pool: Path, unlabelled: Path
) -> None:
    """The members keep their accuracy from conversion: the reference is the most
    accurate one (digits-large float32), whatever the data."""
    (entry,) = evaluate(pool, "digits-small", unlabelled)
    assert entry.manifest.evaluation is not None
    large = open_entry(pool, "digits-large")
    assert entry.manifest.evaluation.reference == f"digits-large/{large.version} float32"
    # accuracy from the labelled conversion still stands; agreement is new
    assert entry.manifest.accuracy("float32") is not None
    assert entry.manifest.agreement("float32") is not None


@pytest.mark.parametrize(
    ("arrays", "error"),
    [
        ({"y": np.zeros(3, np.int64)}, "holds no inputs"),
        ({"x": np.zeros((3, 4, 4, 1), np.float32)}, "has shape (3, 4, 4, 1)"),
        ({"x": np.zeros((3, 8, 8, 1), np.float32), "y": np.zeros(2, np.int64)}, "3 integer"),
        ({"x": np.zeros((3, 8, 8, 1), np.float32), "y": np.zeros(3)}, "integer classes"),
    ],
)
def test_bad_data_is_refused_with_what_to_do(
    pool: Path, tmp_path: Path, arrays: dict[str, np.ndarray], error: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    before = (pool / "digits-small").joinpath(open_entry(pool, "digits-small").version)
    text = (before / "manifest.json").read_text()
    with pytest.raises(CalibrationError, match=error.replace("(", r"\(").replace(")", r"\)")):
        evaluate(pool, "digits-small", path)
    assert (before / "manifest.json").read_text() == text  # nothing written


def test_an_unknown_task_or_file_is_refused(pool: Path, tmp_path: Path, labelled: Path) -> None:
    with pytest.raises(ModelReadError, match="no member of task 'faces'"):
        evaluate(pool, None, labelled, task="faces")
    with pytest.raises(CalibrationError, match="cannot read evaluation data"):
        evaluate(pool, "digits-small", tmp_path / "missing.npz")


def test_the_cli_prints_the_members_as_a_table(
    pool: Path, labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["-q", "evaluate", "--task", TASK, "--data", str(labelled), "--pool", str(pool)])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "task digits: 3 members"
    assert lines[1].split() == [
        "member",
        "variant",
        "MFLOPs",
        "size",
        "fidelity",
        "accuracy",
        "agreement",
    ]
    rows = [line.split() for line in lines[2:8]]
    assert [row[0] for row in rows[:2]] == ["digits-large"] * 2  # most accurate first
    assert [row[0] for row in rows[-2:]] == ["digits-small"] * 2
    assert all(0.7 < float(row[5]) <= 1.0 for row in rows)
    assert "measured on: digits-eval.npz" in out


def test_the_cli_says_what_is_wrong(
    pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "evaluate", "--data", str(tmp_path / "x.npz"), "--pool", str(pool)]) == 2
    assert "name a model, or a task with --task" in capsys.readouterr().err
    missing = str(tmp_path / "x.npz")
    code = main(["-q", "evaluate", "digits-small", "--data", missing, "--pool", str(pool)])
    assert code == 2
    assert "cannot read evaluation data" in capsys.readouterr().err


def test_a_manifest_without_task_reads_and_writes_as_before() -> None:
    path = POOL_DIR / "digits" / (POOL_DIR / "digits" / "latest").read_text().strip()
    raw = json.loads((path / "manifest.json").read_text())
    assert "task" not in raw and "evaluation" not in raw
    manifest = Manifest.from_json(raw)
    assert manifest.task is None and manifest.evaluation is None
    assert manifest.to_json() == raw


def test_convert_task_and_labels_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``.tflite`` source converts in process (no TensorFlow): ``--task`` names the task,
    ``--labels`` gives every variant its accuracy (in its fidelity)."""
    x, y = digits_test()
    np.save(tmp_path / "x.npy", x[:SAMPLES])
    np.save(tmp_path / "y.npy", y[:SAMPLES])
    source = open_entry(POOL_DIR, "digits-small").variant_path("float32")
    pool = tmp_path / "pool"
    common = ["--calibration", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]
    code = main(
        [
            "-q",
            "convert",
            str(source),
            "--name",
            "small",
            "--task",
            TASK,
            *common,
            "--pool",
            str(pool),
        ]
    )
    assert code == 0
    assert "task: digits" in capsys.readouterr().out
    (entry,) = task_members(pool, TASK)
    assert entry.manifest.task == TASK and entry.manifest.labels
    fidelity = entry.manifest.variants["float32"].fidelity
    assert fidelity is not None and fidelity.samples == SAMPLES
    accuracy = entry.manifest.accuracy("float32")
    assert accuracy is not None and accuracy == fidelity.accuracy
    bad = main(
        ["-q", "convert", str(source), "--name", "s2", "--task", "no/slash", "--pool", str(pool)]
    )
    assert bad == 2 and "task name 'no/slash' is not usable" in capsys.readouterr().err
