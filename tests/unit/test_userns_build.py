"""engine.userns_build: who may build the image without root, and what it runs.

The build itself (mmdebstrap in a user namespace, then the disk) is proven
end to end by tests/vm/test_unprivileged_build.py, as a throwaway user.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pymachine.engine import images, userns_build
from pymachine.machine.errors import MachineError

HINT = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"


def _subid_files(tmp_path: Path, uid_text: str, gid_text: str) -> tuple[Path, Path]:
    uid, gid = tmp_path / "subuid", tmp_path / "subgid"
    uid.write_text(uid_text)
    gid.write_text(gid_text)
    return uid, gid


def test_no_subordinate_ids_is_one_line_saying_how_to_add_them(tmp_path: Path) -> None:
    files = _subid_files(tmp_path, "bob:100000:65536\n", "bob:100000:65536\n")
    message = userns_build.missing_subids("alice", files)
    assert message is not None and "\n" not in message
    assert f"`{HINT}`" in message and "none in /etc/subuid and /etc/subgid" in message


def test_a_range_too_short_for_debian_ids_is_refused(tmp_path: Path) -> None:
    files = _subid_files(tmp_path, "alice:100000:1000\n", "alice:100000:65536\n")
    message = userns_build.missing_subids("alice", files)
    assert message is not None and "fewer than 65536" in message and HINT in message


def test_uid_only_is_not_enough(tmp_path: Path) -> None:
    files = _subid_files(tmp_path, "alice:100000:65536\n", "")
    assert userns_build.missing_subids("alice", files) is not None


def test_ranges_of_the_user_are_enough(tmp_path: Path) -> None:
    files = _subid_files(tmp_path, "# comment\nbob:1:2\nalice:200000:65536\n", "alice:300000:70000\n")
    assert userns_build.missing_subids("alice", files) is None
    assert userns_build.subid_ranges("alice", "uid", files[0]) == [(200000, 65536)]


def _binfmt(tmp_path: Path, text: str | None) -> Path:
    directory = tmp_path / "binfmt_misc"
    directory.mkdir()
    if text is not None:
        (directory / "qemu-aarch64").write_text(text)
    return directory


def test_foreign_arch_needs_a_registered_handler(tmp_path: Path) -> None:
    problem = userns_build.binfmt_problem("arm64", "amd64", _binfmt(tmp_path, None))
    assert problem is not None and "not registered" in problem and "qemu-user-static" in problem


def test_foreign_arch_needs_the_f_flag(tmp_path: Path) -> None:
    entry = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PO\noffset 0\n"
    problem = userns_build.binfmt_problem("arm64", "amd64", _binfmt(tmp_path, entry))
    assert problem is not None and "with the F flag (it has PO)" in problem and "\n" not in problem


def test_foreign_arch_handler_disabled(tmp_path: Path) -> None:
    entry = "disabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\n"
    problem = userns_build.binfmt_problem("arm64", "amd64", _binfmt(tmp_path, entry))
    assert problem is not None and "disabled" in problem


def test_foreign_arch_with_f_flag_and_native_arch_are_fine(tmp_path: Path) -> None:
    entry = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\noffset 0\n"
    assert userns_build.binfmt_problem("arm64", "amd64", _binfmt(tmp_path, entry)) is None
    assert userns_build.binfmt_problem("amd64", "amd64", tmp_path / "nowhere") is None


def test_build_mode_follows_the_user_and_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(userns_build.os, "geteuid", lambda: 1000, raising=False)
    assert userns_build.build_mode() == userns_build.MODE_USER
    monkeypatch.setattr(userns_build.os, "geteuid", lambda: 0, raising=False)
    assert userns_build.build_mode() == userns_build.MODE_ROOT
    monkeypatch.setattr(sys, "platform", "darwin")  # images there come from packs built as root
    monkeypatch.setattr(userns_build.os, "geteuid", lambda: 501, raising=False)
    assert userns_build.build_mode() == userns_build.MODE_ROOT
    monkeypatch.delattr(userns_build.os, "geteuid", raising=False)  # Windows has none
    monkeypatch.setattr(sys, "platform", "win32")
    assert userns_build.build_mode() == userns_build.MODE_ROOT
    monkeypatch.setattr(sys, "platform", "linux")  # tests/windows: Linux without the uid calls
    assert userns_build.build_mode() == userns_build.MODE_ROOT


@pytest.mark.parametrize("arch", images.ARCHES)
def test_user_builds_have_their_own_recipe_and_root_keeps_its_own(arch: str) -> None:
    root_key = images.recipe_hash(arch, userns_build.MODE_ROOT)
    user_key = images.recipe_hash(arch, userns_build.MODE_USER)
    assert root_key != user_key and len(user_key) == 16
    # The default is this process's mode: as root, exactly the root recipe.
    expected = root_key if userns_build.build_mode() == userns_build.MODE_ROOT else user_key
    assert images.recipe_hash(arch) == expected


def test_user_recipe_covers_the_finishing_step(monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.recipe_hash("amd64", userns_build.MODE_USER)
    parts = userns_build.recipe_parts()
    monkeypatch.setattr(userns_build, "recipe_parts", lambda: (*parts[:-1], parts[-1] + "# changed\n"))
    assert images.recipe_hash("amd64", userns_build.MODE_USER) != before
    assert images.recipe_hash("amd64", userns_build.MODE_ROOT) == images.recipe_hash("amd64",
                                                                                      userns_build.MODE_ROOT)


def test_mmdebstrap_runs_unshared_with_the_whole_package_set(tmp_path: Path) -> None:
    argv = userns_build.mmdebstrap_command(tmp_path / "root", "amd64", "amd64", images.SUITE, images.MIRROR,
                                           (*images.PACKAGES, "linux-image-amd64"))
    assert argv[:2] == ["mmdebstrap", "--mode=unshare"]
    assert f"--include={','.join((*images.PACKAGES, 'linux-image-amd64'))}" in argv
    assert argv[-3:] == [images.SUITE, str(tmp_path / "root"), images.MIRROR]
    assert "--skip=check/qemu" not in argv
    foreign = userns_build.mmdebstrap_command(tmp_path / "root", "arm64", "amd64", images.SUITE, images.MIRROR, ())
    assert "--arch=arm64" in foreign and "--skip=check/qemu" in foreign  # the handler is checked by pymachine


def test_the_namespace_maps_the_user_beside_its_subordinate_ids() -> None:
    argv = userns_build.namespace_command(["true"])
    assert argv[0] == "unshare" and "--map-auto" in argv and f"--map-user={userns_build.OWNER_ID}" in argv
    assert argv[-2:] == ["--", "true"]


def test_build_image_refuses_before_making_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A normal user without subordinate ids: one line, and no cache directory is created."""
    monkeypatch.setattr(userns_build, "build_mode", lambda: userns_build.MODE_USER)
    monkeypatch.setattr(userns_build, "missing_subids", lambda: "no subordinate ids: add them")
    monkeypatch.setattr(userns_build.shutil, "which", lambda tool, path=None: f"/usr/bin/{tool}")
    cache = tmp_path / "cache" / "images"
    with pytest.raises(MachineError, match="no subordinate ids: add them"):
        images.build_image(cache, print, "amd64")
    assert not (tmp_path / "cache").exists()


def test_tools_are_found_in_sbin_off_a_normal_users_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's users have no sbin on PATH; mke2fs, sfdisk, mkfs.fat and chroot live there."""
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    assert userns_build.tool_path().split(":") == ["/usr/local/bin", "/usr/bin", "/bin", *userns_build.SBIN_DIRS]
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin")
    assert userns_build.tool_path().split(":").count("/usr/sbin") == 1


def test_drivers_tell_a_normal_user_the_fix_not_sudo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sudo pymachine image build`` would build into root's cache, which this user never reads."""
    monkeypatch.setattr(userns_build, "build_mode", lambda: userns_build.MODE_USER)
    monkeypatch.setattr(userns_build, "why_not", lambda *_: f"building the image ... `{HINT}`, or build as root")
    with pytest.raises(MachineError) as err:
        images.image_for_driver(tmp_path / "images", "--virtualbox-boot2docker-url", "amd64")
    message = str(err.value)
    assert HINT in message and message.endswith("or pass --virtualbox-boot2docker-url")
    assert "sudo pymachine image build" not in message and "\n" not in message
