"""Topics publish and decode their own messages: the QoS, the retain flag and the message
types live in the topic table, not at the call sites."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import pytest

from splitmq.errors import DecodeError, EncodeError
from splitmq.transport import InboundMessage, MemoryBroker
from splitmq.wire import Activation, AgentState, AgentStatus, Deployment, Ping, Telemetry, encode
from splitmq.wire.codec import decode_fields
from splitmq.wire.topics import COMMANDS, DEPLOYMENTS, STATUS, TELEMETRY, TOPICS

from ..helpers import Collector
from .samples import sample_messages

ROOT = Path(__file__).resolve().parents[2] / "splitmq"


@dataclass
class Recorder:
    """A publisher that records what it was asked to send."""

    sent: list[tuple[str, object, int, bool, float | None]] = field(default_factory=list)

    def publish(
        self,
        topic: str,
        payload: bytes | bytearray | list[bytes | bytearray | memoryview],
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> str:
        self.sent.append((topic, payload, qos, retain, expiry_s))
        return "receipt"


def status(agent_id: str = "rpi-1") -> AgentStatus:
    return AgentStatus(agent_id=agent_id, state=AgentState.ONLINE, ts_ms=5)


def telemetry() -> Telemetry:
    return next(m for m in sample_messages() if isinstance(m, Telemetry))


@pytest.mark.parametrize("row", [STATUS, TELEMETRY], ids=["status", "telemetry"])
def test_publish_uses_the_topics_qos_and_retain_flag(row: object) -> None:
    recorder = Recorder()
    message = status() if row is STATUS else telemetry()
    receipt = row.publish(recorder, message, "lab/v1", agent="rpi-1")  # type: ignore[attr-defined]
    assert receipt == "receipt"
    ((topic, payload, qos, retain, expiry_s),) = recorder.sent
    assert topic == row.name("lab/v1", agent="rpi-1")  # type: ignore[attr-defined]
    assert payload == encode(message)
    assert (qos, retain, expiry_s) == (row.qos, row.retain, None)  # type: ignore[attr-defined]


def test_publish_refuses_a_message_the_topic_does_not_carry() -> None:
    recorder = Recorder()
    with pytest.raises(EncodeError, match="'telemetry' message does not go on"):
        STATUS.publish(recorder, telemetry(), agent="a")  # type: ignore[arg-type]
    assert recorder.sent == []


def test_decode_accepts_only_the_topics_types() -> None:
    assert STATUS.decode(encode(status())) == status()
    ping = Ping(command_id="p", issuer="c", sent_ms=1.0)
    assert COMMANDS.decode(encode(ping)) == ping
    with pytest.raises(DecodeError, match="expected a message of kind 'deployment'") as error:
        DEPLOYMENTS.decode(encode(status()), topic="t/1")
    assert error.value.topic == "t/1"


def test_a_retained_publication_reaches_a_later_subscriber() -> None:
    broker = MemoryBroker()
    publisher, subscriber = broker.transport("pub"), broker.transport("sub")
    publisher.start()
    subscriber.start()
    try:
        deployment = Deployment(
            deployment="d1", model="m", version="v", variant="float32", epoch=1, stages=()
        )
        DEPLOYMENTS.publish(publisher, deployment, deployment="d1").wait(5)
        got = Collector()
        subscriber.subscribe(DEPLOYMENTS.filter(), got, qos=DEPLOYMENTS.qos)
        (message,) = got.wait_for(1)
        assert isinstance(message, InboundMessage)
        assert DEPLOYMENTS.decode(message.payload) == deployment
    finally:
        publisher.close()
        subscriber.close()


def test_decode_fields_reads_what_it_can_of_a_malformed_message() -> None:
    payload = cbor2.dumps(
        {
            "kind": "activation",
            "request_id": bytes(16),
            "callback": "splitmq/v1/clients/a/result",
            "attempt": True,  # not an integer: left out
            "stage": 2,
            "tensors": "garbage",
        }
    )
    names = ("request_id", "callback", "attempt", "stage", "deployment")
    assert decode_fields(payload, Activation, names) == {
        "request_id": bytes(16),
        "callback": "splitmq/v1/clients/a/result",
        "stage": 2,
    }
    assert decode_fields(b"\xff\x00", Activation, names) == {}
    assert decode_fields(cbor2.dumps([1, 2]), Activation, names) == {}


def test_every_topic_has_a_typed_row() -> None:
    for row in TOPICS:
        assert row.payload and row.qos in (0, 1, 2)


HARD_CODED = re.compile(r"\b(qos=\d|retain=True)")
ENGINES = ("transport", "mqtt", "embedded_broker")


def test_no_call_site_hard_codes_qos_or_retain() -> None:
    """Outside the MQTT engines and the topic table, QoS and retain come from a topic."""
    found = [
        f"{file.relative_to(ROOT.parent)}:{number}: {line.strip()}"
        for file in ROOT.rglob("*.py")
        if file.relative_to(ROOT).parts[0] not in ENGINES and file.name != "topics.py"
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1)
        if HARD_CODED.search(line)
    ]
    assert found == [], "\n".join(found)
