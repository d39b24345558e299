"""The emulated Pi's root, without building it: the mirror from apt's own sources (both
formats), pip's configuration carried over, the cache key, and what is missing to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import pi_chroot, pi_root


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_mirror_comes_from_deb822_sources_and_skips_security(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n",
    )
    sources = list(pi_root.apt_sources(tmp_path))
    assert ("http://mirror.example/debian/", ["bookworm", "bookworm-updates"]) in sources


def test_one_line_sources_are_read_too(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list",
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n",
    )
    assert list(pi_root.apt_sources(tmp_path)) == [("http://one.example/debian", ["bookworm"])]


def test_pip_configuration_becomes_a_pip_conf() -> None:
    conf = pi_root.pip_conf({"global.cert": "/c.crt", "install.no-compile": "1"})
    assert conf == "[global]\ncert = /c.crt\n[install]\nno-compile = 1\n"


def test_the_key_follows_the_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    key = pi_root.cache_key()
    assert key == pi_root.cache_key() and key.startswith("bookworm-arm64-")
    monkeypatch.setattr(pi_root, "dependencies", lambda: ["numpy>=9"])
    assert pi_root.cache_key() != key


def test_without_root_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "root" in (pi_root.missing() or "")


def test_without_binfmt_misc_it_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(pi_root, "BINFMT", tmp_path)
    assert "binfmt_misc" in (pi_root.missing() or "")
    (tmp_path / "status").write_text("enabled\n")
    assert "qemu-aarch64" in (pi_root.missing() or "")


def test_the_chroot_command_binds_the_pi_cpuinfo_and_sets_the_cpu() -> None:
    command = pi_chroot.command(
        Path("/r"), ["python3", "-V"], binds=(pi_chroot.Bind(Path("/src"), "/src"),)
    )
    assert command[:4] == ["unshare", "--mount", "--propagation", "private"]
    script = command[command.index("-c") + 1]
    assert f"mount --bind {pi_chroot.CPUINFO} /r/proc/cpuinfo" in script
    assert "QEMU_CPU=cortex-a72" in script and "remount,bind,ro /r/src" in script
    assert command[-2:] == ["python3", "-V"]
