"""Pure helpers behind the VMware/vSphere/VirtualBox base-image paths: vmnet DHCP leases,
VMDK capacities, the vSphere flat-disk descriptor and where shared folders are mounted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pymachine.machine.drivers.virtualbox import guest_shares
from pymachine.machine.drivers.vmware import ip_from_leases, vmdk_capacity
from pymachine.machine.drivers.vsphere import vmfs_descriptor

LEASES = """# vmnet-dhcpd leases
lease 192.168.130.128 {
  starts 4 2026/11/26 10:00:00;
  hardware ethernet 00:0c:29:aa:bb:cc;
}
lease 192.168.130.129 {
  hardware ethernet 00:0c:29:11:22:33;
}
lease 192.168.130.140 {
  starts 4 2026/11/26 11:00:00;
  hardware ethernet 00:0C:29:AA:BB:CC;
}
"""


def test_lease_of_the_mac_latest_wins_case_insensitive(tmp_path: Path) -> None:
    leases = tmp_path / "dhcpd.leases"
    leases.write_text(LEASES)
    files = [str(tmp_path / "missing.leases"), str(leases)]
    assert ip_from_leases("00:0c:29:aa:bb:cc", files) == "192.168.130.140"
    assert ip_from_leases("00:0c:29:11:22:33", files) == "192.168.130.129"
    assert ip_from_leases("00:0c:29:00:00:00", files) == ""
    assert ip_from_leases("00:0c:29:aa:bb:cc", []) == ""


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) not installed")
@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized", "monolithicFlat"])
def test_vmdk_capacity_reads_sparse_headers_and_descriptors(tmp_path: Path, subformat: str) -> None:
    disk = tmp_path / "d.vmdk"
    subprocess.run(["qemu-img", "create", "-f", "vmdk", "-o", f"subformat={subformat}", str(disk), "48M"],
                   check=True, capture_output=True)
    assert vmdk_capacity(str(disk)) == 48 << 20


def test_vmdk_capacity_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "x.vmdk"
    other.write_bytes(b"\0" * 4096)
    with pytest.raises(Exception, match="is not a VMDK"):
        vmdk_capacity(str(other))


def test_vmfs_descriptor_names_the_extent_with_its_sectors_and_geometry() -> None:
    text = vmfs_descriptor("vs1-flat.vmdk", 3 << 30)
    lines = text.splitlines()
    assert lines[0] == "# Disk DescriptorFile" and 'createType="vmfs"' in lines
    assert f'RW {(3 << 30) // 512} VMFS "vs1-flat.vmdk"' in lines
    assert f'ddb.geometry.cylinders = "{((3 << 30) // 512) // (255 * 63)}"' in lines
    assert 'ddb.adapterType = "lsilogic"' in lines


@pytest.mark.parametrize("share, home, expected", [
    # Linux: docker-machine's /hosthome stays, and the user's home is bound at its own path
    (("hosthome", "/home"), "/home/alice",
     [("vboxsf", "hosthome", "/hosthome"), ("bind", "/hosthome/alice", "/home/alice")]),
    # a home outside the share, or one that would cover the guest user's: the share only
    (("hosthome", "/home"), "/srv/alice", [("vboxsf", "hosthome", "/hosthome")]),
    (("hosthome", "/home"), "/home/docker", [("vboxsf", "hosthome", "/hosthome")]),
    (("hosthome", "/home"), "/root", [("vboxsf", "hosthome", "/hosthome")]),
    # macOS: /Users is already the same path; Windows: /c/Users is Toolbox's convention
    (("Users", "/Users"), "/Users/alice", [("vboxsf", "Users", "/Users")]),
    (("c/Users", "\\\\?\\c:\\Users"), "C:\\Users\\alice", [("vboxsf", "c/Users", "/c/Users")]),
    (None, "/home/alice", []),
])
def test_virtualbox_shares_mount_where_boot2docker_mounted_them_and_at_the_homes_own_path(
        share, home, expected) -> None:
    assert guest_shares(share, host_home=home) == expected
