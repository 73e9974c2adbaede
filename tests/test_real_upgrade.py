"""Tier 4 across the Debian 12 -> 13 upgrade (issue 21): a libvirtd of this host (Debian 12:
libvirt 9.0, QEMU 7.2, Python 3.11) and one inside the trixie root (libvirt 11.3, QEMU
10.0, Python 3.13), in the lab's two network namespaces, each node's hypervisor calls made
by its own release's hvlibvirt, one process per call (tests/lab/upgrade.py).

Ganeti's sequence drives every move: MigrationInfo (source), AcceptInstance (target),
MigrateInstance and GetMigrationStatus polled (source), FinalizeMigrationDst and
FinalizeMigrationSource. A guest started on 12 goes live to 13 and back, its counter and
boot id going on; one started on 13 with 13's default machine type (pc-i440fx-10.0,
which QEMU 7.2 lacks) is refused by 12's AcceptInstance naming machine_version, and stays
running on 13.

It needs the trixie root and its Debian 13 venv that tier 7 makes, so it runs from the
host after tier 7 (scripts/test.sh --tier 7 sets HVLIBVIRT_UPGRADE_TIER=1; tests/conftest.py
leaves it out of other runs).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from hvlibvirt import constants as C
from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HypervisorError
from lab import unavailable
from lab.console import ConsoleCapture
from lab.daemon import LibvirtDaemon
from lab.guest import GuestImage
from lab.handover_run import TICK, TICKER
from lab.instances import BOOT, READY, make_instance
from lab.netns import LabNetwork
from lab.serial import SerialLog
from lab.upgrade import Node, host_node, trixie_node, trixie_problem, trixie_root

pytestmark = [pytest.mark.tier4, pytest.mark.real]
log = logging.getLogger(__name__)

MIGRATION_TIMEOUT = 180.0


class Nodes:
    """The two nodes and where the guests' files live (the same path on both)."""

    def __init__(self, deb12: Node, deb13: Node, shared: Path, image: GuestImage,
                 facts: dict[str, Any]) -> None:
        self.deb12, self.deb13, self.shared, self.image, self.facts = (
            deb12, deb13, shared, image, facts)


@pytest.fixture(scope="module")
def nodes(real_tier: None, guest_image: GuestImage, lab_network: LabNetwork,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = trixie_root()
    problem = trixie_problem(root)
    if problem:
        unavailable(f"upgrade tier: {problem} (bash scripts/test.sh --tier 7 makes it)")
    shared = tmp_path_factory.mktemp("upgrade")
    serial = shared / "serial"
    serial.mkdir()
    # The guest's kernel and initramfs where both nodes' QEMUs open them.
    guest = shared / "guest"
    guest.mkdir()
    image = GuestImage(Path(shutil.copy(guest_image.kernel, guest)),
                       Path(shutil.copy(guest_image.initrd, guest)),
                       guest_image.kernel_version, guest_image.modules,
                       guest_image.extra_modules, guest_image.cmdline)
    net = lab_network
    daemon = LibvirtDaemon("deb12", shared / "deb12", str(uuid.uuid4()), net.a.netns, net.a.ip)
    try:
        daemon.start()
        with trixie_node(root, shared, net.b.netns, net.b.ip, str(uuid.uuid4()),
                         serial) as (deb13, facts):
            deb12 = host_node(daemon.uri, net.a.ip, serial)
            deb12.peer_uri, deb13.peer_uri = deb13.uri, deb12.uri
            log.warning("UPGRADE Debian 13 node: libvirt %s, QEMU %s, Python %s",
                        facts["libvirt"], facts["qemu"], facts["python"])
            # Debian 13's stack, or this is not the upgrade (a root of another release).
            assert (facts["libvirt"].split(".")[0], facts["qemu"].split(".")[0],
                    facts["python"].rsplit(".", 1)[0]) == ("11", "10", "3.13"), facts
            yield Nodes(deb12, deb13, shared, image, facts)
    finally:
        daemon.stop()
        # The copies of the guest and its disks; the daemons' logs stay for post-mortems.
        shutil.rmtree(guest, ignore_errors=True)
        for disk in shared.glob("*.img"):
            disk.unlink()


def migrate(src: Node, dst: Node, inst: Any) -> tuple[list[dict[str, Any]], float]:
    """Ganeti's live migration sequence; the status samples and the seconds it took."""
    t0 = time.monotonic()
    info = src.call("MigrationInfo", inst)
    dst.call("AcceptInstance", inst, info, dst.ip)
    src.call("MigrateInstance", inst, "cluster", dst.ip, True, instance_at=1)
    samples = []
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    while True:
        samples.append(src.call("GetMigrationStatus", inst))
        if samples[-1]["status"] not in (C.HV_MIGRATION_ACTIVE,
                                         C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE):
            break
        assert time.monotonic() < deadline, f"migration {src.name} -> {dst.name} still runs"
        time.sleep(0.2)
    success = samples[-1]["status"] == C.HV_MIGRATION_COMPLETED
    dst.call("FinalizeMigrationDst", inst, info, success)
    src.call("FinalizeMigrationSource", inst, success, True)
    return samples, time.monotonic() - t0


def running_on(node: Node, name: str) -> bool:
    info = node.call("GetInstanceInfo", None, name)
    return info is not None and info[4] == HvInstanceState.RUNNING


def machine_of(node: Node, name: str) -> str:
    """The machine type the domain runs with, read from its live XML on ``node``."""
    conn = libvirt.open(node.uri)
    try:
        found = re.search(r"machine='([^']+)'", conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()
    assert found, name
    return found.group(1)


def ticks_after(serial: SerialLog, since: int, count: int, timeout: float = 60.0
                ) -> tuple[int, str]:
    """The last of ``count`` new ticks the guest printed after ``since``: (n, boot id)."""
    deadline = time.monotonic() + timeout
    while True:
        found = TICK.findall(serial.text()[since:])
        if len(found) >= count:
            n, boot = found[-1]
            return int(n), boot
        assert time.monotonic() < deadline, f"the guest's counter stopped:\n{serial.tail()}"
        time.sleep(0.2)


def answers(nodes: Nodes, node: Node, name: str, serial: SerialLog, word: str) -> None:
    """The guest running on ``node`` answers on its console: ``word``-42 in its serial log."""
    mark = serial.mark()
    console = ConsoleCapture(node.uri, name, nodes.shared / f"{word}-{node.name}.stream")
    try:
        console.send(f"echo {word}-$((6*7))\n")
        serial.wait(f"{word}-42", 30, mark)
    finally:
        console.close()


def remove_everywhere(nodes: Nodes, inst: Any) -> None:
    """Stop the instance wherever it runs and clean up its definition on both nodes."""
    for node in (nodes.deb12, nodes.deb13):
        if node.call("GetInstanceInfo", None, inst.name) is not None:
            node.call("StopInstance", inst, force=True)
        node.call("CleanupInstance", None, inst.name)


def test_a_guest_from_debian12_goes_live_to_13_and_back(nodes: Nodes) -> None:
    deb12, deb13 = nodes.deb12, nodes.deb13
    # machine_version left empty, Ganeti's default: libvirt resolves it when the
    # guest starts (pc-i440fx-7.2 here), and the running guest keeps that type.
    inst, block = make_instance("upg-live", nodes.image, nodes.shared, migration_port=8121,
                                migration_bandwidth=200)
    serial = SerialLog(nodes.shared / "serial" / "upg-live.serial")
    deb12.call("StartInstance", inst, False, block_devices=block)
    try:
        serial.wait(READY, BOOT)
        assert machine_of(deb12, inst.name) == "pc-i440fx-7.2"
        console = ConsoleCapture(deb12.uri, inst.name, nodes.shared / "c12.stream")
        console.send(TICKER)
        first, boot_id = ticks_after(serial, 0, 3)
        console.close()

        for src, dst in ((deb12, deb13), (deb13, deb12)):
            mark = serial.mark()
            samples, seconds = migrate(src, dst, inst)
            statuses = [s["status"] for s in samples]
            assert statuses[-1] == C.HV_MIGRATION_COMPLETED, samples
            total = max((s.get("total_ram") or 0) for s in samples)
            assert running_on(dst, inst.name) and not running_on(src, inst.name)
            assert machine_of(dst, inst.name) == "pc-i440fx-7.2"
            # The counter goes on where it was, with the same boot id: no reboot. The
            # ten ticks after the move come from the target's QEMU (the source's is gone).
            n, boot = ticks_after(serial, serial.mark(), 10)
            ticks = [(int(k), b) for k, b in TICK.findall(serial.text()[mark:])]
            assert {b for _, b in ticks} == {boot_id}, "the guest rebooted"
            numbers = [k for k, _ in ticks]
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), numbers
            assert numbers[0] > first, (first, numbers[:3])  # not counting from 1 again
            log.warning("UPGRADE %s -> %s: %.1fs, %d polls, %d MiB RAM; counter %d -> %d, "
                        "boot id %s", src.name, dst.name, seconds, len(samples), total >> 20,
                        first, n, boot)
            first = n
    finally:
        remove_everywhere(nodes, inst)


def test_a_machine_type_qemu72_lacks_is_refused_before_data_moves(nodes: Nodes) -> None:
    deb12, deb13 = nodes.deb12, nodes.deb13
    inst, block = make_instance("upg-new", nodes.image, nodes.shared, migration_port=8122)
    serial = SerialLog(nodes.shared / "serial" / "upg-new.serial")
    deb13.call("StartInstance", inst, False, block_devices=block)
    try:
        serial.wait(READY, BOOT)
        machine = machine_of(deb13, inst.name)
        assert machine.startswith("pc-i440fx-10."), machine  # QEMU 10's default 'pc'
        info = deb13.call("MigrationInfo", inst)
        with pytest.raises(HypervisorError, match=rf"{re.escape(machine)}.*machine_version"
                           ) as refused:
            deb12.call("AcceptInstance", inst, info, deb12.ip)
        log.warning("UPGRADE refused by 12's AcceptInstance: %s", refused.value)
        # Ganeti stops at the refusal; had the migration been started regardless, libvirt
        # on 12 refuses it before the stream starts, and the guest stays where it runs.
        with pytest.raises(HypervisorError, match=machine) as failed:
            deb13.call("MigrateInstance", inst, "cluster", deb12.ip, True, instance_at=1)
        log.warning("UPGRADE MigrateInstance regardless: %s", failed.value)
        deb12.call("FinalizeMigrationDst", inst, info, False)
        deb13.call("FinalizeMigrationSource", inst, False, True)
        assert running_on(deb13, inst.name)
        assert deb12.call("GetInstanceInfo", None, inst.name) is None
        answers(nodes, deb13, inst.name, serial, "still")
    finally:
        remove_everywhere(nodes, inst)


def test_pinned_to_72_a_guest_started_on_13_goes_live_to_12(nodes: Nodes) -> None:
    """The remedy the refusal names (docs/ganeti.md, upgrade section): with
    machine_version pinned to Debian 12's type, a guest (re)started on 13 can go back."""
    deb12, deb13 = nodes.deb12, nodes.deb13
    inst, block = make_instance("upg-pin", nodes.image, nodes.shared, migration_port=8123,
                                machine_version="pc-i440fx-7.2")
    serial = SerialLog(nodes.shared / "serial" / "upg-pin.serial")
    deb13.call("StartInstance", inst, False, block_devices=block)
    try:
        serial.wait(READY, BOOT)
        samples, seconds = migrate(deb13, deb12, inst)
        assert samples[-1]["status"] == C.HV_MIGRATION_COMPLETED, samples
        assert running_on(deb12, inst.name) and not running_on(deb13, inst.name)
        log.warning("UPGRADE pinned deb13 -> deb12: %.1fs", seconds)
        answers(nodes, deb12, inst.name, serial, "back")
    finally:
        remove_everywhere(nodes, inst)
