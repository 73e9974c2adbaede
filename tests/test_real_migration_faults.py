"""Tier 3: libvirt failing at every call index of the migration methods that need two
private libvirtds (daemon A the source, B the target): MigrateInstance,
FinalizeMigrationSource(success) and FinalizeMigrationDst(success, failure). The
single-daemon ones (AcceptInstance, GetMigrationStatus, FinalizeMigrationSource of a
failed migration) are in tests/test_real_libvirt_faults.py, whose ``every_index`` runs
these: a run without faults counts the calls, then run N makes call N raise. Counted
are this process's calls (tests/fault_injection.py), not the migration helper's.

Each run sets up the state Ganeti has when it makes the call, makes it failing at call
N, then does what Ganeti does next: after a MigrateInstance that raised or a migration
that failed, FinalizeMigrationDst(False) on the target and FinalizeMigrationSource(False)
on the source, an error of either logged and passed over; after a completed one,
FinalizeMigrationSource(True), then, if that went through, FinalizeMigrationDst(True).
Whatever failed, the guest never runs on both nodes, and on neither only while the
source is paused for a migration's last copy (the trickled one below can be in it when
the target is finalized; the source's abort resumes it). A finalization that
raised is then made again without faults (the retry an operator or the next Ganeti job
makes, which must work), and then:

* the guest runs on exactly one node: the source after an abort, in the QEMU it had;
  the target after a completed migration, in a QEMU the migration started;
* the other node has no domain (defined or running), no QEMU, no state file in its
  libvirt directories, no ownership mark; no migration helper runs; no helper file in
  /tmp; the migration target recorded in the guest's metadata is cleared.

The guest is an instance without an OS (SeaBIOS only, 64 MiB), started once; it
migrates in a fraction of a second and is brought back to A after a run that ended on
B. A migration still under way (for FinalizeMigrationDst(False)) is one whose stream
is slowed to a trickle by a token bucket on A's end of the lab network.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from fault_injection import Faults
from hvlibvirt import constants as C, instance_metadata, migration, ownership
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance
from lab.daemon import LibvirtDaemon
from lab.instances import make_instance
from lab.netns import LabNetwork
from test_real_faults import consistent, fresh, qemus_of, seen
from test_real_libvirt_faults import Run, every_index, faults, summary  # noqa: F401

pytestmark = [pytest.mark.tier3, pytest.mark.real]

NAME = "mf-bare"
PORT = 8120  # QEMU's migration port on the target
POLL = 0.05  # seconds between status polls (Ganeti's is 1 s; nothing here needs that)
DONE = 30.0  # seconds a migration of the OS-less guest may take
# A's end of the veth at 64 kbit/s: a few hundred KiB of RAM take minutes, so a
# migration started then is still running when its finalization is tested.
TRICKLE = ["tbf", "rate", "64kbit", "burst", "4kb", "latency", "10s"]


@dataclass
class Pair:
    a: LibvirtDaemon
    b: LibvirtDaemon
    net: LabNetwork
    src: KVMHypervisor  # on A, where the guest lives between runs
    dst: KVMHypervisor  # on B
    inst: Instance
    info: str = ""      # the MigrationInfo of the migration under way
    qemu: int = 0       # the guest's QEMU before the run
    totals: dict[str, tuple[int, float]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pair(libvirt_daemon_pair, lab_network: LabNetwork,
         tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
         ) -> Iterator[Pair]:
    a, b = libvirt_daemon_pair
    workdir = tmp_path_factory.mktemp("migfaults")
    src = KVMHypervisor(uri=a.uri, migration_uri=b.uri, serial_log_dir=str(workdir))
    dst = KVMHypervisor(uri=b.uri, migration_uri=a.uri, serial_log_dir=str(workdir))
    inst, block = make_instance(NAME, None, workdir, memory=64, migration_port=PORT)
    lab = Pair(a, b, lab_network, src, dst, inst)
    try:
        src.StartInstance(inst, block, False)
        yield lab
    finally:
        trickle(lab, False)
        for hv in (src, dst):
            hv.StopInstance(None, force=True, name=NAME)
            hv.CleanupInstance(NAME)
        summary(request, lab, "test_real_migration_faults")


def trickle(lab: Pair, on: bool) -> None:
    """Slow A's outgoing traffic to a trickle (or back to normal)."""
    veth = lab.net.a.veth
    if on:
        lab.a.run(["tc", "qdisc", "replace", "dev", veth, "root", *TRICKLE])
    else:
        lab.a.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)


# ------------------------------------------------------------------------- Ganeti's steps

def poll(source: KVMHypervisor, inst: Instance) -> str:
    """GetMigrationStatus until the job is no longer active; a poll that fails is a
    failed migration, as for Ganeti."""
    deadline = time.monotonic() + DONE
    while True:
        try:
            status = source.GetMigrationStatus(inst).status
        except HypervisorError:
            return C.HV_MIGRATION_FAILED
        if status not in C.HV_KVM_MIGRATION_ACTIVE_STATUSES:
            return status
        assert time.monotonic() < deadline, f"still migrating after {DONE}s"
        time.sleep(POLL)


def passed_over(*calls: Callable[[], None]) -> None:
    """Ganeti's abort: each call made, whatever the one before raised (it logs that)."""
    for call in calls:
        with contextlib.suppress(HypervisorError):
            call()


def start(lab: Pair, source: KVMHypervisor, target: KVMHypervisor, ip: str) -> None:
    """MigrationInfo on the source, AcceptInstance on the target, MigrateInstance."""
    lab.info = source.MigrationInfo(lab.inst)
    target.AcceptInstance(lab.inst, lab.info, ip)
    source.MigrateInstance("cluster", lab.inst, ip, True)


def migrate(lab: Pair, source: KVMHypervisor, target: KVMHypervisor, ip: str) -> None:
    """A whole migration without faults."""
    start(lab, source, target, ip)
    assert poll(source, lab.inst) == C.HV_MIGRATION_COMPLETED
    source.FinalizeMigrationSource(lab.inst, True, True)
    target.FinalizeMigrationDst(lab.inst, lab.info, True)


def at_home(lab: Pair) -> None:
    """The guest runs on A only (migrated back if a run ended on B); its QEMU noted."""
    if running(lab) == [lab.b.uri]:
        migrate(lab, lab.dst, lab.src, lab.net.a.ip)
    one_copy(lab, on_b=False, where="before the run")
    (lab.qemu,) = qemus_of(NAME)


def abort(lab: Pair) -> None:
    """Ganeti's abort of a migration from A to B."""
    passed_over(lambda: lab.dst.FinalizeMigrationDst(lab.inst, lab.info, False),
                lambda: lab.src.FinalizeMigrationSource(lab.inst, False, True))


# ------------------------------------------------------------------------- the invariant

def running(lab: Pair) -> list[str]:
    """The URIs where the guest runs (libvirt state running: a guest a migration is
    bringing in is paused until it has arrived)."""
    found = []
    for uri in (lab.a.uri, lab.b.uri):
        with fresh(uri) as conn:
            try:
                if conn.lookupByName(NAME).state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                    found.append(uri)
            except libvirt.libvirtError as err:
                assert err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN, err
    return found


def runs_once(lab: Pair, where: str) -> list[str]:
    """The guest runs on one node, never on both or none (returns which)."""
    there = running(lab)
    assert len(there) == 1, f"{where}: the guest runs on {there or 'no node'}"
    return there


def one_copy(lab: Pair, on_b: bool, where: str) -> None:
    """The guest runs on B (or A) only and the other node keeps nothing of it."""
    home, away = (lab.b, lab.a) if on_b else (lab.a, lab.b)
    home_hv, away_hv = (lab.dst, lab.src) if on_b else (lab.src, lab.dst)
    assert runs_once(lab, where) == [home.uri], where
    found = consistent(home_hv, home, NAME)
    assert found is not None and found.active, where
    assert seen(away.uri, NAME) is None, f"{where}: {NAME} left defined on {away}"
    assert away_hv.GetInstanceInfo(NAME) is None and NAME not in away_hv.ListInstances()
    files = list((away.workdir / "etc" / "qemu").glob(f"{NAME}.xml"))
    files += list((away.workdir / "run" / "qemu").glob(f"{NAME}.*"))
    assert not files, f"{where}: left on {away}: {files}"
    assert len(qemus_of(NAME)) == 1, f"{where}: QEMUs {qemus_of(NAME)}"
    with fresh(home.uri) as conn:
        dom = conn.lookupByName(NAME)
        meta = instance_metadata.read(dom)
        assert meta is not None and meta.migration_target is None, f"{where}: {meta}"
        marks = Path(ownership.mark_root(), ownership.uri_dir_name(away.uri))
        assert not (marks / dom.UUIDString()).exists(), f"{where}: ownership mark left"
    for uri in (lab.a.uri, lab.b.uri):
        assert migration.helper_pids(uri, NAME) == [], f"{where}: a helper runs"
    assert not list(Path(tempfile.gettempdir()).glob("hvlibvirt-migrate-*")), where


def outcome(lab: Pair, run: Run, success: bool) -> None:
    """``one_copy`` where the outcome says: after an abort, in the QEMU it had; after
    a completed migration, in a QEMU the migration started on B."""
    one_copy(lab, on_b=success, where=run.where)
    if not success:
        assert qemus_of(NAME) == [lab.qemu], f"{run.where}: not the guest's own QEMU"
        return
    assert qemus_of(NAME) != [lab.qemu], run.where
    with fresh(lab.b.uri) as conn:
        state = conn.lookupByName(NAME).state()
    assert state == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED], \
        f"{run.where}: {state}"


# ------------------------------------------------------------------------- the methods

def test_migrate_instance(pair: Pair, faults: Faults) -> None:
    lab = pair

    def prepare() -> None:
        at_home(lab)
        lab.info = lab.src.MigrationInfo(lab.inst)
        lab.dst.AcceptInstance(lab.inst, lab.info, lab.net.b.ip)

    def check(run: Run) -> None:
        runs_once(lab, run.where)
        success = run.raised is None and poll(lab.src, lab.inst) == C.HV_MIGRATION_COMPLETED
        if success:
            lab.src.FinalizeMigrationSource(lab.inst, True, True)
            lab.dst.FinalizeMigrationDst(lab.inst, lab.info, True)
        else:
            abort(lab)
        outcome(lab, run, success)

    every_index(lab, faults, "MigrateInstance", lambda: lab.src.MigrateInstance(
        "cluster", lab.inst, lab.net.b.ip, True), prepare, check)
    at_home(lab)


def _completed(lab: Pair) -> None:
    """A migration from A to B whose polls saw it completed."""
    at_home(lab)
    start(lab, lab.src, lab.dst, lab.net.b.ip)
    assert poll(lab.src, lab.inst) == C.HV_MIGRATION_COMPLETED


def test_finalize_source_after_success(pair: Pair, faults: Faults) -> None:
    """Ganeti stops at a failed FinalizeMigrationSource(True) (the target is not
    finalized); the retry does both."""
    lab = pair

    def check(run: Run) -> None:
        assert runs_once(lab, run.where) == [lab.b.uri], run.where
        if run.raised is not None:
            lab.src.FinalizeMigrationSource(lab.inst, True, True)
        lab.dst.FinalizeMigrationDst(lab.inst, lab.info, True)
        outcome(lab, run, True)

    every_index(lab, faults, "FinalizeMigrationSource(success)",
                lambda: lab.src.FinalizeMigrationSource(lab.inst, True, True),
                lambda: _completed(lab), check)
    at_home(lab)


def test_finalize_target_after_success(pair: Pair, faults: Faults) -> None:
    lab = pair

    def prepare() -> None:
        _completed(lab)
        lab.src.FinalizeMigrationSource(lab.inst, True, True)

    def check(run: Run) -> None:
        assert runs_once(lab, run.where) == [lab.b.uri], run.where
        if run.raised is not None:
            lab.dst.FinalizeMigrationDst(lab.inst, lab.info, True)
        outcome(lab, run, True)

    every_index(lab, faults, "FinalizeMigrationDst(success)",
                lambda: lab.dst.FinalizeMigrationDst(lab.inst, lab.info, True),
                prepare, check)
    at_home(lab)


def test_finalize_target_after_failure(pair: Pair, faults: Faults,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration is still under way (its stream trickles) when Ganeti gives up:
    the target's half-received guest is removed, the source's resumed."""
    lab = pair
    monkeypatch.setattr(migration, "FOLLOW", 0.0)  # MigrateInstance returns at once

    def prepare() -> None:
        at_home(lab)
        start(lab, lab.src, lab.dst, lab.net.b.ip)
        found = seen(lab.b.uri, NAME)
        assert found is not None and found.active, "no incoming guest on B"
        assert lab.src.GetMigrationStatus(lab.inst).status == C.HV_MIGRATION_ACTIVE

    def check(run: Run) -> None:
        # Not runs_once: the source may be paused in the last copy until its abort.
        assert len(running(lab)) <= 1, f"{run.where}: the guest runs on both nodes"
        lab.src.FinalizeMigrationSource(lab.inst, False, True)
        if run.raised is not None:
            lab.dst.FinalizeMigrationDst(lab.inst, lab.info, False)
        outcome(lab, run, False)

    trickle(lab, True)
    try:
        every_index(lab, faults, "FinalizeMigrationDst(failure)",
                    lambda: lab.dst.FinalizeMigrationDst(lab.inst, lab.info, False),
                    prepare, check)
    finally:
        trickle(lab, False)
