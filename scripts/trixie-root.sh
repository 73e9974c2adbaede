#!/usr/bin/env bash
# A Debian 13 (trixie) root on a Debian 12 host, for running hvlibvirt's setup, demo and
# tests there without touching the host (run as root):
#
#   scripts/trixie-root.sh create           debootstrap the root (once; kept as a cache)
#   scripts/trixie-root.sh checkout         copy this checkout to /srv/hvlibvirt in it
#   scripts/trixie-root.sh run CMD [ARG...]  run CMD inside, in /srv/hvlibvirt
#   scripts/trixie-root.sh remove           delete the root
#
# The root is $HVLIBVIRT_TRIXIE_ROOT, else trixie/ in the test cache
# ($HVLIBVIRT_TEST_CACHE, else /var/cache/hvlibvirt-tests): never under /tmp or the
# checkout. "run" enters it in a private mount namespace by pivot_root (a bare chroot
# would let a setns into a child namespace escape to the host's /), with its own /proc,
# a private tmpfs on /run (so the lab's network-namespace clean-up sees only the root's
# own namespaces) and a clean environment. Every mount goes with the namespace.
#
# Two settings of "run", for a test on the host that runs one side inside
# (tests/test_real_upgrade.py): HVLIBVIRT_TRIXIE_SRC, a checkout bound at /srv/hvlibvirt
# in place of the copy (the root's .venv stays: it was built for Debian 13), and
# HVLIBVIRT_TRIXIE_SHARE, host directories (space-separated absolute paths) bound at the
# same path inside, so that a path means the same file on both sides. Mount points made
# for them in the root are removed when "run" ends.
set -euo pipefail
cache=${HVLIBVIRT_TEST_CACHE:-/var/cache/hvlibvirt-tests}
root=${HVLIBVIRT_TRIXIE_ROOT:-$cache/trixie}
mirror=${HVLIBVIRT_TRIXIE_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")/.." && pwd)

case $root in
  /tmp/*|/tmp|"$here"|"$here"/*) echo "refusing root $root: not under /tmp or the checkout" >&2
                                exit 2 ;;
esac

create() {
  if [ -x "$root/usr/bin/apt-get" ]; then
    echo "$root exists"
    return
  fi
  mkdir -p "$(dirname "$root")"
  # Built beside the root and renamed into place when complete: an interrupted build
  # (CI cancelled, mirror down) must not leave a half-made root that the check above
  # would take for a cached one.
  local final=$root
  root=$final.partial
  rm -rf --one-file-system "$root"
  debootstrap --variant=minbase --include=ca-certificates trixie "$root" "$mirror"
  # Packages installed inside must not start services (Debian's policy-rc.d convention).
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # The host's extra certificate authorities, for pip and apt behind the same egress.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    run_inside update-ca-certificates >/dev/null
  fi
  mv "$root" "$final"
  root=$final
  echo "$root"
}

checkout() {
  local dest="$root/srv/hvlibvirt"
  # A fresh copy, but the root's own .venv stays (setup.sh built it for Debian 13).
  mkdir -p "$dest"
  find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
  (cd "$here" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$dest"
  echo "$dest"
}

# Mount points made in the root for HVLIBVIRT_TRIXIE_SHARE, parents first.
made=()
remove_made() {
  local i
  for ((i = ${#made[@]} - 1; i >= 0; i--)); do
    rmdir "${made[i]}" || true
  done
}

run_inside() {
  [ -x "$root/usr/bin/env" ] || { echo "no root at $root (run create)" >&2; exit 1; }
  local src=${HVLIBVIRT_TRIXIE_SRC:-} shares=() dir path new
  read -r -a shares <<< "${HVLIBVIRT_TRIXIE_SHARE:-}"
  if [ -n "$src" ] && { ! [ -d "$src/.venv" ] || ! [ -d "$root/srv/hvlibvirt/.venv" ]; }; then
    echo "HVLIBVIRT_TRIXIE_SRC=$src: needs $src/.venv and the root's /srv/hvlibvirt/.venv" >&2
    exit 2
  fi
  trap remove_made EXIT
  for dir in "${shares[@]}"; do
    case $dir in
      /*) [ -d "$dir" ] || { echo "HVLIBVIRT_TRIXIE_SHARE: no directory $dir" >&2; exit 2; } ;;
      *) echo "HVLIBVIRT_TRIXIE_SHARE: $dir is not an absolute path" >&2; exit 2 ;;
    esac
    # The mount point and each directory above it that the root lacks: made here, and
    # removed (empty again: the bind goes with the namespace) when the command has ended.
    new=()
    path=$root$dir
    while [ ! -e "$path" ]; do
      new=("$path" "${new[@]}")
      path=$(dirname "$path")
    done
    for path in "${new[@]}"; do
      mkdir "$path"
      made+=("$path")
    done
  done
  unshare --mount --propagation private --fork -- /bin/bash -euc '
    root=$1 src=$2 shares=$3; shift 3
    mount --bind "$root" "$root"
    if [ -n "$src" ]; then
      mount --bind "$root/srv/hvlibvirt/.venv" "$src/.venv"
      mount --rbind "$src" "$root/srv/hvlibvirt"
    fi
    for dir in $shares; do
      mount --bind "$dir" "$root$dir"
    done
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
    mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
    mount -t tmpfs -o mode=755 tmpfs "$root/run"
    # What a booted system has in /run (systemd-tmpfiles makes it): /var/lock points to
    # /run/lock, where libvirt locks the pty of a serial console.
    mkdir -m 1777 "$root/run/lock"
    mkdir -p "$root/.oldroot"
    cd "$root"
    pivot_root . .oldroot
    workdir=/
    [ -d /srv/hvlibvirt ] && workdir=/srv/hvlibvirt
    exec chroot . /bin/sh -c "umount -l /.oldroot && cd $workdir && exec \"\$@\"" sh \
      /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 "$@"
  ' bash "$root" "$src" "${shares[*]}" "$@"
}

cmd=${1:-}
shift || true
case $cmd in
  create) create ;;
  checkout) checkout ;;
  run) [ $# -gt 0 ] || set -- /bin/bash; run_inside "$@" ;;
  remove) rm -rf --one-file-system "$root" "$root.partial" ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
