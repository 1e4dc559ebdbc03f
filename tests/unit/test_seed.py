"""cloud-init NoCloud seed ISO: label, file names and contents, read back with pycdlib."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest
from pymachine.machine.seed import APT_PROXY_PATH, ENGINE_PROXY_PATH, read_seed_iso, write_seed_iso

KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 pymachine-test"


def cloud_config(text: str) -> dict:
    first, _, body = text.partition("\n")
    assert first == "#cloud-config"
    return json.loads(body)  # JSON is YAML: what cloud-init parses


def test_seed_iso_without_proxy(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY + "\n", proxy=None, instance_id="i-123")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        names = {c.file_identifier().decode("utf-16-be") for c in iso.list_children(joliet_path="/")}
        assert {"user-data", "meta-data"} <= names
    finally:
        iso.close()
    files = read_seed_iso(path)
    cfg = cloud_config(files["user-data"])
    (user,) = cfg["users"]
    assert user["name"] == "docker" and user["ssh_authorized_keys"] == [KEY]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["lock_passwd"] is True
    assert cfg["hostname"] == "dev" and cfg["ssh_pwauth"] is False
    assert "write_files" not in cfg
    meta = json.loads(files["meta-data"])
    assert meta == {"instance-id": "i-123", "local-hostname": "dev"}


def test_seed_iso_with_proxy_writes_apt_environment_and_engine_files(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    proxy = {
        "http_proxy": "http://10.0.2.2:3128",
        "HTTPS_PROXY": "http://10.0.2.2:3128",
        "no_proxy": "localhost,127.0.0.1",
    }
    write_seed_iso(path, hostname="web-1", user="docker", ssh_pubkey=KEY, proxy=proxy, instance_id="i-9")
    files = {f["path"]: f for f in cloud_config(read_seed_iso(path)["user-data"])["write_files"]}
    apt = files[APT_PROXY_PATH]["content"]
    assert 'Acquire::http::Proxy "http://10.0.2.2:3128";' in apt
    assert 'Acquire::https::Proxy "http://10.0.2.2:3128";' in apt
    env = files["/etc/environment"]
    assert env["append"] is True and 'NO_PROXY="localhost,127.0.0.1"' in env["content"]
    unit = files[ENGINE_PROXY_PATH]["content"].splitlines()
    assert unit[0] == "[Service]"
    assert 'Environment="HTTP_PROXY=http://10.0.2.2:3128"' in unit


def test_seed_iso_label_seen_by_blkid(tmp_path: Path) -> None:
    """cloud-init finds the seed by its filesystem label: check what blkid reports."""
    if not shutil.which("blkid"):
        pytest.skip("blkid not installed")
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1")
    out = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True, timeout=10,
                         check=False).stdout
    assert "LABEL=cidata" in out and "TYPE=iso9660" in out


def test_seed_rewrite_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="a", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1")
    write_seed_iso(path, hostname="b", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-2")
    assert json.loads(read_seed_iso(path)["meta-data"])["local-hostname"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]


def test_seed_carries_pymachine_files_for_the_base_image(tmp_path: Path) -> None:
    """The base image's first-boot script sources pymachine/config: values must be shell-quoted."""
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy={"http_proxy": "http://p:3128"},
                   instance_id="i-'$(x)")
    files = read_seed_iso(path)
    assert files["pymachine/authorized_keys"] == KEY + "\n"
    out = subprocess.run(["sh", "-c", '. "$1"; printf "%s|%s|%s" "$INSTANCE_ID" "$HOSTNAME" "$USERNAME"', "sh",
                          str(_write(tmp_path / "config", files["pymachine/config"]))],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    assert out == "i-'$(x)|dev|docker"
    assert files["pymachine/apt-proxy.conf"] == 'Acquire::http::Proxy "http://p:3128";\n'
    assert 'Environment="HTTP_PROXY=http://p:3128"' in files["pymachine/docker-proxy.conf"]
    no_proxy = tmp_path / "plain.iso"
    write_seed_iso(no_proxy, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1")
    assert sorted(read_seed_iso(no_proxy)) == [
        "meta-data",
        "pymachine/authorized_keys",
        "pymachine/config",
        "user-data",
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_base_image_first_boot_script_parses(tmp_path: Path) -> None:
    """The script that reads this seed inside pymachine's image is valid POSIX sh
    and reads exactly the files the seed writes."""
    from pymachine.engine.images import FIRSTBOOT_SCRIPT

    script = _write(tmp_path / "firstboot", FIRSTBOOT_SCRIPT)
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
    for name in ("config", "authorized_keys", "apt-proxy.conf", "environment", "docker-proxy.conf"):
        assert f"$seed/pymachine/{name}" in FIRSTBOOT_SCRIPT


def test_seed_carries_engine_files_and_the_first_boot_script_installs_them(tmp_path: Path) -> None:
    """The engine's certs and drop-in ride on the seed under fixed names; the
    image's first-boot script installs each one at the path provisioning uses."""
    from pymachine.engine.images import FIRSTBOOT_SCRIPT
    from pymachine.machine.seed import ENGINE_SEED_FILES

    engine = {
        "/etc/docker/ca.pem": "CA\n",
        "/etc/docker/server.pem": "CERT\n",
        "/etc/docker/server-key.pem": "KEY\n",
        "/etc/systemd/system/docker.service.d/10-machine.conf": "[Service]\nExecStart=\n",
    }
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                   engine_files=engine)
    files = read_seed_iso(path)
    for name, guest in ENGINE_SEED_FILES.items():
        assert files[f"pymachine/{name}"] == engine[guest]
        assert f"$seed/pymachine/{name} {guest}" in FIRSTBOOT_SCRIPT
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it carries the server key
    with pytest.raises(ValueError, match=r"/etc/docker/other\.pem"):
        write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                       engine_files={"/etc/docker/other.pem": "x"})


def test_seed_carries_shared_folders_as_fstab_lines_the_first_boot_mounts(tmp_path: Path) -> None:
    """VirtualBox and VMware home shares ride on the seed as nofail fstab lines;
    the owner is filled in by the image once the user exists."""
    from pymachine.engine.images import FIRSTBOOT_SCRIPT

    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                   shares=[("vboxsf", "Users", "/Users"), ("fuse.vmhgfs-fuse", ".host:/hosthome", "/hosthome")])
    fstab = read_seed_iso(path)["pymachine/fstab"]
    assert fstab.splitlines() == [
        "Users /Users vboxsf defaults,nofail,uid=@UID@,gid=@GID@ 0 0",
        ".host:/hosthome /hosthome fuse.vmhgfs-fuse defaults,nofail,allow_other,uid=@UID@,gid=@GID@ 0 0",
    ]
    assert "$seed/pymachine/fstab" in FIRSTBOOT_SCRIPT and "s/@UID@/$uid/g" in FIRSTBOOT_SCRIPT
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1")
    assert "pymachine/fstab" not in read_seed_iso(path)
    for bad, match in (
        (("nfs", "x", "/x"), "unknown shared-folder type"),
        (("vboxsf", "My Docs", "/docs"), "may not be empty or contain spaces"),
        (("vboxsf", "Users", "Users"), "must be absolute"),
        (("vboxsf", "home", "/home"), "cannot be mounted over the guest's /home"),
        (("fuse.vmhgfs-fuse", ".host:/x", "/etc/x"), "cannot be mounted over the guest's /etc"),
        (("vboxsf", "root", "/"), "cannot be mounted over the guest's /"),
    ):
        with pytest.raises(ValueError, match=match):
            write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                           shares=[bad])


def test_base_image_partition_table_puts_the_root_last(tmp_path: Path) -> None:
    """sfdisk accepts the layout on a disk file: an active FAT boot partition (the ESP) at
    1 MiB, then the root running to the disk's end (so first boot can grow it)."""
    import json
    import shutil

    from pymachine.engine import images

    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk not installed")
    root_bytes = 512 << 20
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as fh:
        fh.truncate(images.PART_ALIGN + images.BOOT_PART_BYTES + root_bytes)
    script = images._partition_table(images.BOOT_PART_BYTES, root_bytes)
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True, timeout=30,
                   capture_output=True)
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True,
                                      check=True, timeout=30).stdout)["partitiontable"]
    boot, root = table["partitions"]
    assert (boot["start"] * 512, boot["size"] * 512, boot.get("bootable"), boot["type"]) == (
        images.PART_ALIGN, images.BOOT_PART_BYTES, True, "ef")  # an EFI System partition, active for BIOS
    assert (root["start"] + root["size"]) * 512 == disk.stat().st_size and root["type"] == "83"
    assert f"root=LABEL={images.ROOT_LABEL}" in images.SYSLINUX_CFG


def test_seed_carries_a_host_key_pair_that_the_first_boot_installs(tmp_path: Path) -> None:
    """The guest's SSH host key is made here (a real OpenSSH ed25519 pair) and rides on the
    seed; the first-boot script installs it instead of generating keys in the guest."""
    from pymachine.engine.images import FIRSTBOOT_SCRIPT
    from pymachine.machine.seed import HOST_KEY_NAME, new_host_key

    private, public = new_host_key()
    assert public.startswith("ssh-ed25519 ") and new_host_key()[1] != public
    path = tmp_path / "seed.iso"
    write_seed_iso(path, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1",
                   host_key=(private, public))
    files = read_seed_iso(path)
    assert files[f"pymachine/{HOST_KEY_NAME}"] == private and files[f"pymachine/{HOST_KEY_NAME}.pub"] == public + "\n"
    if shutil.which("ssh-keygen"):
        key_file = _write(tmp_path / "hostkey", private)
        key_file.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split()
        assert derived[:2] == public.split()[:2]
    assert f"install -m 0600 $seed/pymachine/{HOST_KEY_NAME} /etc/ssh/{HOST_KEY_NAME}" in FIRSTBOOT_SCRIPT
    # Only when no key came with the seed does the guest make its own.
    assert FIRSTBOOT_SCRIPT.index(f"$seed/pymachine/{HOST_KEY_NAME}") < FIRSTBOOT_SCRIPT.index("ssh-keygen -A")
    without = tmp_path / "plain.iso"
    write_seed_iso(without, hostname="dev", user="docker", ssh_pubkey=KEY, proxy=None, instance_id="i-1")
    assert f"pymachine/{HOST_KEY_NAME}" not in read_seed_iso(without)
