"""A request naming a task is checked before anything is sent: a version belongs to one
model (a task's members each have their own), so a task with a version is refused with
what to do, by the client, ``splitmq infer`` and ``splitmq deploy --task``; a
``min_accuracy`` without a task is refused too (it chooses among members)."""

from __future__ import annotations

import numpy as np
import pytest

from splitmq.cli import main
from splitmq.client import Client
from splitmq.errors import ConfigError
from splitmq.transport import MemoryBroker

INPUT = np.zeros((1, 8, 8, 1), np.float32)


def test_a_task_with_a_version_is_refused_before_connecting() -> None:
    client = Client(MemoryBroker())
    with pytest.raises(ConfigError, match=r"name the member \(model=\.\.\.\) with its version"):
        client.infer_async(INPUT, task="digits", version="7ac2a57d5a11")
    with pytest.raises(ConfigError, match="a model or a task, not both"):
        client.infer_async(INPUT, task="digits", model="digits-small")
    with pytest.raises(ConfigError, match="min_accuracy chooses among a task's members"):
        client.infer_async(INPUT, model="digits-small", min_accuracy=0.9)
    assert not client.transport.connected


def test_splitmq_deploy_a_task_with_a_version_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    arguments = ["-q", "deploy", "--task", "digits", "digits-small", "--version", "072a"]
    assert main([*arguments, "--broker", "mqtt://127.0.0.1:9"]) == 2
    assert "deploy the member alone with --version" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--task", "digits", "x.npy", "--version", "7ac2"], "name the member instead of --task"),
        ([], "name the model to run (or a task with --task)"),
        (["--task", "digits"], "no inputs: name images, .npy files or directories after --task"),
    ],
)
def test_splitmq_infer_says_what_is_missing(
    arguments: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "infer", *arguments, "--broker", "mqtt://127.0.0.1:9", "--no-db"]) == 2
    assert words in capsys.readouterr().err
