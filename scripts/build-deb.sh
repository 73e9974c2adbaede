#!/usr/bin/env bash
# Build dist/python3-hvlibvirt_<version>_all.deb from this checkout with Debian's own
# tools (debhelper, dh-python/pybuild). Run as root on Debian 12 or 13: it installs its
# build dependencies. The build happens in a copy under build/ (removed afterwards), so the
# checkout and /tmp stay clean.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's python3 and tools only: pybuild runs "python3.X" from PATH, and another
# Python first on PATH (pyenv, a venv) would build against the wrong interpreter.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# build-essential: dpkg-buildpackage checks for it (a minimal Debian 13 lacks it).
BUILD_DEPS=(build-essential dpkg-dev debhelper dh-python python3-all python3-setuptools
            pybuild-plugin-pyproject)
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

version=$(dpkg-parsechangelog -S Version)
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
if [ "$version" != "$upstream" ]; then
  echo "debian/changelog says $version but pyproject.toml says $upstream" >&2
  exit 1
fi

mkdir -p build dist
work=$(mktemp -d "$PWD/build/deb.XXXXXX")
trap 'rm -rf "$work"; rmdir build 2>/dev/null || true' EXIT
mkdir "$work/hvlibvirt-$version"
# What the checkout holds (tracked and new files), never the venv or build output.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$work/hvlibvirt-$version"
else
  tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./.git -cf - . \
    | tar -xf - -C "$work/hvlibvirt-$version"
fi
(cd "$work/hvlibvirt-$version" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -b -us -uc \
  >"$work/build.log" 2>&1) || { tail -40 "$work/build.log" >&2; exit 1; }
deb="python3-hvlibvirt_${version}_all.deb"
mv "$work/$deb" "dist/$deb"
echo "dist/$deb"
