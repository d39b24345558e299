"""What the device is, as it reports itself: CPU architecture and model, cores, memory,
and whether the agent runs under an emulator.

Under QEMU user-mode emulation the kernel is the host's: ``uname`` says ``aarch64``
(QEMU says so), but cores and memory (``os.cpu_count``, psutil) are the host's, and
``/proc/cpuinfo`` is the host's unless a device's is bound over it. The agent cannot
learn the emulated device's own cores and memory; it says it runs emulated, so nobody
reads the host's figures (or the emulated speed, 100-400x below a real Pi's) as a
device's. Evidence of emulation, any of:

- a ``QEMU_*`` variable in the environment (``QEMU_CPU`` picks the emulated CPU);
- ``/proc/cpuinfo`` describing another architecture than ``uname`` (the host's x86
  cpuinfo seen by an ARM program);
- a binfmt_misc entry enabled for a ``qemu-<machine>`` interpreter (visible where
  binfmt_misc is mounted).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from splitmq.agent import probes

CPUINFO = Path("/proc/cpuinfo")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i486", "i586", "i686"})
ARM_MACHINES = frozenset({"aarch64", "arm64", "armv7l", "armv6l", "armv8l"})
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd49": "Neoverse-N2",
}
"""ARM's CPU part numbers (``CPU part`` in an ARM cpuinfo) of common boards' cores."""


@dataclass(frozen=True)
class DeviceInfo:
    """The device as it reports itself.

    Attributes:
        machine: CPU architecture as ``uname`` gives it (``x86_64``, ``aarch64``).
        cpu_model: the CPU or board model from /proc/cpuinfo ('' when it says none).
        cores: logical CPUs the operating system reports.
        memory_bytes: total memory the operating system reports.
        emulator: how the agent is emulated (``qemu-user cortex-a72``), or None when
            nothing says it is: then the figures above are the device's own.
    """

    machine: str
    cpu_model: str
    cores: int
    memory_bytes: int
    emulator: str | None


def detect() -> DeviceInfo:
    """This device, read now."""
    machine = platform.machine()
    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = CPUINFO.read_text(errors="replace")
    return DeviceInfo(
        machine=machine,
        cpu_model=cpu_model(cpuinfo) or platform.processor(),
        cores=probes.cores(),
        memory_bytes=probes.mem_total_bytes(),
        emulator=emulation(machine, cpuinfo, os.environ, BINFMT),
    )


def cpuinfo_fields(cpuinfo: str) -> dict[str, str]:
    """The first value of each ``key : value`` line of /proc/cpuinfo, keys lowercased."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model(cpuinfo: str) -> str:
    """The board (``Model`` on a Raspberry Pi) and CPU model named by /proc/cpuinfo."""
    fields = cpuinfo_fields(cpuinfo)
    if "model name" in fields:  # x86, and some ARM kernels
        return fields["model name"]
    part = fields.get("cpu part", "").lower()
    core = ARM_PARTS.get(part, f"ARM part {part}" if part else "")
    board = fields.get("model", "")
    count = cpuinfo.count("processor\t:") or cpuinfo.count("processor :")
    cores = f"{count} x {core}" if core and count else core
    return ", ".join(p for p in (board, cores) if p)


def cpuinfo_architecture(cpuinfo: str) -> str | None:
    """``x86`` or ``arm`` by the fields /proc/cpuinfo has, None when it cannot tell."""
    fields = cpuinfo_fields(cpuinfo)
    if "vendor_id" in fields or "flags" in fields:
        return "x86"
    if "cpu implementer" in fields or "cpu architecture" in fields:
        return "arm"
    return None


def emulation(
    machine: str, cpuinfo: str, environ: Mapping[str, str], binfmt: Path = BINFMT
) -> str | None:
    """How this process is emulated, by the evidence in the module's docstring; None
    when there is none."""
    qemu = {k: v for k, v in environ.items() if k.startswith("QEMU_")}
    if qemu:
        cpu = qemu.get("QEMU_CPU")
        return f"qemu-user {cpu}" if cpu else "qemu-user"
    family = "x86" if machine in X86_MACHINES else "arm" if machine in ARM_MACHINES else None
    shown = cpuinfo_architecture(cpuinfo)
    if family and shown and family != shown:
        return f"emulated {machine} (/proc/cpuinfo shows an {shown} CPU)"
    entry = binfmt / f"qemu-{machine}"
    with contextlib.suppress(OSError):
        if entry.read_text().startswith("enabled"):
            return f"qemu-user (binfmt_misc qemu-{machine})"
    return None
