"""The first-boot plan: rendered by the provisioner, handed by the host to a driver that carries
a seed, written by the driver onto its seed ISO (read back here with pycdlib).

The drivers' real creates against their fakes are in tests/integration/test_seed_drivers.py
(VirtualBox, VMware) and test_seed_vsphere.py (vcsim); a real qemu boot in tests/vm.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymachine.engine.options import EngineOptions
from pymachine.machine.firstboot import DAEMON_CONFIG_PATH, FirstBoot
from pymachine.machine.seed import ENGINE_SEED_FILES, read_seed_iso, write_seed_iso
from pymachine.provisioners.base import ProvisionPlan
from pymachine.provisioners.debian import DebianProvisioner

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFirstBootTestKeyOnly test"
PROXY = "http://127.0.0.1:3128"


def make_plan(**kw) -> ProvisionPlan:
    values = {
        "hostname": "fb1", "engine": EngineOptions(env=[f"HTTP_PROXY={PROXY}"], labels=["tier=fb"]),
        "driver_name": "virtualbox", "ca_pem": b"CA PEM\n", "server_pem": b"SERVER PEM\n",
        "server_key_pem": b"SERVER KEY\n", "machine_network": "192.168.56.0/24",
    }
    values.update(kw)
    return ProvisionPlan(**values)


def test_the_provisioner_renders_the_plan_the_seed_carries(tmp_path: Path) -> None:
    first_boot = DebianProvisioner.first_boot(make_plan())
    assert first_boot.proxy_settings() == {"http_proxy": PROXY, "no_proxy": "192.168.56.0/24,localhost,127.0.0.1"}
    dropin = first_boot.daemon_config
    assert "-H tcp://0.0.0.0:2376" in dropin and "--tlsverify" in dropin and "--label tier=fb" in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in dropin and "NO_PROXY=192.168.56.0/24,localhost" in dropin
    assert "SERVER KEY" not in repr(first_boot)  # the key never reaches a log or a traceback

    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="fb1", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                   first_boot=first_boot)
    files = read_seed_iso(path)
    by_guest = first_boot.engine_files()
    for name, guest in ENGINE_SEED_FILES.items():
        assert files[f"pymachine/{name}"] == by_guest[guest]
    assert files["pymachine/docker-machine.conf"] == dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in files["pymachine/docker-proxy.conf"]
    assert f'Acquire::http::Proxy "{PROXY}";' in files["pymachine/apt-proxy.conf"]
    assert f'http_proxy="{PROXY}"' in files["pymachine/environment"]
    user_data = json.loads(files["user-data"].split("\n", 1)[1])  # cloud-init images get the proxy too
    assert any(f["path"].endswith("10-pymachine-proxy.conf") for f in user_data["write_files"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_without_a_proxy_the_seed_has_no_proxy_files(tmp_path: Path) -> None:
    first_boot = DebianProvisioner.first_boot(make_plan(engine=EngineOptions()))
    assert first_boot.proxy_settings() is None
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="fb1", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                   first_boot=first_boot)
    files = read_seed_iso(path)
    assert "pymachine/docker-machine.conf" in files and "Environment=" not in files["pymachine/docker-machine.conf"]
    assert not {"pymachine/apt-proxy.conf", "pymachine/docker-proxy.conf", "pymachine/environment"} & set(files)


def test_the_seeded_drop_in_is_what_provisioning_after_boot_renders() -> None:
    """The machine's network (not its address, unknown before boot) is in NO_PROXY, so the plan
    provisioning builds once the guest has 192.168.56.101 renders the same bytes."""
    seeded = DebianProvisioner.first_boot(make_plan())
    booted = DebianProvisioner.first_boot(make_plan(machine_ip="192.168.56.101"))
    assert seeded.daemon_config == booted.daemon_config
    # Control: without the network, the address changes the drop-in (and would restart the engine).
    assert (DebianProvisioner.first_boot(make_plan(machine_network="")).daemon_config
            != DebianProvisioner.first_boot(make_plan(machine_network="", machine_ip="192.168.56.101")).daemon_config)


def test_a_proxy_given_to_the_seed_wins_over_the_plans(tmp_path: Path) -> None:
    first_boot = FirstBoot("CA", "CERT", "KEY", "[Service]\n", {"http_proxy": PROXY})
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="fb1", user="docker", ssh_pubkey=KEY, proxy={"http_proxy": "http://other:1"},
                   instance_id="i-1", first_boot=first_boot)
    assert '"http://other:1"' in read_seed_iso(path)["pymachine/environment"]
    assert first_boot.engine_files()[DAEMON_CONFIG_PATH] == "[Service]\n"


# qemu: the host's create hands the plan over; the driver only writes it -----------------------


@pytest.fixture
def qemu_without_a_vm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The qemu driver with everything but the seed faked out: no image, no qemu-img, no VM, no
    provisioning (after_create is recorded instead), so the create's host and driver parts run."""
    from pymachine.machine import provision
    from pymachine.machine.drivers import qemu

    image = tmp_path / "image"
    image.mkdir()
    booted: list[str] = []
    monkeypatch.setattr(qemu.QemuDriver, "pre_create_check", lambda self: None)
    monkeypatch.setattr(qemu.QemuDriver, "_resolve_image", lambda self, log: qemu.BaseImage(
        str(image / "disk.qcow2"), "qcow2", 1 << 20, str(image / "vmlinuz"), str(image / "initrd.img"), True))
    monkeypatch.setattr(qemu.QemuDriver, "_run_img", lambda self, args: None)
    monkeypatch.setattr(qemu.QemuDriver, "launch", lambda self, log: None)
    monkeypatch.setattr(qemu.QemuDriver, "wait_for_ssh", lambda self, log, timeout=0.0: 0.0)
    monkeypatch.setattr(provision, "after_create", lambda machine, log, **_kw: booted.append(machine.name))
    return booted


def test_qemu_create_puts_the_hosts_first_boot_plan_on_its_seed(qemu_without_a_vm, tmp_path: Path) -> None:
    from pymachine.machine import certs
    from pymachine.machine.creation import CreateRequest, create_machine
    from pymachine.machine.store import Store

    store = Store(tmp_path / "store")
    request = CreateRequest(name="qfb", driver="qemu", engine_env=[f"HTTP_PROXY={PROXY}"],
                            driver_options={"qemu-accel": "tcg", "qemu-no-share": True})
    log: list[str] = []
    create_machine(store, request, log.append, environ={}, sigterm_rolls_back=False)
    assert qemu_without_a_vm == ["qfb"]
    mdir = tmp_path / "store" / "machines" / "qfb"
    driver = json.loads((mdir / "config.json").read_text())["Driver"]
    assert driver["EngineSeeded"] is True
    files = read_seed_iso(mdir / "seed.iso")
    assert files["pymachine/docker-ca.pem"] == (tmp_path / "store" / "certs" / "ca.pem").read_text()
    assert files["pymachine/docker-server.pem"] == (mdir / "server.pem").read_text()
    assert files["pymachine/docker-server-key.pem"] == (mdir / "server-key.pem").read_text()
    dropin = files["pymachine/docker-machine.conf"]
    assert f"-H tcp://0.0.0.0:{driver['GuestEnginePort']} " in dropin and "--label provider=qemu" in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in files["pymachine/docker-proxy.conf"]
    assert certs.cert_covers_host(mdir / "server.pem", "127.0.0.1")
    assert log.index("Rendering the engine's TLS files and configuration for the first boot...") \
        < log.index("Creating machine...")
