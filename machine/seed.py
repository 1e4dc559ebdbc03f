"""A cloud-init NoCloud seed: an ISO9660 volume labelled ``cidata``.

The guest's cloud-init finds the volume by its label and reads ``user-data``
and ``meta-data`` from it: that is how a machine gets its user, SSH key,
hostname and proxy settings without any network service.  Written with
pycdlib (pure Python) so no ``genisoimage`` is needed; Joliet and Rock Ridge
names carry the lower-case file names cloud-init looks for.

The user-data is JSON after the ``#cloud-config`` line: JSON is valid YAML,
so every value is escaped correctly without a YAML library.

The same volume also carries ``pymachine/``: the same settings as plain
files for pymachine's own base image, whose first-boot unit reads them in
about a second instead of running cloud-init (a minute under emulation).
It may also carry the engine's final TLS files and systemd drop-in
(``engine_files``), installed by that unit before docker.service first
starts, so provisioning finds them unchanged and never restarts the engine.
And it may carry the guest's SSH host key (``host_key``, made here by
:func:`new_host_key`): the driver pins its public half before the first
connection, so there is no trust on first use and no key generation in a
guest that runs under emulation.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pymachine.machine.atomic import write_atomic
from pymachine.machine.firstboot import CA_PATH, DAEMON_CONFIG_PATH, SERVER_CERT_PATH, SERVER_KEY_PATH, FirstBoot

VOLUME_ID = "cidata"
SUDO_RULE = "ALL=(ALL) NOPASSWD:ALL"
APT_PROXY_PATH = "/etc/apt/apt.conf.d/90pymachine-proxy"
#: Seed file name (under ``pymachine/``) -> where the first-boot unit installs it.
ENGINE_SEED_FILES = {
    "docker-ca.pem": CA_PATH,
    "docker-server.pem": SERVER_CERT_PATH,
    "docker-server-key.pem": SERVER_KEY_PATH,
    "docker-machine.conf": DAEMON_CONFIG_PATH,
}
ENGINE_PROXY_PATH = "/etc/systemd/system/docker.service.d/10-pymachine-proxy.conf"


def _proxy_values(proxy: Mapping[str, str] | None) -> dict[str, str]:
    """Normalise {"http_proxy"|"HTTP_PROXY"|"http": url, ...} to lower-case env names."""
    out: dict[str, str] = {}
    for key, value in (proxy or {}).items():
        name = key.lower()
        if not name.endswith("_proxy"):
            name += "_proxy"
        if name in ("http_proxy", "https_proxy", "no_proxy") and value:
            out[name] = str(value)
    return out


def _quote_systemd(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def proxy_files(proxy: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """cloud-init write_files entries for apt, login shells and the engine.

    write_files runs in cloud-init's first (init) stage, before any package
    module, so apt already sees the proxy on its first run.
    """
    values = _proxy_values(proxy)
    if not any(k in values for k in ("http_proxy", "https_proxy")):
        return []
    apt = []
    if "http_proxy" in values:
        apt.append(f'Acquire::http::Proxy "{values["http_proxy"]}";')
    if "https_proxy" in values:
        apt.append(f'Acquire::https::Proxy "{values["https_proxy"]}";')
    env_lines = []
    unit = ["[Service]"]
    for name, value in sorted(values.items()):
        for spelled in (name, name.upper()):
            env_lines.append(f'{spelled}="{value}"')
            unit.append(f'Environment="{spelled}={_quote_systemd(value)}"')
    return [
        {"path": APT_PROXY_PATH, "permissions": "0644", "content": "\n".join(apt) + "\n"},
        {"path": "/etc/environment", "append": True, "content": "\n".join(env_lines) + "\n"},
        {"path": ENGINE_PROXY_PATH, "permissions": "0644", "content": "\n".join(unit) + "\n"},
    ]


def user_data(*, hostname: str, user: str, ssh_pubkey: str, proxy: Mapping[str, str] | None = None) -> str:
    config: dict[str, Any] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "disable_root": True,
        "resize_rootfs": True,
        "growpart": {"mode": "off"},
        "users": [
            {
                "name": user,
                "gecos": "pymachine",
                "groups": ["sudo", "docker"] if user != "docker" else ["sudo"],
                "primary_group": user,
                "shell": "/bin/bash",
                "sudo": SUDO_RULE,
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_pubkey.strip()],
            }
        ],
    }
    files = proxy_files(proxy)
    if files:
        config["write_files"] = files
    return "#cloud-config\n" + json.dumps(config, indent=2, sort_keys=True) + "\n"


def meta_data(*, hostname: str, instance_id: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2) + "\n"


def engine_seed_files(by_guest_path: Mapping[str, str]) -> dict[str, str]:
    """Seed names for the engine files keyed by their guest path (unknown paths refused)."""
    names = {guest: name for name, guest in ENGINE_SEED_FILES.items()}
    unknown = sorted(set(by_guest_path) - set(names))
    if unknown:
        raise ValueError(f"no seed slot for {', '.join(unknown)}")
    return {names[path]: text for path, text in by_guest_path.items()}


#: Shared-folder file systems the base image can mount, and the options each needs.
SHARE_TYPES = {
    "vboxsf": "defaults,nofail,uid={uid},gid={gid}",  # VirtualBox (kernel vboxsf + vboxguest)
    "fuse.vmhgfs-fuse": "defaults,nofail,allow_other,uid={uid},gid={gid}",  # VMware (open-vm-tools)
    # QEMU -virtfs (9p over virtio): files keep the host user's ownership (security_model=none)
    "9p": "trans=virtio,version=9p2000.L,msize=512000,nofail",
    # virtiofs (a virtiofsd per share, machine/drivers/virtiofs.py): ownership as on the host
    "virtiofs": "defaults,nofail",
    # The user's home again at its host path, bound from a share's mount (same_path_bind);
    # written with fstab type "none", after the share it needs (systemd orders it so at boot)
    "bind": "bind,nofail,x-systemd.requires-mounts-for={source}",
}


#: Guest directories a share must not cover (``/home`` holds the user's SSH key).
SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root",
                         "/run", "/sbin", "/sys", "/tmp", "/usr", "/var"})


#: System directories below which a same-path share of a host folder may still go (a host
#: user's home is /home/NAME; a test's or a CI job's may sit under /tmp).
_USER_AREAS = frozenset({"/home", "/tmp"})


def check_share_target(target: str, guest_home: str = "/home/docker") -> None:
    """Refuse a guest mount point that would cover a system directory or the guest user's
    home (its SSH key); ``/home/alice`` and ``/tmp/x`` are fine, ``/home`` and ``/etc/x`` are not."""
    import posixpath

    norm = posixpath.normpath(target)
    if norm != target.rstrip("/") and target != "/":
        raise ValueError(f"a shared folder's guest path must be normalised: {target!r}")
    parts = norm.strip("/").split("/")
    top = "/" + parts[0]
    if norm == "/" or (top in SYSTEM_DIRS and (top not in _USER_AREAS or len(parts) < 2)):
        raise ValueError(f"a shared folder cannot be mounted over the guest's {top}: {target!r}")
    if norm == guest_home or guest_home.startswith(norm + "/") or norm.startswith(guest_home + "/.ssh"):
        raise ValueError(f"a shared folder cannot be mounted over the guest user's home {guest_home}: {target!r}")


def shares_fstab(shares: Sequence[tuple[str, str, str]], guest_home: str = "/home/docker") -> str:
    """fstab lines (``nofail``: a missing share never blocks boot) for (type, source, guest dir).

    The owner is written as @UID@/@GID@ and filled in by the first-boot
    script once the machine's user exists.
    """
    lines = []
    for fstype, source, target in shares:
        if fstype not in SHARE_TYPES:
            raise ValueError(f"unknown shared-folder type {fstype!r}")
        for value in (source, target):
            if not value or any(c.isspace() for c in value) or "#" in value:
                raise ValueError(f"shared-folder names may not be empty or contain spaces or '#': {value!r}")
        if not target.startswith("/"):
            raise ValueError(f"a shared folder's guest path must be absolute: {target!r}")
        check_share_target(target, guest_home)
        options = SHARE_TYPES[fstype].format(uid="@UID@", gid="@GID@", source=source)
        lines.append(f"{source} {target} {'none' if fstype == 'bind' else fstype} {options} 0 0\n")
    return "".join(lines)


def same_path_bind(mount_point: str, host_dir: str, host_home: str,
                   guest_home: str = "/home/docker") -> list[tuple[str, str, str]]:
    """The host user's home at its own path in the guest, bound from the share's mount point.

    docker-machine mounted the shared host folder at ``/<share name>`` (``/home`` as
    ``/hosthome`` on Linux), so ``docker run -v $PWD:/src`` from a Linux home found nothing.
    Keeping that mount point and binding ``/hosthome/alice`` at ``/home/alice`` makes both
    work.  Nothing when the paths already agree (macOS ``/Users``), when the host path is not
    POSIX (Windows: the Docker Toolbox convention ``/c/Users`` is the mount point itself), when
    the home is outside the share, or when the target would cover a guest system directory.
    """
    import posixpath

    if not (host_dir.startswith("/") and host_home.startswith("/")):
        return []
    host_dir, host_home = posixpath.normpath(host_dir), posixpath.normpath(host_home)
    if host_home != host_dir and not host_home.startswith(host_dir.rstrip("/") + "/"):
        return []
    source = posixpath.normpath(mount_point.rstrip("/") + "/" + posixpath.relpath(host_home, host_dir))
    if source == host_home or any(c.isspace() or c == "#" for c in host_home):
        return []
    try:
        check_share_target(host_home, guest_home)
    except ValueError:
        return []
    return [("bind", source, host_home)]


def pymachine_files(*, hostname: str, user: str, ssh_pubkey: str, instance_id: str,
                    proxy: Mapping[str, str] | None = None,
                    engine_files: Mapping[str, str] | None = None,
                    shares: Sequence[tuple[str, str, str]] = (),
                    host_key: tuple[str, str] | None = None) -> dict[str, str]:
    """Files under ``pymachine/`` on the seed, read by the base image's first-boot script.

    ``engine_files`` maps guest paths (keys of ENGINE_SEED_FILES' values) to contents;
    ``host_key`` is (private, public) from :func:`new_host_key`.
    """
    import shlex

    config = "".join(f"{k}={shlex.quote(v)}\n" for k, v in
                     (("INSTANCE_ID", instance_id), ("HOSTNAME", hostname), ("USERNAME", user)))
    files = {"config": config, "authorized_keys": ssh_pubkey.strip() + "\n"}
    by_path = {f["path"]: f["content"] for f in proxy_files(proxy)}
    if by_path:
        files["apt-proxy.conf"] = by_path[APT_PROXY_PATH]
        files["environment"] = by_path["/etc/environment"]
        files["docker-proxy.conf"] = by_path[ENGINE_PROXY_PATH]
    files.update(engine_seed_files(engine_files or {}))
    if shares:
        files["fstab"] = shares_fstab(shares)
    if host_key:
        private, public = host_key
        files[HOST_KEY_NAME] = private
        files[HOST_KEY_NAME + ".pub"] = public.strip() + "\n"
    return files


#: Seed names of the guest's SSH host key pair.
HOST_KEY_NAME = "ssh_host_ed25519_key"


def new_host_key() -> tuple[str, str]:
    """A fresh ed25519 SSH host key: (private key in OpenSSH format, ``ssh-ed25519 BASE64`` public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _iso_name(name: str) -> str:
    """An ISO9660 level-3 name (the Rock Ridge/Joliet names are the real ones)."""
    stem, _, ext = name.upper().replace("-", "_").partition(".")
    return f"{stem[:30]}.{ext[:3]};1"


def write_seed_iso(
    path: str | os.PathLike[str],
    *,
    hostname: str,
    user: str,
    ssh_pubkey: str,
    proxy: Mapping[str, str] | None,
    instance_id: str,
    engine_files: Mapping[str, str] | None = None,
    shares: Sequence[tuple[str, str, str]] = (),
    host_key: tuple[str, str] | None = None,
    first_boot: FirstBoot | None = None,
) -> None:
    """Write the seed ISO atomically (temp file + rename); mode 0600: it names the
    user's key and may carry the engine's server key.

    ``first_boot`` (the host's plan) puts the engine's TLS files, drop-in and
    proxy on the seed; a ``proxy`` given as well wins over the plan's.
    """
    import pycdlib

    if first_boot is not None:
        engine_files = {**first_boot.seed_files(), **(engine_files or {})}
        if proxy is None:
            proxy = first_boot.proxy_settings()

    files = [
        ("/USERDATA.;1", "user-data", user_data(hostname=hostname, user=user, ssh_pubkey=ssh_pubkey, proxy=proxy)),
        ("/METADATA.;1", "meta-data", meta_data(hostname=hostname, instance_id=instance_id)),
    ]
    extra = pymachine_files(hostname=hostname, user=user, ssh_pubkey=ssh_pubkey, instance_id=instance_id,
                            proxy=proxy, engine_files=engine_files, shares=shares, host_key=host_key)
    files += [(f"/PYMACHIN/{_iso_name(name)}", f"pymachine/{name}", text) for name, text in extra.items()]
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
    iso.add_directory("/PYMACHIN", rr_name="pymachine", joliet_path="/pymachine")
    for iso_path, name, text in files:
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name.rpartition("/")[2], joliet_path="/" + name)
    buf = io.BytesIO()  # a seed is a few hundred KiB: build it in memory, write it once
    try:
        iso.write_fp(buf)
    finally:
        iso.close()
    write_atomic(path, buf.getvalue(), 0o600)


def read_seed_iso(path: str | os.PathLike[str]) -> dict[str, str]:
    """The seed's files by their Rock Ridge names (for tests and ``inspect``)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = {}
        for directory in ("/", "/pymachine"):
            for child in iso.list_children(rr_path=directory):
                if child.is_dir():
                    continue
                name = child.rock_ridge.name().decode()
                path = name if directory == "/" else f"pymachine/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path="/" + path)
                out[path] = buf.getvalue().decode()
        return out
    finally:
        iso.close()
