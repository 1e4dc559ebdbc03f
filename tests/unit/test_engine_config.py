"""Engine options, proxy settings and rendered daemon configuration.

Expected file contents are written out by hand from Docker Machine 0.16's
templates (libmachine/provision/systemd.go, generic.go) so any change in
rendering shows up as a diff; the shell-sourced files are checked by really
sourcing them with ``sh``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.engine.config import (
    EngineConfigError,
    b2d_profile,
    coreos_dropin,
    daemon_args,
    daemon_env,
    default_storage_driver,
    openrc_conf,
    systemd_dropin,
    sysv_default,
)
from pymachine.engine.options import EngineOptions
from pymachine.engine.proxy import ProxySettings

# What `docker-machine create` writes for a new machine (HostOptions.EngineOptions).
DOCKER_MACHINE_CREATE_JSON = """{
    "ArbitraryFlags": [],
    "Dns": null,
    "GraphDir": "",
    "Env": [],
    "Ipv6": false,
    "InsecureRegistry": [],
    "Labels": [],
    "LogLevel": "",
    "StorageDriver": "",
    "SelinuxEnabled": false,
    "TlsVerify": true,
    "RegistryMirror": [],
    "InstallURL": "https://get.docker.com"
}"""

# A store written by another libmachine user (minikube): nil slices as null.
MINIKUBE_JSON = {
    "ArbitraryFlags": None,
    "Dns": None,
    "GraphDir": "",
    "Env": ["HTTP_PROXY=http://192.168.208.128:808/", "NO_PROXY=localhost,127.0.0.0/8,::1"],
    "Ipv6": False,
    "InsecureRegistry": ["10.96.0.0/12"],
    "Labels": None,
    "LogLevel": "",
    "StorageDriver": "",
    "SelinuxEnabled": False,
    "TlsVerify": False,
    "RegistryMirror": [],
    "InstallURL": "https://get.docker.com",
}

DEFAULT_DROPIN = (
    "[Service]\n"
    "ExecStart=\n"
    "ExecStart=/usr/bin/dockerd -H tcp://0.0.0.0:2376 -H unix:///var/run/docker.sock"
    " --storage-driver overlay2 --tlsverify --tlscacert /etc/docker/ca.pem"
    " --tlscert /etc/docker/server.pem --tlskey /etc/docker/server-key.pem"
    " --label provider=generic\n"
)


def _args(opts: EngineOptions | None = None, **kw) -> list[str]:
    params = {
        "port": 2376,
        "dockerd_path": "/usr/bin/dockerd",
        "storage_driver": "overlay2",
        "driver_name": "generic",
    }
    params.update(kw)
    return daemon_args(opts or EngineOptions(), **params)


# -- EngineOptions ------------------------------------------------------------


def test_default_options_serialise_like_docker_machine_create():
    assert json.dumps(EngineOptions().to_json(), indent=4) == DOCKER_MACHINE_CREATE_JSON


def test_docker_machine_json_round_trips_exactly():
    data = json.loads(DOCKER_MACHINE_CREATE_JSON)
    assert EngineOptions.from_json(data).to_json() == data
    assert list(EngineOptions.from_json(MINIKUBE_JSON).to_json()) == list(MINIKUBE_JSON)
    assert EngineOptions.from_json(MINIKUBE_JSON).to_json() == MINIKUBE_JSON


def test_null_list_that_gains_items_is_written_as_a_list():
    opts = EngineOptions.from_json(MINIKUBE_JSON)
    assert opts.labels == [] and opts.arbitrary_flags == []
    opts.labels.append("env=dev")
    out = opts.to_json()
    assert out["Labels"] == ["env=dev"]
    assert out["ArbitraryFlags"] is None


def test_from_json_tolerates_missing_keys_and_nulls_with_go_zero_values():
    opts = EngineOptions.from_json({"Labels": ["a=b"], "LogLevel": None, "Unknown": 1})
    assert opts.labels == ["a=b"]
    assert opts.log_level == ""
    assert opts.tls_verify is False  # Go's zero value, what docker-machine would load
    assert opts.install_url == ""
    assert opts.install_source == "packages"
    assert EngineOptions.from_json(None).to_json()["Dns"] is None


def test_pymachine_extension_key_round_trips_and_is_ignored_by_default():
    opts = EngineOptions(
        proxy=ProxySettings("http://p:3128", "", "corp"),
        install_source="bundle",
        bundle_path="/tmp/engine.tgz",
    )
    data = json.loads(json.dumps(opts.to_json()))
    assert list(data)[:13] == list(json.loads(DOCKER_MACHINE_CREATE_JSON))
    assert data["Pymachine"] == {
        "Proxy": {"HttpProxy": "http://p:3128", "HttpsProxy": "", "NoProxy": "corp"},
        "InstallSource": "bundle",
        "BundlePath": "/tmp/engine.tgz",
    }
    back = EngineOptions.from_json(data)
    assert back == opts
    assert "Pymachine" not in EngineOptions().to_json()


def test_unknown_install_source_is_rejected():
    with pytest.raises(ValueError, match="install source"):
        EngineOptions(install_source="magic")


# -- daemon arguments ---------------------------------------------------------


def test_default_systemd_dropin_matches_docker_machine_byte_for_byte():
    assert systemd_dropin(_args(), {}) == DEFAULT_DROPIN


def test_all_options_become_flags_in_docker_machine_order():
    opts = EngineOptions(
        labels=["env=dev"],
        insecure_registry=["10.0.0.1:5000"],
        registry_mirror=["https://mirror.local"],
        dns=["1.1.1.1"],
        graph_dir="/data/docker",
        log_level="debug",
        ipv6=True,
        arbitrary_flags=["max-concurrent-downloads=5", "experimental", "--debug"],
    )
    args = _args(opts, dockerd_path="/usr/sbin/dockerd", storage_driver=None, port=2377)
    assert args == [
        "/usr/sbin/dockerd",
        "-H", "tcp://0.0.0.0:2377",
        "-H", "unix:///var/run/docker.sock",
        "--tlsverify",
        "--tlscacert", "/etc/docker/ca.pem",
        "--tlscert", "/etc/docker/server.pem",
        "--tlskey", "/etc/docker/server-key.pem",
        "--label", "env=dev",
        "--label", "provider=generic",
        "--insecure-registry", "10.0.0.1:5000",
        "--registry-mirror", "https://mirror.local",
        "--dns", "1.1.1.1",
        "--data-root", "/data/docker",
        "--log-level", "debug",
        "--ipv6",
        "--max-concurrent-downloads=5",
        "--experimental",
        "--debug",
    ]  # fmt: skip


def test_cert_dir_is_used_for_tls_paths():
    args = _args(cert_dir="/var/lib/boot2docker")
    assert "/var/lib/boot2docker/server-key.pem" in args


@pytest.mark.parametrize(
    ("fs", "driver"),
    [
        ("ext2/ext3", "overlay2"),
        ("xfs", "overlay2"),
        ("btrfs", "btrfs"),
        ("overlayfs", None),
        ("tmpfs", None),
        ("zfs", None),
        ("UNKNOWN (0x794c7630)", None),
        ("", None),
    ],
)
def test_default_storage_driver(fs, driver):
    assert default_storage_driver(fs) == driver


def test_no_storage_driver_flag_when_dockerd_should_choose():
    assert "--storage-driver" not in _args(storage_driver=None)


# -- systemd ------------------------------------------------------------------


def test_systemd_environment_lines_are_quoted_one_per_variable():
    env = {"HTTP_PROXY": "http://p:3128", "MOTD": 'say "hi" 100% \\o/'}
    text = systemd_dropin(_args(), env)
    assert text == DEFAULT_DROPIN + (
        'Environment="HTTP_PROXY=http://p:3128"\n'
        'Environment="MOTD=say \\"hi\\" 100%% \\\\o/"\n'
    )


def test_systemd_execstart_quotes_words_with_spaces_and_escapes_specifiers():
    opts = EngineOptions(labels=["team=a b"], arbitrary_flags=["default-ulimit=nofile=$X%"])
    line = systemd_dropin(_args(opts), {}).splitlines()[2]
    assert line.endswith('--label "team=a b" --label provider=generic "--default-ulimit=nofile=$$X%%"')


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_rendered_dropin(tmp_path: Path):
    """systemd's own parser reports malformed Environment=/ExecStart= lines."""
    opts = EngineOptions(labels=["team=a b"], arbitrary_flags=["log-opt=tag=x%y"])
    env = {"HTTP_PROXY": "http://u:p@proxy:3128", "MOTD": 'say "hi" \\ 50%'}
    body = systemd_dropin(_args(opts, dockerd_path="/bin/true"), env)
    unit = tmp_path / "pmtest.service"
    unit.write_text("[Unit]\nDescription=pymachine test\n" + body)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [ln for ln in proc.stderr.splitlines() if "pmtest.service" in ln]
    assert complaints == []


def test_coreos_dropin_keeps_os_hooks():
    text = coreos_dropin(_args(storage_driver=None), {"A": "1"})
    lines = text.splitlines()
    assert lines[:3] == ["[Service]", "Environment=TMPDIR=/var/tmp", "ExecStart="]
    assert lines[3].endswith(
        "--label provider=generic $DOCKER_OPTS $DOCKER_OPT_BIP $DOCKER_OPT_MTU $DOCKER_OPT_IPMASQ"
    )
    assert lines[4] == 'Environment="A=1"'


def test_bad_environment_names_are_refused():
    with pytest.raises(EngineConfigError):
        systemd_dropin(_args(), {"BAD NAME": "x"})
    with pytest.raises(EngineConfigError):
        sysv_default(_args(), {"X": "two\nlines"})


# -- shell-sourced files --------------------------------------------------------

TRICKY_ENV = {
    "HTTP_PROXY": "http://user:p$w`d@proxy:3128",
    "NO_PROXY": "localhost,127.0.0.1,192.168.99.100",
    "GREETING": 'it\'s "quoted" \\ here',
}
SOURCE_AND_DUMP = (
    '. "$1"; printf "DOCKERD=%s\\n" "${DOCKERD:-}${DOCKERD_BINARY:-}"; '
    'set -f; for a in $DOCKER_OPTS; do printf "ARG=%s\\n" "$a"; done; '
    'for v in HTTP_PROXY NO_PROXY GREETING; do env | grep "^$v=" || true; done'
)


def _source(tmp_path: Path, content: str) -> list[str]:
    f = tmp_path / "docker.conf"
    f.write_text(content)
    proc = subprocess.run(
        ["sh", "-c", SOURCE_AND_DUMP, "sh", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    return proc.stdout.splitlines()


def test_sysv_default_file_layout_matches_docker_machine():
    text = sysv_default(_args(dockerd_path="/usr/sbin/dockerd"), {"HTTP_PROXY": "http://p:3128"})
    assert text == (
        "# Written by pymachine; rewritten on every provision.\n"
        "DOCKERD=/usr/sbin/dockerd\n"
        "DOCKER_OPTS='\n"
        "-H tcp://0.0.0.0:2376\n"
        "-H unix:///var/run/docker.sock\n"
        "--storage-driver overlay2\n"
        "--tlsverify\n"
        "--tlscacert /etc/docker/ca.pem\n"
        "--tlscert /etc/docker/server.pem\n"
        "--tlskey /etc/docker/server-key.pem\n"
        "--label provider=generic\n"
        "'\n"
        'export "HTTP_PROXY=http://p:3128"\n'
    )


def test_sysv_default_sourced_by_sh_gives_options_and_exported_env(tmp_path: Path):
    opts = EngineOptions(labels=["owner=o'brien"], arbitrary_flags=["log-level=debug"])
    args = _args(opts, dockerd_path="/usr/sbin/dockerd")
    out = _source(tmp_path, sysv_default(args, TRICKY_ENV))
    assert out[0] == "DOCKERD=/usr/sbin/dockerd"
    assert [ln[4:] for ln in out if ln.startswith("ARG=")] == args[1:]
    assert [ln for ln in out if not ln.startswith(("ARG=", "DOCKERD="))] == [
        f"{k}={v}" for k, v in TRICKY_ENV.items()
    ]


def test_openrc_conf_sourced_by_sh(tmp_path: Path):
    args = _args(EngineOptions(labels=["a=$HOME"]), dockerd_path="/usr/bin/dockerd")
    text = openrc_conf(args, TRICKY_ENV)
    assert 'DOCKER_OPTS="-H tcp://0.0.0.0:2376 -H unix:///var/run/docker.sock' in text
    out = _source(tmp_path, text)
    assert out[0] == "DOCKERD=/usr/bin/dockerd"
    assert [ln[4:] for ln in out if ln.startswith("ARG=")] == args[1:]
    assert "HTTP_PROXY=http://user:p$w`d@proxy:3128" in out


def test_init_script_files_refuse_words_the_script_would_split():
    with pytest.raises(EngineConfigError, match="whitespace"):
        sysv_default(_args(EngineOptions(labels=["team=a b"])), {})


def test_b2d_profile(tmp_path: Path):
    text = b2d_profile(
        EngineOptions(insecure_registry=["r:5000"]),
        port=2376,
        storage_driver="overlay2",
        driver_name="virtualbox",
        env={"HTTP_PROXY": "http://p:3128"},
    )
    assert text == (
        "EXTRA_ARGS='\n"
        "--label provider=virtualbox\n"
        "--insecure-registry r:5000\n"
        "'\n"
        "CACERT=/var/lib/boot2docker/ca.pem\n"
        "DOCKER_HOST='-H tcp://0.0.0.0:2376'\n"
        "DOCKER_STORAGE=overlay2\n"
        "DOCKER_TLS=auto\n"
        "SERVERKEY=/var/lib/boot2docker/server-key.pem\n"
        "SERVERCERT=/var/lib/boot2docker/server.pem\n"
        'export "HTTP_PROXY=http://p:3128"\n'
    )
    f = tmp_path / "profile"
    f.write_text(text)
    proc = subprocess.run(
        ["sh", "-c", '. "$1"; printf "%s|%s" "$DOCKER_HOST" "$HTTP_PROXY"', "sh", str(f)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert proc.stdout == "-H tcp://0.0.0.0:2376|http://p:3128"


# -- proxy settings -------------------------------------------------------------


def test_proxy_from_engine_env_accepts_either_case_upper_wins():
    p = ProxySettings.from_engine_env(
        ["http_proxy=http://low:1", "HTTP_PROXY=http://up:2", "https_proxy=http://s:3", "OTHER=x",
         "no_proxy=a,b", "junk"]
    )  # fmt: skip
    assert p == ProxySettings("http://up:2", "http://s:3", "a,b")


def test_proxy_from_user_environment_prefers_lower_case_like_curl():
    env = {"HTTPS_PROXY": "http://UP:1", "https_proxy": "http://low:1", "NO_PROXY": "x"}
    assert ProxySettings.from_user_environment(env) == ProxySettings("", "http://low:1", "x")
    assert ProxySettings.from_user_environment({}) == ProxySettings()


def test_proxy_merge_explicit_wins_per_field():
    explicit = ProxySettings(http_proxy="http://explicit:1")
    engine_env = ProxySettings("http://env:1", "http://env:2", "corp")
    assert ProxySettings.merged(explicit, engine_env) == ProxySettings(
        "http://explicit:1", "http://env:2", "corp"
    )
    assert ProxySettings.merged(None, None) == ProxySettings()


def test_no_proxy_hosts_are_added_once():
    p = ProxySettings("http://p:1", "", "localhost, corp.local")
    q = p.with_no_proxy_hosts("192.168.99.100", "LOCALHOST", "127.0.0.1", "", "192.168.99.100")
    assert q.no_proxy == "localhost,corp.local,192.168.99.100,127.0.0.1"
    assert q.with_no_proxy_hosts("127.0.0.1").no_proxy == q.no_proxy


def test_proxy_renderings():
    p = ProxySettings("http://p:3128", "http://s:3129", "localhost,10.0.0.5,.corp,10.0.0.0/8")
    assert p.daemon_env() == {
        "HTTP_PROXY": "http://p:3128", "http_proxy": "http://p:3128",
        "HTTPS_PROXY": "http://s:3129", "https_proxy": "http://s:3129",
        "NO_PROXY": p.no_proxy, "no_proxy": p.no_proxy,
    }  # fmt: skip
    assert p.shell_env() == p.daemon_env()
    assert p.apt_conf() == (
        'Acquire::http::Proxy "http://p:3128";\n'
        'Acquire::https::Proxy "http://s:3129";\n'
        'Acquire::http::Proxy::localhost "DIRECT";\n'
        'Acquire::https::Proxy::localhost "DIRECT";\n'
        'Acquire::http::Proxy::10.0.0.5 "DIRECT";\n'
        'Acquire::https::Proxy::10.0.0.5 "DIRECT";\n'
        'Acquire::http::Proxy::corp "DIRECT";\n'
        'Acquire::https::Proxy::corp "DIRECT";\n'
    )
    assert p.yum_conf_lines() == ["proxy=http://s:3129"]
    assert ProxySettings(http_proxy="http://p:1").yum_conf_lines() == ["proxy=http://p:1"]
    assert p.client_config_proxies() == {
        "httpProxy": "http://p:3128", "httpsProxy": "http://s:3129", "noProxy": p.no_proxy,
    }  # fmt: skip
    assert ProxySettings().daemon_env() == {} and ProxySettings().apt_conf() == ""


def test_effective_proxy_and_daemon_env_from_engine_options():
    opts = EngineOptions(env=["HTTP_PROXY=http://p:3128", "TZ=UTC"])
    proxy = opts.effective_proxy("192.168.99.100", "localhost")
    assert proxy.no_proxy == "192.168.99.100,localhost"
    env = daemon_env(opts, proxy.daemon_env())
    assert env == {
        "HTTP_PROXY": "http://p:3128", "TZ": "UTC", "http_proxy": "http://p:3128",
        "NO_PROXY": "192.168.99.100,localhost", "no_proxy": "192.168.99.100,localhost",
    }  # fmt: skip
    # Without a proxy, NO_PROXY is not invented.
    assert EngineOptions().effective_proxy("1.2.3.4") == ProxySettings()
