"""The fleet as people read it: one row per agent (``splitmq fleet``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from splitmq.coordinator.registry import Registry
from splitmq.errors import DecodeError
from splitmq.tables import format_table
from splitmq.transport import InboundMessage, Transport
from splitmq.wire import AgentStatus, Deployment
from splitmq.wire.topics import DEPLOYMENTS, STATUS, TELEMETRY

log = logging.getLogger(__name__)

COLUMNS = (
    "agent",
    "state",
    "site",
    "profile",
    "runtime",
    "battery",
    "cpu %",
    "mem free MB",
    "GFLOP/s",
    "link",
    "rtt ms",
    "energy J",
    "stages (queue, ms)",
)


class FleetWatcher:
    """Feeds a :class:`Registry` from the status, telemetry and deployment topics."""

    def __init__(self, transport: Transport, namespace: str):
        self.transport = transport
        self.namespace = namespace
        self.registry = Registry()
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.transport.start()
        ns = self.namespace
        self.transport.subscribe(STATUS.filter(ns), self._on_status, qos=STATUS.qos)
        self.transport.subscribe(TELEMETRY.filter(ns), self._on_telemetry, qos=TELEMETRY.qos)
        self.transport.subscribe(DEPLOYMENTS.filter(ns), self._on_deployment, qos=DEPLOYMENTS.qos)

    def deployments(self) -> dict[str, Deployment]:
        with self._lock:
            return dict(self._deployments)

    def _on_status(self, message: InboundMessage) -> None:
        try:
            self.registry.on_status(STATUS.decode(message.payload))
        except DecodeError as error:
            log.debug("bad status on %s: %s", message.topic, error)

    def _on_telemetry(self, message: InboundMessage) -> None:
        try:
            self.registry.on_telemetry(TELEMETRY.decode(message.payload))
        except DecodeError as error:
            log.debug("bad telemetry on %s: %s", message.topic, error)

    def _on_deployment(self, message: InboundMessage) -> None:
        if not message.payload:
            return
        try:
            deployment = DEPLOYMENTS.decode(message.payload)
        except DecodeError:
            return
        with self._lock:
            self._deployments[deployment.deployment] = deployment


def fleet_rows(registry: Registry) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for agent_id in registry.agent_ids():
        record = registry.record(agent_id)
        if record is None:
            continue
        status, telemetry = record.status, record.telemetry
        online = registry.online(agent_id)
        state = (
            "online"
            if online
            else ("offline" if status and status.state == "offline" else "silent")
        )
        battery = "-"
        cpu = mem = rtt = energy = "-"
        stages = ""
        link = "-"
        if telemetry is not None:
            b = telemetry.battery
            battery = (
                f"{b.pct:.0f}%{' plugged' if b.plugged else ''}{' (sim)' if b.simulated else ''}"
            )
            cpu = f"{telemetry.cpu_pct:.0f}"
            mem = f"{telemetry.mem_free_bytes / 1e6:.0f}"
            rtt = "-" if telemetry.broker_rtt_ms is None else f"{telemetry.broker_rtt_ms:.1f}"
            energy = f"{telemetry.energy_j:.1f}"
            stages = ", ".join(
                f"{key} ({telemetry.queue_depth.get(key, 0)}, {ms:.1f})"
                for key, ms in sorted(telemetry.compute_ms.items())
            )
            if telemetry.link is not None:
                link = f"{telemetry.link.bandwidth_mbps:g} Mb/s {telemetry.link.latency_ms:g} ms"
        rows.append(
            (
                agent_id,
                state,
                (status.site or "-") if status else "-",
                status.profile if status else "-",
                _runtime(status) if status else "-",
                battery,
                cpu,
                mem,
                f"{registry.speed_gflops(agent_id):.1f}",
                link,
                rtt,
                energy,
                stages or "-",
            )
        )
    return rows


def _runtime(status: AgentStatus) -> str:
    """Runtime and version, and the architecture (``emulated`` when it is) if said."""
    emulated = "emulated" if status.emulator else ""
    parts = (status.runtime, status.runtime_version, status.machine or "", emulated)
    return " ".join(p for p in parts if p)


def fleet_table(registry: Registry, deployments: Mapping[str, Deployment] | None = None) -> str:
    rows = fleet_rows(registry)
    if not rows:
        return "no agents: none has published its status on this broker and namespace"
    text = format_table(COLUMNS, rows, left=range(len(COLUMNS)))
    if deployments:
        lines = [text, "", "deployments:"]
        for deployment in sorted(deployments.values(), key=lambda d: d.deployment):
            stages = " | ".join(
                f"{s.stage}: {', '.join(s.replicas) or '-'}" for s in deployment.stages
            )
            lines.append(
                f"  {deployment.deployment} {deployment.version} epoch {deployment.epoch} "
                f"{deployment.state}: {stages}"
            )
        text = "\n".join(lines)
    return text
