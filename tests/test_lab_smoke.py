"""Smoke tests of the real-libvirt harness itself (tests/lab); the tests span tiers 1-6,
so each carries its own tier marker."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from lab.daemon import LibvirtDaemon
from lab.domain import guest_domain_xml
from lab.guest import GuestImage
from lab.netns import LabNetwork
from lab.serial import SerialLog, SerialTimeout, parse_dev

log = logging.getLogger(__name__)

BOOT_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 30.0


def _wait_state(dom: libvirt.virDomain, state: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while dom.state()[0] != state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _host_uuid(daemon: LibvirtDaemon) -> str:
    conn = daemon.connect()
    try:
        return etree.fromstring(conn.getCapabilities().encode()).findtext("host/uuid") or ""
    finally:
        conn.close()


@pytest.mark.tier2
def test_test_driver_opens(test_uri: str) -> None:
    conn = libvirt.open(test_uri)
    try:
        assert "test" in [dom.name() for dom in conn.listAllDomains()]
    finally:
        conn.close()


@pytest.mark.tier1
def test_serial_log_parses_dev_lines_and_times_out_with_tail(tmp_path: Path) -> None:
    console = SerialLog(tmp_path / "g.console")
    assert console.text() == "" and console.last_dev() is None
    console.path.write_bytes(b"HVL-DEV blk= net=lo mem=94800 size=\r\n"
                             b"HVL-READY uptime=2.50\r\n"
                             b"HVL-DEV blk=vda,sda net=eth0,lo mem=125328 size=vda:65536,sda:2048\r\n"
                             b"HVL-DEV blk=vdb net=lo mem=1")  # half-written line: ignored
    assert console.last_dev() == {"blk": ["vda", "sda"], "net": ["eth0", "lo"], "mem": 125328,
                                  "sizes": {"vda": 65536, "sda": 2048}}
    mark = console.wait(r"HVL-READY uptime=([0-9.]+)\r?\n", 1).end()
    assert console.wait_dev(lambda d: "sda" in d["blk"], 1, since=mark)["sizes"]["sda"] == 2048
    with pytest.raises(SerialTimeout, match="(?s)HVL-NEVER.*uptime=2.50"):
        console.wait("HVL-NEVER", 0.1)


@pytest.mark.tier6
@pytest.mark.real
def test_xen_console_reports_are_found_after_the_shell_prompt() -> None:
    """busybox's prompt ends in a cursor query and no newline; a report follows on its line."""
    from lab.xen_tier import XenLab

    text = ("HVL-DEV blk=xvda net=eth0,lo mem=223256\nHVL-READY hv=xen guest_type=PV\n"
            "/ # \x1b[6nHVL-DEV blk=xvda net=eth0,lo mem=124952\nHVL-DEV blk=xvda,xv")
    lab = XenLab.__new__(XenLab)
    lab.console = lambda _name: text  # type: ignore[method-assign]
    assert lab.last_dev("g") == {"blk": "xvda", "net": "eth0,lo", "mem": "124952"}


@pytest.mark.tier1
def test_guest_modules_from_either_debian_kernel_layout(tmp_path: Path) -> None:
    """Debian 12's kernel package: lib/modules, .ko; Debian 13's: usr/lib/modules, .ko.xz,
    virtio_pci built in. The builder finds either tree, needs no file for a built-in
    module (and refuses one that is neither), and puts modules uncompressed in the
    initramfs."""
    import lzma

    from lab.guest import _copy_module, _module_closure, _modules_root

    mods = tmp_path / "deb13" / "usr/lib/modules" / "6.12.0-cloud"
    (mods / "kernel/drivers").mkdir(parents=True)
    (mods / "modules.dep").write_text(
        "kernel/drivers/virtio_blk.ko.xz:\n"
        "kernel/drivers/sd_mod.ko.xz: kernel/drivers/scsi_mod.ko.xz\n"
        "kernel/drivers/scsi_mod.ko.xz:\n")
    (mods / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    (mods / "kernel/drivers/sd_mod.ko.xz").write_bytes(lzma.compress(b"\x7fELF sd_mod"))
    assert _modules_root(tmp_path / "deb13") == mods.parent
    files, optional = _module_closure(mods, ("virtio_pci", "sd_mod"), ("e1000",))
    assert files == ["kernel/drivers/scsi_mod.ko.xz", "kernel/drivers/sd_mod.ko.xz"]
    assert optional == []
    with pytest.raises(RuntimeError, match="virtio_net"):
        _module_closure(mods, ("virtio_net",), ())
    _copy_module(mods / "kernel/drivers/sd_mod.ko.xz", tmp_path / "initramfs")
    assert (tmp_path / "initramfs/sd_mod.ko").read_bytes() == b"\x7fELF sd_mod"
    (tmp_path / "deb12/lib/modules").mkdir(parents=True)
    assert _modules_root(tmp_path / "deb12") == tmp_path / "deb12/lib/modules"


@pytest.mark.tier1
def test_a_device_whose_size_the_guest_could_not_read_is_listed_without_a_size() -> None:
    """The guest lists a disk being hot-removed but its size file is already gone."""
    dev = parse_dev("blk=vda,vdb net=eth0,lo mem=94780 size=vda:131072,vdb:")
    assert dev["blk"] == ["vda", "vdb"] and dev["sizes"] == {"vda": 131072}


@pytest.mark.tier1
def test_a_second_cluster_lab_waits_for_the_first_and_names_it() -> None:
    """The cluster lab's machine-wide lock: a second lab is refused once its wait is
    over, naming the first's process, and gets the lock when the first releases it."""
    from lab.host_state import MachineLock
    from lab.errors import LabError

    name = f"\0hvlibvirt-test-cluster-lock-{os.getpid()}"
    first, second = MachineLock(name), MachineLock(name)
    first.acquire(1)
    try:
        with pytest.raises(LabError, match=rf"\b{os.getpid()}: "):
            second.acquire(0)
    finally:
        first.release()
    second.acquire(1)
    second.release()


@pytest.mark.tier3
@pytest.mark.real
def test_guest_boots_and_acpi_power_button_shuts_it_off(
        libvirt_daemon: LibvirtDaemon, libvirt_daemon_conn: libvirt.virConnect, guest_image: GuestImage,
        serial_log: Callable[[str], SerialLog]) -> None:
    name = "hvl-smoke"
    console = serial_log(name)
    dom = libvirt_daemon_conn.defineXML(guest_domain_xml(name, guest_image, console.path))
    t0 = time.monotonic()
    dom.create()
    ready = console.wait(r"HVL-READY uptime=([0-9.]+)\r?\n", BOOT_TIMEOUT_S)
    log.info("guest ready %.2fs after create (guest uptime %ss)", time.monotonic() - t0, ready.group(1))
    dev = console.last_dev()
    assert dev is not None and dev["mem"] > 0, console.tail()
    assert "lo" in dev["net"]

    mark = console.mark()
    t0 = time.monotonic()
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    assert _wait_state(dom, libvirt.VIR_DOMAIN_SHUTOFF, SHUTDOWN_TIMEOUT_S), (
        f"still {dom.state()} {SHUTDOWN_TIMEOUT_S}s after the power button; console:\n{console.tail()}")
    log.info("SHUTOFF %.2fs after the ACPI power button", time.monotonic() - t0)
    console.wait("HVL-ACPI-POWEROFF", 5, since=mark)


@pytest.mark.tier4
@pytest.mark.real
def test_daemon_pair_are_two_hosts_on_one_network(libvirt_daemon_pair: tuple[LibvirtDaemon, LibvirtDaemon],
                                                  lab_network: LabNetwork) -> None:
    a, b = libvirt_daemon_pair
    uuid_a, uuid_b = _host_uuid(a), _host_uuid(b)
    assert (uuid_a, uuid_b) == (a.host_uuid, b.host_uuid)
    assert uuid_a != uuid_b
    # B's daemon really lives in netns b, and b reaches a over the veth.
    assert b.ip in b.run(["ip", "-o", "-4", "addr", "show"]).stdout
    assert lab_network.ping(lab_network.b.netns, a.ip), f"{lab_network.b.netns} cannot ping {a.ip}"
