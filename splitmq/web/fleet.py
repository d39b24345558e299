"""The fleet page's data: what ``splitmq fleet --watch`` prints, as JSON.

The rows are :func:`splitmq.coordinator.fleet_table.fleet_rows` themselves (one
agent a row, the same columns), fed by the same :class:`FleetWatcher` from the
retained status, telemetry and deployment topics over splitmq's own transport. Each
stage column holds the stage's recent compute time on that agent (its smoothed
telemetry). Recent requests come from the results on the callback topics
(``clients/+/result``), where the broker's ACL lets the server read them: their route
and their latency through the fleet, from the first stage's arrival to the last
stage's finish in the agents' trace (the agents' clocks).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import Any

from splitmq.coordinator.fleet_table import COLUMNS, FleetWatcher, fleet_rows
from splitmq.errors import DecodeError, TransportError
from splitmq.transport import InboundMessage, MqttTransport, TransportConfig
from splitmq.wire import Deployment, ErrorMessage, Result, decode
from splitmq.wire.topics import RESULTS

log = logging.getLogger(__name__)

OBSERVER_QOS = 0
"""The page only watches results go by: at most once is enough, and the broker keeps no
acknowledgement state for it (the clients themselves receive at the row's QoS)."""

RECENT_SHOWN = 15
RECENT_KEPT = 200


def deployment_json(deployment: Deployment) -> dict[str, Any]:
    return {
        "deployment": deployment.deployment,
        "model": deployment.model,
        "version": deployment.version,
        "variant": deployment.variant,
        "epoch": deployment.epoch,
        "state": str(deployment.state),
        "objective": deployment.objective,
        "stages": [
            {
                "stage": stage.stage,
                "ops": [stage.start_op, stage.end_op],
                "size_bytes": stage.size_bytes,
                "digest": stage.digest,
                "replicas": list(stage.replicas),
            }
            for stage in deployment.stages
        ],
    }


class RecentRequests:
    """The last results and errors seen on the callback topics."""

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self._lock = threading.Lock()
        self.available = False

    def on_message(self, message: InboundMessage) -> None:
        try:
            decoded = decode(message.payload)
        except DecodeError:
            return
        item: dict[str, Any] = {"ts_ms": int(time.time() * 1000)}
        if isinstance(decoded, Result):
            trace = sorted(decoded.trace, key=lambda entry: entry.stage)
            item.update(
                deployment=decoded.deployment,
                attempt=decoded.attempt,
                route=[entry.agent_id for entry in trace],
                latency_ms=(
                    max(e.finished_ms for e in trace) - min(e.received_ms for e in trace)
                    if trace
                    else None
                ),
            )
        elif isinstance(decoded, ErrorMessage):
            item.update(
                attempt=decoded.attempt,
                error=f"{decoded.code} at stage {decoded.stage} on {decoded.agent_id}",
            )
        else:
            return
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            items = list(self._items)
        latencies: dict[str, list[float]] = {}
        for item in items:
            if item.get("latency_ms") is not None:
                latencies.setdefault(item["deployment"], []).append(item["latency_ms"])
        return {
            "available": self.available,
            "recent": items[-RECENT_SHOWN:][::-1],
            "median_ms": {name: statistics.median(v) for name, v in latencies.items()},
            "count": len(items),
        }


class FleetView:
    """A :class:`FleetWatcher` on a connection of its own, and its snapshot as JSON."""

    def __init__(self, broker: TransportConfig, namespace: str):
        client_id = f"splitmq-web-{uuid.uuid4().hex[:8]}"
        self.transport = MqttTransport(replace(broker, client_id=client_id))
        self.watcher = FleetWatcher(self.transport, namespace)
        self.requests = RecentRequests()
        self.namespace = namespace

    def start(self) -> None:
        self.watcher.start()
        try:
            self.transport.subscribe(
                RESULTS.filter(self.namespace), self.requests.on_message, qos=OBSERVER_QOS
            )
            self.requests.available = True
        except TransportError as error:  # e.g. an ACL that keeps results to their clients
            log.info("the fleet page shows no recent requests: %s", error)

    def close(self) -> None:
        self.transport.close()

    def snapshot(self) -> dict[str, Any]:
        deployments = self.watcher.deployments()
        return {
            "ts_ms": int(time.time() * 1000),
            "broker": self.transport.config.url,
            "connected": self.transport.connected,
            "columns": list(COLUMNS),
            "agents": [list(row) for row in fleet_rows(self.watcher.registry)],
            "deployments": [
                deployment_json(d) for d in sorted(deployments.values(), key=lambda d: d.deployment)
            ],
            "requests": self.requests.snapshot(),
        }
