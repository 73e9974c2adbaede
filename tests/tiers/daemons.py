"""Tiers 3 and 4: private libvirtd daemons and the lab guest (tests/lab).

Needs root. Outside CI the fixtures skip when the machine cannot host them (not root,
tools missing); with CI=true or HVLIBVIRT_REQUIRE_REAL=1 they fail instead. Daemons are
shared by the whole session; the session teardown checks that no daemon, QEMU, namespace
or mount is left behind and errors loudly if so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import libvirt
import pytest

from lab import unavailable
from lab.daemon import LibvirtDaemon, find_leftovers, missing_prerequisites
from lab.errors import LabLeakError
from lab.guest import GuestImage, build_guest, default_cache_dir
from lab.instances import Running
from lab.mountpoints import host_mountpoints
from lab.netns import LabNetwork

log = logging.getLogger("hvlibvirt.tests.lab")

HOST_UUID_A = "11111111-1111-4111-8111-111111111111"
HOST_UUID_B = "22222222-2222-4222-8222-222222222222"


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


@pytest.hookimpl(tryfirst=True)  # before tier 6's lines, as when one conftest printed both
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for line in REVIVED:
        terminalreporter.write_line("lab: libvirtd found dead and started again: " + line)
