"""The one exception tree of splitmq, documented here whole.

Every error splitmq raises on purpose derives from :class:`SplitMQError`, carries its
context as attributes and says in its message what went wrong and what to do next.
Library errors (cbor2, sockets and ssl, paho-mqtt, TFLite) are translated once, at the
boundary where they are caught, into one of these. The classes below this module's own
live next to the code that raises them (the module in brackets)::

    SplitMQError
    ├── WireError                 a message could not be encoded or decoded
    │   ├── DecodeError           hostile, malformed or incompatible bytes
    │   └── EncodeError           a message that cannot be put on the wire
    ├── TransportError            the broker connection
    │   ├── PayloadTooLarge       a payload above the broker's packet limit
    │   ├── NotConnected          publishing while no connection is up
    │   ├── ConnectionRefused     the broker refused our CONNECT [transport.mqtt_errors]
    │   ├── PublishRefused        the broker refused a message [transport.mqtt_errors]
    │   ├── BrokerClosed          the broker ended the connection [transport.mqtt_errors]
    │   └── NotMqtt5              a 3.1.1-only broker answered MQTT 5 [transport.mqtt_errors]
    ├── InvalidTopic              a topic name or filter MQTT forbids [topic_syntax]
    ├── ProtocolViolation         an MQTT peer broke the protocol [mqtt.packets]
    ├── ConfigError               a setting that cannot work (bad URL, missing file)
    │   └── RuntimeUnavailable    no TFLite runtime (or not the one asked for) [agent.runtime]
    ├── SecureSetupError          a broker-config/ script failed [secure_setup]
    ├── ConversionError           the converter and the cutter
    │   ├── ModelReadError        unreadable file, unsupported format, corrupt flatbuffer
    │   ├── CalibrationError      calibration data or labels that do not fit [converter.errors]
    │   ├── CutPointError         a cut point out of range or unordered [converter.errors]
    │   ├── UncuttableGraphError  variables, or a cut inside a loop body or branch
    │   │                         [converter.errors]
    │   ├── StageGraphError       stages that are not a closed, acyclic operator set
    │   │                         [converter.errors]
    │   └── ConverterCrashError   TensorFlow's converter died on a variant [converter.errors]
    ├── ShardLoadError            shard bytes the runtime cannot load [agent.runtime]
    ├── DigestMismatch            bytes whose sha256 is not the announced one [agent.cache]
    ├── FetchError                a shard that could not be fetched from the pool [agent.fetch]
    ├── RequestFailed             a request a stage cannot serve: an ErrorMessage [agent.requests]
    ├── UnknownModel              no such model, version or variant in the pool
    │                             [coordinator.model_pool]
    ├── PartitionRefused          no partition of a variant meets the request
    │                             [coordinator.partition]
    ├── LeaseLost                 a coordinator that does not hold the leader lease
    │                             [coordinator.lease]
    ├── InputError                an input the client cannot read or fit [client.errors]
    ├── InferenceError            a request that finally failed [client.errors]
    │   ├── PlanRefusedError      no plan meets the constraints [client.errors]
    │   └── DeadlineError         the deadline passed or cannot be met [client.errors]
    └── ResultsDBError            a results database that cannot be read or written
                                  [client.results_db]

``tests/unit/test_errors_tree.py`` checks that every subclass is in this tree.
"""

from __future__ import annotations

from pathlib import Path


class SplitMQError(Exception):
    """Root of every error splitmq raises on purpose."""


class WireError(SplitMQError):
    """A message could not be put on, or taken off, the wire."""


class DecodeError(WireError):
    """Bytes that are not a valid splitmq message.

    Attributes:
        reason: what is wrong, in words (also the start of ``str(error)``).
        field: dotted path of the offending field, when one is to blame.
        topic: the topic the bytes arrived on, when the caller knows it.
    """

    def __init__(self, reason: str, *, field: str | None = None, topic: str | None = None):
        self.reason = reason
        self.field = field
        self.topic = topic
        where = f" in field {field!r}" if field else ""
        on = f" (topic {topic!r})" if topic else ""
        super().__init__(f"{reason}{where}{on}")

    def with_topic(self, topic: str) -> DecodeError:
        """The same error, naming the topic the bytes came from."""
        return DecodeError(self.reason, field=self.field, topic=topic)


class EncodeError(WireError):
    """A message that cannot be encoded (a value of a type the wire does not carry)."""


class TransportError(SplitMQError):
    """Something went wrong between us and the broker."""


class PayloadTooLarge(TransportError):
    """A payload larger than the broker accepts; publishing it would never succeed.

    Attributes:
        topic: where it was to go.
        size_bytes: the size of the MQTT packet it would make.
        limit_bytes: the largest packet the broker accepts.
    """

    def __init__(self, topic: str, size_bytes: int, limit_bytes: int):
        self.topic = topic
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(
            f"payload for {topic!r} makes a {size_bytes}-byte packet, above the broker's "
            f"limit of {limit_bytes} bytes: send smaller tensors (an int8 variant, another "
            f"cut point) or raise max_packet_size in the broker configuration"
        )


class NotConnected(TransportError):
    """The transport is closed, or has never connected."""


class ConfigError(SplitMQError):
    """A setting that cannot work: a malformed broker URL, a missing certificate file."""


class ConversionError(SplitMQError):
    """The converter or the cutter cannot do what was asked (see :mod:`splitmq.converter`)."""


class ModelReadError(ConversionError):
    """A model that cannot be read: missing file, unknown format, corrupt bytes.

    Attributes:
        path: the file or directory, when there is one.
    """

    def __init__(self, message: str, *, path: Path | None = None):
        self.path = path
        super().__init__(message)
