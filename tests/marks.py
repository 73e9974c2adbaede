"""Marks several test modules share."""

import pytest

# The test forks as Ganeti's node daemon does, from a process that has threads (the
# event loop of an earlier test's connection); the child runs only what the test
# checks. Python 3.12 warns of any fork with threads.
FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


def _qemu_major() -> int:
    import re
    import subprocess
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True, timeout=30).stdout
        return int(re.search(r"version (\d+)", out).group(1))
    except (OSError, AttributeError, ValueError, subprocess.TimeoutExpired):
        return 0


# A live migration under TCG on QEMU 7.2 (Debian 12) is not reliable in this lab
# (nested, shared cores): hv_kvm's own QEMU-to-QEMU migration corrupts TCG guests here
# too, and the handover once lost the stream ("Read section footer failed: -5").
# docs/handover.md has the counts. On QEMU 10 (Debian 13, tier 7) every run passed and
# it stays a hard check. KVM, which TCG stands in for, is not available to tell.
TCG_QEMU7_MIGRATION = pytest.mark.xfail(
    condition=_qemu_major() < 8,
    reason="a live migration under QEMU 7.2's TCG is not reliable in this lab",
    strict=False)
