"""MQTT over WebSocket: each browser connection relayed to the broker's TCP listener.

A browser can only speak MQTT over WebSocket (MQTT 5.0 §6, 3.1.1 §6): binary frames,
subprotocol ``mqtt``, any frame may hold part of a packet or several. Debian's
Mosquitto 2.0.11 has a WebSocket listener but delivers broker-to-browser at about
40 KB/s, so the page connects here instead, and each WebSocket gets a TCP (or TLS)
connection of its own to the broker: bytes go through untouched both ways. The
broker sees the page's own CONNECT (its client id, will, user name and password), so
its ACL applies to the page as to any agent, and when the page vanishes the relay
closes the broker connection and the broker publishes the page's will.

What a connection does wrong ends that connection only: a text frame is refused
with close code 1003 (the MQTT specification allows binary frames only), a frame
that breaks RFC 6455 with 1002 (aiohttp's reader), a message above the broker's
packet limit with 1009; a broker that cannot be reached ends the handshake with 1011
and a reason the page can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web

from splitmq.transport import TransportConfig
from splitmq.web.config import MQTT_SUBPROTOCOLS

log = logging.getLogger(__name__)

READ_BYTES = 1 << 20
"""The most bytes read from the broker at once (one WebSocket frame at most)."""
CONNECT_TIMEOUT_S = 10.0


@dataclass
class RelayStats:
    """Counters of one relay since it started."""

    connections: int = 0
    open_connections: int = 0
    refused: int = 0
    bytes_to_broker: int = 0
    bytes_to_browser: int = 0


def broker_ssl_context(broker: TransportConfig) -> ssl.SSLContext | None:
    """The TLS context for the broker connection (None for plain TCP)."""
    if not broker.tls:
        return None
    context = ssl.create_default_context(
        cafile=str(broker.ca_certs) if broker.ca_certs is not None else None
    )
    if broker.certfile is not None and broker.keyfile is not None:
        context.load_cert_chain(str(broker.certfile), str(broker.keyfile))
    if broker.tls_insecure:
        context.check_hostname = False
    return context


def _reason(text: str) -> bytes:
    """A close reason: at most 123 bytes of UTF-8 (RFC 6455 §5.5: control payloads <= 125)."""
    return text.encode()[:123]


class Relay:
    """The ``/mqtt`` WebSocket handler (see the module docstring)."""

    def __init__(self, broker: TransportConfig, max_message_bytes: int):
        self.broker = broker
        self.max_message_bytes = max_message_bytes
        self.stats = RelayStats()
        self._ssl = broker_ssl_context(broker)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=MQTT_SUBPROTOCOLS,
            max_msg_size=self.max_message_bytes,
            compress=False,
            autoping=True,
        )
        ready = ws.can_prepare(request)
        if not ready.ok:
            self.stats.refused += 1
            raise web.HTTPUpgradeRequired(
                text="this is the MQTT-over-WebSocket endpoint: connect with a WebSocket "
                "client offering the subprotocol 'mqtt'\n",
                headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            )
        if ready.protocol is None:
            self.stats.refused += 1
            offered = request.headers.get("Sec-WebSocket-Protocol", "none")
            raise web.HTTPBadRequest(
                text=f"offer the WebSocket subprotocol 'mqtt' (MQTT §6); offered: {offered}\n"
            )
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        failure = ""
        try:
            upstream = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ssl.SSLError) as error:
            failure = f"cannot reach the broker at {self.broker.url}: {error or 'timed out'}"
            log.warning("relay: %s", failure)
        await ws.prepare(request)
        if upstream is None:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=_reason(failure))
            return ws
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            await self._pump(ws, *upstream)
        finally:
            self.stats.open_connections -= 1
        return ws

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(
            self.broker.host,
            self.broker.port,
            ssl=self._ssl,
            server_hostname=self.broker.host if self._ssl is not None else None,
            limit=READ_BYTES,
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def _pump(
        self,
        ws: web.WebSocketResponse,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        to_broker = asyncio.create_task(self._browser_to_broker(ws, writer))
        to_browser = asyncio.create_task(self._broker_to_browser(reader, ws))
        try:
            await asyncio.wait((to_broker, to_browser), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_broker, to_browser):
                task.cancel()
            for task in (to_broker, to_browser):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await task
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await writer.wait_closed()
            if not ws.closed:
                # The broker ended the connection (RFC 6455 §7.1.2: start the closing
                # handshake); after a DISCONNECT or a protocol error alike, 1000.
                with contextlib.suppress(ConnectionError):
                    await ws.close(code=WSCloseCode.OK, message=b"the broker closed the connection")

    async def _browser_to_broker(
        self, ws: web.WebSocketResponse, writer: asyncio.StreamWriter
    ) -> None:
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                writer.write(message.data)
                self.stats.bytes_to_broker += len(message.data)
                await writer.drain()
            elif message.type is WSMsgType.TEXT:
                await ws.close(
                    code=WSCloseCode.UNSUPPORTED_DATA,
                    message=_reason("MQTT over WebSocket carries binary frames only (MQTT §6)"),
                )
                return
            elif message.type is WSMsgType.ERROR:
                log.info("relay: a browser connection failed: %s", ws.exception())
                return

    async def _broker_to_browser(
        self, reader: asyncio.StreamReader, ws: web.WebSocketResponse
    ) -> None:
        while True:
            data = await reader.read(READ_BYTES)
            if not data:
                return
            self.stats.bytes_to_browser += len(data)
            await ws.send_bytes(data)
