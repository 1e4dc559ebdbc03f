"""The vmwarevsphere driver writes the host's first-boot plan on the seed it uploads (vcsim).

vcsim never boots a guest; the test plays its IP (127.0.0.1, through vcsim's own hook), then
reads the seed back from the simulator's datastore with pycdlib.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pymachine.engine.options import EngineOptions
from pymachine.machine.seed import read_seed_iso
from pymachine.provisioners.base import ProvisionPlan
from pymachine.provisioners.debian import DebianProvisioner

from tests import fake_base_image
from tests.vcsim import (
    Vcsim,
    finish,
    inject_guest_ip,
    inventory,
    unavailable_reason,
    vcsim_fixture,  # noqa: F401 -- registers the ``vcsim`` fixture
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(unavailable_reason() is not None and os.environ.get("CI", "").lower() != "true",
                       reason=str(unavailable_reason())),
]

PROXY = "http://127.0.0.1:3128"


def vsphere_driver(sim: Vcsim, store: Path, name: str):
    from pymachine.machine.drivers.vsphere import VSphereDriver

    values = {f.name: f.default for f in VSphereDriver.flags}
    values.update({
        "vmwarevsphere-vcenter": sim.host, "vmwarevsphere-vcenter-port": sim.port,
        "vmwarevsphere-username": sim.username, "vmwarevsphere-password": sim.password,
        "vmwarevsphere-ca-cert": str(sim.ca_cert), "vmwarevsphere-datacenter": "DC0",
        "vmwarevsphere-datastore": "LocalDS_0", "vmwarevsphere-network": ["VM Network"],
        "vmwarevsphere-hostsystem": "DC0_H0", "vmwarevsphere-boot2docker-url": "",
        "vmwarevsphere-cpu-count": 1, "vmwarevsphere-memory-size": 512, "vmwarevsphere-disk-size": 100,
    })
    driver = VSphereDriver.new(name, str(store))
    driver.set_config_from_flags(values)
    os.makedirs(driver.machine_dir, mode=0o700)
    return driver


def test_vsphere_seed_carries_the_first_boot_plan(vcsim, tmp_path):
    store = tmp_path / "store"
    fake_base_image.make_fake_image(store, 32)
    driver = vsphere_driver(vcsim, store, "pm-fb")
    assert driver.capabilities.seed
    # The datacenter's DHCP gives the address: none is known before boot, so the host's plan
    # holds the engine until provisioning (test_seed_drivers.py: ...cannot_be_known_before_boot...).
    assert driver.seed_addresses() == []
    plan = ProvisionPlan(hostname="pm-fb", engine=EngineOptions(env=[f"HTTP_PROXY={PROXY}"]),
                         driver_name=driver.name, ca_pem=b"CA PEM\n", server_pem=b"SERVER PEM\n",
                         server_key_pem=b"SERVER KEY\n", engine_port=driver.guest_engine_port())
    driver.first_boot = DebianProvisioner.first_boot(plan)  # what the host hands over before create
    driver.pre_create_check()
    injection = inject_guest_ip(vcsim, "pm-fb", "127.0.0.1")
    try:
        driver.create(lambda _m: None)
    finally:
        finish(injection)
    seed = read_seed_iso(inventory(vcsim)["root"] / "pm-fb" / "seed.iso")  # as uploaded to the datastore
    assert (seed["pymachine/docker-ca.pem"], seed["pymachine/docker-server.pem"],
            seed["pymachine/docker-server-key.pem"]) == ("CA PEM\n", "SERVER PEM\n", "SERVER KEY\n")
    dropin = seed["pymachine/docker-machine.conf"]
    assert dropin == driver.first_boot.daemon_config
    assert "-H tcp://0.0.0.0:2376" in dropin and "--label provider=vmwarevsphere" in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in dropin
    assert f'Environment="HTTP_PROXY={PROXY}"' in seed["pymachine/docker-proxy.conf"]
    assert f'http_proxy="{PROXY}"' in seed["pymachine/environment"]
    driver.remove(lambda _m: None)
