#!/usr/bin/env bash
# Install what pymachine and its tests need on Debian 12, then a virtualenv in .venv.
# Idempotent: a second run only checks.  Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip ca-certificates openssl
  docker.io                      # dockerd + docker CLI for the real-engine tests and the demo
  openssh-server openssh-client  # real sshd in tests; ssh/scp for pymachine ssh/scp
  tinyproxy debootstrap busybox-static iproute2 util-linux gcc libc6-dev  # namespaced test hosts
  syslinux syslinux-common mtools dosfstools fdisk  # the bootable base image (SYSLINUX on a FAT boot partition)
  rsync sshfs fuse3              # scp --delta, mount
  zsh fish tcsh                  # completion and env --shell, tested by the real shells
  qemu-system-x86 qemu-utils     # the qemu driver
  ovmf qemu-system-arm qemu-efi-aarch64  # UEFI boots (OVMF), arm64 guests (qemu-system-aarch64 + AAVMF)
  qemu-user-static mmdebstrap uidmap     # the arm64 image built on x86_64 (binfmt_misc); unprivileged builds
  golang-go golang-github-vmware-govmomi-dev   # vcsim, the vSphere simulator, built offline
  nsis p7zip-full osslsigncode xorriso genisoimage libarchive-tools dpkg-dev fakeroot gnupg minisign lintian  # installers (lintian: the .deb check)
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The distribution was called "pymachine" before it took its free PyPI name: drop that one.
if .venv/bin/pip show -q pymachine >/dev/null 2>&1; then
  .venv/bin/pip uninstall -y -q pymachine || true  # an editable one may have no files to remove
fi
.venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat \
  -e '.[test,all]'
# The venv starts as this machine's own python3 does, with importlib.util loaded (a .pth
# of the system site-packages loads it there; a venv reads none of those): a script that
# blocks POSIX-only modules and then calls importlib.util before importing pymachine
# behaves the same in both.  pymachine/__init__.py binds it for every importer as well.
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf 'import importlib.util\n' > "$SITE/pymachine-importlib-util.pth"
# tests/packaging installs the built wheel offline: dependency wheels, downloaded once.
WHEELHOUSE="${PYMACHINE_TEST_CACHE:-/var/tmp/pymachine-test-cache}/wheelhouse"
if ! ls "$WHEELHOUSE"/installer-*.whl >/dev/null 2>&1; then
  mkdir -p "$WHEELHOUSE"
  .venv/bin/pip download -q --disable-pip-version-check --dest "$WHEELHOUSE" \
    'cryptography>=41' 'filelock>=3.12' 'paramiko>=3.4' 'installer>=0.7' 'setuptools>=77'
fi
# Compile bytecode now: `pymachine env` is on every user's hot path, and a machine with
# PYTHONDONTWRITEBYTECODE set would otherwise recompile our modules on every run.
.venv/bin/python -m compileall -q machine engine provisioners installer >/dev/null
echo "setup: ready (.venv/bin/pymachine)" >&2
