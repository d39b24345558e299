"""What the agent says its device is: architecture, CPU model, and emulation detected
from the evidence an emulated process has (QEMU's variables, a cpuinfo of another
architecture than uname's, an enabled binfmt_misc entry)."""

from __future__ import annotations

from pathlib import Path

from splitmq.agent import device

PI4 = (Path(__file__).parents[2] / "scripts" / "rpi4-cpuinfo.txt").read_text()
X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 avx avx2
"""


def test_a_pi_4_is_named_by_its_board_and_cores() -> None:
    assert device.cpu_model(PI4) == "Raspberry Pi 4 Model B Rev 1.1, 4 x Cortex-A72"


def test_an_x86_cpu_is_named_by_its_model_name() -> None:
    assert device.cpu_model(X86) == "AMD EPYC 7B13"


def test_an_unknown_arm_part_is_still_said() -> None:
    assert device.cpu_model("processor\t: 0\nCPU part\t: 0xabc\n") == "1 x ARM part 0xabc"


def test_a_native_device_is_not_emulated(tmp_path: Path) -> None:
    assert device.emulation("x86_64", X86, {}, tmp_path) is None
    assert device.emulation("aarch64", PI4, {"HOME": "/root"}, tmp_path) is None


def test_qemu_variables_say_emulated_and_which_cpu(tmp_path: Path) -> None:
    assert device.emulation("aarch64", PI4, {"QEMU_CPU": "cortex-a72"}, tmp_path) == (
        "qemu-user cortex-a72"
    )
    assert device.emulation("aarch64", PI4, {"QEMU_LD_PREFIX": "/x"}, tmp_path) == "qemu-user"


def test_the_hosts_cpuinfo_under_an_arm_uname_says_emulated(tmp_path: Path) -> None:
    found = device.emulation("aarch64", X86, {}, tmp_path)
    assert found is not None and "x86" in found


def test_an_enabled_binfmt_entry_for_our_machine_says_emulated(tmp_path: Path) -> None:
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu\n")
    assert device.emulation("aarch64", PI4, {}, tmp_path) == "qemu-user (binfmt_misc qemu-aarch64)"
    (tmp_path / "qemu-aarch64").write_text("disabled\n")
    assert device.emulation("aarch64", PI4, {}, tmp_path) is None


def test_this_machine_reports_itself() -> None:
    info = device.detect()
    assert info.machine and info.cores >= 1 and info.memory_bytes > 0
