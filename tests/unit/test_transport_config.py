"""Transport pieces that need no broker: URLs, packet sizes, backoff, config rendering."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from splitmq.errors import ConfigError
from splitmq.mosquitto import config_dir, render_config
from splitmq.transport import MqttVersion, TransportConfig, parse_broker_url
from splitmq.transport.config import ACK_WAIT_STAGE_TIMES, MAX_ACK_HOLD_S, paced_wait_s
from splitmq.transport.mqtt import backoff_delay, packet_size


def test_parse_broker_url() -> None:
    config = parse_broker_url("mqtt://127.0.0.1:1884")
    assert (config.host, config.port, config.tls) == ("127.0.0.1", 1884, False)
    secure = parse_broker_url("mqtts://rpi%40lab:s3cr%2Ft@broker.local")
    assert (secure.port, secure.tls, secure.username, secure.password) == (
        8883,
        True,
        "rpi@lab",
        "s3cr/t",
    )
    assert parse_broker_url("mqtt://h", version=MqttVersion.V311).version is MqttVersion.V311


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:1", "must start with mqtt://"),
        ("mqtt://", "names no host"),
        ("mqtt://h:99999", "(?i)port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_broker_url(url)


def test_missing_certificate_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca_certs .* does not exist"):
        parse_broker_url("mqtts://h", ca_certs=tmp_path / "nope.crt")


@pytest.mark.parametrize("hold_s", [-0.001, 1.5, float("nan")])
def test_a_puback_is_held_for_at_most_a_second(hold_s: float) -> None:
    with pytest.raises(ConfigError, match=r"ack_hold_s .* outside 0 to 1.0 s"):
        TransportConfig(ack_hold_s=hold_s)
    assert TransportConfig(ack_hold_s=0).ack_hold_s == 0  # each PUBACK at once


@pytest.mark.parametrize("wait_s", [-0.001, 1.5, float("nan")])
def test_a_lone_ack_waits_to_be_read_for_at_most_a_second(wait_s: float) -> None:
    with pytest.raises(ConfigError, match=r"lone_ack_wait_s .* outside 0 to 1.0 s"):
        TransportConfig(lone_ack_wait_s=wait_s)
    assert TransportConfig(lone_ack_wait_s=0).lone_ack_wait_s == 0  # each read at once


@pytest.mark.parametrize(
    ("shortest_s", "stage_s", "wait_s"),
    [
        (0.005, 0.0, 0.005),  # no stage-time known: the configured deadline
        (0.005, 0.002, 0.005),  # a quick stage: never shorter than configured
        (0.005, 0.008, 0.012),  # a slow one: 1.5 stage-times
        (0.005, 2.0, MAX_ACK_HOLD_S),  # never past the broker's patience
        (0.0, 0.008, 0.0),  # configured off (each at once) stays off
        (0.005, float("nan"), 0.005),  # nonsense in: the configured deadline
    ],
)
def test_an_agent_s_acknowledgements_wait_a_little_over_its_stage_time(
    shortest_s: float, stage_s: float, wait_s: float
) -> None:
    assert ACK_WAIT_STAGE_TIMES == 1.5
    assert paced_wait_s(shortest_s, stage_s) == pytest.approx(wait_s)


def test_packet_size_matches_the_mqtt_encoding() -> None:
    # 3.1.1 QoS 0: 1 fixed byte + 1 length byte + 2 + len(topic) + payload.
    assert packet_size("ab", 10, 0, MqttVersion.V311) == 1 + 1 + 2 + 2 + 10
    # 200 bytes remaining need two length bytes.
    assert packet_size("ab", 194, 1, MqttVersion.V311) == 1 + 2 + 2 + 2 + 2 + 194
    assert packet_size("ab", 10, 1, MqttVersion.V5) > packet_size("ab", 10, 1, MqttVersion.V311)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(0)
    for attempt in range(12):
        delays = [backoff_delay(attempt, 0.1, 5.0, rng) for _ in range(200)]
        ceiling = min(5.0, 0.1 * 2**attempt)
        assert all(0.1 <= d <= max(0.1, ceiling) for d in delays)
        if ceiling > 0.4:
            assert statistics.pstdev(delays) > 0.05 * ceiling, "no jitter"
    assert backoff_delay(1000, 0.1, 5.0, rng) <= 5.0


def test_render_config_sets_port_and_absolute_paths(tmp_path: Path) -> None:
    template = (config_dir() / "secure.conf").read_text()
    rendered = render_config(template, port=12345, base_dir=tmp_path, log_file=tmp_path / "log")
    lines = rendered.splitlines()
    assert "listener 12345 127.0.0.1" in lines
    assert f"password_file {tmp_path / 'passwd'}" in lines
    assert f"cafile {tmp_path / 'certs' / 'ca.crt'}" in lines
    assert f"log_dest file {tmp_path / 'log'}" in lines
    assert "allow_anonymous false" in lines


def test_broker_configs_set_the_limits_on_purpose() -> None:
    for name in ("dev.conf", "secure.conf"):
        words = {
            line.split()[0]: line.split()[1:]
            for line in (config_dir() / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert words["set_tcp_nodelay"] == ["true"]
        assert words["max_packet_size"] == ["8388608"]
        assert "max_queued_messages" in words and "max_queued_bytes" in words
