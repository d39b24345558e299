"""The broker round trip an agent reports is the lowest of its recent probes."""

from __future__ import annotations

import time

from splitmq.agent.presence import (
    MAX_HOP_MBPS,
    PROBE_BYTES,
    RTT_MIN_PROBES,
    RTT_WINDOW,
    THROUGHPUT_EVERY,
    THROUGHPUT_WINDOW,
)
from splitmq.transport import InboundMessage
from splitmq.wire import Ping, decode, encode
from splitmq.wire.topics import COMMANDS
from tests.agent.conftest import MemoryFleet
from tests.helpers import wait_until

# The agent reads the arrival in seconds and the send in milliseconds: a round trip made
# exactly N ms long can read a few nanoseconds under N after the float arithmetic.
ROUNDING_MS = 1e-6


def probe_back(
    agent: object,
    agent_id: str,
    rtt_ms: float,
    handled_after_ms: float = 0,
    padding: bytes | None = None,
) -> None:
    """The agent's own ping, arriving ``rtt_ms`` after it was sent, and handled
    ``handled_after_ms`` after it arrived."""
    now_ms = time.monotonic() * 1000.0
    sent_ms = now_ms - handled_after_ms - rtt_ms
    ping = Ping(command_id="rtt-x", issuer=agent_id, sent_ms=sent_ms, padding=padding)
    message = InboundMessage(
        COMMANDS.name(agent=agent_id), encode(ping), received_s=(now_ms - handled_after_ms) / 1000
    )
    agent._on_command(message)  # type: ignore[attr-defined]


def test_a_slow_first_probe_does_not_linger_and_old_ones_are_forgotten(
    fleet: MemoryFleet,
) -> None:
    agent = fleet.agent("pi-1", telemetry_period_s=60.0)  # its own probe: once, at start
    # first (on a busy machine it could come in last, and stay in the window)
    wait_until(lambda: len(agent.presence._rtts) == 1, what="the agent's own probe")
    probe_back(agent, "pi-1", 80.0)  # while the fleet was starting
    assert RTT_MIN_PROBES == 3 and agent.telemetry().broker_rtt_ms is None  # 2 at most yet
    # Each round trip reads a little longer than made (the probe is handled after it is
    # built): the figures are far enough apart for a busy machine.
    probe_back(agent, "pi-1", 1.2)
    probe_back(agent, "pi-1", 15.0)
    rtt = agent.telemetry().broker_rtt_ms
    assert rtt is not None and rtt < 15.0, "the lowest of the probes"
    for _ in range(RTT_WINDOW):  # the broker moved farther away: it shows in time
        probe_back(agent, "pi-1", 40.0)
    rtt = agent.telemetry().broker_rtt_ms
    assert rtt is not None and 40.0 - ROUNDING_MS <= rtt < 80.0, "the old probes forgotten"


def test_the_round_trip_ends_when_the_echo_arrives_not_when_it_is_handled(
    fleet: MemoryFleet,
) -> None:
    """A hop's cost is the broker's: the agent's wait before its command worker got to
    the echo is its own time, already in its stages' compute times."""
    agent = fleet.agent("pi-1", telemetry_period_s=60.0)
    # its own probe at start, through the in-memory broker, first; the window forgets it
    wait_until(lambda: len(agent.presence._rtts) == 1, what="the agent's own probe")
    for _ in range(RTT_WINDOW):
        probe_back(agent, "pi-1", 2.0, handled_after_ms=30.0)
    rtt = agent.telemetry().broker_rtt_ms
    assert rtt is not None and 2.0 - ROUNDING_MS <= rtt < 20.0, rtt


def test_one_probe_in_a_few_is_large_and_gives_the_hops_throughput(fleet: MemoryFleet) -> None:
    agent = fleet.agent("pi-1", telemetry_period_s=60.0)
    wait_until(lambda: len(agent.presence._rtts) == 1, what="the agent's own probe")
    sent: list[Ping] = []
    spy = fleet.broker.transport("spy")
    spy.start()
    spy.subscribe(
        COMMANDS.name(agent="pi-1"), lambda m: sent.append(decode(m.payload, expect=Ping))
    )
    for _ in range(2 * THROUGHPUT_EVERY):
        agent.presence.probe_broker()
    wait_until(lambda: len(sent) == 2 * THROUGHPUT_EVERY, what="the probes")
    sizes = [len(p.padding or b"") for p in sent]
    # probes 2 to 11 of its life: every other one large until THROUGHPUT_WINDOW were,
    # then one in THROUGHPUT_EVERY
    assert sizes == [PROBE_BYTES, 0] * THROUGHPUT_WINDOW + [PROBE_BYTES, 0]
    presence = agent.presence
    wait_until(  # their echoes are in: the windows below push them out
        lambda: (len(presence._rtts), len(presence._large)) == (1 + 5, THROUGHPUT_WINDOW),
        what="the probes' echoes",
    )

    for _ in range(RTT_WINDOW):  # the small probes: 0.3 ms
        probe_back(agent, "pi-1", 0.3)
    for extra_ms in [2.0] + [9.0] * (THROUGHPUT_WINDOW - 1):  # 64 KiB in 2.0 ms more, at best
        probe_back(agent, "pi-1", 0.3 + extra_ms, padding=bytes(PROBE_BYTES))
    mbps = agent.telemetry().hop_mbps
    assert mbps is not None and abs(mbps - PROBE_BYTES * 8 / 2.0e3) < 40, mbps  # ~262 Mbit/s
    for _ in range(THROUGHPUT_WINDOW):  # as fast as a small one: more than any link
        probe_back(agent, "pi-1", 0.3, padding=bytes(PROBE_BYTES))
    assert agent.telemetry().hop_mbps == MAX_HOP_MBPS
