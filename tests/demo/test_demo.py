"""``splitmq demo`` end to end, as a user runs it (the digits model only, to stay quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_demo(workdir: Path, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "splitmq", "demo", "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def nothing_left_running(workdir: Path) -> None:
    """No broker, agent or coordinator started for ``workdir`` is still running."""
    leftover = subprocess.run(
        ["pgrep", "-af", str(workdir)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == ""


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_the_demo_runs_kills_an_agent_and_checks_every_answer(tmp_path: Path, broker: str) -> None:
    args = ["--embedded-broker"] if broker == "embedded" else []
    done = run_demo(tmp_path, "--digits-only", "--requests", "25", *args)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert f"broker: {broker}" in out
    assert "killing" in out and "re-deployed without" in out
    assert "digits: 100/100 answered" in out
    assert "equal to the unsplit model on one device: 100/100" in out
    # x86 agents with this machine's runtime and builtin kernels: the strict rule
    assert "100/100 bit-identical to the unsplit model" in out
    assert "largest difference from the unsplit model: 0\n" in out
    assert "latency (ms)" in out and "J/inference" in out
    assert (tmp_path / "plots" / "latency_distribution.png").stat().st_size > 1000
    assert (tmp_path / "results.db").is_file()
    # Everything it started is stopped: no agent or coordinator is left behind.
    nothing_left_running(tmp_path)


def test_the_secure_demo_runs_over_tls_with_one_user_per_process(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--secure", "--digits-only", "--requests", "25")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "broker: mosquitto at mqtts://127.0.0.1:" in out
    assert "TLS" in out and "per-role ACLs" in out
    assert "digits: 100/100 answered" in out
    assert "equal to the unsplit model on one device: 100/100" in out
    assert "killing" in out and "re-deployed without" in out
    # The broker-config scripts made the CA and one user per process, and the broker
    # ran broker-config/secure.conf on exactly those files.
    secure = tmp_path / "secure"
    users = [line.split()[:2] for line in (secure / "credentials.txt").read_text().splitlines()]
    assert users == [
        ["coordinator", "coordinator"],
        ["operator", "demo-operator"],
        ["agent", "pi-1"],
        ["agent", "phone-1"],
        ["agent", "laptop-1"],
        ["client", "demo-client"],
    ]
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert f"cafile {secure / 'certs' / 'ca.crt'}" in conf
    assert f"acl_file {secure / 'acl'}" in conf and "allow_anonymous false" in conf
    # No process was turned away: no TLS failure, no refused login.
    log = (tmp_path / "broker" / "mosquitto.log").read_text()
    assert "alert" not in log and "not authori" not in log.lower(), log
    nothing_left_running(tmp_path)


def test_the_secure_demo_refuses_the_embedded_broker(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--secure", "--embedded-broker", timeout_s=60)
    assert done.returncode == 2
    assert "--secure needs Mosquitto" in done.stderr and "neither TLS nor ACLs" in done.stderr
    assert not (tmp_path / "secure").exists()
    nothing_left_running(tmp_path)
