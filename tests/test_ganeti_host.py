"""``hvlibvirt ganeti status`` against the Ganeti installed on this machine.

Tier 5: it needs the Ganeti package the cluster tier installs (scripts/setup.sh), where
tests/test_ganeti_node.py works on a private copy of Ganeti's tree.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import unavailable

pytestmark = [pytest.mark.tier5, pytest.mark.real]

REPO = Path(__file__).resolve().parent.parent


def _diversions(root: Path) -> str:
    return subprocess.run(["dpkg-divert", "--root", str(root), "--list"], capture_output=True,
                          text=True, check=True).stdout


def test_status_of_this_machine_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the host (where Ganeti's package is installed for the cluster tier) status is
    read-only: exit 3 and a sentence while hvlibvirt does not serve Ganeti here."""
    # libvirt's test driver, never this machine's libvirtd
    for env in ("HVLIBVIRT_KVM_URI", "HVLIBVIRT_XEN_URI"):
        monkeypatch.setenv(env, "test:///default")
    if not Path("/usr/share/ganeti/default").exists():
        unavailable("Ganeti is not installed on this machine (scripts/setup.sh installs it)")
    before = _diversions(Path("/"))
    done = subprocess.run([sys.executable, "-m", "hvlibvirt", "ganeti", "status"],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    # the installed Ganeti's version directory (3.0 on Debian 12, 3.1 on Debian 13)
    module = Path("/usr/share/ganeti/default").resolve() / "ganeti/hypervisor/__init__.py"
    assert (done.returncode, done.stdout.strip()) == (
        3, f"Ganeti's own hypervisors are active ({module})"), done.stderr
    assert _diversions(Path("/")) == before
