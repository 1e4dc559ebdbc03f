"""The host user's home at its own path in VirtualBox/VMware guests (issue 15, item 1).

docker-machine mounted a Linux host's /home at /hosthome, so ``docker run -v $PWD:/src``
from the user's home found nothing in the guest.  The seed now also binds
/hosthome/alice at /home/alice.  These tests check the fstab lines the seed carries, and
mount them with the real mount(8) in a private mount namespace (a tmpfs stands in for
vboxsf), the way the image's first-boot script does: line by line, ``mkdir -p`` then
``mount DIR``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.machine.seed import same_path_bind, shares_fstab


def test_the_bind_line_follows_the_share_and_needs_its_mount() -> None:
    shares = [("vboxsf", "hosthome", "/hosthome"), *same_path_bind("/hosthome", "/home", "/home/alice")]
    lines = shares_fstab(shares).splitlines()
    assert lines == [
        "hosthome /hosthome vboxsf defaults,nofail,uid=@UID@,gid=@GID@ 0 0",
        "/hosthome/alice /home/alice none bind,nofail,x-systemd.requires-mounts-for=/hosthome/alice 0 0",
    ]


@pytest.mark.parametrize("mount_point, host_dir, home", [
    ("/Users", "/Users", "/Users/alice"),          # already the same path
    ("/hosthome", "/home", "/home/docker"),        # would cover the guest user's home and key
    ("/hosthome", "/home", "/home"),               # would cover the guest's /home
    ("/hosthome", "/home", "/opt/alice"),          # the home is not in the share
    ("/hosthome", "/home", "/home/al ice"),         # fstab cannot hold it
    ("/c/Users", "C:\\Users", "C:\\Users\\alice"),  # Windows paths: Toolbox's /c/Users convention
])
def test_no_bind_where_it_is_not_needed_or_not_safe(mount_point: str, host_dir: str, home: str) -> None:
    assert same_path_bind(mount_point, host_dir, home) == []


def test_a_custom_share_that_holds_the_home_binds_it_too() -> None:
    assert same_path_bind("/work", "/srv/work", "/srv/work/alice") == [("bind", "/work/alice", "/srv/work/alice")]


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_real_mount_reads_the_lines_and_shows_the_share_at_the_homes_path(tmp_path: Path) -> None:
    if subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot create a mount namespace here (needs root)")
    share_mount = tmp_path / "hosthome"   # where vboxsf would mount the host's /home
    home = tmp_path / "home" / "alice"    # the host user's home, at its own path in the guest
    shares = [*same_path_bind(str(share_mount), str(tmp_path / "home"), str(home))]
    assert shares == [("bind", str(share_mount / "alice"), str(home))]
    fstab = tmp_path / "fstab"
    fstab.write_text(shares_fstab(shares))
    script = f"""set -e
mkdir -p {share_mount}
mount -t tmpfs share {share_mount}           # stands in for the vboxsf share
mkdir -p {share_mount}/alice && echo from-the-host > {share_mount}/alice/hello
while read -r src dir rest; do mkdir -p "$dir"; mount -T {fstab} "$dir"; done < {fstab}
cat {home}/hello
echo written-in-the-guest > {home}/back
cat {share_mount}/alice/back
"""
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["from-the-host", "written-in-the-guest"]
