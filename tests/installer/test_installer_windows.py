"""Windows NSIS installer from stand-in components: contents, 64-bit PE, reproducible, signed."""

from __future__ import annotations

import functools
import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from pymachine.engine import images
from pymachine.installer.fetch import IntegrityError
from pymachine.installer.lock import Lock
from pymachine.installer.template import render
from pymachine.installer.windows import build_exe
from pymachine.machine.errors import MachineError
from standins import current_recipe, image_filename, packed_image

pytest_plugins = ["standins"]  # fixtures (a conftest.py here would shadow tests/conftest.py)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("makensis") or not shutil.which("7z"), reason="needs nsis and 7z"),
]

EPOCH = 1700000000


def _pe_machine(data: bytes) -> tuple[int, int]:
    """(COFF machine, optional-header magic): 0x8664 and 0x20b mean a PE32+ x86-64 image."""
    assert data[:2] == b"MZ"
    off = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[off:off + 4] == b"PE\0\0"
    machine = struct.unpack_from("<H", data, off + 4)[0]
    magic = struct.unpack_from("<H", data, off + 24)[0]
    return machine, magic


def _listing(exe: Path) -> tuple[str, list[str]]:
    out = subprocess.run(["7z", "l", "-ba", "-slt", str(exe)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    names = [line.split(" = ", 1)[1] for line in out.splitlines() if line.startswith("Path = ")]
    head = subprocess.run(["7z", "l", str(exe)], capture_output=True, text=True, timeout=60, check=True).stdout
    return head, names


@pytest.fixture
def comps(standin_lock, src_snapshot):
    path, www, cache = standin_lock
    return Lock.load(path).components("windows"), www, cache, functools.partial(build_exe, source=src_snapshot)


def test_exe_lists_components_is_64bit_and_reproducible(comps, tmp_path):
    components, _www, cache, build = comps
    a = build(tmp_path / "a", components, cache=cache, epoch=EPOCH)
    b = build(tmp_path / "b", components, cache=cache, epoch=EPOCH)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert _pe_machine(a.read_bytes()) == (0x8664, 0x20B)

    head, names = _listing(a)
    assert "Type = Nsis" in head and "SubType = NSIS-3 Unicode 64-bit" in head
    for expected in (
        "bin/docker.exe",
        "cli-plugins/docker-compose.exe",
        "bin/docker-compose.cmd",
        "bin/pymachine.cmd",
        "bin/pymachine-quickstart.cmd",
        "python/python.exe",
        "python/python311._pth",
        "lib/pymachine/machine/cli/main.py",
        "lib/pymachine/machine/cli/quickstart_cmd.py",
        "lib/pymachine/machine/quickstart.py",
        "$PLUGINSDIR/virtualbox.exe",
        "uninstall.exe",
        *(
            f"$PROFILE/.docker/machine/cache/images/{current_recipe()}/{name}"
            for name in ("manifest.json", "disk.qcow2", "disk.vdi", "vmlinuz", "initrd.img", "SHA256SUMS")
        ),
    ):
        assert expected in names, f"{expected} missing from {names}"
    assert not [n for n in names if "boot2docker" in n]

    out = tmp_path / "x"
    subprocess.run(["7z", "x", "-y", f"-o{out}", str(a)], capture_output=True, timeout=60, check=True)
    assert (out / "bin" / "docker.exe").read_bytes().startswith(b"MZ")
    assert (out / "python" / "python311._pth").read_text().splitlines()[-1] == "..\\lib"
    assert "-m pymachine quickstart" in (out / "bin" / "pymachine-quickstart.cmd").read_text()
    assert (out / "bin" / "docker-compose.cmd").read_bytes() == b'@"%~dp0..\\cli-plugins\\docker-compose.exe" %*\r\n'
    assert (out / "cli-plugins" / "docker-compose.exe").read_bytes().startswith(b"MZ")
    assert _pe_machine((out / "uninstall.exe").read_bytes()) == (0x8664, 0x20B)
    # the seeded image is where pymachine's default store (%USERPROFILE%\.docker\machine) finds it
    seeded = images.find_image(out / "$PROFILE" / ".docker" / "machine" / "cache" / "images")
    assert seeded is not None and seeded.exported("vdi").is_file()
    script = _nsis_script(components, cache, tmp_path / "script")
    for name in ("disk.vdi", "disk.qcow2"):  # the uninstaller removes exactly the seeded files
        assert f'Delete "$PROFILE\\.docker\\machine\\cache\\images\\{current_recipe()}\\{name}"' in script
    assert f'RMDir "$PROFILE\\.docker\\machine\\cache\\images\\{current_recipe()}"' in script
    assert 'RMDir /r "$PROFILE\\.docker\\machine\\cache' not in script
    # docker compose: registered in the user's Docker config on install, unregistered on uninstall
    install, uninstall = script.split('Section "Uninstall"')
    assert ('-m pymachine.installer cli-plugins "$INSTDIR\\cli-plugins"' in install
            and "--remove" not in install)
    assert '-m pymachine.installer cli-plugins --remove "$INSTDIR\\cli-plugins"' in uninstall
    assert uninstall.index("cli-plugins --remove") < uninstall.index('Delete "$PROFILE')  # before any file goes


def _nsis_script(components, cache, tmp_path):
    """The .nsi the build renders, for a tree staged from ``components``."""
    from pymachine.installer.stage import stage
    from pymachine.installer.windows import render_script

    root = tmp_path / "root"
    stage(components, root / "staged", cache)
    (root / "core").mkdir(parents=True)
    (root / "staged" / "cache").rename(root / "cache")
    return render_script(root, tmp_path / "x.exe", components, "0.1.0")


def test_windows_build_refuses_an_image_of_another_pymachine(comps, http_root, tmp_path):
    components, www, cache, build = comps
    old = packed_image("00000000000000aa")
    (www / image_filename("00000000000000aa")).write_bytes(old)
    image = next(c for c in components if c.name == "vm-image")
    image.url = image.url.replace(image_filename(), image_filename("00000000000000aa"))
    image.size, image.sha256 = len(old), hashlib.sha256(old).hexdigest()
    with pytest.raises(MachineError, match=f"recipe 00000000000000aa but the pymachine being shipped .* builds recipe "
                                           f"{current_recipe()}"):
        build(tmp_path / "out", components, cache=cache, epoch=EPOCH)
    assert not list((tmp_path / "out").glob("*.exe"))


def test_exe_without_virtualbox_has_no_virtualbox_section(comps, tmp_path):
    components, _www, cache, build = comps
    exe = build(tmp_path, [c for c in components if c.name != "virtualbox"], cache=cache, epoch=EPOCH)
    _head, names = _listing(exe)
    assert "$PLUGINSDIR/virtualbox.exe" not in names and "bin/docker.exe" in names


def test_tampered_component_stops_the_windows_build(comps, tmp_path):
    components, www, cache, build = comps
    comp = next(c for c in components if c.name == "docker-cli")
    data = bytearray((www / comp.filename).read_bytes())
    data[len(data) // 2] ^= 0x20
    (www / comp.filename).write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as exc:
        build(tmp_path / "out", components, cache=cache, epoch=EPOCH)
    msg = str(exc.value)
    assert "'docker-cli'" in msg and comp.sha256 in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    assert not list((tmp_path / "out").glob("*.exe"))


@pytest.mark.skipif(not shutil.which("osslsigncode") or not shutil.which("openssl"), reason="needs osslsigncode")
def test_authenticode_signature_verifies_and_is_reproducible(comps, tmp_path):
    components, _www, cache, build = comps
    key, crt = tmp_path / "t.key", tmp_path / "t.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=pymachine test signing",
                    "-addext", "extendedKeyUsage=codeSigning"], capture_output=True, timeout=60, check=True)
    a = build(tmp_path / "a", components, cache=cache, epoch=EPOCH, cert=str(crt), key=str(key))
    b = build(tmp_path / "b", components, cache=cache, epoch=EPOCH, cert=str(crt), key=str(key))
    assert a.read_bytes() == b.read_bytes()
    ok = subprocess.run(["osslsigncode", "verify", "-CAfile", str(crt), "-in", str(a)],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "Signature verification: ok" in ok.stdout, ok.stdout + ok.stderr
    data = bytearray(a.read_bytes())
    data[2000] ^= 0x01
    a.write_bytes(bytes(data))
    bad = subprocess.run(["osslsigncode", "verify", "-CAfile", str(crt), "-in", str(a)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0


def test_template_renderer_refuses_missing_unused_and_fills_all():
    assert render("a @X@ b", {"X": "1"}) == "a 1 b"
    with pytest.raises(MachineError, match="no value for Y"):
        render("@X@ @Y@", {"X": "1"})
    with pytest.raises(MachineError, match="not used by the template: Z"):
        render("@X@", {"X": "1", "Z": "2"})
