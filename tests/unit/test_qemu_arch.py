"""qemu driver: guest arch and firmware (--qemu-arch, --qemu-firmware), edk2 lookup, the KVM probe cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.machine.drivers import qemu
from pymachine.machine.drivers import qemu_firmware as fw
from pymachine.machine.drivers.base import State
from pymachine.machine.errors import PreCreateError

from tests.unit.test_qemu_argv import new_driver, opt, spec

OTHER = "arm64" if fw.host_arch() == "amd64" else "amd64"


def test_arm64_guest_argv_is_virt_with_a_cpu_model_and_uefi_pflash(tmp_path: Path) -> None:
    argv = qemu.qemu_argv(spec(tmp_path, qemu="qemu-system-aarch64", machine="virt", cpu="max", kernel="",
                               initrd="", firmware_code="/fw/AAVMF_CODE.fd",
                               firmware_vars=str(tmp_path / "dev" / "efivars.fd")))
    assert argv[0] == "qemu-system-aarch64"
    assert opt(argv, "-machine") == ["virt"] and opt(argv, "-cpu") == ["max"]
    assert "-kernel" not in argv
    pflash = [d for d in opt(argv, "-drive") if d.startswith("if=pflash")]
    assert pflash == ["if=pflash,format=raw,unit=0,readonly=on,file=/fw/AAVMF_CODE.fd",
                      f"if=pflash,format=raw,unit=1,file={tmp_path / 'dev' / 'efivars.fd'}"]
    # x86_64 under SeaBIOS: QEMU's default machine, no -cpu, no pflash (as before).
    plain = qemu.qemu_argv(spec(tmp_path))
    assert "-machine" not in plain and "-cpu" not in plain and not any("pflash" in d for d in opt(plain, "-drive"))


def test_flags_pick_binary_machine_and_firmware(tmp_path: Path) -> None:
    drv = new_driver(tmp_path)
    assert drv.config["Arch"] == fw.host_arch()
    assert drv.config["Firmware"] == ("bios" if fw.host_arch() == "amd64" else "uefi")
    arm = new_driver(tmp_path, **{"qemu-arch": "aarch64"})  # QEMU's name is accepted too
    assert (arm.config["Arch"], arm.config["Firmware"]) == ("arm64", "uefi")
    assert (arm.config["QemuBinary"], arm.config["Machine"]) == ("qemu-system-aarch64", "virt")
    uefi = new_driver(tmp_path, **{"qemu-arch": "amd64", "qemu-firmware": "UEFI"})
    assert (uefi.config["QemuBinary"], uefi.config["Firmware"]) == ("qemu-system-x86_64", "uefi")
    assert fw.cpu_model("arm64", "tcg") == "max" and fw.cpu_model("arm64", "hvf") == "host"
    assert fw.cpu_model("amd64", "kvm") == ""


@pytest.mark.parametrize("values, message", [
    ({"qemu-arch": "riscv64"}, "--qemu-arch must be one of amd64, arm64, got 'riscv64'"),
    ({"qemu-firmware": "coreboot"}, "--qemu-firmware must be one of bios, uefi, got 'coreboot'"),
    ({"qemu-arch": "arm64", "qemu-firmware": "bios"},
     "--qemu-firmware bios is for x86_64 guests: arm64 guests boot through UEFI"),
])
def test_bad_arch_and_firmware_are_one_line_precreate_errors(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(PreCreateError) as err:
        new_driver(tmp_path, **values)
    assert str(err.value) == message and err.value.exit_code == 3
    assert not (tmp_path / "store" / "machines").exists()


def test_other_arch_runs_under_tcg_only() -> None:
    assert fw.accel_for(fw.host_arch(), "auto") is None  # the host's arch: the usual KVM/hvf choice
    assert fw.accel_for(OTHER, "auto") == "tcg" and fw.accel_for(OTHER, "tcg") == "tcg"
    with pytest.raises(PreCreateError, match=f"--qemu-accel kvm runs the host's arch .* an {OTHER} guest"):
        fw.accel_for(OTHER, "kvm")


def test_uefi_firmware_is_found_where_packagers_put_it_or_named_in_one_line() -> None:
    present = {"/opt/homebrew/share/qemu/edk2-aarch64-code.fd", "/opt/homebrew/share/qemu/edk2-arm-vars.fd",
               "/opt/local/share/qemu/edk2-x86_64-code.fd", "/opt/local/share/qemu/edk2-i386-vars.fd"}
    assert fw.find_uefi("arm64", exists=present.__contains__) == (
        "/opt/homebrew/share/qemu/edk2-aarch64-code.fd", "/opt/homebrew/share/qemu/edk2-arm-vars.fd")
    assert fw.find_uefi("amd64", exists=present.__contains__)[0] == "/opt/local/share/qemu/edk2-x86_64-code.fd"
    debian = {"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", *present}
    assert fw.find_uefi("arm64", exists=debian.__contains__)[0] == "/usr/share/AAVMF/AAVMF_CODE.fd"
    with pytest.raises(PreCreateError) as err:
        fw.find_uefi("arm64", exists=lambda _p: False)
    assert "\n" not in str(err.value) and "qemu-efi-aarch64" in str(err.value) and "/usr/share/AAVMF" in str(err.value)


def test_missing_firmware_or_emulator_refuses_before_anything_is_made(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    drv = new_driver(tmp_path, **{"qemu-arch": "arm64", "qemu-image": str(tmp_path / "x.qcow2")})
    monkeypatch.setattr(fw, "SPECS", {**fw.SPECS, "arm64": fw.ArchSpec(
        "qemu-system-aarch64", "virt", "qemu-system-arm qemu-utils", (("/nonexistent/code.fd", "/nonexistent/v.fd"),))})
    if shutil.which("qemu-system-aarch64") and shutil.which("qemu-img"):
        with pytest.raises(PreCreateError, match="no UEFI firmware for arm64 guests found"):
            drv.pre_create_check()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PreCreateError, match=r"^qemu-system-aarch64 not found: install the Debian packages "
                                             r"qemu-system-arm qemu-utils$"):
        drv.pre_create_check()
    assert not (tmp_path / "store" / "machines").exists()


def test_kvm_probe_runs_once_per_boot_whatever_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if os.geteuid() == 0 and os.path.isdir("/run"):
        assert qemu.kvm_probe_cache(str(tmp_path / "a")) == Path("/run/pymachine/qemu-kvm-probe.json")
        monkeypatch.setattr(qemu.os, "geteuid", lambda: 1000)
    cache = qemu.kvm_probe_cache(str(tmp_path / "store-a"))
    assert cache == qemu.kvm_probe_cache(str(tmp_path / "store-b")) == tmp_path / "cache/pymachine/qemu-kvm-probe.json"
    calls = []
    monkeypatch.setattr(qemu, "probe_kvm", lambda kernel, qemu_bin: calls.append(kernel) or (False, "hangs"))
    assert qemu.cached_probe(cache, "/store-a/cache/images/x/vmlinuz") == (False, "hangs")
    assert qemu.cached_probe(cache, "/store-b/cache/images/y/vmlinuz") == (False, "hangs")
    assert len(calls) == 1  # another store's image kernel: no second probe this boot
    assert oct(cache.stat().st_mode & 0o777) == "0o600" and oct(cache.parent.stat().st_mode & 0o777) == "0o700"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert boot_id in cache.read_text()  # keyed by the boot: the next boot probes again


def test_real_aarch64_qemu_accepts_the_argv_with_uefi(tmp_path: Path) -> None:
    """A real qemu-system-aarch64 with AAVMF and our command line daemonizes and runs (no disk to boot)."""
    if not (shutil.which("qemu-system-aarch64") and shutil.which("qemu-img")):
        pytest.skip("qemu-system-arm not installed")
    try:
        fw.find_uefi("arm64")
    except PreCreateError:
        pytest.skip("qemu-efi-aarch64 not installed")
    from pymachine.machine.qmp import qmp_command
    from pymachine.machine.seed import write_seed_iso

    drv = new_driver(tmp_path, **{"qemu-arch": "arm64", "qemu-memory": 256, "qemu-restrict-network": True})
    os.makedirs(drv.machine_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", drv._path(qemu.OVERLAY), "16M"], check=True, timeout=30)
    write_seed_iso(drv._path(qemu.SEED), hostname="dev", user="docker", ssh_pubkey="ssh-rsa AAAA x",
                   proxy=None, instance_id="i-1")
    code, variables = fw.find_uefi("arm64")
    shutil.copyfile(variables, drv._path(qemu.UEFI_VARS))
    drv.settings.update(accel_used="tcg", firmware_code=code)
    try:
        drv.launch(lambda _m: None)
        assert drv.local_state() == State.RUNNING
        assert qmp_command(drv._path(qemu.QMP_SOCKET), "query-status")["running"] is True
        cmdline = Path(f"/proc/{Path(drv.pidfile).read_text().strip()}/cmdline").read_bytes().split(b"\0")
        assert b"virt" in cmdline and b"max" in cmdline
    finally:
        drv.kill(lambda _m: None)
    assert drv.local_state() == State.STOPPED


def test_seeded_host_key_is_pinned_for_every_port_the_forward_uses(tmp_path: Path) -> None:
    drv = new_driver(tmp_path)
    os.makedirs(drv.machine_dir)
    known = Path(drv._path(qemu.KNOWN_HOSTS))
    drv.settings.ssh_port = 40022
    drv._pin_host_key()
    assert not known.exists()  # no seeded key (a foreign image): nothing pinned ahead
    Path(drv._path(qemu.HOST_KEY_PUB)).write_text("ssh-ed25519 AAAAkey\n")
    drv._pin_host_key()
    assert known.read_text() == "[127.0.0.1]:40022 ssh-ed25519 AAAAkey\n"
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    drv._pin_host_key()
    assert known.read_text() == "[127.0.0.1]:40022 ssh-ed25519 AAAAkey\n"  # idempotent
    known.write_text(known.read_text() + "[127.0.0.1]:40100 ssh-rsa AAAAother\n")
    drv.settings.ssh_port = 40100  # a restart on another port: that port's stale pin is replaced
    drv._pin_host_key()
    assert known.read_text().splitlines() == ["[127.0.0.1]:40022 ssh-ed25519 AAAAkey",
                                              "[127.0.0.1]:40100 ssh-ed25519 AAAAkey"]


def test_a_machine_created_before_arches_keeps_its_command_line(tmp_path: Path) -> None:
    """A bookworm-era qemu machine's config has no Arch/Firmware/Machine keys: it still runs
    qemu-system-x86_64 with SeaBIOS and its base image's kernel, exactly as before."""
    drv = new_driver(tmp_path)
    old = {k: v for k, v in drv.config.items() if k not in ("Arch", "Firmware", "Machine", "FirmwareCode")}
    drv = qemu.QemuDriver(old)
    drv.settings.update(qemu_binary="qemu-system-x86_64", accel_used="tcg", ssh_port=40022, engine_port=42376,
                        kernel="/old/vmlinuz", initrd="/old/initrd.img", kernel_append=qemu.KERNEL_APPEND)
    assert "Arch" not in drv.config
    argv = qemu.qemu_argv(drv.spec())
    assert argv[0] == "qemu-system-x86_64" and opt(argv, "-kernel") == ["/old/vmlinuz"]
    assert "-machine" not in argv and "-cpu" not in argv and not any("pflash" in d for d in opt(argv, "-drive"))
    assert drv._arch() == "amd64"
