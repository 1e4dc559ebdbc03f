"""Build pymachine's base image as a normal user: mmdebstrap's unshare mode and a user namespace.

Root builds with debootstrap and chroot (``engine.images``).  A normal user
on Linux cannot: creating files owned by root and running a chroot need
privileges.  Linux user namespaces give them without root: ``newuidmap`` and
``newgidmap`` (Debian's ``uidmap``, setuid) map the user's subordinate ids
(``/etc/subuid``, ``/etc/subgid``) into a namespace where the build is root.

Both steps run as root of ``unshare --map-auto --map-user=65536 --setuid 0``:
ids 0..65534 are the user's first subordinate range (as in mmdebstrap's own
namespace) and the user itself is 65536, so root in there may also use the
user's private cache directory (mmdebstrap's namespace alone could not even
reach it):

1. ``mmdebstrap --mode=unshare`` (unsharing mount and pid namespaces only, as
   it does for root) makes the root tree with the image's whole package set
   (the engine, the kernel, sshd).  Seen from outside, its files belong to
   subordinate ids; the apt lists are kept for step 2.
2. ``engine.userns_finish`` runs the root build's own steps (the signed EFI
   loaders, the customisation, the initrd, ``mke2fs -d`` and the FAT/ESP,
   SYSLINUX's MBR, the qcow2) on the tree, hands the results back to the
   user and removes the tree.

So the disk has the same shape as a root build's (same functions), but its
root filesystem comes from mmdebstrap, not debootstrap: the package sets and
the files around them may differ slightly.  ``recipe_parts`` therefore adds
a ``mode`` component to the image's recipe hash, only for these builds: a
cached root build never stands in for a user's build, nor the reverse, and
root builds keep the hash they always had.

A foreign arch (arm64 on x86_64) runs through a binfmt_misc handler the user
cannot register: it must already be there with the ``F`` flag (Debian's
``qemu-user-static`` registers it so), since the interpreter is then opened
outside the chroot and the namespace.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymachine.engine.binfmt import BINFMT_DIR, QEMU_CPU
from pymachine.machine.errors import MachineError

Log = Callable[[str], None]
Run = Callable[..., str]

#: How the image is built: as root with debootstrap, or as a normal user through a user namespace.
MODE_ROOT = "debootstrap"
MODE_USER = "unshare"
#: Debian's ids reach 65534 (nobody): the namespace needs a range this long.
SUBID_COUNT = 65536
#: The user's own id inside the finishing namespace (just past the subordinate range).
OWNER_ID = 65536
SUBID_HINT = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
#: Host tools of the unprivileged path beyond the ones the disk needs (``images.BUILD_TOOLS``).
USER_TOOLS = ("mmdebstrap", "newuidmap", "newgidmap", "unshare")
#: mke2fs, sfdisk, mkfs.fat, chroot live here, off a normal Debian user's PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
FINISH_MODULE = "pymachine.engine.userns_finish"
#: The finishing step: EFI loaders, customisation, initrd, the disk and its qcow2 (minutes under emulation).
FINISH_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Built:
    """What the finishing step reports for the manifest."""

    kernel_version: str
    packages: dict[str, str]
    size: int


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def build_mode() -> str:
    """This process's way of building the image: ``unshare`` for a normal user on Linux, else
    ``debootstrap`` (root; and macOS/Windows, which only load images built that way).  A process
    without uids (Windows, or the test tier that imitates it on Linux) counts as the latter."""
    if sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() != 0:
        return MODE_USER
    return MODE_ROOT


def _user_name() -> str:
    import pwd  # Linux only: this module's build path never runs elsewhere

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def subid_ranges(user: str, kind: str, path: Path | None = None) -> list[tuple[int, int]]:
    """``user``'s subordinate ``kind`` ranges ("uid" or "gid") as (start, count), in file order.

    ``getsubids`` (shadow >= 4.11) asks the same source newuidmap uses (files or NSS); without it
    the files are read.  mmdebstrap and ``unshare --map-auto`` take the first range."""
    getsubids = shutil.which("getsubids")
    if path is None and getsubids:
        try:
            proc = subprocess.run([getsubids, *(["-g"] if kind == "gid" else []), user],
                                  capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            proc = None
        if proc is not None and proc.returncode == 0:  # "0: user 100000 65536" per range
            found = []
            for line in proc.stdout.splitlines():
                fields = line.split()
                if len(fields) == 4 and fields[2].isdigit() and fields[3].isdigit():
                    found.append((int(fields[2]), int(fields[3])))
            return found
        if proc is not None:
            return []  # "Error fetching ranges": none
    found = []
    try:
        text = (path or Path(f"/etc/sub{kind}")).read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(os.getuid())) and fields[1].isdigit() \
                and fields[2].isdigit():
            found.append((int(fields[1]), int(fields[2])))
    return found


def missing_subids(user: str | None = None, files: tuple[Path, Path] | None = None) -> str | None:
    """One line saying how to give ``user`` (default: this one) the subordinate ids a build
    needs, or None when both first ranges hold at least 65536 ids."""
    user = user or _user_name()
    uids = subid_ranges(user, "uid", files[0] if files else None)
    gids = subid_ranges(user, "gid", files[1] if files else None)
    if uids and gids and uids[0][1] >= SUBID_COUNT and gids[0][1] >= SUBID_COUNT:
        return None
    what = "none" if not (uids and gids) else f"fewer than {SUBID_COUNT}"
    return (f"building the image as a normal user needs {SUBID_COUNT} subordinate user and group ids for "
            f"{user} ({what} in /etc/subuid and /etc/subgid): add them with `{SUBID_HINT.format(user=user)}`, "
            "or build as root")


def binfmt_problem(arch: str, host: str, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why ``arch`` binaries cannot run in this user's build on ``host`` (None when they can):
    a normal user needs the handler registered already, with the F flag."""
    if arch == host:
        return None
    cpu = QEMU_CPU[arch]
    entry = binfmt_dir / f"qemu-{cpu}"
    hint = (f"building the {arch} image on a {host} host as a normal user needs qemu-user-static's binfmt_misc "
            f"handler {entry}")
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return f"{hint}, which is not registered: install Debian's qemu-user-static, or build as root"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if not lines or lines[0].strip() != "enabled":
        return f"{hint}, which is disabled: enable it (echo 1 | sudo tee {entry}), or build as root"
    if "F" not in flags:
        return (f"{hint} with the F flag (it has {flags or 'none'}): the interpreter must be opened outside "
                "the namespace; re-register it with F (Debian's qemu-user-static does), or build as root")
    return None


def _userns_works() -> str | None:
    """None when this user may create a user namespace mapped through newuidmap (some kernels,
    and AppArmor on Ubuntu 24.04, forbid it); else why not, in one line."""
    try:
        proc = subprocess.run(namespace_command(["true"]), capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not try a user namespace: {exc}"
    if proc.returncode == 0:
        return None
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    return ("this host does not let a normal user create a user namespace "
            f"({detail[-1] if detail else f'unshare exit {proc.returncode}'}): build as root")


def tool_path() -> str:
    """The user's PATH and the sbin directories: the build's tools are found there, as root's are."""
    parts = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    return os.pathsep.join([*parts, *(d for d in SBIN_DIRS if d not in parts)])


def why_not(arch: str, host: str, disk_tools: Sequence[str]) -> str | None:
    """Why this normal user cannot build the ``arch`` image here (None when they can)."""
    tools = (*USER_TOOLS, *(t for t in disk_tools if t != "debootstrap"))
    missing = [t for t in tools if shutil.which(t, path=tool_path()) is None]
    if missing:
        return (f"building it as a normal user needs {', '.join(missing)} (Debian packages mmdebstrap, uidmap, "
                "util-linux, e2fsprogs, dosfstools, mtools, syslinux, syslinux-common, fdisk, qemu-utils)")
    return missing_subids() or binfmt_problem(arch, host) or _userns_works()


def namespace_command(argv: Sequence[str]) -> list[str]:
    """``argv`` as root of a user namespace that maps this user's first subordinate ranges from 0
    (as mmdebstrap's does) and the user itself as ``OWNER_ID``: there the tree mmdebstrap made reads
    back with its real owners, and root may write the user's own files."""
    return ["unshare", "--map-auto", f"--map-user={OWNER_ID}", f"--map-group={OWNER_ID}",
            "--setuid", "0", "--setgid", "0", "--", *argv]


def mmdebstrap_command(root: Path, arch: str, host: str, suite: str, mirror: str,
                       packages: Sequence[str]) -> list[str]:
    """The root tree with the whole package set, no recommends (mmdebstrap's default), as a
    directory; the apt lists stay for the EFI loaders' download (the finishing step drops them).
    A foreign ``arch`` is checked here (``binfmt_problem``), not by mmdebstrap's arch-test."""
    argv = ["mmdebstrap", "--mode=unshare", "--variant=minbase", "--format=directory", f"--arch={arch}",
            f"--include={','.join(packages)}", "--skip=cleanup/apt/lists"]
    if arch != host:
        argv.append("--skip=check/qemu")
    return [*argv, suite, str(root), mirror]


def recipe_parts() -> tuple[str, ...]:
    """What an unprivileged build adds to the image's recipe hash: the mode, how mmdebstrap is
    called and the finishing step (which runs the root recipe's own functions, hashed already)."""
    finish = Path(__file__).with_name("userns_finish.py").read_text()
    return (f"mode={MODE_USER}", inspect.getsource(mmdebstrap_command), inspect.getsource(namespace_command),
            finish)


def remove_tree(path: Path) -> None:
    """Remove ``path`` from inside the build namespace, where files of subordinate ids are root's
    (outside, this user cannot delete them).  Best effort: the caller checks what is left."""
    if os.path.lexists(path):
        subprocess.run(namespace_command(["rm", "-rf", "--one-file-system", str(path)]),
                       capture_output=True, timeout=600, check=False)


def _python_env() -> dict[str, str]:
    """The finishing step runs this same pymachine: this interpreter and its import path."""
    paths = [p for p in sys.path if p]
    return {"PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1", "PATH": tool_path()}


def _finish(root: Path, work: Path, arch: str, log: Log) -> Built:
    """Run ``engine.userns_finish`` in the namespace, passing its progress lines to ``log``."""
    err = work / "finish.err"
    argv = namespace_command([sys.executable, "-m", FINISH_MODULE, str(root), str(work), arch])
    with open(err, "wb") as err_fh:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_fh, text=True,
                                env={**os.environ, **_python_env()})
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        killer = threading.Timer(FINISH_TIMEOUT, expire)
        killer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log(line.rstrip("\n"))
            code = proc.wait()
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if timed_out.is_set():
        raise MachineError(f"image build (user namespace): timed out after {FINISH_TIMEOUT:g}s")
    if code != 0:
        lines = err.read_text(errors="replace").strip().splitlines()
        raise MachineError(f"image build (user namespace) failed (exit {code}): {lines[-1] if lines else ''}")
    result = json.loads((work / "result.json").read_text())
    return Built(str(result["kernel_version"]), {str(k): str(v) for k, v in result["packages"].items()},
                 int(result["size"]))


def build(work: Path, *, arch: str, host: str, suite: str, mirror: str, packages: Sequence[str],
          env: dict[str, str], log: Log, run: Run, timeout: float, failure_log: Path) -> Built:
    """Build the image into ``work/image`` as this normal user; returns what the manifest needs
    (``kernel_version``, ``packages``, ``size``).  ``run`` runs a command with a one-line error
    (``images._run``); a failed finishing step's full output is kept as ``failure_log``.
    Whatever happens, no file of a subordinate id is left in ``work``."""
    root = work / "root"
    (work / "image").mkdir(exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)  # mmdebstrap's temp files (its gpg home...) go with the work dir
    try:
        log(f"(image) mmdebstrap --mode=unshare {suite} {arch} with {len(packages)} packages (as a normal user)...")
        run(namespace_command(mmdebstrap_command(root, arch, host, suite, mirror, packages)), timeout=timeout,
            env={**env, "TMPDIR": str(work / "tmp"), "PATH": tool_path()}, what="mmdebstrap")
        log("(image) in the user namespace: EFI loaders, customising, initrd, the bootable disk...")
        try:
            return _finish(root, work, arch, log)
        except MachineError as exc:
            step_log = work / "failed-step.log"
            if not step_log.is_file():
                raise
            shutil.copyfile(step_log, failure_log)
            raise MachineError(str(exc).replace(str(step_log), str(failure_log))) from None
    finally:
        remove_tree(root)
