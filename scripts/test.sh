#!/usr/bin/env bash
# The whole test suite: pure, test-driver and real-libvirtd tiers. Extra arguments go
# to pytest. The real tier needs root (namespaces, a private libvirtd, TCG guests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# pytest exits 5 when it ran no test; that is a failure here, as every other non-zero.
exec .venv/bin/pytest "$@"
