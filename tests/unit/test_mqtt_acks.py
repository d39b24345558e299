"""Acknowledgements as our MQTT client reads them (MQTT 3.1.1 3.4 to 3.7, MQTT 5 3.4 to
3.7): the two-byte PUBACK every QoS 1 publish gets back is read the short way, with the
same result and the same refusal of packet identifier 0 as the general reader."""

from __future__ import annotations

import pytest

from splitmq.mqtt.codes import PacketType, Reason, Version
from splitmq.mqtt.packets import (
    Ack,
    ProtocolViolation,
    _decode_ack,
    decode_server_packet,
    encode_ack,
)

KINDS = [PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP]


@pytest.mark.parametrize("version", [Version.V311, Version.V5])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packet_id", [1, 255, 256, 65535])
def test_an_ack_reads_as_it_was_written(version: Version, kind: PacketType, packet_id: int) -> None:
    packet = encode_ack(kind, packet_id, version)
    first, body = packet[0], bytes(packet[2:])
    read = decode_server_packet(first, body, version)
    assert read == Ack(kind, packet_id, Reason.SUCCESS)
    assert read == _decode_ack(kind, body, version is Version.V5)  # the general reader's


@pytest.mark.parametrize("version", [Version.V311, Version.V5])
def test_packet_identifier_0_is_refused_mqtt_2_3_1(version: Version) -> None:
    with pytest.raises(ProtocolViolation, match="packet identifier 0"):
        decode_server_packet(0x40, b"\x00\x00", version)


def test_a_puback_with_a_reason_is_read_the_general_way_mqtt5_3_4_2_1() -> None:
    read = decode_server_packet(0x40, b"\x01\x02\x87\x00", Version.V5)  # not authorized
    assert read == Ack(PacketType.PUBACK, 0x0102, 0x87)
