"""Windows: a 64-bit NSIS installer built with Debian's makensis (no wine).

Layout installed under ``$INSTDIR``: ``python\\`` (embeddable CPython),
``lib\\`` (pymachine + dependency wheels, unpacked), ``bin\\`` (docker,
``docker-compose.cmd``, ``pymachine.cmd``, ``pymachine-quickstart.cmd``) and
``cli-plugins\\docker-compose.exe``, which the installer registers in the user's
``cliPluginsExtraDirs`` (``python -m pymachine.installer cli-plugins``, merged into
``%USERPROFILE%\\.docker\\config.json``) so ``docker compose`` works, and removes again
on uninstall.  The VM
image (pymachine's own, packed by ``pymachine image pack`` with its VDI) is
pre-seeded into ``%USERPROFILE%\\.docker\\machine\\cache\\images\\<recipe>``,
where pymachine's default store finds it, as Toolbox seeded its ISO;
VirtualBox is a separate section offered only when missing or older.
The uninstaller deletes exactly the files listed here, so it can never
remove more than the installer put down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from pymachine.installer.lock import Component, packaging_file
from pymachine.installer.sources import copy_sources, default_source
from pymachine.installer.stage import check_vm_image, stage
from pymachine.installer.template import normalise_tree, render, source_date_epoch, walk_sorted
from pymachine.machine import __version__
from pymachine.machine.errors import MachineError

TEMPLATE = packaging_file("windows", "installer.nsi.in")
LAUNCHERS = {
    "pymachine.cmd": '@"%~dp0..\\python\\python.exe" -m pymachine %*\r\n',
    # Compose v2 is one binary: the docker CLI plugin, and docker-compose on PATH through this
    "docker-compose.cmd": '@"%~dp0..\\cli-plugins\\docker-compose.exe" %*\r\n',
    "pymachine-quickstart.cmd": (
        '@echo off\r\ntitle pymachine Quickstart Terminal\r\n'
        'set "PATH=%~dp0;%PATH%"\r\n'
        '"%~dp0..\\python\\python.exe" -m pymachine quickstart %*\r\n'
        'if errorlevel 1 pause\r\n'
    ),
}

# .onInit: offer VirtualBox only when it is missing or older than the bundled one
VBOX_CHECK = r"""  ReadRegStr $0 HKLM "SOFTWARE\Oracle\VirtualBox" "Version"
  ${If} $0 != ""
    ${VersionCompare} "$0" "${VBOX_VERSION}" $1
    ${If} $1 != 2
      !insertmacro UnselectSection ${SecVBox}
      SectionSetText ${SecVBox} ""
    ${EndIf}
  ${EndIf}"""


def _nsis_path(rel: PurePosixPath) -> str:
    return "\\".join(rel.parts)


def _q(path: Path) -> str:
    text = str(path)
    if '"' in text or "$" in text:
        raise MachineError(f"unsupported character in build path: {text}")
    return f'"{text}"'


def _file_lines(root: Path, target: str) -> tuple[list[str], list[str]]:
    """(install lines, uninstall lines) for every file under ``root`` going to ``target``."""
    install: list[str] = []
    files: list[str] = []
    dirs: list[str] = []
    current = None
    for path in walk_sorted(root):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_dir():
            dirs.append(f"{target}\\{_nsis_path(rel)}")
            continue
        outdir = target if rel.parent == PurePosixPath(".") else f"{target}\\{_nsis_path(rel.parent)}"
        if outdir != current:
            install.append(f'  SetOutPath "{outdir}"')
            current = outdir
        install.append(f"  File {_q(path)}")
        files.append(f'  Delete "{target}\\{_nsis_path(rel)}"')
    uninstall = files + [f'  RMDir "{d}"' for d in sorted(dirs, key=lambda d: (-d.count("\\"), d))]
    return install, uninstall


def _add_pymachine(core: Path, source: Path) -> None:
    copy_sources(source, core / "lib")
    bindir = core / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for name, text in LAUNCHERS.items():
        if name == "docker-compose.cmd" and not (core / "cli-plugins" / "docker-compose.exe").is_file():
            continue
        (bindir / name).write_bytes(text.encode())
    # the embeddable CPython ignores PYTHONPATH: its ._pth file must name lib\
    for pth in sorted((core / "python").glob("*._pth")) if (core / "python").is_dir() else []:
        lines = pth.read_text().splitlines()
        if "..\\lib" not in lines:
            pth.write_text("\r\n".join([*lines, "..\\lib"]) + "\r\n")


def vi_version(version: str) -> str:
    nums = [p for p in version.replace("-", ".").split(".") if p.isdigit()][:4]
    return ".".join(nums + ["0"] * (4 - len(nums)))


def render_script(stage_root: Path, out_file: Path, components: list[Component], version: str) -> str:
    """The .nsi text for a staged tree (core/, cache/, installers/)."""
    core_in, core_un = _file_lines(stage_root / "core", "$INSTDIR")
    seed_in, seed_un = ([], [])
    if (stage_root / "cache").is_dir():
        seed_in, seed_un = _file_lines(stage_root / "cache", "$PROFILE\\.docker\\machine\\cache")
        # RMDir without /r removes a directory only when empty: the user's own files keep theirs
        seed_un.append('  RMDir "$PROFILE\\.docker\\machine\\cache"')
    vbox = next((c for c in components if c.name == "virtualbox"), None)
    if vbox is not None:
        src = stage_root / "installers" / PurePosixPath(vbox.dest).name
        vbox_section = "\n".join([
            "Section \"VirtualBox ${VBOX_VERSION}\" SecVBox",
            "  SetRegView 64",
            "  InitPluginsDir",
            '  SetOutPath "$PLUGINSDIR"',
            f'  File "/oname=virtualbox.exe" {_q(src)}',
            '  DetailPrint "Installing VirtualBox ${VBOX_VERSION}..."',
            "  ExecWait '\"$PLUGINSDIR\\virtualbox.exe\" --silent --ignore-reboot' $0",
            "  ${If} $0 != 0",
            '    MessageBox MB_OK|MB_ICONEXCLAMATION "VirtualBox setup failed (exit code $0)." /SD IDOK',
            "  ${EndIf}",
            '  SetOutPath "$INSTDIR"',
            "SectionEnd",
        ])
        vbox_check = VBOX_CHECK
    else:
        vbox_section, vbox_check = "; VirtualBox is not bundled in this build", "  ; no VirtualBox section"
    values = {
        "OUTFILE": str(out_file),
        "VERSION": version,
        "VIVERSION": vi_version(version),
        "VBOX_VERSION": vbox.version if vbox else "none",
        "CORE_FILES": "\n".join(core_in),
        "CACHE_SEED": "\n".join(seed_in) or "  ; no VM image bundled",
        "VBOX_SECTION": vbox_section,
        "VBOX_CHECK": vbox_check,
        "UNINSTALL_FILES": "\n".join(core_un + seed_un),
    }
    return render(TEMPLATE.read_text(), values, TEMPLATE.name)


def sign(exe: Path, cert: str, key: str, epoch: int) -> None:
    """Authenticode-sign in place with osslsigncode; ``-time`` keeps the result reproducible."""
    signed = exe.with_name(exe.name + ".signed")
    proc = subprocess.run(
        ["osslsigncode", "sign", "-certs", cert, "-key", key, "-n", "pymachine Toolbox", "-h", "sha256",
         "-time", str(epoch), "-in", str(exe), "-out", str(signed)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        signed.unlink(missing_ok=True)
        raise MachineError(f"osslsigncode failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    os.replace(signed, exe)


def build_exe(out_dir: Path, components: list[Component], cache: Path | None = None,
              epoch: int | None = None, version: str = __version__,
              cert: str | None = None, key: str | None = None, source: Path | None = None) -> Path:
    if not shutil.which("makensis"):
        raise MachineError("makensis is not installed (apt-get install nsis)")
    epoch = source_date_epoch() if epoch is None else epoch
    source = source or default_source()
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = (out_dir / f"pymachine-toolbox-{version}-x64.exe").resolve()
    with tempfile.TemporaryDirectory(prefix="pm-nsis-") as tmp:
        root = Path(tmp)
        staged = root / "staged"
        stage(components, staged, cache)
        check_vm_image(components, staged, source, ("vdi",))  # VirtualBox, which this installer offers
        core = root / "core"
        core.mkdir()
        for child in sorted(staged.iterdir()) if staged.is_dir() else []:
            if child.name in ("cache", "installers"):
                shutil.move(str(child), str(root / child.name))
            else:
                shutil.move(str(child), str(core / child.name))
        _add_pymachine(core, source)
        normalise_tree(root, epoch)
        script = root / "installer.nsi"
        script.write_text(render_script(root, exe, components, version), encoding="utf-8")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "LANG": "C.UTF-8"}
        proc = subprocess.run(["makensis", "-V2", "-INPUTCHARSET", "UTF8", str(script)],
                              capture_output=True, text=True, env=env, cwd=root, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise MachineError(f"makensis failed:\n{tail}")
    if cert or key:
        if not (cert and key):
            raise MachineError("signing needs both --cert and --key")
        sign(exe, cert, key, epoch)
    return exe
