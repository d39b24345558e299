"""The brokers the conformance suite runs against, each restartable on its own port.

- ``embedded``: splitmq's own broker (:class:`splitmq.embedded_broker.EmbeddedBroker`).
- ``mosquitto``: a real Mosquitto 2.0 from ``broker-config/dev.conf``.
- ``amqtt``: amqtt 0.12's broker in a process of its own (MQTT 3.1.1 only).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from splitmq.broker import Mosquitto, config_dir, free_port
from splitmq.embedded_broker import EmbeddedBroker
from splitmq.errors import SplitMQError

HOST = "127.0.0.1"


class BrokerProcess(Protocol):
    name: str
    port: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


def wait_listening(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise SplitMQError(f"no broker listening on {HOST}:{port} within {timeout_s} s")


class EmbeddedUnderTest:
    name = "embedded"

    def __init__(self) -> None:
        self.port = free_port()
        self._broker: EmbeddedBroker | None = None

    def start(self) -> None:
        self._broker = EmbeddedBroker(port=self.port).start()

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None


class MosquittoUnderTest:
    name = "mosquitto"

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        self.port = free_port()
        config = config_dir() / "dev.conf"
        if extra_config:
            workdir.mkdir(parents=True, exist_ok=True)
            rendered = workdir / "dev-extra.conf"
            rendered.write_text(config.read_text() + "\n" + extra_config + "\n")
            config = rendered
        self._mosquitto = Mosquitto(config, workdir, port=self.port, files_dir=config_dir())

    def start(self) -> None:
        self._mosquitto.start()

    def stop(self) -> None:
        self._mosquitto.stop()


AMQTT_CONFIG = """\
listeners:
  default:
    type: tcp
    bind: {host}:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


class AmqttUnderTest:
    name = "amqtt"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self._config = workdir / "amqtt.yaml"
        self._config.write_text(AMQTT_CONFIG.format(host=HOST, port=self.port))
        self._log = workdir / "amqtt.log"
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return amqtt_binary() is not None

    def start(self) -> None:
        binary = amqtt_binary()
        if binary is None:
            raise SplitMQError("amqtt is not installed: pip install -e '.[dev]'")
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-c", str(self._config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, 20.0)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


def amqtt_binary() -> str | None:
    beside = Path(sys.executable).parent / "amqtt"
    if beside.exists():
        return str(beside)
    return shutil.which("amqtt")
