"""The stage graph on the wire (fan-out and fan-in): optional fields, chains unchanged.

A stage graph adds ``StageSpec.sources/targets/operators``, ``LoadShard.sources/
targets``, ``Activation.source`` and ``Result.stage``, every one ``None`` by default and
then left out of the CBOR map: a chain's messages keep their bytes, and a reader that
does not know the fields reads a graph's messages as the chain they extend.
"""

from __future__ import annotations

from dataclasses import fields, replace

import cbor2
import pytest

from splitmq.errors import DecodeError
from splitmq.wire import (
    REQUESTER,
    Activation,
    Deployment,
    LoadShard,
    Message,
    Result,
    StageSpec,
    decode,
    encode,
)

from .samples import sample_messages, stage_graph_messages

GRAPH_FIELDS = {
    StageSpec: ("sources", "targets", "operators"),
    LoadShard: ("sources", "targets"),
    Activation: ("source",),
    Result: ("stage",),
}


def as_chain(message: Message) -> Message:
    """``message`` with the stage graph's fields back at their defaults."""
    if isinstance(message, Deployment):
        stages = tuple(
            replace(s, sources=None, targets=None, operators=None) for s in message.stages
        )
        return replace(message, stages=stages)
    if isinstance(message, LoadShard):
        return replace(message, sources=None, targets=None)
    if isinstance(message, Activation):
        return replace(message, source=None)
    if isinstance(message, Result):
        return replace(message, stage=None)
    return message


def without_graph_keys(message: Message, raw: dict[str, object]) -> dict[str, object]:
    """The decoded CBOR map of ``message`` with the stage graph's keys removed."""
    names = GRAPH_FIELDS.get(type(message), ())
    kept = {k: v for k, v in raw.items() if k not in names}
    if isinstance(message, Deployment):
        drop = GRAPH_FIELDS[StageSpec]
        stages = kept["stages"]
        assert isinstance(stages, list)
        kept["stages"] = [{k: v for k, v in s.items() if k not in drop} for s in stages]
    return kept


def test_the_new_fields_default_to_none() -> None:
    for cls, names in GRAPH_FIELDS.items():
        defaults = {f.name: f.default for f in fields(cls)}
        assert all(defaults[name] is None for name in names), cls


@pytest.mark.parametrize("message", stage_graph_messages(), ids=lambda m: type(m).__name__)
def test_graph_messages_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize("message", stage_graph_messages(), ids=lambda m: type(m).__name__)
def test_an_older_reader_sees_the_chain_it_extends(message: Message) -> None:
    """Drop the keys an older reader does not know: what is left is, byte for byte, the
    message without the stage graph (RFC 8949 section 4.2.1 ordering is kept as is)."""
    raw = cbor2.loads(encode(message))
    chain = as_chain(message)
    assert chain != message
    assert cbor2.dumps(without_graph_keys(message, raw)) == encode(chain)


def test_chain_messages_carry_no_graph_keys() -> None:
    for message in sample_messages()[: -len(stage_graph_messages())]:
        raw = cbor2.loads(encode(message))
        assert without_graph_keys(message, raw) == raw, type(message).__name__


def test_graph_fields_are_checked_like_any_other() -> None:
    message = stage_graph_messages()[-1]
    assert isinstance(message, Deployment)
    raw = cbor2.loads(encode(message))
    raw["stages"][3]["sources"][0]["stage"] = "one"
    with pytest.raises(DecodeError) as caught:
        decode(cbor2.dumps(raw))
    assert caught.value.field is not None and "sources" in caught.value.field
    raw = cbor2.loads(encode(stage_graph_messages()[1]))
    raw["source"] = [1]
    with pytest.raises(DecodeError, match="source"):
        decode(cbor2.dumps(raw))


def test_the_requester_is_an_edge_end() -> None:
    deployment = stage_graph_messages()[-1]
    assert isinstance(deployment, Deployment)
    first, *_, last = deployment.stages
    assert first.sources is not None and first.sources[0].stage == REQUESTER
    assert last.targets is not None and last.targets[0].stage == REQUESTER
