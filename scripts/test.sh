#!/usr/bin/env bash
# The test suite by tiers (DESIGN.md): 1 pure, 2 libvirt's test driver, 3 a private
# libvirtd running guests, 4 two daemons (migration), 5 a Ganeti cluster, 6 nested Xen,
# 7 Debian 13 (the suite but tier 6 in a trixie root, then the upgrade: a daemon here and
# one there). `--tier N` (repeatable, or 1,2) runs only those tiers and installs only what
# they need; without it, tiers 1-6.
# Extra arguments go to pytest. Tiers 3-7 need root (namespaces, private daemons, TCG
# guests).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tiers.sh
tiers_parse "$@"
setup=()
pytest_tiers=()
for tier in "${TIERS[@]}"; do
  setup+=(--tier "$tier")
  [ "$tier" = 7 ] || pytest_tiers+=(--tier "$tier")
done
bash scripts/setup.sh "${setup[@]}"
# pytest exits 5 when it ran no test; that is a failure here, as every other non-zero.
if [ ${#TIERS[@]} -eq 0 ] || ! tier_wanted 7; then
  exec .venv/bin/pytest "${pytest_tiers[@]}" "${REST[@]}"
fi
if [ ${#pytest_tiers[@]} -gt 0 ]; then
  .venv/bin/pytest "${pytest_tiers[@]}" "${REST[@]}"
fi

# Tier 7, Debian 13: a debootstrapped trixie root, made once and kept in the test cache
# like tier 6's images, entered by pivot_root (scripts/trixie-root.sh). Its "run" starts
# from an empty environment, so what the tests must see is passed in by name. Its own
# pytest base directory: the lab finds leftover processes by the paths in their command
# lines, and the root sees every process of the host. Tiers 1-5 (pure, test driver,
# private libvirtd daemons with guests, migration, the two-node cluster on Ganeti 3.1)
# and the check of the Ganeti installed there (tests/test_ganeti_host.py); the Xen tier
# is Debian 12's.
passed=()
for name in CI HVLIBVIRT_REQUIRE_REAL; do
  if [ -n "${!name+set}" ]; then
    passed+=("$name=${!name}")
  fi
done
trixie() { bash scripts/trixie-root.sh "$@"; }
trixie create
trixie checkout
trixie run env "${passed[@]}" bash scripts/test.sh --basetemp=/tmp/hvlibvirt-trixie-ci \
  --ignore=tests/test_real_xen.py --ignore=tests/test_real_xen_faults.py "${REST[@]}"
trixie run rm -rf /tmp/hvlibvirt-trixie-ci  # kept only when the stage failed, to read
# The upgrade between the releases: tier 4 across them (tests/test_real_upgrade.py: a
# Debian 12 libvirtd here and a Debian 13 one in the root, a guest live from 12 to 13 and
# back), then a Ganeti 3.1 cluster with a node of each release
# (tests/test_ganeti_cluster_upgrade.py: this host's, and one over the root's files). They
# need the root and its Debian 13 venv made above, so they come last, from the host (the
# conftest leaves them out of every run without HVLIBVIRT_UPGRADE_TIER=1).
HVLIBVIRT_UPGRADE_TIER=1 .venv/bin/pytest tests/test_real_upgrade.py \
  tests/test_ganeti_cluster_upgrade.py "${REST[@]}"
