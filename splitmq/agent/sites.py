"""Where the other agents are: the sites the deployments name (``Deployment.sites``).

A hop to an agent of another site goes on a topic the site brokers' bridges carry
(:func:`splitmq.wire.topics.hop_topic`); hops within a site stay on its broker. The
agent learns the sites from the retained deployments it may read.
"""

from __future__ import annotations

import logging
import threading

from splitmq.errors import DecodeError
from splitmq.transport import InboundMessage, Transport
from splitmq.wire.topics import DEPLOYMENTS

log = logging.getLogger(__name__)


class SiteBook:
    """Agent id -> site, from every deployment heard (the latest of each)."""

    def __init__(self, transport: Transport, namespace: str):
        self.transport = transport
        self.namespace = namespace
        self._by_deployment: dict[str, dict[str, str]] = {}
        self._sites: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self.transport.subscribe(
            DEPLOYMENTS.filter(self.namespace), self.on_deployment, qos=DEPLOYMENTS.qos
        )

    def on_deployment(self, message: InboundMessage) -> None:
        if not message.payload:
            return
        try:
            deployment = DEPLOYMENTS.decode(message.payload, topic=message.topic)
        except DecodeError as error:
            log.debug("ignored a bad deployment: %s", error)
            return
        with self._lock:
            self._by_deployment[deployment.deployment] = dict(deployment.sites)
            merged: dict[str, str] = {}
            for sites in self._by_deployment.values():
                merged.update(sites)
            self._sites = merged

    @property
    def sites(self) -> dict[str, str]:
        """Agent id -> site (agents without one are absent: on the central broker)."""
        return self._sites  # replaced whole, never changed in place
