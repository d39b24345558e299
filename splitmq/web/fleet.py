"""The fleet page's data: what ``splitmq fleet --watch`` prints, as JSON.

The rows are :func:`splitmq.coordinator.fleet_table.fleet_rows` themselves (one
agent a row, the same columns), fed by the same :class:`FleetWatcher` from the
retained status, telemetry and deployment topics over splitmq's own transport. Each
stage column holds the stage's recent compute time on that agent (its smoothed
telemetry), the latency the fleet reports per request and stage.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from splitmq.coordinator.fleet_table import COLUMNS, FleetWatcher, fleet_rows
from splitmq.transport import MqttTransport, TransportConfig
from splitmq.wire import Deployment


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


class FleetView:
    """A :class:`FleetWatcher` on a connection of its own, and its snapshot as JSON."""

    def __init__(self, broker: TransportConfig, namespace: str):
        client_id = f"splitmq-web-{uuid.uuid4().hex[:8]}"
        self.transport = MqttTransport(replace(broker, client_id=client_id))
        self.watcher = FleetWatcher(self.transport, namespace)

    def start(self) -> None:
        self.watcher.start()

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
        }
