"""Run a command inside the emulated Raspberry Pi root (an ARM64 userland under QEMU).

The command runs in a mount namespace of its own (``unshare --mount``): /proc, /sys,
/dev, the Pi 4's cpuinfo and the caller's bind mounts exist only for it and vanish with it,
even when it is killed with SIGKILL. No fork is added: the process id the caller holds
is the emulated program's own, so a signal reaches it directly.

Two workarounds make LiteRT run under QEMU user-mode emulation:

- ``/proc/cpuinfo`` of a Raspberry Pi 4 (4 x Cortex-A72) is bound over the root's: the
  emulator shows the host's x86 one, and LiteRT's CPU detection, finding no ARM core,
  crashes (SIGSEGV in ``Interpreter(...)``).
- ``QEMU_CPU=cortex-a72``: QEMU's default ``max`` CPU advertises SVE and SME, so XNNPACK
  would pick kernels no Pi 4 has.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

QEMU_CPU = "cortex-a72"
CPUINFO = Path(__file__).with_name("rpi4-cpuinfo.txt")
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "QEMU_CPU": QEMU_CPU,
}


@dataclass(frozen=True)
class Bind:
    """A host path bound at ``target`` (an absolute path inside the root)."""

    source: Path
    target: str
    read_only: bool = True


def command(
    root: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    binds: Sequence[Bind] = (),
    cwd: str = "/",
) -> list[str]:
    """The host command line that runs ``argv`` inside ``root`` (needs root)."""
    r = shlex.quote(str(root))
    lines = [
        "set -e",
        f"mount -t proc proc {r}/proc",
        f"mount --bind {shlex.quote(str(CPUINFO))} {r}/proc/cpuinfo",
        f"mount -t sysfs -o ro sysfs {r}/sys",  # LiteRT's cpuinfo reads the CPU lists
        f"mount --rbind /dev {r}/dev",
    ]
    for bind in binds:
        target = f"{r}{shlex.quote(bind.target)}"
        kind = "-d" if bind.source.is_dir() else "-f"
        make = f"mkdir -p {target}" if kind == "-d" else f"touch {target}"
        lines.append(f"[ -e {target} ] || {make}")
        lines.append(f"mount --bind {shlex.quote(str(bind.source))} {target}")
        if bind.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    variables = {**BASE_ENV, **(env or {})}
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
    lines.append(f'exec chroot {r} /usr/bin/env -i --chdir={shlex.quote(cwd)} {assignments} "$@"')
    script = "\n".join(lines)
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
            "pi-root", *argv]  # fmt: skip
