"""The file names of a store's machine directory (and its certs directory), declared once.

Why: the same names were spelt as literals in the store, the TLS helpers, the SSH
layer and every driver; one misspelling is a file nobody finds.  The names are
docker-machine's where it had the file (config.json, the TLS pairs, id_rsa,
boot2docker.iso), so a Docker Machine 0.16 store keeps working.  No imports: the
store and ``env`` load this on every command.
"""

from __future__ import annotations

#: The machine's record (docker-machine's host config).
CONFIG = "config.json"
#: pymachine's cache of the last seen state, beside config.json.
STATE = "pymachine-state.json"
#: Secrets kept out of config.json (machine/secrets.py), 0600.
SECRETS = "secrets.json"
#: Host keys pinned on first contact (machine/sshconnect.py).
KNOWN_HOSTS = "known_hosts"

# TLS: the CA and client pair live in the store's certs directory (and a copy of the
# client files in each machine directory); the server pair in the machine directory.
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CLIENT_CERT = "cert.pem"
CLIENT_KEY = "key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
#: What DOCKER_CERT_PATH must hold.
CLIENT_FILES = (CA_CERT, CLIENT_CERT, CLIENT_KEY)

#: The SSH key pymachine makes for a machine (docker-machine's name).
SSH_KEY = "id_rsa"
SSH_PUBLIC_KEY = SSH_KEY + ".pub"

# Boot media and disks the local drivers keep in the machine directory.
SEED_ISO = "seed.iso"
BOOT2DOCKER_ISO = "boot2docker.iso"
CONFIG_DRIVE_ISO = "configdrive.iso"
QEMU_DISK = "disk.qcow2"
VBOX_DISK = "disk.vmdk"
VMWARE_IMAGE = "image.vmdk"
HYPERV_DISK = "disk.vhdx"

# The qemu driver's runtime files.
QEMU_PID = "qemu.pid"
QMP_SOCKET = "qmp.sock"
CONSOLE_LOG = "console.log"
QEMU_LOG = "qemu.log"
UEFI_VARS = "efivars.fd"

# The host agent (machine/hostagent.py) beside a running machine.
HOSTAGENT_LOG = "hostagent.log"
HOSTAGENT_PID = "hostagent.pid"

#: Files pymachine itself keeps in a machine directory that a user's own file (the
#: generic driver's imported SSH key) must never be written over.  ``state.json`` has been
#: reserved since the generic driver first kept this list; no file uses it today.
OWN_FILES = frozenset({
    CA_CERT, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY,
    CONFIG, SECRETS, KNOWN_HOSTS, STATE, "state.json",
})
