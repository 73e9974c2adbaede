"""What a restart would change in a running instance: Ganeti's VerifyInstance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants
from hvlibvirt.domain_xml.identity import device_alias as alias_of
from hvlibvirt.domain_xml.parser import domain_facts, nic as live_nic
from hvlibvirt.params import HvParam


def differences(root: etree._Element, instance: Any, table: Mapping[str, HvParam]
                ) -> list[str]:
    """Differences between the live domain XML ``root`` and the instance's
    configuration that a restart would change: memory, vCPUs, hvparams shaping the XML
    (``table``), NICs, disks."""
    live = domain_facts(root)
    drift = []
    beparams = instance.beparams
    if int(root.findtext("memory")) // 1024 != beparams.get("maxmem"):
        drift.append(f"maxmem is {root.findtext('memory')} KiB live, "
                     f"{beparams.get('maxmem')} MiB configured")
    if int(root.findtext("vcpu")) != beparams.get("vcpus"):
        drift.append(f"vcpus is {root.findtext('vcpu')} live, {beparams.get('vcpus')} "
                     "configured")
    in_force = live.meta.hvparams if live.meta else {}
    for name, entry in sorted(table.items()):
        if entry.xml and in_force.get(name) != instance.hvparams.get(name):
            drift.append(f"hvparam {name} is {in_force.get(name)!r} live, "
                         f"{instance.hvparams.get(name)!r} configured")
    want = {alias_of("disk", d.uuid) for d in instance.disks_info}
    want |= {alias_of("nic", n.uuid) for n in instance.nics}
    have = {a for a in live.devices if a.startswith(("ua-disk-", "ua-nic-"))}
    drift += [f"device {a} is configured but not attached" for a in sorted(want - have)]
    drift += [f"device {a} is attached but not configured" for a in sorted(have - want)]
    for nic in instance.nics:
        elem = live_nic(root, alias_of("nic", nic.uuid))
        if elem is None:
            continue
        link = (nic.nicparams or {}).get(constants.NIC_LINK) or None
        if elem.find("mac").get("address") != nic.mac.lower():
            drift.append(f"NIC {nic.uuid} has MAC {elem.find('mac').get('address')} "
                         f"live, {nic.mac} configured")
        source = elem.find("source")
        if source is not None and source.get("bridge") != link:
            drift.append(f"NIC {nic.uuid} is on bridge {source.get('bridge')} live, "
                         f"{link} configured")
    return drift
