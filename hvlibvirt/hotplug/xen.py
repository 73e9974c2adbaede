"""Xen's part of the hotplug flow: what libxl can attach live (paravirtual disks and
vifs; an HVM guest's emulated disks and NICs stay as they started) and their
elements."""

from __future__ import annotations

from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import disks, inputs, nics, parser
from hvlibvirt.domain_xml.xen_builder import disk_names
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.hotplug.flow import NewDevice, Target


class XenDevices:
    """libxl's refusal rules and element factory for ``hotplug.Flow``; ``hvm`` for
    fully virtualised guests."""

    def __init__(self, hvm: bool) -> None:
        self._hvm = hvm

    def refusal(self, target: Target, action: str, dev_type: str) -> str | None:
        if action == C.HOTPLUG_ACTION_MODIFY and dev_type == C.HOTPLUG_TARGET_DISK:
            return "Disks cannot be modified while the instance runs (only added or removed)"
        disk_type = target.hvparams.get(C.HV_DISK_TYPE)
        if dev_type == C.HOTPLUG_TARGET_DISK and self._hvm and \
                disk_type != C.HT_DISK_PARAVIRTUAL:
            return f"libxl hot-plugs paravirtual (bus xen) disks only; this instance's " \
                   f"disk_type is {disk_type!r}"
        return None

    @staticmethod
    def element(target: Target, dev_type: str, device: Any, extra: Any, seq: int,
                what: str) -> NewDevice:
        """A PV disk (``extra`` = (link_name, drive_uri)) at the next free guest name,
        or a vif (always netfront: libxl cannot hot-plug emulated NICs)."""
        hvp = target.hvparams
        if dev_type == C.HOTPLUG_TARGET_NIC:
            return NewDevice(nics.xen_interface(device, seq, nics.XEN_PV_MODEL,
                                                hvp.get(C.HV_VIF_SCRIPT) or None))
        try:
            link_name, _drive_uri = inputs.disk_extra(extra, what)
        except HypervisorError as err:
            raise HotplugError(str(err)) from None
        # An HVM cdrom's hdc counts as used too.
        free = disk_names(hvp[C.HV_BLOCKDEV_PREFIX], parser.disk_targets(target.root))
        if not free:
            raise HotplugError(f"{what}: no free guest disk name left")
        return NewDevice(disks.xen_disk(device, link_name, seq, free[0], "xen"))

    def replacement(self, target: Target, old: etree._Element, device: Any, seq: int,
                    what: str) -> etree._Element:
        """The changed vif; refused for an emulated NIC, which the guest would see
        replaced by a netfront one."""
        new = self.element(target, C.HOTPLUG_TARGET_NIC, device, None, seq, what).elem
        if old.xpath("model/@type") != new.xpath("model/@type"):
            raise HotplugError(f"{what}: libxl hot-plugs netfront NICs only, and this "
                               f"one is an emulated {old.find('model').get('type')}; "
                               "restart the instance to change it")
        return new

    @staticmethod
    def in_place(old: etree._Element, new: etree._Element) -> bool:
        return False  # libxl changes no NIC of a running domain in place

    @staticmethod
    def where(target: Target, alias: str, elem: etree._Element) -> dict[str, str]:
        """Its alias, and its guest disk name or MAC."""
        where = {"alias": alias}
        if elem.find("target") is not None and elem.tag == "disk":
            where["target"] = elem.find("target").get("dev")
        if elem.find("mac") is not None:
            where["mac"] = elem.find("mac").get("address")
        return where
