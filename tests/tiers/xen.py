"""Tier 6: nested Xen hosts under QEMU's TCG (tests/lab/xen_*.py, docs/xen-tier.md).

The dom0 boots in the background from the end of collection when the selected tests
use it (after ``-m`` and ``--tier`` deselected theirs), so a run without tier 6 never
boots one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lab import unavailable
from lab.guest import default_cache_dir

if TYPE_CHECKING:
    from lab.xen_tier import XenLab

XEN_TOOLS = ("debootstrap", "mkfs.ext4", "ssh", "gcc", "qemu-system-x86_64")
_early_xen: list[XenLab] = []  # the dom0 booting while the other tiers run
_early_peer: list[XenLab] = []  # its peer (the migration target), when a test uses one


def _new_xen_lab(link: tuple[Any, int] | None = None) -> XenLab:
    import hvlibvirt
    from lab.xen_tier import XenLab

    return XenLab(default_cache_dir(), Path(hvlibvirt.__file__).resolve().parent, link)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When tier 6 is to run, boot its dom0 now, in the background: the boot is minutes
    of one core under TCG, and the tiers before it leave that core mostly idle."""
    import shutil

    if (session.config.option.collectonly  # no test runs, the boot would be for nothing
            or os.environ.get("HVLIBVIRT_XEN_ATTACH") or os.geteuid() != 0
            or any(shutil.which(tool) is None for tool in XEN_TOOLS)
            or not any("xen" in getattr(item, "fixturenames", ()) for item in session.items)):
        return  # the fixture boots (or reports what is missing) when it is reached
    from lab.xen_vm import PeerLink

    pair = any("xen_peer" in getattr(item, "fixturenames", ()) for item in session.items)
    link = PeerLink.new() if pair else None
    for index, labs in ((1, _early_xen), (2, _early_peer))[:2 if pair else 1]:
        lab = _new_xen_lab((link, index) if link else None)
        lab.start_in_background()
        labs.append(lab)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for lab in (*_early_xen, *_early_peer):  # never reached the fixture (deselected, ...)
        lab.stop()


@pytest.fixture(scope="session")
def xen(real_tier: None, ganeti) -> Iterator[XenLab]:
    """A real Xen 4.17 with a Debian dom0 under QEMU's TCG (tests/lab/xen_vm.py), booted
    from a fresh image of the cached dom0 tree, with this checkout's hvlibvirt in it
    (booting since collection ended, see pytest_collection_finish).
    ``HVLIBVIRT_XEN_ATTACH=PORT:DIR`` uses one started by ``python -m lab.xen_vm``
    instead (for working on the tier), after copying this hvlibvirt into it."""
    import shutil

    from lab.xen_vm import Dom0Error

    missing = [tool for tool in XEN_TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable("Xen tier unavailable: missing " + ", ".join(missing))
    attach = os.environ.get("HVLIBVIRT_XEN_ATTACH")
    if _early_xen:
        lab = _early_xen[0]
        try:
            lab.ready()
        except Dom0Error as err:  # a boot lost to the known fault: one fresh dom0
            lab.retries.append(f"dom0 boot retried: {str(err)[:300]}")
            lab.start()
    else:
        lab = _new_xen_lab()
        if attach:
            lab.attach(*attach.split(":", 1))
        else:
            lab.start()
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def xen_peer(xen: XenLab) -> Iterator[XenLab]:
    """A second nested Xen host linked to ``xen`` (``lab.xen_vm.PeerLink``: xendom1 at
    10.79.0.2, root ssh between the two), for migration. Booted with the first since
    collection ended; ``HVLIBVIRT_XEN_PEER_ATTACH`` uses the second of
    ``python -m lab.xen_vm --pair``."""
    from lab.xen_vm import Dom0Error

    attach = os.environ.get("HVLIBVIRT_XEN_PEER_ATTACH")
    if _early_peer:
        lab = _early_peer[0]
        try:
            lab.ready()
        except Dom0Error as err:
            lab.retries.append(f"peer dom0 boot retried: {str(err)[:300]}")
            lab.start()
    elif attach:
        lab = _new_xen_lab()
        lab.host = "xendom1"
        lab.attach(*attach.split(":", 1))
    else:
        unavailable("Xen peer unavailable: the pair is booted at collection (or set "
                    "HVLIBVIRT_XEN_PEER_ATTACH from `python -m lab.xen_vm --pair`)")
    yield lab
    lab.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Tier 6's one retry on a fresh dom0 after the known nested-Xen fault (lab/xen_tier.py)."""
    if "xen" not in pyfuncitem.fixturenames:
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    pyfuncitem.funcargs["xen"].run_with_retry(lambda: pyfuncitem.obj(**args), pyfuncitem.nodeid)
    return True


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from lab import xen_tier

    # The wall time tier 6 adds: its tests' setup, call and teardown (the first boot
    # overlaps the other tiers and only counts where the fixture still waited for it).
    spent = sum(report.duration for reports in terminalreporter.stats.values()
                for report in reports
                if "test_real_xen" in getattr(report, "nodeid", "")  # and _faults
                and hasattr(report, "duration"))
    if xen_tier.LABS:
        terminalreporter.write_line(f"tier 6: {spent:.0f}s in its tests")
    for lab in xen_tier.LABS:
        terminalreporter.write_line(
            f"tier 6 {lab.host}: booted {len(lab.boots)}x in "
            + ", ".join(f"{b:.0f}s" for b in lab.boots)
            + f"; {len(lab.retries)} retried after the known fault; "
            f"{len(lab.fault_lines)} fault lines in dom0's logs at its stop; "
            f"{len(lab.console_retypes)} console lines typed again")
        for line in lab.fault_lines[:10]:
            terminalreporter.write_line("tier 6 fault line: " + line)
        for line in lab.retries:
            terminalreporter.write_line("tier 6 retry: " + line)
        for line in lab.console_retypes:
            terminalreporter.write_line("tier 6 console typed again: " + line)
