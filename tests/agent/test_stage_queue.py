"""A stage's queue: bounded for requests, first in first out, the stop sentinel always in."""

from __future__ import annotations

import queue
import threading

import pytest

from splitmq.agent.stage_queue import StageQueue


def test_bounded_first_in_first_out_and_the_sentinel_always_goes_in() -> None:
    stage: StageQueue[int | None] = StageQueue(2)
    stage.put_nowait(1)
    stage.put_nowait(2)
    with pytest.raises(queue.Full):
        stage.put_nowait(3)
    stage.put(None)  # the stop sentinel, past the bound
    assert stage.qsize() == 3
    assert [stage.get(), stage.get(), stage.get()] == [1, 2, None]


def test_a_waiting_worker_gets_what_another_thread_puts() -> None:
    stage: StageQueue[str] = StageQueue(4)
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(stage.get()))
    worker.start()
    stage.put_nowait("request")
    worker.join(timeout=30)
    assert got == ["request"]
