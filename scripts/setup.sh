#!/usr/bin/env bash
# Install what hvlibvirt needs on Debian 12 (run as root): Debian packages, a venv in
# .venv with the package and its test tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build libvirt-python against the distribution's libvirt
  libvirt-dev pkg-config gcc python3 python3-venv python3-dev
  # the real tier: a private libvirtd with the QEMU driver and a tiny Linux guest
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  busybox-static iproute2 util-linux kmod
  # a bootable ISO of the lab guest, for booting from a cdrom (tests/lab/iso.py)
  xorriso isolinux syslinux-common
  # the Ganeti cluster tier: Ganeti 3.0 nodes running hvlibvirt from its Debian package
  # (Debian's python3 with its libvirt, lxml and psutil), reached over ssh
  ganeti ganeti-haskell-3.0 openssh-server socat python3-libvirt python3-lxml python3-psutil
  # the Xen tier: a Debian dom0 debootstrapped into the test cache, booted as an ext4 image
  # under QEMU; the libxl CPU shim compiled with gcc; ssh into dom0
  debootstrap e2fsprogs openssh-client
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$pkg")
done
# The tests download the guest kernel and Ganeti's modules with apt-get download,
# which needs package lists even when every package above is installed.
if [ ${#missing[@]} -gt 0 ] || ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  # Packages must not start their daemons here (Ganeti's noded, sshd, libvirtd): the
  # tests start private ones. Debian's policy-rc.d convention says so to invoke-rc.d.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's python3 (not whatever python3 is first on PATH) builds the venv.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
libvirt_version=$(pkg-config --modversion libvirt)
if ! .venv/bin/python -c 'import libvirt' 2>/dev/null; then
  .venv/bin/pip install -q "libvirt-python==${libvirt_version}"
fi
.venv/bin/pip install -q -e '.[test]'
