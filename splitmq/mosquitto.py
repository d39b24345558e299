"""Run a real Mosquitto from the files in ``broker-config/``, on a port of our choosing.

``mosquitto -p PORT`` is ignored when the configuration defines a listener, so the
configuration is rendered: the first ``listener`` gets the port, and relative paths
(certificates, password file, ACL) become absolute, resolved against the directory
given for them (by default the configuration's own). Then we poll until the broker
accepts connections. Used by the test suite and by ``splitmq demo``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from splitmq.errors import ConfigError, SplitMQError
from splitmq.orphans import die_with_parent

_PATH_DIRECTIVES = ("cafile", "certfile", "keyfile", "password_file", "acl_file", "capath")

MALLOC_TUNABLES = "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432"
"""glibc settings for the Mosquitto process (``GLIBC_TUNABLES``, ignored by other libcs).

Mosquitto allocates and frees a buffer per packet. With glibc's defaults a buffer above
128 kB is mapped fresh and unmapped (or trimmed) on every message, and its pages fault
in again each time: a 600 kB activation took 0.80 ms through the broker on loopback,
0.22 ms with these settings (``benchmarks/bench_split.py``, ``docs/performance.md``).
Run a production Mosquitto with the same environment (a systemd ``Environment=`` line).
"""


def config_dir() -> Path:
    """The ``broker-config`` directory: the repository's, else the one in the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "broker-config", here / "broker_config"):
        if (candidate / "dev.conf").is_file():
            return candidate
    raise ConfigError("broker-config/ not found beside the splitmq package")


def mosquitto_binary() -> Path:
    """The mosquitto executable (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()),
        None,
    )
    if found is None:
        raise ConfigError(
            "mosquitto is not installed: `apt-get install mosquitto` (make test does it)"
        )
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def render_config(
    template: str, *, port: int, base_dir: Path, log_file: Path | None, run_as_root: bool = False
) -> str:
    """``template`` with the first listener on ``port`` and absolute file paths."""
    lines = []
    listener_done = False
    for original in template.splitlines():
        line = original
        words = line.split()
        if words and words[0] == "listener" and not listener_done:
            bind = words[2] if len(words) > 2 else "127.0.0.1"
            line = f"listener {port} {bind}"
            listener_done = True
        elif len(words) == 2 and words[0] in _PATH_DIRECTIVES:
            path = Path(words[1])
            line = f"{words[0]} {path if path.is_absolute() else (base_dir / path).resolve()}"
        elif log_file is not None and words[:2] == ["log_dest", "stderr"]:
            line = f"log_dest file {log_file}"
        lines.append(line)
    if not listener_done:
        raise ConfigError("the broker configuration defines no listener")
    if run_as_root:
        # Started as root, mosquitto drops to the 'mosquitto' user, which cannot read
        # a test's private files: stay the user who started it.
        lines.append("user root")
    return "\n".join(lines) + "\n"


@dataclass
class Mosquitto:
    """A Mosquitto process started from a ``broker-config`` file.

    Attributes:
        config: the configuration file to render (e.g. ``broker-config/dev.conf``).
        workdir: where the rendered configuration and the log go.
        port: the port to listen on (a free one when None).
        files_dir: the directory relative paths in ``config`` are resolved against.
        bound_to_parent: the broker gets SIGTERM when this process dies, even by SIGKILL
            (Linux; :mod:`splitmq.orphans`).
    """

    config: Path
    workdir: Path
    port: int | None = None
    files_dir: Path | None = None
    bound_to_parent: bool = False

    def __post_init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def url(self, scheme: str = "mqtt") -> str:
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.port is None:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        rendered = render_config(
            self.config.read_text(),
            port=self.port,
            base_dir=(self.files_dir or self.config.parent).resolve(),
            log_file=self.log_file,
            run_as_root=os.geteuid() == 0,
        )
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(rendered)
        self.log_file.write_text("")
        environment = dict(os.environ)
        environment.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
        bind = die_with_parent() if self.bound_to_parent else None
        self._process = subprocess.Popen(
            [str(mosquitto_binary()), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            preexec_fn=bind,  # noqa: PLW1509 - a prctl call, nothing else
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise SplitMQError(
                    f"mosquitto exited with {self._process.returncode} at start:\n"
                    f"{stderr}{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.02)
        self.stop()
        raise SplitMQError(f"mosquitto did not accept connections within {timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (for fault tests)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(5.0)
            if process.stderr:
                process.stderr.close()

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for resource figures)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
