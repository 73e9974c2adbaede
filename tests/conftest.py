"""Shared pytest fixtures; each tier's own live in tests/tiers/ (registered below).

Tiers (DESIGN.md; ``scripts/test.sh --tier N`` runs some of them, tests/tiers/markers.py):

* 1 pure and 2 libvirt's test driver (``test_uri``: 'test:///default', no daemon);
* 3 and 4 (``real``): private libvirtd daemons, one or two, and a tiny Linux guest, see
  tests/lab and tests/tiers/daemons.py. Needs root. Outside CI the real fixtures skip
  when the machine cannot host them (not root, tools missing); with CI=true or
  HVLIBVIRT_REQUIRE_REAL=1 they fail instead;
* 5 (``real``): a Ganeti cluster (tests/tiers/cluster.py);
* 6 (``real``): nested Xen hosts (tests/tiers/xen.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import unavailable
from lab.guest import default_cache_dir
from lab.serial import SerialLog

pytest_plugins = ["tiers.markers", "tiers.daemons", "tiers.cluster", "tiers.xen", "tiers.handover",
                  "tiers.timing"]

# Tier 6 (a nested Xen, tests/test_real_xen.py) is part of every run. HVLIBVIRT_XEN_TIER=0
# leaves it out of a local run (a quarter of an hour on two cores); never in CI.
if os.environ.get("HVLIBVIRT_XEN_TIER") == "0":
    if os.environ.get("CI") == "true" or os.environ.get("HVLIBVIRT_REQUIRE_REAL") == "1":
        raise pytest.UsageError("HVLIBVIRT_XEN_TIER=0 is not allowed in CI: tier 6 must run")
    collect_ignore = ["test_real_xen.py", "test_real_xen_faults.py"]
# The upgrade tier (a Debian 12 and a Debian 13 libvirtd, tests/test_real_upgrade.py; a
# Ganeti cluster with a node of each release, tests/test_ganeti_cluster_upgrade.py) needs
# the trixie root and the Debian 13 venv that tier 7 makes: scripts/test.sh --tier 7 runs
# it from the host after the suite in the root, with HVLIBVIRT_UPGRADE_TIER=1.
if os.environ.get("HVLIBVIRT_UPGRADE_TIER") != "1":
    collect_ignore = [*globals().get("collect_ignore", []), "test_real_upgrade.py",
                      "test_ganeti_cluster_upgrade.py"]


@pytest.fixture(scope="session", autouse=True)
def lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """hvlibvirt's runtime directory (its per-instance lock files, hvlibvirt.locks, and
    ownership marks) in this session's directory instead of the host's /run/hvlibvirt
    (processes the tests fork inherit it). A lock file outlives no hold: the lock
    directory must be empty at the end."""
    import os

    from hvlibvirt import config

    path = tmp_path_factory.mktemp("run")
    saved = os.environ.get(config.RUN_DIR_ENV)
    os.environ[config.RUN_DIR_ENV] = str(path)
    yield path / "locks"
    if saved is None:
        del os.environ[config.RUN_DIR_ENV]
    else:
        os.environ[config.RUN_DIR_ENV] = saved
    left = sorted(p.name for p in (path / "locks").glob("*"))
    assert not left, f"lock files left behind: {left}"


@pytest.fixture(scope="session")
def test_uri() -> str:
    """URI of libvirt's built-in test driver (in the client library, no daemon)."""
    return "test:///default"


@pytest.fixture
def serial_log(tmp_path: Path) -> Callable[[str], SerialLog]:
    """Factory: ``serial_log(domain_name)`` -> SerialLog at a fresh per-test path.

    Put ``log.path`` into the domain's ``<serial><log file=.../>``.
    """
    def make(name: str) -> SerialLog:
        return SerialLog(tmp_path / f"{name}.console")

    return make


@pytest.fixture
def frozen_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A snapshot of /proc/meminfo read in place of the live file, so that two reads of
    the node's memory in one test agree (the live one moves between reads)."""
    import hvlibvirt.node
    snapshot = tmp_path / "meminfo"
    snapshot.write_text(Path(hvlibvirt.node.MEMINFO).read_text(encoding="ascii"), encoding="ascii")
    monkeypatch.setattr(hvlibvirt.node, "MEMINFO", str(snapshot))
    return snapshot


# ------------------------------------------------------------------------------ Ganeti

def _ganeti_share(version: str) -> Path:
    from lab.ganeti_modules import ModulesUnavailable, ganeti_share

    try:
        return ganeti_share(version, default_cache_dir())
    except ModulesUnavailable as err:
        unavailable(f"cannot fetch Ganeti {version}'s modules: {err}")


@pytest.fixture(scope="session")
def ganeti31_share() -> Path:
    """The directory holding Ganeti 3.1's ``ganeti`` package (from the Debian package
    ganeti-3.1: Debian 13's, or bookworm-backports' on Debian 12), for child
    interpreters: one process cannot import two Ganetis."""
    return _ganeti_share("3.1")


@pytest.fixture(scope="session")
def ganeti():
    """Ganeti 3.0's own ``constants`` and ``objects`` modules.

    They come from the Debian package ganeti-3.0 (bookworm's, also on Debian 13),
    downloaded and unpacked (never installed) into the test cache. Outside CI a machine
    without apt skips; in CI the tests must run.
    """
    modules = _ganeti_share("3.0")
    sys.path.insert(0, str(modules))
    try:
        from ganeti import constants, objects
    finally:
        sys.path.remove(str(modules))
    return constants, objects
