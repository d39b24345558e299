"""A request's record made in one go is the record its dataclass would make."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from splitmq.client.records import AttemptRecord, RequestRecord, request_record
from tests.client.records_fixtures import ok_record

REQUIRED: dict[str, Any] = {
    "request_id": "ab",
    "model": "digits",
    "sent_ms": 1.0,
    "finished_ms": 9.0,
    "ok": True,
}


def test_only_the_required_fields_take_the_defaults() -> None:
    made = request_record(dict(REQUIRED))
    assert made == RequestRecord(**REQUIRED)
    assert dataclasses.astuple(made) == dataclasses.astuple(RequestRecord(**REQUIRED))
    assert hash(made) == hash(RequestRecord(**REQUIRED))


def test_every_field_given_is_kept() -> None:
    record = ok_record("r", 5.0, [], 2, predicted_latency_ms=4.0, predicted_energy_j=0.5)
    full: dict[str, Any] = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    full.update(attempts=(AttemptRecord(0, ("a",), 5.0, "result"),), top=((3, 0.5),), epoch=4)
    assert request_record(dict(full)) == RequestRecord(**full)


def test_it_stays_frozen_and_refuses_a_field_it_does_not_have() -> None:
    made = request_record(dict(REQUIRED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ok = False  # type: ignore[misc]
    with pytest.raises(AssertionError, match="colour"):
        request_record({**REQUIRED, "colour": "red"})
