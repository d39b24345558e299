"""splitmq.secure_setup: the files broker-config/ scripts make, and what each process gets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from splitmq.errors import ConfigError
from splitmq.secure_setup import Role, make_secure_setup
from splitmq.transport import MqttTransport, PublishRefused
from splitmq.wire.topics import COMMANDS, STATUS

pytestmark = pytest.mark.integration


def test_each_user_gets_a_url_a_password_file_and_the_ca(tmp_path: Path) -> None:
    setup = make_secure_setup(tmp_path, [("coordinator", "coord"), (Role.AGENT, "pi-1")])
    pi = setup.access("pi-1")
    assert pi.role is Role.AGENT and pi.username == "pi-1"
    assert pi.url == f"mqtts://127.0.0.1:{setup.port}"
    assert pi.ca_certs == setup.ca_certs and pi.ca_certs.is_file()
    assert stat.S_IMODE(pi.password_file.stat().st_mode) == 0o600
    assert pi.password and pi.password != setup.access("coord").password
    assert pi.cli_args()[pi.cli_args().index("--password-file") + 1] == str(pi.password_file)
    assert pi.environ()["SPLITMQ_CA_CERTS"] == str(pi.ca_certs)
    with setup.mosquitto(tmp_path / "broker"):
        agent = MqttTransport(pi.transport_config())
        agent.start()
        try:
            agent.publish(STATUS.name(agent="pi-1"), b"x").wait()
            with pytest.raises(PublishRefused):
                agent.publish(COMMANDS.name(agent="other"), b"x").wait()
        finally:
            agent.close()


def test_bad_roles_and_names_are_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a role is one of"):
        make_secure_setup(tmp_path / "a", [("wizard", "merlin")])
    with pytest.raises(ConfigError):
        make_secure_setup(tmp_path / "b", [("agent", "pi/1")])
    with pytest.raises(ConfigError, match="unique"):
        make_secure_setup(tmp_path / "c", [("agent", "pi"), ("client", "pi")])
    with pytest.raises(ConfigError, match="no user"):
        make_secure_setup(tmp_path / "d", [("agent", "pi")]).access("nobody")
    assert not (tmp_path / "a").exists()
