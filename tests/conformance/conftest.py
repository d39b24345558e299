"""The conformance suite's peers: every test runs against brokers and with clients
nobody here wrote, beside splitmq's own.

A test declares what it applies to with markers (all by default)::

    @pytest.mark.brokers("embedded", "mosquitto")   # of embedded, mosquitto, amqtt
    @pytest.mark.clients("splitmq")                 # of splitmq, paho
    @pytest.mark.versions("3.1.1")                  # of 5, 3.1.1

and gets one case per combination (amqtt speaks only 3.1.1). A known deviation of a
peer we did not write is listed in :data:`KNOWN_DEVIATIONS` with its reason and runs
as ``xfail(strict=True)``: shown in the results, and a fix upstream turns it red.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from splitmq.transport import MqttTransport, MqttVersion, TransportConfig, Will
from splitmq.transport.paho_transport import PahoTransport

from .brokers import HOST, AmqttUnderTest, BrokerProcess, EmbeddedUnderTest, MosquittoUnderTest

BROKERS = ("embedded", "mosquitto", "amqtt")
CLIENTS = ("splitmq", "paho")
VERSIONS = ("5", "3.1.1")
BROKER_VERSIONS = {"embedded": VERSIONS, "mosquitto": VERSIONS, "amqtt": ("3.1.1",)}

AMQTT_QOS = (
    "amqtt 0.12 delivers at the subscription's QoS, not the lower of the message's and "
    "the subscription's (MQTT 3.1.1 section 3.8.4)"
)
PAHO_RESENDS = (
    "paho-mqtt re-sends a message the broker closes the connection on after every "
    "reconnect, forever"
)
PAHO_NO_FILTER_CHECK = (
    "paho-mqtt 2.2 checks wildcards but sends names and filters holding NUL, names "
    "starting with '$' and malformed $share filters (with MQTT 5 also an empty name, "
    "against Mosquitto a 65,536-byte filter) on to the broker"
)
PAHO_NO_FALLBACK = (
    "paho-mqtt reads a 3.1.1 broker's answer to an MQTT 5 CONNECT as a refusal and does "
    "not fall back to 3.1.1"
)
KNOWN_DEVIATIONS: dict[tuple[str, str, str, str], str] = {
    # (test name, broker, client, version) -> why it fails; "*" matches anything.
    ("test_mqtt_3_8_4_delivered_at_the_lower_qos", "amqtt", "*", "*"): AMQTT_QOS,
    ("test_mqtt311_4_8_a_packet_the_broker_closes_on_fails_once", "*", "paho", "*"): PAHO_RESENDS,
    ("test_mqtt_4_7_bad_topics_fail_at_the_call", "*", "paho", "*"): PAHO_NO_FILTER_CHECK,
    ("test_mqtt5_3_1_2_2_against_a_311_broker", "amqtt", "paho", "5"): PAHO_NO_FALLBACK,
}


def pytest_configure(config: pytest.Config) -> None:
    for marker in ("brokers", "clients", "versions"):
        config.addinivalue_line("markers", f"{marker}(*names): conformance peers to run with")


def _names(metafunc: pytest.Metafunc, marker: str, default: tuple[str, ...]) -> tuple[str, ...]:
    found = metafunc.definition.get_closest_marker(marker)
    return tuple(found.args) if found else default


def _deviation(test: str, broker: str, client: str, version: str) -> str | None:
    for (name, b, c, v), reason in KNOWN_DEVIATIONS.items():
        if name == test and b in ("*", broker) and c in ("*", client) and v in ("*", version):
            return reason
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    brokers = _names(metafunc, "brokers", BROKERS)
    clients = _names(metafunc, "clients", CLIENTS)
    versions = _names(metafunc, "versions", VERSIONS)
    if "amqtt" in brokers and not AmqttUnderTest.available():
        brokers = tuple(b for b in brokers if b != "amqtt")
    params = []
    explicit = all(metafunc.definition.get_closest_marker(m) for m in ("brokers", "versions"))
    for broker, client, version in itertools.product(brokers, clients, versions):
        if version not in BROKER_VERSIONS[broker] and not explicit:
            continue  # unless the test is about speaking a version the broker lacks
        marks = []
        reason = _deviation(metafunc.definition.originalname, broker, client, version)
        if reason is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        short = "mqtt5" if version == "5" else "mqtt311"
        params.append(
            pytest.param(
                Case(broker, client, version), id=f"{broker}-{client}-{short}", marks=marks
            )
        )
    metafunc.parametrize("case", params)


@dataclass(frozen=True)
class Case:
    broker: str
    client: str
    version: str

    @property
    def mqtt_version(self) -> MqttVersion:
        return MqttVersion.V5 if self.version == "5" else MqttVersion.V311


@pytest.fixture(scope="session")
def running_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerProcess]]:
    """One broker of each kind for the session, started on first use."""
    started: dict[str, BrokerProcess] = {}
    yield started
    for broker in started.values():
        broker.stop()


def new_broker(name: str, tmp_path_factory: pytest.TempPathFactory) -> BrokerProcess:
    if name == "embedded":
        return EmbeddedUnderTest()
    if name == "mosquitto":
        return MosquittoUnderTest(tmp_path_factory.mktemp("mosquitto"))
    return AmqttUnderTest(tmp_path_factory.mktemp("amqtt"))


@pytest.fixture
def broker(
    case: Case,
    running_brokers: dict[str, BrokerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> BrokerProcess:
    """The session's broker of the case's kind."""
    if case.broker not in running_brokers:
        process = new_broker(case.broker, tmp_path_factory)
        process.start()
        running_brokers[case.broker] = process
    return running_brokers[case.broker]


Transport = MqttTransport | PahoTransport
ClientFactory = Callable[..., Transport]


@pytest.fixture
def connect(case: Case, broker: BrokerProcess) -> Iterator[ClientFactory]:
    """``connect(will=None, start=True, **config)``: a client of the case's kind and
    version on the case's broker, closed after the test."""
    made: list[Transport] = []

    def make(*, will: Will | None = None, start: bool = True, **config: object) -> Transport:
        settings: dict[str, object] = {
            "host": HOST,
            "port": broker.port,
            "version": case.mqtt_version,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
        }
        settings.update(config)
        transport_config = TransportConfig(**settings)  # type: ignore[arg-type]
        engine = MqttTransport if case.client == "splitmq" else PahoTransport
        transport: Transport = engine(transport_config, will=will)
        made.append(transport)
        if start:
            transport.start()
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix of this test case's own (the brokers are shared)."""
    return "conf/" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-60:]
