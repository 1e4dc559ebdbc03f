"""Pure rendering of the engine's configuration: options in, file contents out.

Nothing here touches a host.  ``daemon_args`` builds dockerd's argv once;
each init system then gets a renderer that quotes it the way *that* init
system parses it (systemd unit syntax, POSIX shell for ``/etc/default/docker``
and OpenRC's ``conf.d``), so values with spaces, quotes or ``%`` survive.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from pymachine.engine.options import EngineOptions
from pymachine.machine.errors import MachineError

SYSTEMD_DROPIN_PATH = "/etc/systemd/system/docker.service.d/10-machine.conf"
SYSV_DEFAULT_PATH = "/etc/default/docker"
OPENRC_CONF_PATH = "/etc/conf.d/docker"
B2D_PROFILE_PATH = "/var/lib/boot2docker/profile"

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")

# Filesystems on which overlay2 is known to work as the backing store.
_OVERLAY2_BACKING = frozenset({"ext2/ext3", "ext4", "xfs"})


class EngineConfigError(MachineError):
    """An engine option cannot be expressed in the target configuration file."""


def default_storage_driver(fs_type: str) -> str | None:
    """Storage driver for ``/var/lib/docker`` on a filesystem of ``fs_type``
    (as printed by ``stat -f -c %T``).

    Docker Machine forced ``overlay2`` (``aufs`` before) everywhere.  That
    breaks wherever overlay2 cannot work, for example when ``/var/lib/docker``
    sits on an overlay or tmpfs root (containers, live images, namespaced test
    hosts): dockerd then refuses to start at all.  Here we only name a driver
    when we know it is right (``btrfs`` on btrfs, ``overlay2`` on ext4/xfs) and
    otherwise return None, leaving out ``--storage-driver`` so dockerd probes
    and picks a driver that works on that filesystem itself.
    """
    fs = (fs_type or "").strip().lower()
    if fs == "btrfs":
        return "btrfs"
    if fs in _OVERLAY2_BACKING:
        return "overlay2"
    return None


def extra_flags(opts: EngineOptions, driver_name: str) -> list[str]:
    """The user-controlled part of dockerd's argv, in Docker Machine's order:
    labels (``provider=<driver>`` last), insecure registries, mirrors, then
    pymachine's additions (dns, data root, log level, ipv6, selinux), then the
    ``--engine-opt`` flags last so they can add anything else."""
    args: list[str] = []
    for label in [*opts.labels, f"provider={driver_name}"]:
        args += ["--label", label]
    for reg in opts.insecure_registry:
        args += ["--insecure-registry", reg]
    for mirror in opts.registry_mirror:
        args += ["--registry-mirror", mirror]
    for server in opts.dns:
        args += ["--dns", server]
    if opts.graph_dir:
        args += ["--data-root", opts.graph_dir]
    if opts.log_level:
        args += ["--log-level", opts.log_level]
    if opts.ipv6:
        args.append("--ipv6")
    if opts.selinux_enabled:
        args.append("--selinux-enabled")
    for flag in opts.arbitrary_flags:
        flag = flag.strip().lstrip("-")
        if flag:
            args.append("--" + flag)
    return args


def daemon_args(
    opts: EngineOptions,
    *,
    port: int,
    dockerd_path: str,
    storage_driver: str | None,
    cert_dir: str = "/etc/docker",
    driver_name: str,
) -> list[str]:
    """dockerd's full argv, binary first (``argv[0]`` is ``dockerd_path``)."""
    args = [
        dockerd_path,
        "-H", f"tcp://0.0.0.0:{port}",
        "-H", "unix:///var/run/docker.sock",
    ]  # fmt: skip
    if storage_driver:
        args += ["--storage-driver", storage_driver]
    args += [
        "--tlsverify",
        "--tlscacert", f"{cert_dir}/ca.pem",
        "--tlscert", f"{cert_dir}/server.pem",
        "--tlskey", f"{cert_dir}/server-key.pem",
    ]  # fmt: skip
    return args + extra_flags(opts, driver_name)


def daemon_env(opts: EngineOptions, proxy_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment: ``--engine-env`` entries, then the effective
    proxy variables (which already include any proxy given as engine env)."""
    env = opts.env_dict()
    env.update(proxy_env or {})
    return env


# -- systemd ---------------------------------------------------------------


def _systemd_word(arg: str) -> str:
    """Quote one ExecStart word: systemd expands ``%`` specifiers and ``$VAR``."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.match(arg):
        return escaped
    if "\n" in arg:
        raise EngineConfigError(f"engine option contains a newline: {arg!r}")
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_env_line(key: str, value: str) -> str:
    _check_env(key, value)
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{key}={quoted}"'


def systemd_dropin(args: Sequence[str], env: Mapping[str, str]) -> str:
    """``docker.service.d/10-machine.conf``: clear the packaged ExecStart, set
    ours, one quoted ``Environment=`` line per variable."""
    lines = ["[Service]", "ExecStart=", "ExecStart=" + " ".join(_systemd_word(a) for a in args)]
    lines += [_systemd_env_line(k, v) for k, v in env.items()]
    return "\n".join(lines) + "\n"


def coreos_dropin(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Flatcar/CoreOS variant: keeps the OS's ``$DOCKER_OPT_*`` hooks (flannel
    writes them) and ``TMPDIR=/var/tmp`` as Docker Machine's CoreOS template did."""
    words = " ".join(_systemd_word(a) for a in args)
    hooks = "$DOCKER_OPTS $DOCKER_OPT_BIP $DOCKER_OPT_MTU $DOCKER_OPT_IPMASQ"
    lines = [
        "[Service]",
        "Environment=TMPDIR=/var/tmp",
        "ExecStart=",
        f"ExecStart={words} {hooks}",
    ]
    lines += [_systemd_env_line(k, v) for k, v in env.items()]
    return "\n".join(lines) + "\n"


# -- shell-sourced files ---------------------------------------------------


def _check_env(key: str, value: str) -> None:
    if not _ENV_KEY.match(key):
        raise EngineConfigError(f"invalid engine environment variable name: {key!r}")
    if "\n" in value or "\0" in value:
        raise EngineConfigError(f"engine environment value for {key} contains a newline")


def _export_line(key: str, value: str) -> str:
    """``export "K=V"`` as Docker Machine wrote it, escaped for POSIX sh."""
    _check_env(key, value)
    body = f"{key}={value}"
    for ch in ("\\", '"', "$", "`"):
        body = body.replace(ch, "\\" + ch)
    return f'export "{body}"'


def _splittable(args: Sequence[str]) -> None:
    """The init scripts expand ``$DOCKER_OPTS`` unquoted, so words split on
    whitespace: refuse what would be silently mangled."""
    for arg in args:
        if not arg or any(c.isspace() for c in arg):
            raise EngineConfigError(
                f"engine option {arg!r} contains whitespace, which an init script cannot pass"
            )


def _flag_lines(args: Sequence[str]) -> list[str]:
    """Group argv into one flag (with its value words) per line."""
    lines: list[list[str]] = []
    for arg in args:
        if arg.startswith("-") or not lines:
            lines.append([arg])
        else:
            lines[-1].append(arg)
    return [" ".join(words) for words in lines]


def _single_quote_body(text: str) -> str:
    return text.replace("'", "'\\''")


def sysv_default(args: Sequence[str], env: Mapping[str, str]) -> str:
    """``/etc/default/docker`` for Debian's ``/etc/init.d/docker``.

    The init script sets ``DOCKERD=/usr/sbin/dockerd`` and then sources this
    file, so we set ``DOCKERD`` to where the binary really is, then
    ``DOCKER_OPTS`` (one flag per line, as Docker Machine wrote it) and
    ``export`` lines so the daemon it starts inherits proxy variables.
    """
    dockerd, flags = args[0], list(args[1:])
    _splittable(flags)
    lines = [
        "# Written by pymachine; rewritten on every provision.",
        f"DOCKERD={shlex.quote(dockerd)}",
        "DOCKER_OPTS='",
        *(_single_quote_body(line) for line in _flag_lines(flags)),
        "'",
    ]
    lines += [_export_line(k, v) for k, v in env.items()]
    return "\n".join(lines) + "\n"


def openrc_conf(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Alpine's ``/etc/conf.d/docker`` (read by ``/etc/init.d/docker``:
    ``command="${DOCKERD_BINARY:-/usr/bin/dockerd}"``, ``command_args="${DOCKER_OPTS}"``)."""
    dockerd, flags = args[0], list(args[1:])
    _splittable(flags)
    opts = " ".join(flags)
    for ch in ("\\", '"', "$", "`"):
        opts = opts.replace(ch, "\\" + ch)
    lines = [
        "# Written by pymachine; rewritten on every provision.",
        f"DOCKERD_BINARY={shlex.quote(dockerd)}",
        f'DOCKER_OPTS="{opts}"',
    ]
    lines += [_export_line(k, v) for k, v in env.items()]
    return "\n".join(lines) + "\n"


def b2d_profile(
    opts: EngineOptions,
    *,
    port: int,
    storage_driver: str | None,
    driver_name: str,
    env: Mapping[str, str],
    cert_dir: str = "/var/lib/boot2docker",
) -> str:
    """boot2docker's ``/var/lib/boot2docker/profile``: its init script builds
    the ``-H``/TLS flags itself from these variables; ``EXTRA_ARGS`` carries
    the rest."""
    flags = extra_flags(opts, driver_name)
    _splittable(flags)
    lines = [
        "EXTRA_ARGS='",
        *(_single_quote_body(line) for line in _flag_lines(flags)),
        "'",
        f"CACERT={cert_dir}/ca.pem",
        f"DOCKER_HOST='-H tcp://0.0.0.0:{port}'",
    ]
    if storage_driver:
        lines.append(f"DOCKER_STORAGE={storage_driver}")
    lines += [
        "DOCKER_TLS=auto",
        f"SERVERKEY={cert_dir}/server-key.pem",
        f"SERVERCERT={cert_dir}/server.pem",
    ]
    lines += [_export_line(k, v) for k, v in env.items()]
    return "\n".join(lines) + "\n"
