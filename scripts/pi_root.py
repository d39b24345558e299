"""Build (once) the emulated Raspberry Pi the tests in tests/pi/ run an agent on.

    python scripts/pi_root.py build     # what `make pi-root` runs; instant when cached
    python scripts/pi_root.py check     # why it cannot be built or run here, if it cannot
    python scripts/pi_root.py path      # the cached root's directory

The root is an ARM64 Debian bookworm userland made with ``debootstrap --arch=arm64``
and run under QEMU user-mode emulation (qemu-user-static, through binfmt_misc), with
``splitmq[agent]`` pip-installed from aarch64 wheels into a venv at /opt/splitmq.

Nothing of this machine is written into the project's files: the Debian mirror is the
one this machine's own apt sources name, and this machine's pip configuration (its
config files, the files they point to and its ``PIP_*`` variables) and CA certificates
are carried into the root, so pip inside works wherever this machine's pip works.

The root is cached as a directory under ``$SPLITMQ_CACHE_DIR`` (default: the project's
``.cache/``), named by a key over what it is made of: the suite, the Debian packages,
splitmq's dependency specifiers in pyproject.toml and this builder's version. A second
build with the same key does nothing. The tests run the project's own source tree in
it (bound at /src), so the splitmq installed at build time is only the proof that
``pip install "splitmq[agent]"`` works on aarch64.

It needs root (debootstrap, chroot, mount) and binfmt_misc with qemu-aarch64 enabled:
the build mounts binfmt_misc and enables it when it can; :func:`missing` says what is
missing for the tests to skip with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import pi_chroot

PROJECT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
ARCH = "arm64"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
VENV = "/opt/splitmq"
PYTHON = f"{VENV}/bin/python"
BUILDER_VERSION = 2
"""Raise when the way the root is made changes: it is part of the cache key."""
BINFMT = Path("/proc/sys/fs/binfmt_misc")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
READY = "ready.json"
SMOKE = """
import platform, time
from splitmq.agent.runtime import calibrate, find_runtime
runtime = find_runtime()
started = time.monotonic()
speed = calibrate(runtime, threads=1, xnnpack=True, runs=1)
print(f"{platform.machine()} {runtime.kind} {runtime.version}: calibration net at "
      f"{speed:.2f} GFLOP/s emulated ({time.monotonic() - started:.1f} s)")
"""


@dataclass(frozen=True)
class PiRoot:
    """A built root: its directory and what was installed in it."""

    path: Path
    key: str
    packages: dict[str, str]
    """pip's installed packages and versions inside the root."""

    @property
    def python(self) -> str:
        return PYTHON

    @property
    def pycache(self) -> Path:
        """Bytecode compiled inside the root (``PYTHONPYCACHEPREFIX``), kept beside it:
        compiling under emulation is slow, and the tests' /src is read-only."""
        return self.path.parent / "pycache"


PYCACHE = "/var/cache/splitmq/pycache"
"""Where :attr:`PiRoot.pycache` is bound inside the root."""


def pycache_env() -> dict[str, str]:
    return {"PYTHONPYCACHEPREFIX": PYCACHE}


def pycache_bind(folder: Path) -> pi_chroot.Bind:
    folder.mkdir(parents=True, exist_ok=True)
    return pi_chroot.Bind(folder, PYCACHE, read_only=False)


def cache_dir() -> Path:
    return Path(os.environ.get("SPLITMQ_CACHE_DIR") or PROJECT / ".cache") / "pi-root"


def dependencies(pyproject: Path = PROJECT / "pyproject.toml") -> list[str]:
    """splitmq's own dependencies and its ``agent`` extra, as pyproject.toml states them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["agent"]]


def cache_key() -> str:
    recipe = {
        "suite": SUITE,
        "arch": ARCH,
        "debian": DEBIAN_PACKAGES,
        "pip": dependencies(),
        "qemu_cpu": pi_chroot.QEMU_CPU,
        "builder": BUILDER_VERSION,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{SUITE}-{ARCH}-{digest[:16]}"


def cached() -> PiRoot | None:
    """The root for the current key, when it has been built."""
    key = cache_key()
    folder = cache_dir() / key
    try:
        packages = json.loads((folder / READY).read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return None
    return PiRoot(folder / "root", key, packages)


def missing() -> str | None:
    """Why an emulated Pi cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the emulated Pi needs root (debootstrap, chroot, mount)"
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"the emulated Pi needs {tool} (util-linux, coreutils)"
    if not (BINFMT / "status").exists():
        return f"binfmt_misc is not mounted at {BINFMT} (make pi-root mounts it)"
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        return "qemu-aarch64 is not enabled in binfmt_misc (qemu-user-static, binfmt-support)"
    return None


def enable_binfmt() -> None:
    """Mount binfmt_misc and enable qemu-aarch64 where they are missing."""
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "binfmt_misc", "-t", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True)


# --- what this machine says ---------------------------------------------------------


def apt_sources(folder: Path = Path("/etc/apt")) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of every ``deb`` source, one-line (.list) and deb822 (.sources)."""
    one_line = [folder / "sources.list", *sorted((folder / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((folder / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()


def debian_mirror() -> str:
    """The first Debian archive this machine's apt sources use for the suite itself."""
    for uri, suites in apt_sources():
        if SUITE in suites and "security" not in urlparse(uri).path:
            return uri.rstrip("/")
    raise SystemExit(
        f"no apt source for Debian {SUITE} in /etc/apt/sources.list*: cannot pick a mirror"
    )


@dataclass(frozen=True)
class PipSetup:
    """This machine's pip configuration, as it is to be carried into the root."""

    config: dict[str, str]
    """``section.key`` → value from pip's config files."""
    env: dict[str, str]
    """The ``PIP_*`` variables."""
    files: list[Path]
    """Local files the configuration names (certificates, constraints)."""
    folders: list[Path]
    """Local folders it names (find-links, file:// indexes), bound read-only."""


def pip_setup() -> PipSetup:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    config = {}
    for line in listing.splitlines():
        name, _, value = line.partition("=")
        if name and not name.startswith(":env:"):
            config[name] = value.strip().strip("'\"")
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    files: list[Path] = []
    folders: list[Path] = []
    for value in [*config.values(), *env.values()]:
        for word in value.split():
            index = word.startswith("file://")
            path = Path(urlparse(word).path) if index else Path(word)
            if not path.is_absolute() or not path.exists():
                continue
            if index and path.is_dir() and path.name == "simple":
                path = path.parent  # its pages link to files beside it (../../files/)
            (folders if path.is_dir() else files).append(path)
    return PipSetup(config, env, sorted(set(files)), sorted(set(folders)))


def pip_conf(config: dict[str, str]) -> str:
    sections: dict[str, list[str]] = {}
    for name, value in config.items():
        section, _, key = name.partition(".")
        sections.setdefault(section, []).append(f"{key} = {value}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


# --- the build -----------------------------------------------------------------------


class Stages:
    """Progress of the build, one line per stage (the tools' own output goes to a log)."""

    def __init__(self, total: int, log: Path):
        self.total, self.log, self.count = total, log, 0
        self.started = time.monotonic()

    def begin(self, what: str) -> None:
        self.count += 1
        print(
            f"[pi-root {self.count}/{self.total} {time.monotonic() - self.started:5.0f} s] {what}",
            flush=True,
        )

    def run(self, argv: list[str]) -> str:
        with self.log.open("a") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            result = subprocess.run(
                argv, check=False, stdout=subprocess.PIPE, stderr=log, text=True
            )
            log.write(result.stdout)
        if result.returncode != 0:
            tail = self.log.read_text().splitlines()[-25:]
            raise SystemExit(
                "\n".join(
                    [f"pi-root: {argv[0]} failed ({result.returncode}); log {self.log}:", *tail]
                )
            )
        return result.stdout


def build() -> PiRoot:
    """The root for the current key: cached, or built now (minutes)."""
    if os.geteuid() != 0:
        raise SystemExit("pi-root: the root needs root (debootstrap, chroot, mount)")
    enable_binfmt()  # a cached root needs it too (after a reboot, say)
    found = cached()
    if found is not None:
        print(f"pi-root: cached at {found.path}")
        return found
    reason = missing()
    if reason:
        raise SystemExit(f"pi-root: {reason}")
    key = cache_key()
    building = cache_dir() / f"{key}.building"
    root = building / "root"
    bootstrapped = building / "debootstrap.done"  # a failed build resumes after it
    if not bootstrapped.exists():
        remove(building)
        root.mkdir(parents=True)
    stages = Stages(5, building / "build.log")
    mirror = debian_mirror()

    stages.begin(
        f"debootstrap: Debian {SUITE} {ARCH} (the first stage downloads, the second runs "
        "under QEMU)"
    )
    if bootstrapped.exists():
        print("  done by an earlier build", flush=True)
    else:
        stages.run(  # in a mount namespace of its own: its /proc mounts die with it
            ["unshare", "--mount", "--propagation", "private",
             "debootstrap", f"--arch={ARCH}", "--variant=minbase",
             f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(root), mirror]
        )  # fmt: skip
        bootstrapped.touch()

    stages.begin("this machine's CA certificates and pip configuration")
    pip = pip_setup()
    shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.lstrip("/"))
    for file in pip.files:
        target = root / str(file).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    (root / "etc/pip.conf").write_text(pip_conf(pip.config))
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")

    source = root / "tmp/splitmq-src"
    shutil.rmtree(source, ignore_errors=True)
    parts = ("pyproject.toml", "README.md", "hatch_build.py", "scripts/__init__.py",
             "scripts/compile.py", "splitmq", "broker-config")  # fmt: skip
    for part in parts:
        if (PROJECT / part).is_dir():
            # as a Pi gets it: pure Python (this machine's compiled modules stay here)
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "compiled.json")
            shutil.copytree(PROJECT / part, source / part, ignore=ignore)
        else:
            (source / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT / part, source / part)

    def inside(argv: list[str], binds: tuple[pi_chroot.Bind, ...] = ()) -> str:
        return stages.run(pi_chroot.command(root, argv, env=pip.env, binds=binds))

    stages.begin(f"a venv at {VENV}")
    inside(["python3", "-m", "venv", VENV])

    stages.begin('pip install "splitmq[agent]" (aarch64 wheels)')
    folders = tuple(pi_chroot.Bind(f, str(f)) for f in pip.folders)
    inside([PYTHON, "-m", "pip", "install", "--no-cache-dir", "--quiet",
            "/tmp/splitmq-src[agent]"], folders)  # fmt: skip
    shutil.rmtree(source)

    stages.begin("LiteRT runs the calibration net on the emulated Cortex-A72")
    smoke = pi_chroot.command(
        root,
        [PYTHON, "-c", SMOKE],
        env=pycache_env(),  # compiles the stdlib, numpy and LiteRT for the tests too
        binds=(pycache_bind(building / "pycache"),),
    )
    print("  " + stages.run(smoke).strip(), flush=True)

    freeze = inside([PYTHON, "-m", "pip", "list", "--format=json"])
    packages = {p["name"]: p["version"] for p in json.loads(freeze)}
    (building / READY).write_text(json.dumps({"key": key, "packages": packages}, indent=1))
    for old in cache_dir().iterdir():  # one root at a time: older keys go
        if old.name != building.name:
            remove(old)
    building.rename(cache_dir() / key)
    print(
        f"pi-root: built in {time.monotonic() - stages.started:.0f} s at {cache_dir() / key}: "
        + ", ".join(f"{n} {packages[n]}" for n in ("splitmq", "ai-edge-litert", "numpy")
                    if n in packages)
    )  # fmt: skip
    found = cached()
    assert found is not None
    return found


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder`` (by /proc/self/mountinfo)."""
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def remove(folder: Path) -> None:
    """Delete a root, never through a mount left in it (a host's /dev or /proc)."""
    if not folder.exists():
        return
    for point in sorted(mounts_under(folder), reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = mounts_under(folder)
    if left:
        raise SystemExit(f"pi-root: {folder} still has mounts ({', '.join(left)}): not deleted")
    shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "check", "path"))
    args = parser.parse_args(argv)
    if args.action == "build":
        build()
    elif args.action == "check":
        reason = missing() or ("" if cached() else "not built: run `make pi-root`")
        print(reason or f"ready: {cached()}")
        return 1 if reason else 0
    else:
        found = cached()
        if found is None:
            print("not built: run `make pi-root`", file=sys.stderr)
            return 1
        print(found.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
