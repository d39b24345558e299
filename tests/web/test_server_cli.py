"""``splitmq web`` and ``splitmq coordinator --web PORT`` as processes: the URL and QR
code on the terminal, the server answering, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from splitmq.broker import Mosquitto, free_port

pytestmark = pytest.mark.integration


def run_until_serving(command: list[str], port: int) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("agent page:"):
            # the QR code follows its URL: read until the blank line that ends it
            while (line := process.stdout.readline()).strip():
                lines.append(line.rstrip("\n"))
            return process, lines
    process.kill()
    raise AssertionError("no URL printed:\n" + "\n".join(lines))


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("command", ["web", "coordinator"])
def test_the_command_prints_where_to_join_and_serves(
    command: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()
    base = [sys.executable, "-m", "splitmq"]
    if command == "web":
        args = [*base, "web", "--port", str(port), "--agent-profile", "phone"]
    else:
        args = [*base, "coordinator", "--id", f"web-cli-{port}", "--web", str(port)]
    args += ["--broker", mosquitto.url(), "--pool", str(tmp_path), "--host", "127.0.0.1"]
    process, lines = run_until_serving(args, port)
    try:
        assert f"fleet page: http://127.0.0.1:{port}/" in lines
        join = next(line for line in lines if line.startswith("agent page:"))
        assert f"http://127.0.0.1:{port}/agent.html" in join
        qr = lines[lines.index(join) + 2 :]  # after the loopback-only notice
        assert len(qr) > 10 and all("\u2588" in row or "\u2580" in row for row in qr[:3])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config.json", timeout=10) as r:
            config = json.load(r)
        assert config["broker_url"] == f"ws://127.0.0.1:{port}/mqtt"
        if command == "web":
            assert config["profile"] == "phone"
            assert config["profile_figures"]["battery_wh"] == 17.0  # agent/profiles/phone.json
            assert config["coordinator_id"] == "coordinator"
        else:  # the pages obey the coordinator that serves them
            assert config["coordinator_id"] == f"web-cli-{port}"
    finally:
        assert stop(process) == 0


def test_an_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitmq",
            "web",
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
            "--port",
            "0",
            "--pool",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the fleet page cannot watch the broker" in result.stderr
