"""Files copied into a machine dir never clobber each other nor follow planted symlinks."""

from __future__ import annotations

import os
import stat

import pytest
from pymachine.machine.drivers.generic import RESERVED_NAMES, GenericDriver

pytestmark = pytest.mark.integration


def test_client_cert_copy_replaces_a_planted_symlink_instead_of_following_it(pm, tmp_path):
    pm.ok("create", "-d", "none", "--url", "tcp://127.0.0.1:2376", "box")
    mdir = pm.store / "machines" / "box"
    outside = tmp_path / "precious"
    outside.write_text("user data\n")
    for name in ("key.pem", "cert.pem", "ca.pem"):
        (mdir / name).unlink()
        (mdir / name).symlink_to(outside)
    pm.ok("regenerate-certs", "-f", "box")
    assert outside.read_text() == "user data\n"
    for name in ("key.pem", "cert.pem", "ca.pem"):
        st = os.lstat(mdir / name)
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o600
    assert (mdir / "key.pem").read_bytes() == (pm.store / "certs" / "key.pem").read_bytes()


@pytest.mark.parametrize("key_name", sorted(RESERVED_NAMES))
def test_generic_key_named_like_a_tls_file_gets_its_own_name(tmp_path, key_name):
    src = tmp_path / "keys" / key_name
    src.parent.mkdir()
    src.write_text("PRIVATE KEY\n")
    src.with_name(key_name + ".pub").write_text("ssh-ed25519 AAAA\n")
    store = tmp_path / "store"
    driver = GenericDriver.new("gen", str(store))
    os.makedirs(driver.machine_dir)
    driver.set_config_from_flags({
        "generic-ip-address": "127.0.0.1", "generic-ssh-user": "root", "generic-ssh-key": str(src),
        "generic-ssh-port": 22, "generic-engine-port": 2376,
    })
    driver.create(lambda msg: None)
    copied = driver.config["SSHKeyPath"]
    assert os.path.basename(copied) not in RESERVED_NAMES
    assert os.path.dirname(copied) == driver.machine_dir
    with open(copied) as fh:
        assert fh.read() == "PRIVATE KEY\n"
    assert stat.S_IMODE(os.stat(copied).st_mode) == 0o600
    assert not os.path.exists(os.path.join(driver.machine_dir, key_name))


def test_generic_key_copy_does_not_follow_a_symlink_in_the_machine_dir(tmp_path):
    src = tmp_path / "id_rsa"
    src.write_text("PRIVATE KEY\n")
    outside = tmp_path / "elsewhere"
    outside.write_text("keep\n")
    driver = GenericDriver.new("gen", str(tmp_path / "store"))
    os.makedirs(driver.machine_dir)
    os.symlink(outside, os.path.join(driver.machine_dir, "id_rsa"))
    driver.set_config_from_flags({
        "generic-ip-address": "127.0.0.1", "generic-ssh-user": "root", "generic-ssh-key": str(src),
        "generic-ssh-port": 22, "generic-engine-port": 2376,
    })
    driver.create(lambda msg: None)
    assert outside.read_text() == "keep\n"
    assert not os.path.islink(driver.config["SSHKeyPath"])
