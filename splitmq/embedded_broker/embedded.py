""":class:`EmbeddedBroker`: the asyncio broker on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import queue
import threading
from types import TracebackType

from splitmq.embedded_broker.model import DEFAULT_MAX_PACKET_BYTES, BrokerConfig, BrokerStats
from splitmq.embedded_broker.server import Broker
from splitmq.errors import SplitMQError


class EmbeddedBroker:
    """An MQTT 3.1.1 / 5.0 broker in this process, for machines without Mosquitto.

    ::

        with EmbeddedBroker() as broker:          # a free port on 127.0.0.1
            transport = MqttTransport(parse_broker_url(broker.url))

    Arguments are those of :class:`BrokerConfig`; ``port`` 0 picks a free port and
    :attr:`port` tells which once :meth:`start` has returned. It has no
    authentication, ACL or TLS: it refuses to listen beyond loopback unless
    ``allow_remote``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
        max_queued_messages: int = 10_000,
        *,
        max_inflight_messages: int = 100,
        max_queued_bytes: int = 256 * 1024 * 1024,
        max_keepalive_s: int | None = None,
        allow_remote: bool = False,
    ):
        self.config = BrokerConfig(
            host=host,
            port=port,
            max_packet_bytes=max_packet_bytes,
            max_queued_messages=max_queued_messages,
            max_inflight_messages=max_inflight_messages,
            max_queued_bytes=max_queued_bytes,
            max_keepalive_s=max_keepalive_s,
            allow_remote=allow_remote,
        )
        self.port = port
        self._broker: Broker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``, for :func:`splitmq.transport.parse_broker_url`."""
        return f"mqtt://{self.config.host}:{self.port}"

    @property
    def stats(self) -> BrokerStats:
        """The broker's counters (zeros before :meth:`start`)."""
        return self._broker.stats if self._broker is not None else BrokerStats()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start the broker thread; returns once the broker accepts connections.

        Raises:
            ConfigError: the address cannot be listened on.
            SplitMQError: the broker did not come up within ``timeout_s``.
        """
        if self.running:
            return self
        ready: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="embedded-mqtt-broker", daemon=True
        )
        self._thread.start()
        try:
            failure = ready.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise SplitMQError(f"the embedded broker did not start within {timeout_s} s") from None
        if failure is not None:
            self._thread.join(timeout_s)
            self._thread = None
            raise failure
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect every client and stop; the port is free again afterwards."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = None

    def _run(self, ready: queue.Queue[BaseException | None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            broker = Broker(self.config)
            try:
                loop.run_until_complete(broker.start())
            except Exception as error:  # reported to start(), which raises it
                ready.put(error)
                return
            self._broker = broker
            self.port = broker.port
            ready.put(None)
            loop.run_forever()
            loop.run_until_complete(broker.stop())
        finally:
            loop.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
