"""qemu driver: command line, port picking, accelerator choice, checks, local state."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pymachine.machine.drivers import qemu
from pymachine.machine.drivers.base import State
from pymachine.machine.drivers.registry import driver_class
from pymachine.machine.errors import MachineError, PreCreateError


def spec(tmp_path: Path, **kw) -> qemu.VMSpec:
    base = {"machine_dir": str(tmp_path / "dev"), "cpus": 2, "memory_mb": 1536, "accel": "tcg",
            "overlay": str(tmp_path / "dev" / "disk.qcow2"), "seed": str(tmp_path / "dev" / "seed.iso"),
            "ssh_port": 40022, "engine_port": 42376, "kernel": "/img/vmlinuz", "initrd": "/img/initrd.img"}
    base.update(kw)
    return qemu.VMSpec(**base)


def opt(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_argv_direct_kernel_boot_and_forwards(tmp_path: Path) -> None:
    argv = qemu.qemu_argv(spec(tmp_path))
    d = str(tmp_path / "dev")
    assert argv[0] == "qemu-system-x86_64"
    assert opt(argv, "-accel") == ["tcg"]
    assert opt(argv, "-smp") == ["2"] and opt(argv, "-m") == ["1536M"]
    assert opt(argv, "-kernel") == ["/img/vmlinuz"] and opt(argv, "-initrd") == ["/img/initrd.img"]
    assert opt(argv, "-append") == ["console=ttyS0 root=LABEL=pymachine-root rw systemd.mask=apparmor.service"]
    drives = opt(argv, "-drive")
    assert drives[0] == f"file={d}/disk.qcow2,if=virtio,format=qcow2,discard=unmap"
    assert drives[1] == f"file={d}/seed.iso,if=virtio,format=raw,readonly=on"
    (netdev,) = opt(argv, "-netdev")
    assert netdev == "user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:42376-:2376"
    moved = qemu.qemu_argv(spec(tmp_path, engine_port=45000, guest_engine_port=42376))
    assert opt(moved, "-netdev")[0].endswith(",hostfwd=tcp:127.0.0.1:45000-:42376")
    assert opt(argv, "-qmp") == [f"unix:{d}/qmp.sock,server=on,wait=off"]
    assert opt(argv, "-pidfile") == [f"{d}/qemu.pid"]
    assert opt(argv, "-serial") == [f"file:{d}/console.log"]
    assert "-daemonize" in argv and opt(argv, "-display") == ["none"]


def test_argv_restricted_network_and_firmware_boot(tmp_path: Path) -> None:
    argv = qemu.qemu_argv(spec(tmp_path, kernel="", initrd="", restrict_network=True, accel="kvm"))
    (netdev,) = opt(argv, "-netdev")
    assert netdev.startswith("user,id=n0,restrict=on,hostfwd=")
    assert "-kernel" not in argv and "-initrd" not in argv and "-append" not in argv
    assert opt(argv, "-accel") == ["kvm"]


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def test_real_qemu_accepts_the_argv_and_qmp_state_and_kill_work(tmp_path: Path) -> None:
    """Launch a real (diskless-boot, firmware-only) QEMU with our command line:
    it daemonizes, the pidfile marks it Running, QMP answers, kill leaves nothing."""
    if not (shutil_which("qemu-system-x86_64") and shutil_which("qemu-img")):
        pytest.skip("qemu not installed")
    from pymachine.machine.qmp import qmp_command
    from pymachine.machine.seed import write_seed_iso

    drv = new_driver(tmp_path, **{"qemu-memory": 256, "qemu-restrict-network": True})
    os.makedirs(drv.machine_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", drv._path(qemu.OVERLAY), "16M"], check=True, timeout=30)
    write_seed_iso(drv._path(qemu.SEED), hostname="dev", user="docker", ssh_pubkey="ssh-rsa AAAA x",
                   proxy=None, instance_id="i-1")
    drv.settings.accel_used = "tcg"
    try:
        drv.launch(lambda _m: None)
        assert drv.local_state() == State.RUNNING
        pid = int(Path(drv.pidfile).read_text())
        status = qmp_command(drv._path(qemu.QMP_SOCKET), "query-status")
        assert status["running"] is True
        ssh_port, engine_port = drv.config["SSHPort"], drv.config["EnginePort"]
        assert ssh_port and engine_port and not qemu.port_is_free(ssh_port)  # QEMU holds the forward
        # The guest side of the engine forward is pinned to the first host port.
        assert drv.guest_engine_port() == engine_port
    finally:
        drv.kill(lambda _m: None)
    assert drv.local_state() == State.STOPPED
    assert not os.path.exists(f"/proc/{pid}/cmdline") or b"qemu" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not os.path.exists(drv.pidfile) and not os.path.exists(drv._path(qemu.QMP_SOCKET))
    assert qemu.port_is_free(ssh_port)


def test_port_picking_keeps_free_previous_ports_and_replaces_taken_ones() -> None:
    a, b = qemu.pick_ports(0, 0)
    assert a != b and qemu.port_is_free(a) and qemu.port_is_free(b)
    assert qemu.pick_ports(0, 0, previous=(a, b)) == (a, b)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", a))
        busy.listen()
        assert not qemu.port_is_free(a)
        ssh, engine = qemu.pick_ports(0, 0, previous=(a, b))
        assert ssh != a and engine == b and ssh != engine
        with pytest.raises(MachineError, match=f"SSH port 127.0.0.1:{a} is already in use"):
            qemu.pick_ports(a, 0)


def test_accel_choice() -> None:
    def yes() -> tuple[bool, str]:
        return (True, "")

    def no() -> tuple[bool, str]:
        return (False, "/dev/kvm: No such file or directory")

    def hang() -> tuple[bool, str]:
        return (False, "a KVM test boot did not finish within 8s")

    assert qemu.choose_accel("tcg", kvm_check=no) == ("tcg", None)
    assert qemu.choose_accel("auto", platform="linux", kvm_check=yes, probe=yes, environ={}) == ("kvm", None)
    accel, warning = qemu.choose_accel("auto", platform="linux", kvm_check=yes, probe=hang, environ={})
    assert accel == "tcg" and "did not finish" in warning and "slower" in warning
    accel, warning = qemu.choose_accel("auto", platform="linux", kvm_check=no, probe=yes, environ={})
    assert accel == "tcg" and "No such file" in warning
    # Trusting KVM skips the probe boot.
    env = {qemu.TRUST_KVM_ENV: "1"}
    assert qemu.choose_accel("auto", platform="linux", kvm_check=yes, probe=hang, environ=env) == ("kvm", None)
    with pytest.raises(PreCreateError, match="KVM is not usable"):
        qemu.choose_accel("kvm", platform="linux", kvm_check=no)
    with pytest.raises(PreCreateError, match="only available on macOS"):
        qemu.choose_accel("hvf", platform="linux")
    assert qemu.choose_accel("auto", platform="darwin") == ("hvf", None)
    with pytest.raises(PreCreateError):
        qemu.choose_accel("xen")


def test_kvm_usable_reports_a_missing_device(tmp_path: Path) -> None:
    ok, reason = qemu.kvm_usable(str(tmp_path / "kvm"))
    assert not ok and "No such file" in reason
    regular = tmp_path / "notkvm"
    regular.write_text("")
    ok, reason = qemu.kvm_usable(str(regular))
    assert not ok and "KVM_GET_API_VERSION" in reason


def test_checksum_parsing() -> None:
    digest = "ab" * 32
    assert qemu.parse_checksum(digest) == digest
    assert qemu.parse_checksum("sha256:" + digest.upper()) == digest
    assert qemu.parse_checksum("cd" * 64) == "cd" * 64  # sha512 by length
    for bad in ("md5:" + digest, "abc", "sha256:" + "zz" * 32, "sha512:" + digest):
        with pytest.raises(PreCreateError):
            qemu.parse_checksum(bad)


def new_driver(tmp_path: Path, **values) -> qemu.QemuDriver:
    cls = driver_class("qemu")
    assert cls is qemu.QemuDriver
    drv = cls.new("dev", str(tmp_path / "store"))
    flags = {f.name: f.default for f in cls.flags}
    flags.update(values)
    drv.set_config_from_flags(flags)
    return drv  # type: ignore[return-value]


def test_flags_config_and_addresses(tmp_path: Path) -> None:
    drv = new_driver(tmp_path, **{"qemu-memory": 2048, "qemu-ssh-port": 2222})
    assert drv.config["Memory"] == 2048 and drv.config["FixedSSHPort"] == 2222
    assert drv.ip() == "127.0.0.1"
    host, port, user, key = drv.ssh_address()
    assert (host, port, user) == ("127.0.0.1", 2222, "docker")
    assert key.endswith("/machines/dev/id_rsa")
    drv.settings.engine_port = 45000
    assert drv.engine_url() == "tcp://127.0.0.1:45000"
    assert drv.default_install_source == "preinstalled"  # pymachine's own image carries the engine
    drv.settings.image_source = "https://images.example/cloud.qcow2"
    assert drv.default_install_source == "packages"  # a foreign cloud image needs it installed
    drv.settings.image_source = str(tmp_path / "disk.qcow2")
    assert drv.default_install_source == "packages"
    flags = {f.name: f for f in qemu.QemuDriver.flags}
    assert flags["qemu-memory"].env_default({"QEMU_MEMORY": "768"}) == 768
    with pytest.raises(MachineError, match="--qemu-accel"):
        new_driver(tmp_path, **{"qemu-accel": "fast"})
    with pytest.raises(MachineError, match="--qemu-engine-port"):
        new_driver(tmp_path, **{"qemu-engine-port": 70000})


def test_pre_create_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PreCreateError, match="at least 256 MB"):
        new_driver(tmp_path, **{"qemu-memory": 128}).pre_create_check()
    with pytest.raises(PreCreateError, match="QEMU image not found"):
        new_driver(tmp_path, **{"qemu-image": str(tmp_path / "nope")}).pre_create_check()
    # A URL is downloaded at create: pre-create only checks the checksum's form (no request).
    with pytest.raises(PreCreateError, match="sha256/sha512"):
        new_driver(tmp_path, **{"qemu-image": "https://example.invalid/x.qcow2",
                                "qemu-image-checksum": "md5:00"}).pre_create_check()
    for checksum in ("", "ab" * 32, "sha512:" + "cd" * 64, "sums:https://example.invalid/SHA256SUMS"):
        new_driver(tmp_path, **{"qemu-image": "https://example.invalid/x.qcow2",
                                "qemu-image-checksum": checksum}).pre_create_check()
    # A real (tiny) qcow2 image: the disk size must hold it, the checksum must match.
    if not shutil_which("qemu-img"):
        pytest.skip("qemu-img not installed")
    img = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True, timeout=30)
    with pytest.raises(PreCreateError, match="at least the image's size, 64 MB"):
        new_driver(tmp_path, **{"qemu-image": str(img), "qemu-disk-size": 32}).pre_create_check()
    with pytest.raises(PreCreateError, match="checksum mismatch") as mismatch:
        new_driver(tmp_path, **{"qemu-image": str(img), "qemu-image-checksum": "0" * 64}).pre_create_check()
    good = hashlib.sha256(img.read_bytes()).hexdigest()
    assert f"expected sha256:{'0' * 64}, got sha256:{good}" in str(mismatch.value)
    new_driver(tmp_path, **{"qemu-image": str(img), "qemu-disk-size": 64,
                            "qemu-image-checksum": "sha512:" + hashlib.sha512(img.read_bytes()).hexdigest()}
               ).pre_create_check()
    assert not qemu.image_from_path(str(img)).pymachine  # a bare disk: firmware boot, no engine seeding
    new_driver(tmp_path, **{"qemu-image": str(img), "qemu-disk-size": 64}).pre_create_check()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PreCreateError, match=f"127.0.0.1:{port} is already in use"):
            new_driver(tmp_path, **{"qemu-image": str(img), "qemu-engine-port": port}).pre_create_check()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PreCreateError, match="qemu-system-x86 qemu-utils") as err:
        new_driver(tmp_path, **{"qemu-image": str(img)}).pre_create_check()
    assert err.value.exit_code == 3


def test_local_state_trusts_only_our_qemu(tmp_path: Path) -> None:
    drv = new_driver(tmp_path)
    os.makedirs(drv.machine_dir)
    assert drv.local_state() == State.STOPPED  # no pidfile
    # A live process that is not our QEMU (this test process) must not count.
    Path(drv.pidfile).write_text(f"{os.getpid()}\n")
    assert drv.local_state() == State.STOPPED
    # Neither does a process whose name fits but whose command line names another pidfile.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        Path(drv.pidfile).write_text(f"{proc.pid}\n")
        assert drv.local_state() == State.STOPPED
        drv.kill(lambda _m: None)  # must not kill a stranger
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _image_host(files: dict[str, bytes]):
    """A recording runner answering like pymachine's image: systemd, docker.io, ext4, engine up."""
    from pymachine.machine.runner import CommandResult

    from tests.unit.transcript import HOST_CHANGES, RecordingRunner

    answers = {
        r"command -v dockerd": CommandResult(0, "/usr/sbin/dockerd\n", ""),
        r"^stat -f": CommandResult(0, "ext2/ext3\n", ""),
        r"^id -un": CommandResult(0, "docker\n/home/docker\n", ""),
        r"^test -d /run/systemd/system$": CommandResult(0, "", ""),
        r"^systemctl is-active --quiet docker\.service$": CommandResult(0, "", ""),
        r"^systemctl is-enabled --quiet docker\.service$": CommandResult(0, "", ""),  # the image enables it
    }
    return RecordingRunner(answers, files={"/etc/hosts": b"127.0.0.1 localhost\n", **files}, accept=HOST_CHANGES)


def test_pre_rendered_engine_files_are_what_provisioning_writes() -> None:
    """The files seeded at create are byte-identical to the Debian provisioner's,
    so the provisioning pass writes nothing the engine reads and does not restart it."""
    from pymachine.engine.options import EngineOptions
    from pymachine.engine.proxy import ProxySettings
    from pymachine.provisioners.base import ProvisionPlan
    from pymachine.provisioners.debian import DebianProvisioner

    engine = EngineOptions(labels=["tier=vm", "x=a b"], env=["FOO=bar"],
                           proxy=ProxySettings(http_proxy="http://10.0.2.2:3128", no_proxy="corp"))
    plan = ProvisionPlan(hostname="dev", engine=engine, driver_name="qemu", ca_pem=b"CA\n",
                         server_pem=b"CERT\n", server_key_pem=b"KEY\n", machine_ip="127.0.0.1",
                         engine_port=42376, install_source="preinstalled")
    rendered = DebianProvisioner.first_boot(plan).engine_files()
    dropin = rendered["/etc/systemd/system/docker.service.d/10-machine.conf"]
    assert "/usr/sbin/dockerd -H tcp://0.0.0.0:42376" in dropin and "--storage-driver overlay2" in dropin
    assert "--label provider=qemu" in dropin and "HTTP_PROXY=http://10.0.2.2:3128" in dropin

    host = _image_host({path: text.encode() for path, text in rendered.items()})
    prov = DebianProvisioner()
    prov.provision(host, plan)
    assert not prov.changed
    assert not [c for c in host.calls if c.kind == "put" and c.target in rendered]
    assert not host.find(r"systemctl (restart|stop)")

    # Control: a host seeded with another server cert gets it rewritten and the engine restarted.
    host = _image_host({**{p: t.encode() for p, t in rendered.items()}, "/etc/docker/server.pem": b"OLD\n"})
    prov = DebianProvisioner()
    prov.provision(host, plan)
    assert prov.changed and host.find(r"systemctl restart docker")


def test_kvm_probe_cache_is_per_boot_and_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert qemu.kvm_probe_cache(str(tmp_path / "store")) == tmp_path / "run" / "qemu-kvm-probe.json"
    calls = []
    monkeypatch.setattr(qemu, "probe_kvm", lambda kernel, qemu_bin: calls.append(kernel) or (False, "hangs"))
    cache = qemu.kvm_probe_cache(str(tmp_path / "store"))
    assert qemu.cached_probe(cache, "/img/vmlinuz") == (False, "hangs")
    assert qemu.cached_probe(cache, "/img/vmlinuz") == (False, "hangs")
    assert calls == ["/img/vmlinuz"]  # the second create did not probe again
    # No usable /dev/kvm, or --qemu-accel tcg: no probe at all.
    assert qemu.choose_accel("auto", platform="linux", kvm_check=lambda: (False, "absent"),
                             probe=lambda: pytest.fail("probed")) [0] == "tcg"
    assert qemu.choose_accel("tcg", platform="linux", kvm_check=lambda: pytest.fail("checked"),
                             probe=lambda: pytest.fail("probed")) == ("tcg", None)
