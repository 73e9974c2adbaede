"""Shared pytest fixtures.

Tiers:

* unit / test driver: ``test_uri`` ('test:///default', no daemon needed);
* real (``@pytest.mark.real``): private libvirtd daemons and a tiny Linux guest, see
  tests/lab. Needs root. Outside CI the real fixtures skip when the machine cannot
  host them (not root, tools missing); with CI=true or HVLIBVIRT_REQUIRE_REAL=1 they
  fail instead. Daemons are shared by the whole session; the session teardown checks
  that no daemon, QEMU, namespace or mount is left behind and errors loudly if so.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import libvirt
import pytest

from lab.daemon import LibvirtDaemon, find_leftovers, missing_prerequisites
from lab.errors import LabLeakError
from lab.guest import GuestImage, build_guest, default_cache_dir
from lab import unavailable
from lab.instances import Running
from lab.mountpoints import host_mountpoints
from lab.netns import LabNetwork

if TYPE_CHECKING:
    from lab.cluster import Cluster
    from lab.xen_tier import XenLab
from lab.serial import SerialLog

log = logging.getLogger("hvlibvirt.tests.lab")

# Tier 6 (a nested Xen, tests/test_real_xen.py) is part of every run. HVLIBVIRT_XEN_TIER=0
# leaves it out of a local run (a quarter of an hour on two cores); never in CI.
if os.environ.get("HVLIBVIRT_XEN_TIER") == "0":
    if os.environ.get("CI") == "true" or os.environ.get("HVLIBVIRT_REQUIRE_REAL") == "1":
        raise pytest.UsageError("HVLIBVIRT_XEN_TIER=0 is not allowed in CI: tier 6 must run")
    collect_ignore = ["test_real_xen.py"]

HOST_UUID_A = "11111111-1111-4111-8111-111111111111"
HOST_UUID_B = "22222222-2222-4222-8222-222222222222"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real: needs the real tier (root, private libvirtd + QEMU); skipped when the machine cannot "
        "host it, failed instead when CI=true or HVLIBVIRT_REQUIRE_REAL=1")


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


# ------------------------------------------------------------------------------ test driver

@pytest.fixture(scope="session")
def test_uri() -> str:
    """URI of libvirt's built-in test driver (in the client library, no daemon)."""
    return "test:///default"


# ------------------------------------------------------------------------------ real tier

@pytest.fixture(scope="session")
def real_tier() -> None:
    """Skip (or, in CI, fail) when this machine cannot host the real tier."""
    problems = missing_prerequisites()
    if problems:
        unavailable("real libvirt tier unavailable: " + "; ".join(problems))


@pytest.fixture(scope="session")
def guest_image(real_tier: None) -> GuestImage:
    """The lab guest kernel + initramfs (built once, cached across sessions)."""
    return build_guest(default_cache_dir())


@pytest.fixture(scope="session")
def lab_workdir(real_tier: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session directory holding the daemons' state, sockets and logs (kept for post-mortems)."""
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def lab_network(lab_workdir: Path, request: pytest.FixtureRequest) -> LabNetwork:
    """Netns ``.a`` (10.77.0.1) and ``.b`` (10.77.0.2) joined by a veth; bridge ``hvlbr0`` in each.

    Its finalizer runs after every daemon's and is the session's leak check.
    """
    baseline_mounts = host_mountpoints()
    net = LabNetwork()

    def finish() -> None:
        problems = []
        try:
            net.teardown()
        except LabLeakError as e:
            problems.append(str(e))
        problems += find_leftovers(lab_workdir, net.namespaces, baseline_mounts)
        if problems:
            for p in problems:
                log.error("LAB LEAK after session: %s", p)
            raise LabLeakError("the lab left things behind:\n  " + "\n  ".join(problems))

    request.addfinalizer(finish)  # before setup: a half-built network is torn down too
    net.setup()
    return net


def _daemon(request: pytest.FixtureRequest, workdir: Path, name: str, host_uuid: str, netns: str,
            ip: str) -> LibvirtDaemon:
    daemon = LibvirtDaemon(name, workdir / f"daemon-{name}", host_uuid, netns, ip)
    request.addfinalizer(daemon.stop)  # before start: partial starts are cleaned up as well
    daemon.start()
    return daemon


@pytest.fixture(scope="session")
def libvirt_daemon(lab_network: LabNetwork, lab_workdir: Path, request: pytest.FixtureRequest) -> LibvirtDaemon:
    """Daemon A (host_uuid 1111..., netns ``lab_network.a``); use ``.uri`` or ``.connect()``."""
    return _daemon(request, lab_workdir, "a", HOST_UUID_A, lab_network.a.netns, lab_network.a.ip)


@pytest.fixture(scope="session")
def libvirt_daemon_b(lab_network: LabNetwork, lab_workdir: Path, request: pytest.FixtureRequest) -> LibvirtDaemon:
    """Daemon B (host_uuid 2222..., netns ``lab_network.b``); started only when a test needs it."""
    return _daemon(request, lab_workdir, "b", HOST_UUID_B, lab_network.b.netns, lab_network.b.ip)


# Tests before which a session daemon's libvirtd was found dead and started again.
REVIVED: list[str] = []


@pytest.fixture(autouse=True)
def _revive_a_dead_libvirtd(request: pytest.FixtureRequest) -> None:
    """A libvirtd that died in one test (libvirt 9.0 has crashed under the fault tier's
    kills) fails that test, not every later test on the session's daemon: start it again,
    and say so in the summary."""
    for fixture in ("libvirt_daemon", "libvirt_daemon_b"):
        if fixture not in request.fixturenames:
            continue
        daemon: LibvirtDaemon = request.getfixturevalue(fixture)
        if not daemon.libvirtd_running():
            log.warning("%s: libvirtd is dead before %s; starting it again", daemon,
                        request.node.nodeid)
            daemon.restart_libvirtd()
            REVIVED.append(f"{daemon} before {request.node.nodeid}")


class DaemonPair(NamedTuple):
    a: LibvirtDaemon
    b: LibvirtDaemon


@pytest.fixture(scope="session")
def libvirt_daemon_pair(libvirt_daemon: LibvirtDaemon, libvirt_daemon_b: LibvirtDaemon) -> DaemonPair:
    """Two daemons that look like two hosts (different host_uuid and netns): ``a, b = pair``."""
    return DaemonPair(libvirt_daemon, libvirt_daemon_b)


@pytest.fixture
def libvirt_daemon_conn(libvirt_daemon: LibvirtDaemon) -> Iterator[libvirt.virConnect]:
    """A connection to daemon A; domains the test leaves behind are destroyed and undefined."""
    conn = libvirt.open(libvirt_daemon.uri)
    before = {dom.UUIDString() for dom in conn.listAllDomains()}
    yield conn
    try:
        for dom in conn.listAllDomains():
            if dom.UUIDString() in before:
                continue
            log.info("cleaning up domain %s left by the test", dom.name())
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


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


# ------------------------------------------------------------------------------ instances

@pytest.fixture
def boot(libvirt_daemon: LibvirtDaemon, guest_image: GuestImage, tmp_path: Path
         ) -> Iterator[Callable[..., Running]]:
    """``boot(name, paused=False, attach=False, os=True, vcpus=1, disks=1, nics=1,
    **hvparams)`` starts a lab instance through KVMHypervisor on daemon A; ``attach``
    opens the console to type on it, ``os=False`` gives a guest without an OS (SeaBIOS
    only). Everything is destroyed afterwards."""
    from hvlibvirt.kvm import KVMHypervisor
    from lab.instances import start

    hv = KVMHypervisor(uri=libvirt_daemon.uri, serial_log_dir=str(tmp_path))
    names: list[str] = []
    runs = []

    def boot_one(name: str, os: bool = True, **kwargs):
        names.append(name)
        runs.append(start(hv, name, guest_image if os else None, tmp_path, **kwargs))
        return runs[-1]

    yield boot_one
    for run in runs:
        if run.console is not None:
            run.console.close()
    for name in names:
        hv.StopInstance(None, force=True, name=name)
        hv.CleanupInstance(name)


# ------------------------------------------------------------------------------ Ganeti cluster (tier 5)

@pytest.fixture(scope="session")
def ganeti_cluster(real_tier: None, guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Cluster:
    """A two-node Ganeti 3.0 cluster whose ``kvm`` is served by hvlibvirt, installed from
    the project's .deb (tests/lab/cluster.py; built with scripts/build-deb.sh when dist/
    has none newer than the sources, or $HVLIBVIRT_DEB).

    Skips outside CI when the machine cannot host it (fails with CI=true or
    HVLIBVIRT_REQUIRE_REAL=1). The finalizer tears it down and errors if anything is
    left behind.
    """
    from lab.cluster import ClusterError, cluster_prerequisites, ensure_deb

    problems = cluster_prerequisites()
    if problems:
        unavailable("Ganeti cluster tier unavailable: " + "; ".join(problems))
    try:
        deb = ensure_deb()
    except ClusterError as err:
        unavailable(f"Ganeti cluster tier unavailable: {err}")
    from lab.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("ganeti"), guest=guest_image, deb=deb)
    request.addfinalizer(cluster.teardown)  # before up(): a half-built cluster is torn down too
    cluster.up()
    log.info("Ganeti cluster up with %s: %s", deb.name, cluster.timings.phases)
    return cluster


# ------------------------------------------------------------------------------ Xen (tier 6)

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

    if (os.environ.get("HVLIBVIRT_XEN_ATTACH") or os.geteuid() != 0
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

    for line in REVIVED:
        terminalreporter.write_line("lab: libvirtd found dead and started again: " + line)

    # The wall time tier 6 adds: its tests' setup, call and teardown (the first boot
    # overlaps the other tiers and only counts where the fixture still waited for it).
    spent = sum(report.duration for reports in terminalreporter.stats.values()
                for report in reports
                if "test_real_xen.py" in getattr(report, "nodeid", "")
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
