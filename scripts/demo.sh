#!/usr/bin/env bash
# The main job: an instance lifecycle on libvirt's embedded test driver (no daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hvlibvirt demo --uri test:///default
