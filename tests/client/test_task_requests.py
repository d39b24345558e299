"""A request naming a task is checked before anything is sent: a version belongs to one
model (a task's members each have their own), so a task with a version is refused with
what to do, by the client and by ``splitmq infer``."""

from __future__ import annotations

import pytest

from splitmq.cli import main
from splitmq.client import Client
from splitmq.errors import ConfigError
from splitmq.transport import MemoryBroker


def test_a_task_with_a_version_is_refused_before_connecting() -> None:
    client = Client(MemoryBroker())
    with pytest.raises(ConfigError, match="name the member .* with its version"):
        client.infer_async([0.0], task="digits", version="7ac2a57d5a11")
    with pytest.raises(ConfigError, match="a model or a task, not both"):
        client.infer_async([0.0], task="digits", model="digits-small")
    assert not client.transport.connected


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
