#!/usr/bin/env bash
# Install what hvlibvirt needs on Debian 12 or 13 (run as root): Debian packages, a venv
# in .venv with the package and its test tools. Safe to run again; it skips what is there.
# `--tier N` (repeatable, or 1,2) installs only what those test tiers need (DESIGN.md);
# without it, what every tier needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tiers.sh
tiers_parse "$@"
if [ ${#REST[@]} -gt 0 ]; then
  echo "setup.sh: unknown arguments: ${REST[*]} (only --tier N)" >&2
  exit 2
fi

installed() {
  dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}
# Whether this release's package lists carry a package (or it is installed).
available() {
  installed "$1" || [ -n "$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p' \
    | grep -v '^(none)$')" ]
}

# The tests download the guest kernel and Ganeti's modules with apt-get download,
# and the choices below read the package lists: fetch them when there are none.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi

PACKAGES=(
  # every tier: build libvirt-python against the distribution's libvirt (its libvirt0
  # brings the RelaxNG schemas of tier 1 and the test driver of tier 2)
  libvirt-dev pkg-config gcc python3 python3-venv python3-dev
)
# What Debian 13 packages apart (Debian 12 has it in the packages below), when available.
optional() {
  local pkg
  for pkg in "$@"; do
    if available "$pkg"; then
      PACKAGES+=("$pkg")
    fi
  done
}
if tier_wanted 2 3 4 5 6 7; then
  # QEMU: the default kvm_path (/usr/bin/kvm) must exist for the KVM lifecycle on the test
  # driver (the demo, the command line), and every real tier runs guests
  PACKAGES+=(qemu-system-x86)
fi
if tier_wanted 3 4 5 6 7; then
  # the real tiers: a private libvirtd with the QEMU driver and a tiny Linux guest (the
  # cluster's nodes and the Xen tier's prerequisites need them as well; tier 7's upgrade
  # test runs a Debian 12 daemon here)
  PACKAGES+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils
    busybox-static iproute2 util-linux kmod
    # a bootable ISO of the lab guest, for booting from a cdrom (tests/lab/iso.py)
    xorriso isolinux syslinux-common)
  # SPICE graphics and the qxl video model; libvirt's interface driver (bridges checked
  # through libvirt)
  optional qemu-system-modules-spice libvirt-daemon-driver-interface
fi
if tier_wanted 5; then
  # Ganeti: 3.0 where the release has it (Debian 12), else 3.1 (Debian 13).
  ganeti=
  for version in 3.0 3.1; do
    if available "ganeti-haskell-$version"; then
      ganeti=$version
      break
    fi
  done
  if [ -z "$ganeti" ]; then
    echo "setup.sh: this release has neither ganeti-haskell-3.0 nor ganeti-haskell-3.1" >&2
    exit 1
  fi
  # the Ganeti cluster tier: Ganeti nodes running hvlibvirt from its Debian package
  # (Debian's python3 with its libvirt, lxml and psutil), reached over ssh
  PACKAGES+=(ganeti "ganeti-$ganeti" "ganeti-haskell-$ganeti" openssh-server socat python3-libvirt
    python3-lxml python3-psutil)
  # the compilers dpkg-buildpackage wants for the Debian package
  optional build-essential
fi
if tier_wanted 6; then
  # the Xen tier: a Debian dom0 debootstrapped into the test cache, booted as an ext4 image
  # under QEMU; the libxl CPU shim compiled with gcc; ssh into dom0
  PACKAGES+=(debootstrap e2fsprogs openssh-client)
fi
if tier_wanted 7; then
  # the Debian 13 tier: a debootstrapped trixie root (scripts/trixie-root.sh)
  PACKAGES+=(debootstrap)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
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
