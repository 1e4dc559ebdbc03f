"""Provisioners checked as command transcripts against a recording runner.

Each test drives the real provisioning sequence; the fake host only answers
the probes (is systemd PID 1, where is dockerd, which filesystem) the way a
real host of that kind does.  The os-release texts are the real files of
those distributions.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pymachine.engine.options import EngineOptions
from pymachine.engine.proxy import ProxySettings
from pymachine.machine.errors import MachineError
from pymachine.machine.runner import CommandResult
from pymachine.provisioners import (
    ProvisionError,
    ProvisionPlan,
    UnknownOSError,
    detect,
    parse_os_release,
    select_provisioner,
)
from pymachine.provisioners.base import (
    SYSTEMD_PROBE,
    Provisioner,
    hosts_with_hostname,
    merge_client_config,
)
from pymachine.provisioners.debian import APT_LOCK_PROBE, APT_PROXY_PATH, apt_lock_probe
from pymachine.provisioners.others import Boot2DockerProvisioner, set_sysconfig_vars
from pymachine.provisioners.redhat import DOCKER_CE_REPO_PATH, set_main_option

try:
    from tests.unit.transcript import FAIL, HOST_CHANGES, OK, Call, RecordingRunner
except ImportError:  # tests/unit collected as a rootdir-less module
    from transcript import FAIL, HOST_CHANGES, OK, Call, RecordingRunner

# -- real /etc/os-release files ------------------------------------------------

DEBIAN_12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

UBUNTU_2204 = """\
PRETTY_NAME="Ubuntu 22.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.3 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"""

ROCKY_9 = """\
NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.3"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.3"
"""

FEDORA_39 = """\
NAME="Fedora Linux"
VERSION="39 (Container Image)"
ID=fedora
VERSION_ID=39
VERSION_CODENAME=""
PLATFORM_ID="platform:f39"
PRETTY_NAME="Fedora Linux 39 (Container Image)"
ANSI_COLOR="0;38;2;60;110;180"
LOGO=fedora-logo-icon
CPE_NAME="cpe:/o:fedoraproject:fedora:39"
DEFAULT_HOSTNAME="fedora"
HOME_URL="https://fedoraproject.org/"
DOCUMENTATION_URL="https://docs.fedoraproject.org/en-US/fedora/f39/system-administrators-guide/"
SUPPORT_URL="https://ask.fedoraproject.org/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Fedora"
REDHAT_BUGZILLA_PRODUCT_VERSION=39
REDHAT_SUPPORT_PRODUCT="Fedora"
REDHAT_SUPPORT_PRODUCT_VERSION=39
SUPPORT_END=2024-11-12
VARIANT="Container Image"
VARIANT_ID=container
"""

ALPINE_319 = """\
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"""

ARCH = """\
NAME="Arch Linux"
PRETTY_NAME="Arch Linux"
ID=arch
BUILD_ID=rolling
ANSI_COLOR="38;2;23;147;209"
HOME_URL="https://archlinux.org/"
DOCUMENTATION_URL="https://wiki.archlinux.org/"
SUPPORT_URL="https://bbs.archlinux.org/"
BUG_REPORT_URL="https://gitlab.archlinux.org/groups/archlinux/-/issues"
PRIVACY_POLICY_URL="https://terms.archlinux.org/docs/privacy-policy/"
LOGO=archlinux-logo
"""

OPENSUSE_LEAP_155 = """\
NAME="openSUSE Leap"
VERSION="15.5"
ID="opensuse-leap"
ID_LIKE="suse opensuse"
VERSION_ID="15.5"
PRETTY_NAME="openSUSE Leap 15.5"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:opensuse:leap:15.5"
BUG_REPORT_URL="https://bugs.opensuse.org"
HOME_URL="https://www.opensuse.org/"
DOCUMENTATION_URL="https://en.opensuse.org/Portal:Leap"
LOGO="distributor-logo-Leap"
"""

FLATCAR = """\
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=3760.2.0
VERSION_ID=3760.2.0
BUILD_ID=2024-01-24-2018
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk 3760.2.0 (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
BUG_REPORT_URL="https://issues.flatcar.org"
FLATCAR_BOARD="amd64-usr"
CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:3760.2.0:*:*:*:*:*:*:*"
"""

# Only the identifying lines of the others.
RHEL_9 = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.3"\n'
CENTOS_7 = 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\n'
ALMA_9 = 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
OL_8 = 'NAME="Oracle Linux Server"\nID="ol"\nID_LIKE="fedora"\nVERSION_ID="8.9"\n'
SLES_15 = 'NAME="SLES"\nVERSION="15-SP5"\nVERSION_ID="15.5"\nID="sles"\nID_LIKE="suse"\n'
MANJARO = 'NAME="Manjaro Linux"\nID=manjaro\nID_LIKE=arch\nPRETTY_NAME="Manjaro Linux"\n'
TUMBLEWEED = 'NAME="openSUSE Tumbleweed"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n'
FEDORA_COREOS = 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=39\nVARIANT_ID=coreos\n'
BOOT2DOCKER = 'NAME=Boot2Docker\nVERSION=19.03.12\nID=boot2docker\nID_LIKE=tcl\n'


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (DEBIAN_12, "debian"),
        (UBUNTU_2204, "ubuntu(systemd)"),
        (ROCKY_9, "rocky"),
        (FEDORA_39, "fedora"),
        (ALPINE_319, "alpine"),
        (ARCH, "arch"),
        (OPENSUSE_LEAP_155, "SUSE"),
        (FLATCAR, "coreOS"),
        (RHEL_9, "redhat"),
        (CENTOS_7, "centos"),
        (ALMA_9, "almalinux"),
        (OL_8, "ol"),
        (SLES_15, "SUSE"),
        (MANJARO, "arch"),
        (TUMBLEWEED, "SUSE"),
        (FEDORA_COREOS, "coreOS"),
        (BOOT2DOCKER, "boot2docker"),
    ],
)
def test_detection_table(text, name):
    assert select_provisioner(parse_os_release(text)).name == name


def test_parse_os_release_strips_quotes_and_ignores_noise():
    info = parse_os_release(
        "# comment\n\nNAME='Single Quoted'\nPRETTY_NAME=\"say \\\"hi\\\" \\$x\"\n"
        "not a pair\nURL=\"https://x/?a=b\"\n  ID=plain  \n"
    )
    assert info == {
        "NAME": "Single Quoted",
        "PRETTY_NAME": 'say "hi" $x',
        "URL": "https://x/?a=b",
        "ID": "plain",
    }
    assert parse_os_release(ROCKY_9)["ID_LIKE"] == "rhel centos fedora"


def test_unknown_os_error_names_the_os():
    with pytest.raises(UnknownOSError) as err:
        select_provisioner(parse_os_release('NAME="Gentoo"\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\n'))
    assert str(err.value) == "OS type not recognized: Gentoo Linux"
    assert isinstance(err.value, MachineError) and err.value.exit_code == 1
    with pytest.raises(UnknownOSError, match=r"^OS type not recognized: nixos$"):
        select_provisioner({"ID": "nixos"})


def test_detect_reads_os_release_over_the_runner():
    runner = RecordingRunner({r"^cat /etc/os-release$": CommandResult(0, ROCKY_9, "")})
    prov = detect(runner)
    assert prov.name == "rocky" and prov.info["VERSION_ID"] == "9.3"


# -- a fake host that answers like a real one -------------------------------------

INSTALL_RE = re.compile(
    r"apt-get .*install .*docker\.io|dnf -y install docker-ce|dnf -y install moby-engine"
    r"|pacman -Sy .*docker|zypper -n in docker|apk add --no-cache docker|curl -sSL"
)


def fake_host(
    os_release: str,
    *,
    systemd: bool = True,
    installed: bool = False,
    dockerd: str = "/usr/bin/dockerd",
    fs: str = "ext2/ext3",
    user: str = "root",
    curl: bool = True,
    extra: dict[str, CommandResult | Callable[[str], CommandResult]] | None = None,
    files: dict[str, bytes] | None = None,
) -> RecordingRunner:
    """A host answering the provisioners' probes from its facts; changes (HOST_CHANGES)
    succeed, and engine starts/stops are tracked so ``is-active`` answers truly; so is
    ``is-enabled``: Debian's docker.io postinst enables the unit, the other distros' packages do not."""
    state = {"installed": installed, "active": False, "enabled": installed}

    def answer(cmd: str) -> CommandResult | None:
        for pattern, answer_ in (extra or {}).items():
            if re.search(pattern, cmd):
                result = answer_(cmd) if callable(answer_) else answer_
                if result.ok and INSTALL_RE.search(cmd):
                    state["installed"] = True
                return result
        if cmd == SYSTEMD_PROBE:
            return OK if systemd else FAIL
        if cmd in ("cat /etc/os-release",):
            return CommandResult(0, os_release, "")
        if "command -v dockerd" in cmd:
            return CommandResult(0, dockerd + "\n", "") if state["installed"] else FAIL
        if cmd.startswith("stat -f"):
            return CommandResult(0, fs + "\n", "")
        if cmd.startswith("id -un"):
            home = "/root" if user == "root" else f"/home/{user}"
            return CommandResult(0, f"{user}\n{home}\n", "")
        if cmd == "command -v curl":
            return CommandResult(0, "/usr/bin/curl\n", "") if curl else FAIL
        if re.fullmatch(r"systemctl is-active --quiet docker\.service", cmd):
            return OK if state["active"] else CommandResult(3, "", "")
        if re.fullmatch(r"systemctl is-enabled --quiet docker\.service", cmd):
            return OK if state["enabled"] else CommandResult(1, "", "")
        if re.fullmatch(r"systemctl enable docker\.service", cmd):
            state["enabled"] = True
        if re.search(r"apt-get .* install .*docker", cmd):
            state["enabled"] = True
        if re.search(
            r"^systemctl (re)?start docker\.service$|^(/etc/init\.d/docker|rc-service docker) (re)?start$", cmd
        ):
            state["active"] = state["installed"]
        elif re.search(r"^systemctl stop docker\.service$|^(/etc/init\.d/docker|rc-service docker) stop", cmd):
            state["active"] = False
        if INSTALL_RE.search(cmd):
            state["installed"] = True
        return None

    base = {"/etc/hosts": b"127.0.0.1\tlocalhost\n127.0.1.1\told-name\n"}
    return RecordingRunner(answer, files={**base, **(files or {})}, accept=HOST_CHANGES)


def make_plan(**kw) -> ProvisionPlan:
    values = {
        "hostname": "pm1",
        "engine": EngineOptions(),
        "driver_name": "generic",
        "ca_pem": b"CA PEM",
        "server_pem": b"SERVER PEM",
        "server_key_pem": b"SERVER KEY",
        "machine_ip": "192.168.99.100",
    }
    values.update(kw)
    return ProvisionPlan(**values)


def provision(os_release: str, plan: ProvisionPlan | None = None, **host_kw):
    runner = fake_host(os_release, **host_kw)
    prov = select_provisioner(parse_os_release(os_release))(
        parse_os_release(os_release), sleep=lambda _s: None
    )
    messages: list[str] = []
    prov.provision(runner, plan or make_plan(), log=messages.append)
    return prov, runner, messages


PROXY = ProxySettings(http_proxy="http://10.0.0.1:3128", https_proxy="http://10.0.0.1:3128")
DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"

# os-release, first package command, proxy file written before it (or None: env only)
SYSTEMD_CASES = {
    "debian": (DEBIAN_12, r"apt-get -q .* update$", APT_PROXY_PATH),
    "ubuntu": (UBUNTU_2204, r"apt-get -q .* update$", APT_PROXY_PATH),
    "rhel": (RHEL_9, r"dnf -y install docker-ce docker-ce-cli containerd\.io", "/etc/dnf/dnf.conf"),
    "centos": (CENTOS_7, r"dnf -y install docker-ce ", "/etc/dnf/dnf.conf"),
    "rocky": (ROCKY_9, r"dnf -y install docker-ce ", "/etc/dnf/dnf.conf"),
    "alma": (ALMA_9, r"dnf -y install docker-ce ", "/etc/dnf/dnf.conf"),
    "ol": (OL_8, r"dnf -y install docker-ce ", "/etc/dnf/dnf.conf"),
    "fedora": (FEDORA_39, r"dnf -y install moby-engine; else yum", "/etc/dnf/dnf.conf"),
    "arch": (ARCH, r"^pacman -Sy --noconfirm --noprogressbar --needed docker$", None),
    "suse": (OPENSUSE_LEAP_155, r"^zypper -n in docker$", "/etc/sysconfig/proxy"),
}


@pytest.mark.parametrize("case", sorted(SYSTEMD_CASES))
def test_systemd_transcript(case):
    os_release, pkg_re, proxy_file = SYSTEMD_CASES[case]
    prov, r, messages = provision(
        os_release, make_plan(proxy=PROXY), extra={r"^command -v dnf$": OK}
    )
    assert prov.init_system == "systemd"
    pkg = r.index(pkg_re)
    pkg_call = r.calls[pkg]
    assert pkg_call.sudo and pkg_call.env and pkg_call.env["http_proxy"] == PROXY.http_proxy
    if proxy_file:
        assert r.index(f"^put {re.escape(proxy_file)}$") < pkg
        assert "10.0.0.1:3128" in r.put_text(proxy_file)
    # The socket is stopped and disabled before the new config is written.
    socket = r.index(r"^systemctl disable --now docker\.socket$")
    dropin = r.index(f"^put {DROPIN}$")
    reload_ = r.index(r"^systemctl daemon-reload$")
    restart = r.index(r"^systemctl restart docker\.service$")
    assert pkg < socket < dropin < reload_ < restart
    assert len(r.find(r"systemctl restart")) == 1
    # Enabled at boot afterwards, and only where the package did not already (update-rc.d is slow).
    enabled_by_package = r.find(r"apt-get .* install")
    assert r.index(r"^systemctl is-enabled --quiet docker\.service$") > restart
    assert bool(r.find(r"^systemctl enable docker\.service$")) == (not enabled_by_package)
    text = r.put_text(DROPIN)
    assert "ExecStart=/usr/bin/dockerd -H tcp://0.0.0.0:2376" in text
    assert 'Environment="NO_PROXY=192.168.99.100,localhost,127.0.0.1"' in text
    assert messages == [
        "Installing Docker...",
        "Copying certs to the remote machine...",
        "Setting Docker configuration on the remote daemon...",
    ]


def test_debian_systemd_full_transcript():
    _prov, r, _ = provision(DEBIAN_12, dockerd="/usr/sbin/dockerd")
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=30"
    apt += " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
    assert r.transcript == [
        SYSTEMD_PROBE,
        "hostname pm1 && printf '%s\\n' pm1 > /etc/hostname",
        "cat /etc/hosts",
        "cat > /etc/hosts",
        f"rm -f {APT_PROXY_PATH}",
        r.transcript[5],  # command -v dockerd (not installed yet)
        f"{apt} update",
        f"{apt} install -y --no-install-recommends docker.io ca-certificates",
        r.transcript[8],  # command -v dockerd
        "stat -f -c %T /var/lib/docker 2>/dev/null || stat -f -c %T /var/lib",
        "get /etc/docker/ca.pem",
        "put /etc/docker/ca.pem",
        "get /etc/docker/server.pem",
        "put /etc/docker/server.pem",
        "get /etc/docker/server-key.pem",
        "put /etc/docker/server-key.pem",
        f"get {DROPIN}",
        "systemctl disable --now docker.socket",
        "systemctl stop docker.service",
        f"put {DROPIN}",
        "systemctl daemon-reload",
        "systemctl restart docker.service",
        "systemctl is-enabled --quiet docker.service",  # docker.io's postinst enabled it: no enable
    ]
    assert "command -v dockerd" in r.transcript[5] and "command -v dockerd" in r.transcript[8]
    assert r.put_text(DROPIN) == (
        "[Service]\nExecStart=\n"
        "ExecStart=/usr/sbin/dockerd -H tcp://0.0.0.0:2376 -H unix:///var/run/docker.sock"
        " --storage-driver overlay2 --tlsverify --tlscacert /etc/docker/ca.pem"
        " --tlscert /etc/docker/server.pem --tlskey /etc/docker/server-key.pem"
        " --label provider=generic\n"
    )
    assert r.files["/etc/hosts"] == b"127.0.0.1\tlocalhost\n127.0.1.1 pm1\n"
    assert all(c.sudo for c in r.calls if c.kind == "put")


@pytest.mark.parametrize("os_release", [DEBIAN_12, UBUNTU_2204])
def test_debian_without_systemd_uses_the_init_script_and_never_systemctl(os_release):
    prov, r, _ = provision(
        os_release, make_plan(proxy=PROXY), systemd=False, dockerd="/usr/sbin/dockerd"
    )
    assert prov.init_system == "sysv"
    assert not [c for c in r.commands if "systemctl" in c]
    assert r.index(f"^put {APT_PROXY_PATH}$") < r.index(r"apt-get .* update$")
    stop = r.index(r"^/etc/init\.d/docker stop$")
    conf = r.index(r"^put /etc/default/docker$")
    start = r.index(r"^/etc/init\.d/docker start$")
    assert stop < conf < start
    text = r.put_text("/etc/default/docker")
    assert "DOCKERD=/usr/sbin/dockerd\n" in text
    assert 'export "HTTP_PROXY=http://10.0.0.1:3128"' in text
    assert next(c for c in r.calls if c.target == "/etc/default/docker" and c.kind == "put").mode == 0o600


def test_alpine_uses_openrc_and_apk():
    prov, r, _ = provision(ALPINE_319, make_plan(proxy=PROXY), systemd=False)
    assert prov.init_system == "openrc"
    assert not [c for c in r.commands if "systemctl" in c]
    apk = r.calls[r.index(r"^apk add --no-cache docker$")]
    assert apk.env and apk.env["https_proxy"] == PROXY.https_proxy
    conf = r.index(r"^put /etc/conf\.d/docker$")
    assert r.index(r"^rc-service docker stop$") < conf < r.index(r"^rc-service docker restart$")
    assert r.index(r"^rc-update add docker default$") > conf
    assert 'DOCKER_OPTS="-H tcp://0.0.0.0:2376' in r.put_text("/etc/conf.d/docker")


def test_flatcar_uses_preinstalled_engine_and_coreos_dropin():
    prov, r, messages = provision(FLATCAR, installed=True)
    assert prov.name == "coreOS"
    assert not r.find(r"apt-get|dnf|yum|pacman|zypper|apk|curl")
    assert r.index(r"^hostnamectl set-hostname pm1$") < r.index(f"^put {DROPIN}$")
    text = r.put_text(DROPIN)
    assert "Environment=TMPDIR=/var/tmp" in text and "$DOCKER_OPT_BIP" in text
    assert r.index(r"docker\.socket") < r.index(f"^put {DROPIN}$")
    assert "Installing Docker..." not in messages


def test_flatcar_without_dockerd_fails_at_find_dockerd():
    with pytest.raises(ProvisionError) as err:
        provision(FLATCAR, installed=False)
    assert err.value.step == "find_dockerd"


def test_redhat_family_writes_docker_ce_repo_and_needs_systemd():
    _prov, r, _ = provision(ROCKY_9, extra={r"^command -v dnf$": OK})
    repo = r.put_text(DOCKER_CE_REPO_PATH)
    assert "baseurl=https://download.docker.com/linux/centos/$releasever/$basearch/stable" in repo
    assert r.index(f"^put {DOCKER_CE_REPO_PATH}$") < r.index(r"dnf -y install docker-ce")
    _prov, r, _ = provision(RHEL_9)
    assert "download.docker.com/linux/rhel/" in r.put_text(DOCKER_CE_REPO_PATH)
    _prov, r, _ = provision(FEDORA_39)
    assert not r.find(re.escape(DOCKER_CE_REPO_PATH))
    with pytest.raises(ProvisionError) as err:
        provision(ROCKY_9, systemd=False)
    assert err.value.step == "detect_init"
    assert "without systemd" in str(err.value)


def test_yum_proxy_goes_into_yum_conf_main_section_when_no_dnf():
    files = {"/etc/yum.conf": b"[main]\ngpgcheck=1\nproxy=http://old:1\n\n[extra]\nproxy=keep\n"}
    _prov, r, _ = provision(
        CENTOS_7, make_plan(proxy=PROXY), extra={r"^command -v dnf$": FAIL}, files=files
    )
    assert r.put_text("/etc/yum.conf") == (
        "[main]\ngpgcheck=1\nproxy=http://10.0.0.1:3128\n\n[extra]\nproxy=keep\n"
    )


def test_sles_registers_the_containers_module_before_installing():
    _prov, r, _ = provision(SLES_15)
    assert r.index(r"^SUSEConnect -p sle-module-containers/15\.5/") < r.index(r"^zypper -n in docker$")


def test_dpkg_lock_is_waited_for_boundedly():
    """apt fails while the lock is held (probe says so), then succeeds."""
    attempts = {"n": 0}

    def apt_update(_cmd: str) -> CommandResult:
        attempts["n"] += 1
        return CommandResult(100, "", "E: Sperre konnte nicht") if attempts["n"] < 3 else OK

    sleeps: list[float] = []
    runner = fake_host(
        DEBIAN_12, extra={r"apt-get .* update$": apt_update, re.escape(APT_LOCK_PROBE): OK}
    )
    prov = select_provisioner({"ID": "debian"})({"ID": "debian"}, sleep=sleeps.append)
    prov.provision(runner, make_plan())
    assert attempts["n"] == 3 and sleeps == [5.0, 5.0]
    assert len(runner.find(re.escape(APT_LOCK_PROBE))) == 2

    # A lock that is never released gives up after lock_retries waits.
    runner = fake_host(
        DEBIAN_12, extra={r"apt-get .* update$": CommandResult(100, "", ""), "fuser": OK}
    )
    prov = select_provisioner({"ID": "debian"})({"ID": "debian"}, sleep=sleeps.append, lock_retries=3)
    with pytest.raises(ProvisionError) as err:
        prov.provision(runner, make_plan())
    assert err.value.step == "install_engine"
    assert len(runner.find(r"apt-get .* update$")) == 4


def test_package_failure_without_lock_fails_at_once_naming_the_step():
    runner = fake_host(
        DEBIAN_12,
        extra={r"apt-get .* install": CommandResult(100, "", "E: Unable to locate package"),
               re.escape(APT_LOCK_PROBE): FAIL},
    )  # fmt: skip
    prov = select_provisioner({"ID": "debian"})({"ID": "debian"}, sleep=lambda _s: None)
    with pytest.raises(ProvisionError) as err:
        prov.provision(runner, make_plan())
    assert err.value.step == "install_engine"
    assert len(runner.find(r"apt-get .* install")) == 1
    assert "\n" not in str(err.value) and "Unable to locate package" in str(err.value)


def test_zypper_lock_exit_code_is_retried():
    results = iter([CommandResult(7, "", ""), OK])
    _prov, r, _ = provision(OPENSUSE_LEAP_155, extra={r"^zypper -n in docker$": lambda _c: next(results)})
    assert len(r.find(r"^zypper -n in docker$")) == 2


def test_reprovisioning_an_installed_host_skips_install_and_restarts_once():
    runner = fake_host(DEBIAN_12, installed=True, dockerd="/usr/sbin/dockerd")
    prov = select_provisioner({"ID": "debian"})({"ID": "debian"})
    for _ in range(2):
        prov.provision(runner, make_plan())
    assert not runner.find(r"apt-get")
    assert len(runner.find(r"^systemctl restart docker\.service$")) == 2  # once per run
    assert len(runner.find(f"^put {DROPIN}$")) == 2
    # /etc/hosts was already right the second time: not rewritten again.
    assert len(runner.find(r"^cat > /etc/hosts$")) == 1


def test_install_sources():
    url = "https://get.docker.com"
    _p, r, _ = provision(DEBIAN_12, make_plan(install_source="script"))
    assert f"if ! type docker; then curl -sSL {url} | sh -; fi" in r.commands
    assert not r.find(r"docker\.io")

    called = []
    _p, r, _ = provision(
        DEBIAN_12,
        make_plan(install_source="bundle", install_bundle=called.append),
        extra={r"command -v dockerd": lambda _c: CommandResult(0, "/usr/bin/dockerd", "")
               if called else FAIL},
    )  # fmt: skip
    assert called == [r] and not r.find(r"apt-get")

    with pytest.raises(ProvisionError) as err:
        provision(DEBIAN_12, make_plan(install_source="bundle"))
    assert err.value.step == "install_engine" and "bundle" in str(err.value)

    _p, r, messages = provision(DEBIAN_12, make_plan(install_source="preinstalled"), installed=True)
    assert "Installing Docker..." not in messages and not r.find(r"apt-get")


def test_script_source_installs_curl_first_when_missing():
    _p, r, _ = provision(DEBIAN_12, make_plan(install_source="script"), extra={"^command -v curl$": FAIL})
    assert r.index(r"install -y --no-install-recommends curl$") < r.index(r"curl -sSL")


def test_storage_driver_choice():
    _p, r, _ = provision(DEBIAN_12, fs="overlayfs")
    assert "--storage-driver" not in r.put_text(DROPIN)
    _p, r, _ = provision(DEBIAN_12, fs="btrfs")
    assert "--storage-driver btrfs" in r.put_text(DROPIN)
    _p, r, _ = provision(DEBIAN_12, make_plan(engine=EngineOptions(storage_driver="vfs")), fs="btrfs")
    assert "--storage-driver vfs" in r.put_text(DROPIN) and not r.find(r"^stat -f")


def test_certificates_are_written_with_private_key_0600():
    _p, r, _ = provision(DEBIAN_12)
    modes = {c.target: c.mode for c in r.calls if c.kind == "put" and c.target.startswith("/etc/docker/")}
    assert modes == {
        "/etc/docker/ca.pem": 0o644,
        "/etc/docker/server.pem": 0o644,
        "/etc/docker/server-key.pem": 0o600,
    }
    assert r.files["/etc/docker/server-key.pem"] == b"SERVER KEY"


def test_client_proxy_config_for_root_and_the_ssh_user():
    existing = json.dumps({"auths": {"r.local": {"auth": "eA=="}}, "proxies": {"other": {}}})
    _p, r, _ = provision(
        UBUNTU_2204,
        make_plan(proxy=PROXY),
        user="ubuntu",
        files={"/home/ubuntu/.docker/config.json": existing.encode()},
    )
    root = json.loads(r.put_text("/root/.docker/config.json"))
    user = json.loads(r.put_text("/home/ubuntu/.docker/config.json"))
    expected = {
        "httpProxy": "http://10.0.0.1:3128",
        "httpsProxy": "http://10.0.0.1:3128",
        "noProxy": "192.168.99.100,localhost,127.0.0.1",
    }
    assert root == {"proxies": {"default": expected}}
    assert user["auths"] == {"r.local": {"auth": "eA=="}}
    assert user["proxies"] == {"other": {}, "default": expected}
    chown = r.index(r"^chown ubuntu: /home/ubuntu/\.docker /home/ubuntu/\.docker/config\.json$")
    assert chown > r.index(r"^put /home/ubuntu/\.docker/config\.json$")
    # No proxy: no client config is touched.
    _p, r, _ = provision(UBUNTU_2204)
    assert not r.find(r"\.docker/config\.json")


def test_engine_env_proxy_reaches_apt_and_daemon():
    engine = EngineOptions(env=["HTTP_PROXY=http://p:3128"])
    _p, r, _ = provision(DEBIAN_12, make_plan(engine=engine))
    assert 'Acquire::http::Proxy "http://p:3128";' in r.put_text(APT_PROXY_PATH)
    dropin = r.put_text(DROPIN)
    assert 'Environment="HTTP_PROXY=http://p:3128"' in dropin
    assert 'Environment="no_proxy=192.168.99.100,localhost,127.0.0.1"' in dropin


def test_failures_are_wrapped_with_the_step_name():
    with pytest.raises(ProvisionError) as err:
        provision(DEBIAN_12, extra={r"^systemctl restart": CommandResult(1, "", "Job failed.\n")})
    assert err.value.step == "restart_engine"
    assert str(err.value).startswith("Error provisioning the machine (step restart_engine): ")
    with pytest.raises(ProvisionError) as err:
        provision(DEBIAN_12, make_plan(hostname="bad name; rm -rf /"))
    assert err.value.step == "set_hostname"

    def boom() -> None:
        raise TimeoutError("engine did not answer on 192.168.99.100:2376")

    with pytest.raises(ProvisionError) as err:
        provision(DEBIAN_12, make_plan(wait_for_engine=boom))
    assert err.value.step == "wait_for_engine"


@pytest.mark.parametrize(
    ("os_release", "pattern"),
    [
        (
            DEBIAN_12,
            r"apt-get .* update && .* install -y --only-upgrade \$\(dpkg-query .* docker\.io docker-ce .*/ installed /",
        ),
        (ROCKY_9, r"dnf -y upgrade docker-ce docker-ce-cli containerd\.io; else yum -y update"),
        (FEDORA_39, r"dnf -y upgrade moby-engine;"),
        (ARCH, r"^pacman -Sy --noconfirm --noprogressbar docker$"),
        (OPENSUSE_LEAP_155, r"^zypper -n up docker$"),
        (ALPINE_319, r"^apk add --no-cache --upgrade docker$"),
        (FLATCAR, None),
        (BOOT2DOCKER, None),
    ],
)
def test_packages_upgrade(os_release, pattern):
    info = parse_os_release(os_release)
    command = select_provisioner(info)(info).packages_upgrade()
    if pattern is None:
        assert command is None
    else:
        assert re.search(pattern, command), command


def test_boot2docker_profile():
    runner = fake_host(BOOT2DOCKER, installed=True)
    prov = Boot2DockerProvisioner(parse_os_release(BOOT2DOCKER))
    prov.provision(runner, make_plan(driver_name="virtualbox"))
    assert runner.put_text("/var/lib/boot2docker/server-key.pem") == "SERVER KEY"
    assert "DOCKER_STORAGE=overlay2" in runner.put_text("/var/lib/boot2docker/profile")
    assert runner.commands[-1] == "/etc/init.d/docker restart"
    assert not [c for c in runner.commands if "systemctl" in c]


# -- pure helpers -----------------------------------------------------------------


def test_hosts_with_hostname():
    assert hosts_with_hostname("127.0.0.1 localhost\n", "pm1") == "127.0.0.1 localhost\n127.0.1.1 pm1\n"
    assert hosts_with_hostname("127.0.1.1\tx y\n::1 ip6\n", "pm1") == "127.0.1.1 pm1\n::1 ip6\n"
    assert hosts_with_hostname("", "pm1") == "127.0.1.1 pm1\n"


def test_merge_client_config_leaves_broken_files_alone():
    assert merge_client_config("{not json", PROXY) is None
    assert merge_client_config("[]", PROXY) is None
    assert json.loads(merge_client_config("", PROXY))["proxies"]["default"]["httpProxy"]


def test_ini_and_sysconfig_editing():
    assert set_main_option("", "proxy", "http://p:1") == "[main]\nproxy=http://p:1\n"
    assert set_main_option("[main]\ngpgcheck=1\n", "proxy", "u") == "[main]\nproxy=u\ngpgcheck=1\n"
    text = 'PROXY_ENABLED="no"\n# HTTP_PROXY comment\nHTTP_PROXY=""\n'
    assert set_sysconfig_vars(text, {"PROXY_ENABLED": "yes", "HTTP_PROXY": "h", "NO_PROXY": "n"}) == (
        'PROXY_ENABLED="yes"\n# HTTP_PROXY comment\nHTTP_PROXY="h"\nNO_PROXY="n"\n'
    )


# -- the probe commands, run by a real shell ------------------------------------------


def _sh(command: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": path or os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, env=env, check=False
    )


@pytest.mark.parametrize("with_fuser", [True, False])
def test_apt_lock_probe_sees_a_real_fcntl_lock(tmp_path: Path, with_fuser: bool):
    lock = tmp_path / "lock-frontend"
    lock.touch()
    probe = apt_lock_probe([str(tmp_path / "missing"), str(lock)])
    path = None
    if not with_fuser:  # a PATH without fuser forces the /proc/locks branch
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for tool in ("stat", "grep"):
            (bindir / tool).symlink_to(shutil.which(tool))
        path = str(bindir)
    elif shutil.which("fuser") is None:
        pytest.skip("fuser not installed")
    assert _sh(probe, path).returncode == 1
    with open(lock, "r+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _sh(probe, path).returncode == 0
    assert _sh(probe, path).returncode == 1


class LocalShell(RecordingRunner):
    """Runs read-only probe commands in a real local shell."""

    def run(self, command: str, **kw) -> CommandResult:
        self.calls.append(Call("run", command, sudo=bool(kw.get("sudo")), check=False))
        proc = _sh(command, "/usr/bin:/bin")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.skipif(not Path("/usr/sbin/dockerd").exists(), reason="needs Debian's docker.io")
def test_find_dockerd_finds_sbin_dockerd_with_a_user_path():
    """Debian's docker.io installs /usr/sbin/dockerd, outside a normal user's PATH."""
    assert Provisioner().find_dockerd(LocalShell()) == "/usr/sbin/dockerd"


def test_systemd_probe_matches_this_machine():
    prov = select_provisioner({"ID": "debian"})({"ID": "debian"})
    expected = "systemd" if Path("/run/systemd/system").is_dir() else "sysv"
    assert prov.detect_init(LocalShell()) == expected


def test_reprovisioning_an_unchanged_host_rewrites_and_restarts_nothing():
    """Second run with the same plan: certs and config compare equal, engine up: no restart."""
    plan = make_plan()
    prov, r, _ = provision(DEBIAN_12, plan, dockerd="/usr/sbin/dockerd")
    again = type(prov)(prov.info, sleep=lambda _s: None)
    r.calls.clear()
    again.provision(r, plan)
    puts = [c.target for c in r.calls if c.kind == "put"]
    assert "/etc/docker/server.pem" not in puts and DROPIN not in puts
    assert not any("systemctl restart" in t or "systemctl stop" in t for t in r.transcript)
    assert "systemctl is-active --quiet docker.service" in r.transcript


def test_an_unchanged_engine_still_starting_is_joined_not_restarted():
    """A seeded first boot: sshd answers while docker.service is still starting with the
    seed's files.  Nothing differs, so provisioning joins that start (``systemctl start``
    waits for the running job) instead of restarting an engine that never finished starting."""
    plan = make_plan()
    prov, r, _ = provision(DEBIAN_12, plan, dockerd="/usr/sbin/dockerd")
    r.run("systemctl stop docker.service", sudo=True)  # the fake's engine: not active yet
    again = type(prov)(prov.info, sleep=lambda _s: None)
    r.calls.clear()
    again.provision(r, plan)
    assert not again.changed
    assert r.find(r"^systemctl start docker\.service$")
    assert not any(re.search(r"systemctl (restart|stop)|disable --now", t) for t in r.transcript)
    assert r.run("systemctl is-active --quiet docker.service", check=False).ok  # and it ends up running


def test_the_recording_runner_is_strict():
    """An unexpected command fails the test even where the code would treat it as a failed command."""
    from pymachine.machine.errors import CommandError

    runner = RecordingRunner({r"^uname -m$": CommandResult(0, "x86_64\n", "")})
    assert runner.run("uname -m").stdout == "x86_64\n"
    with pytest.raises(AssertionError, match="unexpected command"):
        runner.run("rm -rf /", check=False)
    try:
        runner.run("reboot")
    except CommandError:  # what provisioning code catches: must not swallow the mismatch
        pytest.fail("an unexpected command must not look like a failed command")
    except AssertionError:
        pass
    assert runner.unexpected == ["rm -rf /", "reboot"]
    assert fake_host(DEBIAN_12).run("systemctl restart docker.service").ok  # a listed host change
