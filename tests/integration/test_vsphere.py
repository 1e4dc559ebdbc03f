"""The vmwarevsphere driver against vcsim (govmomi's simulator, built offline from Debian).

vcsim's VPX model: datacenter DC0, cluster DC0_C0, host DC0_H0, datastore
LocalDS_0 (a real directory on this machine, so uploads are checked on disk),
network "VM Network".  The simulator's TLS certificate is signed by a CA the
fixture makes, and the driver verifies it with ``--vmwarevsphere-ca-cert``;
one test uses ``--vmwarevsphere-insecure`` explicitly.

vcsim never boots a guest, so no VM reports an IP by itself.  The TEST plays
VMware tools: once the VM appears it sets the extraConfig key
``SET.guest.ipAddress`` (vcsim's hook) to 127.0.0.1 -- never any other address
(``inject_guest_ip`` refuses anything but loopback or a namespaced test host).
SSH provisioning cannot run against a guest that does not exist, so the CLI
test stops where SSH would start: the injected address has a closed port, and
the create must roll back everything it made.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from pymachine.machine.drivers.base import State
from pymachine.machine.errors import MachineError, PreCreateError

from tests import fake_base_image
from tests.vcsim import (
    Vcsim,
    finish,
    inject_guest_ip,
    inventory,
    ours,
    unavailable_reason,
    vcsim_fixture,  # noqa: F401 -- registers the ``vcsim`` fixture
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(unavailable_reason() is not None and os.environ.get("CI", "").lower() != "true",
                       reason=str(unavailable_reason())),
]

PLACEMENT = ["--vmwarevsphere-datacenter", "DC0", "--vmwarevsphere-datastore", "LocalDS_0",
             "--vmwarevsphere-network", "VM Network", "--vmwarevsphere-hostsystem", "DC0_H0"]
ISO_BYTES = b"pymachine test iso\n" + bytes(range(256)) * 512


@pytest.fixture(autouse=True)
def bounded_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short bounds for the driver's waits (guest IP, guest shutdown) unless a test sets its own."""
    monkeypatch.setenv("PYMACHINE_VSPHERE_IP_WAIT", "20")
    monkeypatch.setenv("PYMACHINE_VSPHERE_STOP_WAIT", "5")


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    path = tmp_path / "pm-boot.iso"
    path.write_bytes(ISO_BYTES)
    return path


def closed_loopback_port() -> socket.socket:
    """A bound, never-listening socket: connecting to its port is refused for as long as it is held."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


# Driver API --------------------------------------------------------------------------------------

def make_driver(sim: Vcsim, store: Path, name: str, iso: Path, **overrides: Any) -> Any:
    from pymachine.machine.drivers.vsphere import VSphereDriver

    values = {f.name: f.default for f in VSphereDriver.flags}
    values.update({
        "vmwarevsphere-vcenter": sim.host, "vmwarevsphere-vcenter-port": sim.port,
        "vmwarevsphere-username": sim.username, "vmwarevsphere-password": sim.password,
        "vmwarevsphere-ca-cert": str(sim.ca_cert), "vmwarevsphere-datacenter": "DC0",
        "vmwarevsphere-datastore": "LocalDS_0", "vmwarevsphere-network": ["VM Network"],
        "vmwarevsphere-hostsystem": "DC0_H0", "vmwarevsphere-boot2docker-url": str(iso),
        "vmwarevsphere-cpu-count": 1, "vmwarevsphere-memory-size": 512,
        "vmwarevsphere-cfgparam": ["pm.test.key=yes"],
    })
    values.update({f"vmwarevsphere-{k.replace('_', '-')}": v for k, v in overrides.items()})
    driver = VSphereDriver.new(name, str(store))
    driver.set_config_from_flags(values)
    os.makedirs(driver.machine_dir, mode=0o700)
    return driver


def test_driver_create_power_cycle_remove_checks_vcsim_after_each_step(vcsim, tmp_path, iso, monkeypatch):
    from pymachine.machine.drivers.vsphere import VSphereDriver

    log: list[str] = []
    driver = make_driver(vcsim, tmp_path / "store", "pm-api", iso)
    driver.pre_create_check()
    assert ours(inventory(vcsim), "pm-api") == []  # the check creates nothing

    injection = inject_guest_ip(vcsim, "pm-api", "127.0.0.1")
    driver.create(log.append)
    ref = finish(injection)

    inv = inventory(vcsim)
    vm = inv["vms"]["pm-api"]
    assert vm["ref"] == ref == driver.config["VMRef"]
    assert vm["power"] == "poweredOn" and vm["annotation"] == "pymachine-machine=pm-api"
    assert (vm["cpu"], vm["memory"]) == (1, 512)
    assert vm["extra"]["pm.test.key"] == "yes"
    assert (
        vm["extra"]["guestinfo.pymachine.ssh-authorized-key"]
        == Path(driver.config["SSHKeyPath"] + ".pub").read_text().strip()
    )
    assert vm["cdrom"] == ["[LocalDS_0] pm-api/pm-boot.iso"] and vm["nics"] == ["VM Network"]
    assert (inv["root"] / "pm-api" / "pm-boot.iso").read_bytes() == ISO_BYTES
    assert driver.ip() == "127.0.0.1" and driver.url() == "tcp://127.0.0.1:2376"
    assert driver.config["UploadedFiles"] == ["[LocalDS_0] pm-api/pm-boot.iso"]
    # The password is a secret: in the 0600 secrets file, never in config.json's dict.
    assert vcsim.password not in json.dumps(driver.config)
    secrets = Path(driver.machine_dir) / "secrets.json"
    assert vcsim.password in secrets.read_text() and secrets.stat().st_mode & 0o777 == 0o600

    # A reloaded driver (as the CLI does) has only config.json and the secrets file.
    again = VSphereDriver(json.loads(json.dumps(driver.config)))
    assert again.state() == State.RUNNING

    again.stop(log.append)
    assert inventory(vcsim)["vms"]["pm-api"]["power"] == "poweredOff" and again.state() == State.STOPPED
    again.start(log.append)
    assert inventory(vcsim)["vms"]["pm-api"]["power"] == "poweredOn" and again.state() == State.RUNNING
    again.restart(log.append)
    assert inventory(vcsim)["vms"]["pm-api"]["power"] == "poweredOn"
    again.kill(log.append)
    assert inventory(vcsim)["vms"]["pm-api"]["power"] == "poweredOff"

    # ls: one login and one property-collector call for every machine on this vCenter.
    other = VSphereDriver(dict(again.config, MachineName="pm-other", VMRef=inv["vms"]["DC0_H0_VM0"]["ref"]))
    assert VSphereDriver.batch_states([again, other], 10.0) == {"pm-api": State.STOPPED, "pm-other": State.RUNNING}

    again.remove(log.append)
    inv = inventory(vcsim)
    assert ours(inv, "pm-api") == []
    assert "DC0_H0_VM0" in inv["vms"]  # nothing else touched
    assert again.config["VMRef"] == "" and again.config["UploadedFiles"] == [] and again.config["DatastoreFolder"] == ""
    with pytest.raises(MachineError, match="no VM recorded"):
        again.state()


def test_failed_create_then_remove_deletes_the_upload_itself(vcsim, tmp_path, iso, monkeypatch):
    """No guest IP within the bound: create fails with everything recorded.  The VM is then
    unregistered out of band (its files stay, as on a real vCenter), so remove must delete the
    ISO and the folder itself -- successful DeleteDatastoreFile_Tasks, whose task entity vcsim
    reports as the FileManager."""
    from pymachine.machine.drivers.vsphere import wait_task
    from pyVmomi import vim

    monkeypatch.setenv("PYMACHINE_VSPHERE_IP_WAIT", "1")
    driver = make_driver(vcsim, tmp_path / "store", "pm-noip", iso)
    with pytest.raises(MachineError, match="reported no IP address within 1 s"):
        driver.create(lambda _: None)
    left = ours(inventory(vcsim), "pm-noip")
    assert {"vm:pm-noip", "file:pm-noip", "file:pm-noip/pm-boot.iso"} <= set(left)
    with vcsim.connect() as si:
        vm = vim.VirtualMachine(driver.config["VMRef"], si._stub)
        wait_task(si, vm.PowerOffVM_Task(), "power off")
        vm.UnregisterVM()
    left = ours(inventory(vcsim), "pm-noip")
    assert "vm:pm-noip" not in left and "file:pm-noip/pm-boot.iso" in left
    log: list[str] = []
    driver.remove(log.append)
    assert any("is already gone" in line for line in log)
    assert ours(inventory(vcsim), "pm-noip") == []


def test_existing_datastore_folder_is_never_taken_or_deleted(vcsim, tmp_path, iso):
    with vcsim.connect() as si:
        dc = si.RetrieveContent().rootFolder.childEntity[0]
        si.RetrieveContent().fileManager.MakeDirectory(name="[LocalDS_0] pm-taken", datacenter=dc)
    driver = make_driver(vcsim, tmp_path / "store", "pm-taken", iso)
    with pytest.raises(MachineError, match=r"datastore folder \[LocalDS_0\] pm-taken already exists"):
        driver.create(lambda _: None)
    driver.remove(lambda _: None)  # what the host layer's rollback calls
    assert ours(inventory(vcsim), "pm-taken") == ["file:pm-taken"]


def test_pre_create_names_what_is_missing(vcsim, tmp_path, iso):
    cases = {
        "datacenter": ("DC9", "datacenter 'DC9' not found"),
        "datastore": ("NoSuchDS", "datastore 'NoSuchDS' not found in datacenter 'DC0'"),
        "network": (["VM Network", "NoNet"], "network 'NoNet' not found"),
        "pool": ("DC0_C0/Resources/nope", "resource pool 'DC0_C0/Resources/nope' not found"),
        "hostsystem": ("DC0_H9", "host system 'DC0_H9' not found"),
        "folder": ("no/such", "folder 'no/such' not found"),
    }
    for i, (field, (value, message)) in enumerate(cases.items()):
        driver = make_driver(vcsim, tmp_path / "store", f"pm-bad{i}", iso, **{field: value})
        with pytest.raises(PreCreateError, match=message.replace("[", r"\[")):
            driver.pre_create_check()
    # Existing placements pass: a cluster pool by path, a host inside a cluster.
    make_driver(vcsim, tmp_path / "store", "pm-pool", iso, hostsystem="", pool="DC0_C0/Resources").pre_create_check()
    make_driver(vcsim, tmp_path / "store", "pm-chost", iso, hostsystem="DC0_C0/DC0_C0_H1").pre_create_check()


# pymachine's base image (the default without --vmwarevsphere-boot2docker-url) --------------------

def vm_firmware(sim: Vcsim, ref: str) -> str:
    from pyVmomi import vim

    with sim.connect() as si:
        return str(vim.VirtualMachine(ref, si._stub).config.firmware)


def vm_disks_and_boot(sim: Vcsim, ref: str) -> tuple[list[tuple[str, int, int]], list[int]]:
    """The VM's disks as (backing file, capacity KB, key) and its boot order as disk device keys."""
    from pyVmomi import vim

    with sim.connect() as si:
        vm = vim.VirtualMachine(ref, si._stub)
        disks = [(d.backing.fileName, int(d.capacityInKB), int(d.key)) for d in vm.config.hardware.device
                 if isinstance(d, vim.vm.device.VirtualDisk)]
        order = [int(b.deviceKey) for b in (vm.config.bootOptions.bootOrder or [])
                 if isinstance(b, vim.vm.BootOptions.BootableDiskDevice)]
    return disks, order


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_default_image_uploads_flat_disk_and_seed_boots_from_disk_and_rm_removes_all(vcsim, tmp_path, iso):
    import hashlib

    from pymachine.machine.seed import read_seed_iso

    store = tmp_path / "store"
    image = fake_base_image.make_fake_image(store, 32)
    driver = make_driver(vcsim, store, "pm-img", iso, boot2docker_url="", disk_size=100)
    driver.pre_create_check()
    injection = inject_guest_ip(vcsim, "pm-img", "127.0.0.1")
    log: list[str] = []
    driver.create(log.append)
    ref = finish(injection)

    raw = image.exported("raw")
    assert raw.stat().st_size == 32 << 20
    inv = inventory(vcsim)
    root = inv["root"]
    assert {"pm-img/pm-img.vmdk", "pm-img/pm-img-flat.vmdk", "pm-img/seed.iso"} <= set(inv["files"])
    digest = hashlib.sha256((root / "pm-img" / "pm-img-flat.vmdk").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(raw.read_bytes()).hexdigest()
    descriptor = (root / "pm-img" / "pm-img.vmdk").read_text()
    assert 'createType="vmfs"' in descriptor and f'RW {(32 << 20) // 512} VMFS "pm-img-flat.vmdk"' in descriptor
    seed = read_seed_iso(root / "pm-img" / "seed.iso")
    assert seed["pymachine/authorized_keys"] == Path(driver.config["SSHKeyPath"] + ".pub").read_text()
    assert "USERNAME=docker\n" in seed["pymachine/config"] and "pymachine/fstab" not in seed
    assert driver.config["UploadedFiles"] == ["[LocalDS_0] pm-img/pm-img-flat.vmdk", "[LocalDS_0] pm-img/pm-img.vmdk",
                                              "[LocalDS_0] pm-img/seed.iso"]
    vm = inv["vms"]["pm-img"]
    assert vm["ref"] == ref and vm["power"] == "poweredOn" and vm["cdrom"] == ["[LocalDS_0] pm-img/seed.iso"]
    disks, order = vm_disks_and_boot(vcsim, ref)
    assert vm_firmware(vcsim, ref) == "bios", "the image boots through its MBR"
    assert [(f, kb) for f, kb, _ in disks] == [("[LocalDS_0] pm-img/pm-img.vmdk", 100 * 1024)]
    assert order == [disks[0][2]]
    assert any("Uploading pm-img-flat.vmdk to [LocalDS_0] pm-img/" in line for line in log)

    driver.remove(log.append)
    assert ours(inventory(vcsim), "pm-img") == []
    assert driver.config["UploadedFiles"] == [] and driver.config["DatastoreFolder"] == ""
    assert raw.is_file()  # the cached export stays for the next machine


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_default_image_disk_never_smaller_than_the_image(vcsim, tmp_path, iso):
    store = tmp_path / "store"
    fake_base_image.make_fake_image(store, 32)
    driver = make_driver(vcsim, store, "pm-small", iso, boot2docker_url="", disk_size=8)
    injection = inject_guest_ip(vcsim, "pm-small", "127.0.0.1")
    driver.create(lambda _: None)
    ref = finish(injection)
    disks, order = vm_disks_and_boot(vcsim, ref)
    assert [kb for _, kb, _ in disks] == [32 * 1024] and order == [disks[0][2]]
    driver.remove(lambda _: None)
    assert ours(inventory(vcsim), "pm-small") == []


# CLI ---------------------------------------------------------------------------------------------

def cli_create_args(sim: Vcsim, iso: Path, name: str, *extra: str) -> list[str]:
    return ["create", "-d", "vmwarevsphere", *sim.flags(), *PLACEMENT,
            "--vmwarevsphere-boot2docker-url", str(iso), "--vmwarevsphere-memory-size", "512", *extra, name]


def one_line(res: Any) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_cli_create_unreachable_guest_rolls_back_everything(pm, vcsim, iso):
    """Up to where SSH would start: the guest IP (127.0.0.1, injected) has a closed SSH port."""
    held = closed_loopback_port()
    try:
        port = held.getsockname()[1]
        injection = inject_guest_ip(vcsim, "pm-cli", "127.0.0.1")
        res = pm(*cli_create_args(vcsim, iso, "pm-cli", "--vmwarevsphere-ssh-port", str(port)),
                 env={"PYMACHINE_SSH_WAIT": "2", "PYMACHINE_VSPHERE_IP_WAIT": "30"})
        finish(injection)
    finally:
        held.close()
    assert res.returncode != 0, res.stdout
    out = res.stdout + res.stderr
    assert "Uploading pm-boot.iso to [LocalDS_0] pm-cli/" in out
    assert "Removing pm-cli: the host never answered over SSH" in out
    assert "Destroying VM" in out
    assert vcsim.password not in out
    assert not (pm.store / "machines" / "pm-cli").exists()
    assert ours(inventory(vcsim), "pm-cli") == []
    assert pm.ok("ls", "-q").stdout.strip() == ""


@pytest.mark.skipif(not fake_base_image.qemu_img_available(), reason="qemu-img (qemu-utils) not installed")
def test_cli_default_image_unreachable_guest_rolls_back_every_upload(pm, vcsim, iso):
    fake_base_image.make_fake_image(pm.store, 16)
    held = closed_loopback_port()
    try:
        port = held.getsockname()[1]
        injection = inject_guest_ip(vcsim, "pm-cimg", "127.0.0.1")
        args = [a for a in cli_create_args(vcsim, iso, "pm-cimg", "--vmwarevsphere-ssh-port", str(port))
                if a not in ("--vmwarevsphere-boot2docker-url", str(iso))]
        res = pm(*args, env={"PYMACHINE_SSH_WAIT": "2", "PYMACHINE_VSPHERE_IP_WAIT": "30"})
        finish(injection)
    finally:
        held.close()
    assert res.returncode != 0, res.stdout
    out = res.stdout + res.stderr
    assert "(image) converting disk.qcow2 to raw..." in out
    for name in ("pm-cimg-flat.vmdk", "pm-cimg.vmdk", "seed.iso"):
        assert f"Uploading {name} to [LocalDS_0] pm-cimg/" in out
    assert "Removing pm-cimg: the host never answered over SSH" in out
    assert ours(inventory(vcsim), "pm-cimg") == []
    assert not (pm.store / "machines" / "pm-cimg").exists()


def test_cli_default_image_unavailable_is_exit_3_naming_the_flag(pm, vcsim, iso):
    before = inventory(vcsim)
    args = [
        a for a in cli_create_args(vcsim, iso, "pm-noimg") if a not in ("--vmwarevsphere-boot2docker-url", str(iso))
    ]
    res = pm(*args, env={"PATH": fake_base_image.path_without_debootstrap()})
    assert res.returncode == 3
    line = one_line(res)
    assert "pymachine's base image is not built yet" in line and "--vmwarevsphere-boot2docker-url" in line
    after = inventory(vcsim)
    assert after["vms"].keys() == before["vms"].keys() and after["files"] == before["files"]
    assert not (pm.store / "machines" / "pm-noimg").exists()
    fake_base_image.assert_no_image_built(pm.store)


def test_cli_bad_input_exit_3_one_line_nothing_left(pm, vcsim, iso):
    before = inventory(vcsim)
    args = cli_create_args(vcsim, iso, "pm-bad")
    wrong = [a if a != vcsim.password else "not-the-password" for a in args]
    res = pm(*wrong)
    assert res.returncode == 3
    line = one_line(res)
    assert f"login to vCenter 127.0.0.1:{vcsim.port} failed for user '{vcsim.username}'" in line
    assert "not-the-password" not in res.stdout + res.stderr

    res = pm(*cli_create_args(vcsim, iso, "pm-bad", "--vmwarevsphere-datastore", "NoSuchDS"))
    assert res.returncode == 3
    assert one_line(res).endswith("datastore 'NoSuchDS' not found in datacenter 'DC0'")

    # Without the CA the self-signed chain is refused, with a hint; --vmwarevsphere-insecure accepts it.
    no_ca = [a for a in args if a not in ("--vmwarevsphere-ca-cert", str(vcsim.ca_cert))]
    res = pm(*no_ca)
    assert res.returncode == 3 and "--vmwarevsphere-insecure" in one_line(res)
    res = pm(*no_ca[:-1], "--vmwarevsphere-insecure", "--vmwarevsphere-folder", "nope", "pm-bad")
    assert res.returncode == 3 and one_line(res).endswith("folder 'nope' not found in datacenter 'DC0'")

    res = pm(*cli_create_args(vcsim, Path("/nonexistent/boot.iso"), "pm-bad"))
    assert res.returncode == 3 and "boot ISO not found" in one_line(res)

    after = inventory(vcsim)
    assert after["vms"].keys() == before["vms"].keys() and after["files"] == before["files"]
    assert not (pm.store / "machines" / "pm-bad").exists()


def test_boot2docker_url_takes_file_and_http_urls(vcsim, tmp_path, iso, monkeypatch):
    """As docker-machine did: a file:// URL is the local file; an http(s):// one is downloaded once
    through the verified, cached downloader (here from a server on loopback) and uploaded."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    monkeypatch.setenv("PYMACHINE_VSPHERE_IP_WAIT", "1")
    served = tmp_path / "www"
    served.mkdir()
    (served / "b2d.iso").write_bytes(ISO_BYTES)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, url, uploaded in (
            ("pm-file", iso.as_uri(), "pm-boot.iso"),
            ("pm-http", f"http://127.0.0.1:{server.server_address[1]}/b2d.iso", "b2d.iso"),
        ):
            driver = make_driver(vcsim, tmp_path / "store", name, iso, boot2docker_url=url)
            driver.pre_create_check()
            with pytest.raises(MachineError, match="reported no IP address within 1 s"):
                driver.create(lambda _: None)
            assert f"file:{name}/{uploaded}" in ours(inventory(vcsim), name)
            driver.remove(lambda _: None)
            assert ours(inventory(vcsim), name) == []
    finally:
        server.shutdown()
        server.server_close()
    from pymachine.machine.cachedir import user_cache_dir  # the user's, shared (tests: a private one)

    cached = user_cache_dir() / "downloads" / "by-digest" / hashlib.sha256(ISO_BYTES).hexdigest()
    assert cached.read_bytes() == ISO_BYTES
    bad = make_driver(vcsim, tmp_path / "store", "pm-ftp", iso, boot2docker_url="ftp://127.0.0.1/b2d.iso")
    with pytest.raises(PreCreateError, match="must be a local path, file:// or http"):
        bad.pre_create_check()
