"""A secure broker setup: a development CA, one set of credentials per process, the ACL.

Made with the scripts in ``broker-config/`` (``make-dev-ca.sh``, ``make-credentials.sh``)
for ``broker-config/secure.conf``: TLS on, anonymous access off, each user only its
role's topics. It returns what each process needs to connect::

    setup = make_secure_setup(
        workdir / "secure",
        [("coordinator", "coordinator"), ("operator", "ops"),
         ("agent", "pi-1"), ("agent", "phone-1"), ("client", "alice")],
    )
    with setup.mosquitto():                    # broker-config/secure.conf on setup.port
        pi = setup.access("pi-1")
        pi.url, pi.username, pi.password_file, pi.ca_certs
        subprocess.Popen(["splitmq", "agent", "--id", "pi-1", *pi.cli_args()])
        Client(setup.access("alice").transport_config(), "alice")

For development and tests only: the CA key sits unencrypted beside the certificates.
Needs ``openssl`` and ``mosquitto_passwd`` (Debian: ``mosquitto``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from splitmq.errors import ConfigError, SplitMQError
from splitmq.mosquitto import Mosquitto, config_dir, free_port
from splitmq.transport import TransportConfig
from splitmq.wire.topics import DEFAULT_NAMESPACE, check_segment


class Role(StrEnum):
    """What a user may do (the ACL ``make-credentials.sh`` writes, per role)."""

    COORDINATOR = "coordinator"
    """Everything under the namespace."""
    OPERATOR = "operator"
    """Ask for deployments; read its replies, deployments and the fleet."""
    AGENT = "agent"
    """Its own presence, telemetry, events, commands and pool chunks; stages; results."""
    CLIENT = "client"
    """Plan requests and stage 0; its own plans and results; deployments and the fleet."""


class SecureSetupError(SplitMQError):
    """A script of ``broker-config/`` failed; the message holds its output."""


@dataclass(frozen=True)
class Access:
    """What one process needs to reach the secure broker.

    Attributes:
        role: the user's role.
        username: the MQTT user name (for agents and clients, also their id in topics).
        password_file: a file holding only the password (mode 600).
        ca_certs: the CA certificate that signed the broker's.
        host, port: where the broker listens.
    """

    role: Role
    username: str
    password_file: Path
    ca_certs: Path
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def cli_args(self) -> list[str]:
        """The broker options of any ``splitmq`` command (agent, coordinator, infer...)."""
        return [
            "--broker",
            self.url,
            "--username",
            self.username,
            "--password-file",
            str(self.password_file),
            "--ca-certs",
            str(self.ca_certs),
        ]

    def environ(self) -> dict[str, str]:
        """The same, as the ``SPLITMQ_*`` environment variables the commands read."""
        return {
            "SPLITMQ_BROKER": self.url,
            "SPLITMQ_USERNAME": self.username,
            "SPLITMQ_PASSWORD_FILE": str(self.password_file),
            "SPLITMQ_CA_CERTS": str(self.ca_certs),
        }

    def transport_config(self, client_id: str = "", **overrides: object) -> TransportConfig:
        """A :class:`TransportConfig` for an in-process connection as this user."""
        fields: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "client_id": client_id,
            "tls": True,
            "ca_certs": self.ca_certs,
            "username": self.username,
            "password": self.password,
        }
        fields.update(overrides)
        return TransportConfig(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SecureSetup:
    """The files of a secure broker and every user's :class:`Access`.

    Attributes:
        directory: holds ``certs/`` (CA and broker certificate), ``passwd``, ``acl``,
            ``credentials.txt`` and ``passwords/NAME`` (one file per user).
        host, port: where the broker will listen (chosen before it starts, so every
            process's URL is known at once).
        namespace: the topic namespace the ACL is written for.
        users: every user's access, by user name.
    """

    directory: Path
    host: str
    port: int
    namespace: str
    users: dict[str, Access] = field(default_factory=dict)

    @property
    def ca_certs(self) -> Path:
        return self.directory / "certs" / "ca.crt"

    def access(self, name: str) -> Access:
        try:
            return self.users[name]
        except KeyError:
            raise ConfigError(
                f"no user {name!r} in this secure setup; it has {', '.join(self.users)}"
            ) from None

    def mosquitto(self, workdir: Path | None = None) -> Mosquitto:
        """``broker-config/secure.conf`` with these files, on :attr:`port` (not started:
        use it as a context manager, or call ``start()``)."""
        return Mosquitto(
            config_dir() / "secure.conf",
            workdir or self.directory / "broker",
            port=self.port,
            files_dir=self.directory,
        )


def make_secure_setup(
    directory: str | Path,
    users: Iterable[tuple[Role | str, str]],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    hosts: Iterable[str] = (),
    namespace: str = DEFAULT_NAMESPACE,
) -> SecureSetup:
    """Make a CA, a broker certificate and credentials for ``users`` (``(role, name)``).

    The broker certificate names localhost, 127.0.0.1 and every host of ``hosts``.
    ``port`` defaults to a free one. Passwords are made up (``openssl rand``).

    Raises:
        ConfigError: a role or name is not valid, or a tool is missing.
        SecureSetupError: a script failed.
    """
    try:
        pairs = [(Role(role), name) for role, name in users]
    except ValueError as error:
        roles = ", ".join(r.value for r in Role)
        raise ConfigError(f"{error}: a role is one of {roles}") from None
    if not pairs:
        raise ConfigError("name at least one user: (role, name)")
    for _, name in pairs:
        try:
            check_segment("user name", name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    names = [name for _, name in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"user names must be unique, got {names}")
    for tool in ("openssl", "bash"):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is not installed: the broker-config scripts need it")
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    scripts = config_dir()
    _run(["bash", str(scripts / "make-dev-ca.sh"), str(root / "certs"), *hosts], namespace)
    _run(
        [
            "bash",
            str(scripts / "make-credentials.sh"),
            str(root),
            *(f"{role}:{name}" for role, name in pairs),
        ],
        namespace,
    )
    setup = SecureSetup(root, host, port or free_port(host), namespace)
    passwords = root / "passwords"
    passwords.mkdir(mode=0o700, exist_ok=True)
    for line in (root / "credentials.txt").read_text().splitlines():
        role, name, password = line.split()
        path = passwords / name
        path.write_text(password + "\n")
        path.chmod(0o600)
        setup.users[name] = Access(Role(role), name, path, setup.ca_certs, host, setup.port)
    return setup


def _run(command: list[str], namespace: str) -> None:
    environment = dict(os.environ, SPLITMQ_NAMESPACE=namespace)
    try:
        subprocess.run(
            command, check=True, capture_output=True, text=True, env=environment, timeout=120
        )
    except subprocess.CalledProcessError as error:
        raise SecureSetupError(
            f"{Path(command[1]).name} failed ({error.returncode}): {error.stderr or error.stdout}"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SecureSetupError(f"{Path(command[1]).name} could not run: {error}") from None
