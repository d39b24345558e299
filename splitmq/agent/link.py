"""The device's emulated link (when the profile asks for emulation): every publish
waits the link's latency plus its bytes over its bandwidth, one transmission at a time
as on one radio, and the radio energy is spent; and its compute factor
(:meth:`EmulatedLink.device_s`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from splitmq.agent.config import AgentConfig
from splitmq.agent.energy import EnergyMeter
from splitmq.agent.requests import RequestFailed, now_ms
from splitmq.errors import TransportError
from splitmq.transport import Payload, Transport
from splitmq.transport.payload import payload_size
from splitmq.wire import ErrorCode
from splitmq.wire.topics import Topic


class EmulatedLink:
    """Sends over ``transport`` as the device's link would (see the module docstring)."""

    def __init__(self, config: AgentConfig, transport: Transport, energy: EnergyMeter):
        self.config = config
        self.transport = transport
        self.energy = energy
        self._lock = threading.Lock()

    @property
    def compute_factor(self) -> float:
        """How much slower than this machine the emulated device computes (1: as fast)."""
        return self.config.profile.compute_factor if self.config.emulate else 1.0

    def device_s(self, invoke_s: float, cpu_s: float, threads: int) -> float:
        """The emulated device's time for an invocation that took ``invoke_s`` here and
        ``cpu_s`` of the calling thread's CPU: ``compute_factor`` times the work. A
        single-threaded interpreter's work is that CPU time, so what a busy host adds
        waiting for a core (other agents computing on the same machine) is not charged
        again: the devices emulated have cores of their own. With more threads, or no
        emulation, the time measured."""
        factor = self.compute_factor
        if factor <= 1:
            return invoke_s
        work_s = cpu_s if threads == 1 and 0 < cpu_s <= invoke_s else invoke_s
        return max(invoke_s, factor * work_s)

    def send(
        self,
        row: Topic[Any],
        topic: str,
        payload: Payload,
        *,
        deadline_ms: int = 0,
        qos: int | None = None,
    ) -> None:
        """Publish on ``topic`` (of the table's ``row``, at its QoS or ``qos``) over the
        emulated link: wait latency + bytes / bandwidth, then send.

        Raises:
            RequestFailed: the transport could not send it (``internal``).
        """
        link = self.config.profile.link
        size = payload_size(payload)
        if self.config.emulate and link is not None:
            delay_s = link.latency_ms / 1000.0 + size * 8 / (link.bandwidth_mbps * 1e6)
            with self._lock:  # one radio: transmissions queue behind each other
                time.sleep(delay_s)
        expiry_s = None
        if deadline_ms:
            expiry_s = max(1.0, (deadline_ms - now_ms()) / 1000.0)
        try:
            row.publish_payload(self.transport, topic, payload, expiry_s=expiry_s, qos=qos)
        except TransportError as error:
            raise RequestFailed(ErrorCode.INTERNAL, f"cannot send to {topic}: {error}") from None
        self.energy.spend_radio(size)
