"""Engine bundles built from a synthetic Docker static archive: manifest,
reproducibility, tamper detection, and the host-side install transcript."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from pymachine.engine import bundle
from pymachine.machine.cli import main as cli_main
from pymachine.machine.errors import MachineError
from pymachine.machine.runner import CommandResult

from tests.unit.transcript import HOST_CHANGES, RecordingRunner

VERSION = "99.1.0"


def _script(name: str) -> bytes:
    if name == "dockerd":
        out = f"Docker version {VERSION}, build test"
    elif name == "docker":
        out = f"Docker version {VERSION}, build cli"
    else:
        out = f"{name} version 1.0.{len(name)}"
    return f"#!/bin/sh\necho '{out}'\n".encode()


STATIC_NAMES = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker",
                "docker-init", "ctr", "docker-proxy")


def make_static_tgz(path: Path, names=STATIC_NAMES, tweak: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Docker's static archive layout (docker/<binary>), with shell-script binaries."""
    contents = {name: _script(name) for name in names}
    contents.update(tweak or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"docker/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return contents


@pytest.fixture
def static_tgz(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    path = tmp_path / "docker-99.1.0.tgz"
    return path, make_static_tgz(path)


@pytest.fixture
def built(static_tgz, tmp_path: Path) -> bundle.BundleInfo:
    return bundle.build_bundle("static", static_tgz[0], tmp_path / "out" / "b.tar.gz")


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def rewrite(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Copy a bundle, replacing some members' bytes but keeping its manifest."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = change.get(m.name, tin.extractfile(m).read())
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


# -- building -------------------------------------------------------------------


def test_manifest_lists_every_file_with_digest_size_mode(static_tgz, built):
    tgz, contents = static_tgz
    manifest = bundle.read_manifest(built.path)
    assert manifest["format"] == bundle.BUNDLE_FORMAT
    assert manifest["bundle_version"] == bundle.BUNDLE_VERSION
    assert manifest["engine_version"] == VERSION == built.engine_version
    assert manifest["source"] == {"kind": "static", "inputs": [
        {"file": tgz.name, "sha256": hashlib.sha256(tgz.read_bytes()).hexdigest(), "size": tgz.stat().st_size}]}
    files = manifest["files"]
    for name in ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker", "docker-init",
                 "docker-proxy"):
        entry = files[f"bin/{name}"]
        assert entry == {"sha256": hashlib.sha256(contents[name]).hexdigest(),
                         "size": len(contents[name]), "mode": "0755"}
    assert "bin/ctr" not in files  # containerd's debugging CLI is not needed by the engine
    assert {"init/systemd/docker.service", "init/sysv/docker", "init/sysv/docker.default",
            "init/openrc/docker"} <= set(files)
    assert files["init/sysv/docker"]["mode"] == "0755"
    # Every member but the manifest is listed, with the mode it has in the archive.
    tar_members = members(built.path)
    assert set(tar_members) == set(files) | {"manifest.json"}
    for name, entry in files.items():
        assert f"{tar_members[name].mode:04o}" == entry["mode"]
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_two_builds_are_byte_identical(static_tgz, tmp_path):
    a = bundle.build_bundle("static", static_tgz[0], tmp_path / "a.tar.gz")
    b = bundle.build_bundle("static", static_tgz[0], tmp_path / "sub" / "b.tar.gz")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sha256 == b.sha256
    for m in members(a.path).values():
        assert (m.mtime, m.uid, m.gid, m.uname) == (0, 0, 0, "root")
    raw = a.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert raw[3] & 0x08 == 0  # no file name in the gzip header


def test_source_date_epoch_sets_member_mtimes(static_tgz, tmp_path, monkeypatch):
    plain = bundle.build_bundle("static", static_tgz[0], tmp_path / "a.tar.gz")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = bundle.build_bundle("static", static_tgz[0], tmp_path / "b.tar.gz")
    assert {m.mtime for m in members(dated.path).values()} == {1700000000}
    assert plain.sha256 != dated.sha256


def test_default_output_name_has_version_and_arch(static_tgz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = bundle.build_bundle("static", static_tgz[0], None)
    arch = bundle.read_manifest(info.path)["arch"]
    assert info.path == tmp_path / f"pymachine-engine-{VERSION}-{arch}.tar.gz"
    assert arch and "/" not in arch


def test_missing_required_binary_is_named(tmp_path):
    tgz = tmp_path / "docker.tgz"
    make_static_tgz(tgz, names=[n for n in STATIC_NAMES if n != "runc"])
    with pytest.raises(bundle.BundleError, match=r"docker/runc is missing"):
        bundle.build_bundle("static", tgz, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_unknown_engine_version_is_refused(tmp_path):
    tgz = tmp_path / "engine.tgz"  # no version in the name, and dockerd cannot tell
    make_static_tgz(tgz, tweak={"dockerd": b"#!/bin/sh\nexit 2\n"})
    with pytest.raises(bundle.BundleError, match="engine version"):
        bundle.build_bundle("static", tgz, tmp_path / "x.tar.gz")


def test_elf_reader_agrees_with_the_dynamic_loader():
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).is_file() or shutil.which("ldd") is None:
        pytest.skip("needs a dynamically linked dockerd and ldd")
    arch, needed = bundle.elf_info(Path(dockerd).read_bytes())
    loaded = set(re.findall(r"^\s*(\S+\.so[.\d]*)\s", subprocess.run(
        ["ldd", dockerd], capture_output=True, text=True, check=True).stdout, re.MULTILINE))
    assert needed and set(needed) <= loaded
    assert "libc.so.6" in needed
    assert arch == subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    assert bundle.elf_info(b"#!/bin/sh\n") == (None, [])


# -- verifying ------------------------------------------------------------------


def test_verify_accepts_a_good_bundle(built):
    manifest = bundle.verify_bundle(built.path)
    assert manifest["engine_version"] == VERSION


def test_verify_names_a_one_byte_tamper_and_both_digests(built, tmp_path):
    with tarfile.open(built.path, "r:gz") as tar:
        original = tar.extractfile("bin/runc").read()
    tampered = original[:-2] + bytes([original[-2] ^ 1]) + original[-1:]
    bad = tmp_path / "bad.tar.gz"
    rewrite(built.path, bad, {"bin/runc": tampered})
    want = hashlib.sha256(original).hexdigest()
    got = hashlib.sha256(tampered).hexdigest()
    with pytest.raises(MachineError) as err:
        bundle.verify_bundle(bad)
    assert str(err.value) == f"bundle {bad}: bin/runc sha256 mismatch (expected {want}, got {got})"


def test_verify_rejects_unlisted_and_missing_members(built, tmp_path):
    extra = tmp_path / "extra.tar.gz"
    with tarfile.open(built.path, "r:gz") as tin, tarfile.open(extra, "w:gz") as tout:
        for m in tin.getmembers():
            if m.name != "bin/docker-proxy":
                tout.addfile(m, tin.extractfile(m))
        info = tarfile.TarInfo("bin/evil")
        info.size = 3
        tout.addfile(info, io.BytesIO(b"hi\n"))
    with pytest.raises(bundle.BundleError, match=r"bin/evil is not listed in the manifest"):
        bundle.verify_bundle(extra)
    missing = tmp_path / "missing.tar.gz"
    with tarfile.open(built.path, "r:gz") as tin, tarfile.open(missing, "w:gz") as tout:
        for m in tin.getmembers():
            if m.name != "bin/docker-proxy":
                tout.addfile(m, tin.extractfile(m))
    with pytest.raises(bundle.BundleError, match=r"bin/docker-proxy is listed in the manifest but missing"):
        bundle.verify_bundle(missing)


def test_verify_reports_a_corrupt_archive_in_one_line(built, tmp_path):
    raw = bytearray(built.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "corrupt.tar.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(bundle.BundleError) as err:
        bundle.verify_bundle(bad)
    assert str(err.value).startswith(f"bundle {bad}: ") and "\n" not in str(err.value)
    not_bundle = tmp_path / "plain.tar.gz"
    with tarfile.open(not_bundle, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("x"), io.BytesIO(b""))
    with pytest.raises(bundle.BundleError, match=r"no manifest\.json"):
        bundle.read_manifest(not_bundle)


# -- installing -----------------------------------------------------------------


def host_runner(*, digest_override: str | None = None, systemd: bool = True,
                check_fails: bool = False, glibc: str = "glibc 2.36") -> RecordingRunner:
    """A recorder whose `sha256sum FILE` hashes what was really uploaded."""
    # The bundle's own changes on the host; a healthy host completes them silently.
    runner = RecordingRunner(accept=(
        *HOST_CHANGES,
        r"^rm -rf /var/tmp/pymachine-engine\.d && mkdir -m 0700 -p /var/tmp/pymachine-engine\.d"
        r" && tar -xzf /var/tmp/pymachine-engine\.tar\.gz -C /var/tmp/pymachine-engine\.d$",
        r"^cd /var/tmp/pymachine-engine\.d && sha256sum -c -$",
        r"^set -e\n",
        r"^rm -f /var/tmp/pymachine-engine\.tar\.gz$",
        r"^rm -rf /var/tmp/pymachine-engine\.d /var/tmp/pymachine-engine\.tar\.gz$",
    ))

    def respond(command: str) -> CommandResult | None:
        m = re.fullmatch(r"sha256sum (\S+)", command)
        if m:
            data = runner.files[m.group(1)]
            digest = digest_override or hashlib.sha256(data).hexdigest()
            return CommandResult(0, f"{digest}  {m.group(1)}\n", "")
        if command.endswith("sha256sum -c -") and check_fails:
            return CommandResult(1, "bin/dockerd: FAILED\nbin/runc: OK\n",
                                 "sha256sum: WARNING: 1 computed checksum did NOT match\n")
        if command == "test -d /run/systemd/system":
            return CommandResult(0 if systemd else 1, "", "")
        if command.startswith("getconf GNU_LIBC_VERSION"):
            return CommandResult(0, glibc + "\n", "")
        if "openrc-run" in command:
            return CommandResult(1, "", "")
        return None

    runner.responses = respond
    return runner


def test_installer_uploads_checks_on_host_then_installs(built):
    logs: list[str] = []
    install = bundle.installer(built.path, logs.append)
    runner = host_runner()
    install(runner)
    put = runner.calls[runner.index(r"^put /var/tmp/pymachine-engine\.tar\.gz$")]
    assert put.data == built.path.read_bytes() and put.mode == 0o600
    i_sum = runner.index(r"^sha256sum /var/tmp/pymachine-engine\.tar\.gz$")
    i_tar = runner.index(r"tar -xzf /var/tmp/pymachine-engine\.tar\.gz -C /var/tmp/pymachine-engine\.d")
    i_check = runner.index(r"sha256sum -c -$")
    i_install = runner.index(r"mv -f /usr/local/bin/\.dockerd\.pymachine-new /usr/local/bin/dockerd")
    assert runner.index("^put ") < i_sum < i_tar < i_check < i_install
    # The on-host check list is the manifest, member by member.
    manifest = bundle.read_manifest(built.path)
    check = runner.calls[i_check]
    assert check.stdin.decode().splitlines() == [
        f"{e['sha256']}  {m}" for m, e in sorted(manifest["files"].items())]
    script = runner.calls[i_install].target
    assert script.startswith("set -e\n") and runner.calls[i_install].sudo
    for name in ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker", "docker-init",
                 "docker-proxy"):
        # Atomic replace: copy beside the target, chmod, rename over it.
        assert (f"cp /var/tmp/pymachine-engine.d/bin/{name} /usr/local/bin/.{name}.pymachine-new && "
                f"chmod 0755 /usr/local/bin/.{name}.pymachine-new && "
                f"mv -f /usr/local/bin/.{name}.pymachine-new /usr/local/bin/{name}") in script
    assert "/etc/systemd/system/docker.service" in script and "systemctl daemon-reload" in script
    assert "/etc/init.d/docker" not in script
    assert "groupadd --system docker" in script
    assert "ldconfig" not in script  # a static bundle carries no libraries
    assert runner.index(r"^rm -rf /var/tmp/pymachine-engine\.d /var/tmp/pymachine-engine\.tar\.gz") > i_install
    assert not runner.find("systemctl (start|restart|enable)")  # the provisioner does that
    assert any(VERSION in line for line in logs)


def test_installer_without_systemd_installs_the_sysv_script(built):
    runner = host_runner(systemd=False)
    bundle.installer(built.path, lambda _m: None)(runner)
    script = runner.calls[runner.index(r"^set -e")].target
    assert "mv -f /etc/init.d/.docker.pymachine-new /etc/init.d/docker" in script
    assert "chmod 0755 /etc/init.d/.docker.pymachine-new" in script
    # The options file is the user's (and the provisioner's): only created when absent.
    assert "[ -e /etc/default/docker ] || cp /var/tmp/pymachine-engine.d/init/sysv/docker.default " \
           "/etc/default/docker" in script
    assert "docker.service" not in script


def test_remote_checksum_mismatch_installs_nothing(built):
    runner = host_runner(digest_override="0" * 64)
    install = bundle.installer(built.path, lambda _m: None)
    with pytest.raises(MachineError) as err:
        install(runner)
    assert "0" * 64 in str(err.value) and built.sha256 in str(err.value)
    assert not runner.find(r"tar -x|sha256sum -c|/usr/local/bin|set -e|groupadd")
    assert runner.index(r"^rm -f /var/tmp/pymachine-engine\.tar\.gz$") > runner.index(r"^sha256sum ")


def test_failed_member_check_on_host_installs_nothing(built):
    runner = host_runner(check_fails=True)
    with pytest.raises(MachineError, match=r"bin/dockerd: FAILED"):
        bundle.installer(built.path, lambda _m: None)(runner)
    assert not runner.find(r"/usr/local/bin|set -e|groupadd")


def test_installer_refuses_a_tampered_bundle_before_touching_the_host(built, tmp_path):
    bad = tmp_path / "bad.tar.gz"
    rewrite(built.path, bad, {"bin/dockerd": b"#!/bin/sh\necho evil\n"})
    with pytest.raises(MachineError, match=r"bin/dockerd sha256 mismatch"):
        bundle.installer(bad, lambda _m: None)
    with pytest.raises(MachineError, match="no such file"):
        bundle.installer(tmp_path / "absent.tar.gz", lambda _m: None)


def test_install_script_with_libraries_registers_them_last():
    manifest = {"files": {"bin/dockerd": {"mode": "0755"}, "lib/libdevmapper.so.1.02.1": {"mode": "0644"}}}
    script = bundle.install_script(manifest, "openrc")
    assert "mv -f /usr/local/lib/pymachine-engine/.libdevmapper.so.1.02.1.pymachine-new " \
           "/usr/local/lib/pymachine-engine/libdevmapper.so.1.02.1" in script
    # zz-: read after the system's own directories, so the host's libraries win.
    assert "> /etc/ld.so.conf.d/zz-pymachine-engine.conf" in script
    assert script.index("ldconfig") > script.index("zz-pymachine-engine.conf")
    assert "/var/tmp/pymachine-engine.d/init/openrc/docker" in script
    sh = shutil.which("sh")
    assert subprocess.run([sh, "-n", "-c", script], check=False).returncode == 0


def test_init_scripts_are_valid_shell(tmp_path):
    for member, text, _mode in bundle.init_files():
        if text.startswith(("#!/bin/sh", "#!/sbin/openrc-run")):
            path = tmp_path / member.replace("/", "_")
            path.write_text(text)
            proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, f"{member}: {proc.stderr}"


# -- command line ---------------------------------------------------------------


def test_cli_bundle_inspect_verify(static_tgz, tmp_path, capsys):
    out = tmp_path / "cli.tar.gz"
    assert cli_main.main(["engine", "bundle", "--from-static", str(static_tgz[0]), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert captured.out == f"{digest}  {out}\n"
    assert "Writing" in captured.err and f"Built Docker {VERSION} bundle" in captured.err

    assert cli_main.main(["engine", "inspect", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == bundle.read_manifest(out)

    assert cli_main.main(["engine", "verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"bundle {out}: OK")

    bad = tmp_path / "bad.tar.gz"
    rewrite(out, bad, {"bin/containerd": b"x"})
    assert cli_main.main(["engine", "verify", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bundle {bad}: bin/containerd sha256 mismatch (expected ")
    assert f"got {hashlib.sha256(b'x').hexdigest()})" in err


def test_cli_needs_exactly_one_source(static_tgz, tmp_path, capsys):
    assert cli_main.main(["engine", "bundle"]) == 1
    assert "--from-static" in capsys.readouterr().err
    assert cli_main.main(["engine", "bundle", "--from-static", str(static_tgz[0]),
                          "--from-debs", str(tmp_path)]) == 1
    assert "not allowed with" in capsys.readouterr().err
    assert cli_main.main(["engine", "frobnicate"]) == 1
    assert cli_main.main(["engine", "bundle", "--from-debs", str(tmp_path)]) == 1
    assert "no .deb files" in capsys.readouterr().err


@pytest.mark.parametrize("tar_cmd", [["tar"], ["busybox", "tar"]])
def test_host_tar_tools_read_the_archive(built, tmp_path, tar_cmd):
    """The host extracts with its own `tar -xzf` (GNU tar, or busybox on small hosts)."""
    if shutil.which(tar_cmd[0]) is None:
        pytest.skip(f"{tar_cmd[0]} not installed")
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run([*tar_cmd, "-xzf", str(built.path), "-C", str(dest)], check=True)
    manifest = json.loads((dest / "manifest.json").read_text())
    for member, entry in manifest["files"].items():
        data = (dest / member).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert f"{(dest / member).stat().st_mode & 0o7777:04o}" == entry["mode"]
    proc = subprocess.run([str(dest / "bin/dockerd"), "--version"], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == f"Docker version {VERSION}, build test"


# -- glibc ----------------------------------------------------------------------


def test_elf_reader_finds_the_newest_glibc_symbol_version_objdump_sees():
    runc = shutil.which("runc") or "/usr/sbin/runc"
    if not Path(runc).is_file() or shutil.which("objdump") is None:
        pytest.skip("needs a dynamically linked runc and objdump")
    seen = re.findall(r"GLIBC_(\d+)\.(\d+)", subprocess.run(["objdump", "-p", runc], capture_output=True,
                                                             text=True, check=True, timeout=60).stdout)
    assert bundle.glibc_needed(Path(runc).read_bytes()) == max((int(a), int(b)) for a, b in seen)
    assert bundle.glibc_needed(b"#!/bin/sh\n") is None


@pytest.fixture
def glibc_bundle(tmp_path: Path) -> bundle.BundleInfo:
    """A bundle whose runc is this host's real, dynamically linked runc (it needs the host's glibc)."""
    runc = shutil.which("runc") or "/usr/sbin/runc"
    if not Path(runc).is_file():
        pytest.skip("needs a dynamically linked runc")
    src = tmp_path / "docker-99.1.0.tgz"
    make_static_tgz(src, tweak={"runc": Path(runc).read_bytes()})
    return bundle.build_bundle("static", src, tmp_path / "out" / "g.tar.gz")


def test_bundle_records_the_glibc_its_binaries_need(built, glibc_bundle):
    assert bundle.read_manifest(built.path)["glibc"] is None  # static binaries run anywhere
    need = bundle.read_manifest(glibc_bundle.path)["glibc"]
    runc = shutil.which("runc") or "/usr/sbin/runc"
    major, minor = bundle.glibc_needed(Path(runc).read_bytes())
    assert need == f"{major}.{minor}"


@pytest.mark.parametrize("host_says", ["glibc 2.17", "", "musl libc (x86_64)"])
def test_a_host_with_an_older_glibc_is_refused_before_anything_is_uploaded(glibc_bundle, host_says):
    need = bundle.read_manifest(glibc_bundle.path)["glibc"]
    runner = host_runner(glibc=host_says)
    with pytest.raises(bundle.BundleError) as err:
        bundle.installer(glibc_bundle.path, lambda _m: None)(runner)
    message = str(err.value)
    assert "\n" not in message and f"needs glibc {need} or newer" in message and "--from-static" in message
    assert ("glibc 2.17" if host_says == "glibc 2.17" else "no glibc") in message
    assert [c.target for c in runner.calls] == [
        "getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>&1 | head -n 1"
    ]


def test_a_host_with_a_new_enough_glibc_gets_the_bundle(glibc_bundle, built):
    runner = host_runner(glibc="glibc 2.99")
    bundle.installer(glibc_bundle.path, lambda _m: None)(runner)
    assert runner.index(r"^put /var/tmp/pymachine-engine\.tar\.gz$") > 0
    static = host_runner(glibc="")  # a static bundle never asks
    bundle.installer(built.path, lambda _m: None)(static)
    assert not static.find("getconf")
