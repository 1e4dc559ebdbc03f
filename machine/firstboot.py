"""The first-boot plan: the engine configuration a driver puts on its seed.

The host asks the provisioner for it (``provision.first_boot_plan``) and hands
it to a driver that declares it can carry a seed (``capabilities.seed``); the
driver only writes it onto the seed (``seed.write_seed_iso``).  pymachine's
base image installs these files before docker.service first starts, so the
engine starts configured, and provisioning over SSH finds every file equal
and restarts nothing.

A plain value with no imports of the host, the store or the provisioners:
drivers may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Where the first-boot script installs each engine file (its fixed seed layout).
CA_PATH = "/etc/docker/ca.pem"
SERVER_CERT_PATH = "/etc/docker/server.pem"
SERVER_KEY_PATH = "/etc/docker/server-key.pem"
DAEMON_CONFIG_PATH = "/etc/systemd/system/docker.service.d/10-machine.conf"

#: Appended to the seeded drop-in when the engine must wait for provisioning (``hold_engine``):
#: a condition on a path nothing creates, so docker.service is skipped at boot (systemd.unit(5),
#: ConditionPathExists=: "the unit is skipped", not failed) until provisioning writes the final
#: drop-in without it and starts the engine, once.
HOLD_UNTIL_PROVISIONED = (
    "\n[Unit]\n"
    "# pymachine: the guest's address was not known before boot, so its server certificate\n"
    "# comes over SSH; provisioning replaces this drop-in and starts the engine once.\n"
    "ConditionPathExists=/run/pymachine/engine-held-until-provisioned\n"
)


@dataclass(frozen=True)
class FirstBoot:
    """The engine's TLS files, its systemd drop-in and the proxy, as text.

    ``proxy`` holds lower-case ``http_proxy``/``https_proxy``/``no_proxy``
    values (empty when none is set): the seed turns them into apt, login
    shell and engine settings.
    """

    ca_pem: str
    server_pem: str
    server_key_pem: str
    daemon_config: str
    proxy: Mapping[str, str] = field(default_factory=dict)
    #: The certificate cannot name the guest's address yet (a DHCP network the driver cannot
    #: predict, e.g. vSphere's): keep the engine down until provisioning delivers the final
    #: certificate, instead of starting it now and restarting it then.
    hold_engine: bool = False

    def engine_files(self) -> dict[str, str]:
        """{guest path: content} of the engine files, as provisioning writes them."""
        return {
            CA_PATH: self.ca_pem,
            SERVER_CERT_PATH: self.server_pem,
            SERVER_KEY_PATH: self.server_key_pem,
            DAEMON_CONFIG_PATH: self.daemon_config,
        }

    def seed_files(self) -> dict[str, str]:
        """{guest path: content} as the seed carries them: ``engine_files()``, with the
        drop-in holding the engine back when ``hold_engine``."""
        files = self.engine_files()
        if self.hold_engine:
            files[DAEMON_CONFIG_PATH] = self.daemon_config + HOLD_UNTIL_PROVISIONED
        return files

    def proxy_settings(self) -> dict[str, str] | None:
        """The set proxy values, or None without a proxy."""
        values = {k: v for k, v in self.proxy.items() if v}
        return values or None

    def __repr__(self) -> str:  # the server key never reaches a log or a traceback
        proxy = sorted(self.proxy_settings() or {})
        size = len(self.daemon_config)
        return f"FirstBoot(daemon_config={size} chars, proxy={proxy}, hold_engine={self.hold_engine})"
