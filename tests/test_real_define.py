"""Real tier: libvirt's QEMU driver accepts every golden case (defineXML), then undefine.

Each case from tests/golden_cases.py is rendered again with its paths under tmp_path (the
files and directories it names are created there: disks as sparse files, ISOs, floppy,
kernel, initrd, password files, the hugepages and VNC socket directories), the domain type
the private daemon offers for x86_64 (kvm, else qemu) and the real emulator. The QEMU driver
validates machine type and device models against that emulator. The defined domain must
keep every ua- alias and every explicit PCI slot (and drive address) we generated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import libvirt
import pytest
from lxml import etree

import golden_cases
from hvlibvirt.domain_xml import parse_domain
from hvlibvirt.kvm_node import offered_domain_types
from lab.daemon import LibvirtDaemon

pytestmark = [pytest.mark.tier3, pytest.mark.real]

EMULATOR = "/usr/bin/qemu-system-x86_64"


def _create_paths(case: golden_cases.Case) -> None:
    for directory in case.dirs:
        os.makedirs(directory, exist_ok=True)
    for path in case.files:
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            if path.endswith(".pw"):
                f.write(b"secret\n")
            else:
                f.truncate(16 * 1024 * 1024)  # sparse


def _pci_devices(root: etree._Element) -> set[tuple[str, str, int, int]]:
    """(tag, alias or '', slot, function) of every bus-0 PCI address in a domain."""
    found = set()
    for dev in root.iterfind("devices/*"):
        addr = dev.find("address")
        if addr is None or addr.get("type") != "pci" or int(addr.get("bus", "0"), 16) != 0:
            continue
        alias = dev.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        found.add((dev.tag, name if name.startswith("ua-") else "",
                   int(addr.get("slot"), 16), int(addr.get("function", "0"), 16)))
    return found


def _kept_problems(generated: str, defined: str) -> list[str]:
    """What of our aliases, addresses and metadata the defined domain lost or changed."""
    ours, theirs = parse_domain(generated), parse_domain(defined)
    problems = []
    if theirs.domain_type != ours.domain_type:
        problems.append(f"domain type {ours.domain_type} became {theirs.domain_type}")
    for alias, dev in ours.devices.items():
        got = theirs.devices.get(alias)
        if got is None:
            problems.append(f"alias {alias} ({dev.tag}) is gone")
            continue
        changed = {k: (v, got.address.get(k)) for k, v in dev.address.items()
                   if got.address.get(k) != v}
        if got.tag != dev.tag or changed:
            problems.append(f"{alias}: {dev.tag} -> {got.tag}, address changes "
                            f"(ours, libvirt's) {changed}")
    missing = (_pci_devices(etree.fromstring(generated.encode()))
               - _pci_devices(etree.fromstring(defined.encode())))
    if missing:
        problems.append(f"PCI addresses not kept (tag, alias, slot, function): {sorted(missing)}")
    if theirs.meta != ours.meta:
        problems.append("our <metadata> did not survive the define")
    return problems


def define_cases(conn: libvirt.virConnect, names: Iterable[str], domain_type: str,
                 root: Path, check: Callable[[str, str], list[str]] = _kept_problems
                 ) -> dict[str, str]:
    """Define each golden case of ``names`` as ``domain_type``, its paths created under
    ``root``; ``check(generated, defined)`` lists what the definition got wrong; then
    undefine it. Returns case name -> what went wrong (a refused define included); no
    case is left defined, whatever fails."""
    failures: dict[str, str] = {}
    uuids: set[str] = set()
    try:
        for index, name in enumerate(names):
            # short roots: the VNC socket path must fit a sun_path (107 bytes)
            env = golden_cases.Env(root=str(root / f"c{index}"), domain_type=domain_type,
                                   emulator=EMULATOR)
            case = golden_cases.build(name, env)
            _create_paths(case)
            xml = case.render()
            uuids.add(case.instance["uuid"])
            try:
                dom = conn.defineXML(xml)
            except libvirt.libvirtError as err:
                failures[name] = f"defineXML refused: {err.get_error_message()}"
                continue
            try:
                problems = check(xml, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                if problems:
                    failures[name] = "; ".join(problems)
            finally:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        for dom in conn.listAllDomains():  # what a failed undefine left
            if dom.UUIDString() in uuids:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    return failures


def test_every_golden_case_is_defined_by_the_qemu_driver(libvirt_daemon: LibvirtDaemon,
                                                         tmp_path: Path) -> None:
    conn = libvirt_daemon.connect()
    failures: dict[str, str] = {}
    try:
        offered = offered_domain_types(conn.getCapabilities()).get("x86_64", [])
        assert {"kvm", "qemu"} & set(offered), f"daemon offers no x86_64 kvm/qemu: {offered}"
        # kvm when offered (as the brief and choose_target() prefer), and TCG as well:
        # kvm_flag=disabled instances are defined as type 'qemu'.
        domain_types = [t for t in ("kvm", "qemu") if t in offered]
        print(f"defining {len(golden_cases.KVM_NAMES)} cases as types {domain_types}")
        for domain_type in domain_types:
            found = define_cases(conn, golden_cases.KVM_NAMES, domain_type, tmp_path)
            failures.update((f"{name} (type {domain_type})", msg) for name, msg in found.items())
    finally:
        conn.close()
    assert not failures, "\n".join(f"{n}: {msg}" for n, msg in sorted(failures.items()))
