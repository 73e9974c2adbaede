"""Property-based hot-plug input tests on a real guest (issue 12, part 1).

One field of a hot-added disk or NIC (or of HotAddDevice's ``extra`` and ``seq``, or a
HotModDevice's nicparams) at a time is a hostile value (tests/hostile.py). Allowed
outcomes: success, or a HotplugError/HypervisorError naming the field. After a refusal
the live XML, the persistent definition and our metadata are exactly as before (no
reserved slot, no record); a success is attached live and persistently, recorded in our
metadata, shaped like a valid device of its kind, and removed again (the booted lab
guest acknowledges the unplug).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import libvirt
import pytest
from hypothesis import event, given, settings, strategies as st
from lxml import etree

import hostile
from hvlibvirt import constants as C
from hvlibvirt.domain_xml.identity import device_alias
from hvlibvirt.errors import HypervisorError
from hvlibvirt.objects import NIC, Disk
from lab.instances import BOOT, READY, Running

pytestmark = [pytest.mark.tier3, pytest.mark.real]

META_NS = "urn:x-hvlibvirt:instance:1"
EXAMPLES = settings(hostile.SETTINGS,
                    max_examples=int(os.environ.get("HVL_REAL_PROP_EXAMPLES", 60)))
# Device children a hot-added disk or NIC may have; anything else came from the value.
DISK_CHILDREN = {"driver", "source", "backingStore", "target", "readonly", "alias", "address"}
NIC_CHILDREN = {"mac", "source", "model", "driver", "alias", "address", "link", "vlan",
                "virtualport", "target"}


def _state(run: Running) -> tuple[str, str, str]:
    return (run.dom.XMLDesc(0), run.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            run.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0))


def _without_tap(state: tuple[str, str, str]) -> tuple[str, str, str]:
    """``state`` without the tap names libvirt generates for the live NICs."""
    live = etree.fromstring(state[0].encode())
    for target in live.xpath("devices/interface/target"):
        target.getparent().remove(target)
    return etree.tostring(live, encoding="unicode"), state[1], state[2]


def _device(xml: str, alias: str) -> etree._Element | None:
    found = etree.fromstring(xml.encode()).xpath("devices/*[alias/@name=$a]", a=alias)
    return found[0] if found else None


def _named(err: Exception, tokens: tuple[str, ...]) -> None:
    assert isinstance(err, HypervisorError), repr(err)  # HotplugError is one
    assert any(t in str(err) for t in tokens), f"{str(err)!r} names none of {tokens}"


def _try(run: Running, dev_type: str, device: Any, extra: Any, seq: Any,
         tokens: tuple[str, ...], children: set[str]) -> None:
    """Hot-add ``device``; check the outcome; remove it again when it was added."""
    before = _state(run)
    try:
        run.hv.HotAddDevice(run.inst, dev_type, device, extra, seq)
    except HypervisorError as err:
        _named(err, tokens)
        assert _state(run) == before, "a refused hot-add changed the domain"
        event("refused")
        return
    event("added")
    alias = device_alias(dev_type, device.uuid)
    try:
        live, config, meta = _state(run)
        elem = _device(live, alias)
        assert elem is not None and _device(config, alias) is not None and alias in meta
        assert {child.tag for child in elem} <= children, etree.tostring(elem)
    finally:  # a failed check must not leave the slot taken for the next examples
        run.hv.HotDelDevice(run.inst, dev_type, device, extra, seq)
    live, config, meta = _state(run)
    assert _device(live, alias) is None and _device(config, alias) is None
    assert f'alias="{alias}"' not in meta
    assert _aliases(live) == _aliases(before[0]), "the removal left devices behind"


def _aliases(xml: str) -> list[str]:
    return sorted(etree.fromstring(xml.encode()).xpath("devices/*/alias/@name"))


def _disk(run: Running) -> tuple[Disk, tuple[str, None]]:
    return run.new_disk(1)


def _set(target: str, attr: str) -> Callable[[dict[str, Any], Any], None]:
    def apply(parts: dict[str, Any], value: Any) -> None:
        if target == "extra_item":
            extra = list(parts["extra"])
            extra[int(attr)] = value
            parts["extra"] = tuple(extra)
        elif target == "nicparams":
            parts["device"].nicparams[attr] = value
        elif target == "whole":
            parts[attr] = value
        else:
            setattr(parts["device"], attr, value)
    return apply


# field -> (how to set it, words one of which an error must contain)
DISK_FIELDS = {
    "disk.uuid": (_set("device", "uuid"), ("uuid",)),
    "disk.dev_type": (_set("device", "dev_type"), ("dev_type",)),
    "disk.mode": (_set("device", "mode"), ("mode",)),
    "disk.params": (_set("device", "params"), ("params",)),
    "disk.size": (_set("device", "size"), ("size",)),
    "disk.logical_id": (_set("device", "logical_id"), ("logical_id",)),
    "extra": (_set("whole", "extra"), ("extra",)),
    "extra.link_name": (_set("extra_item", "0"), ("link_name",)),
    "extra.drive_uri": (_set("extra_item", "1"), ("drive_uri",)),
    "seq": (_set("whole", "seq"), ("seq",)),
}
NIC_FIELDS = {
    "nic.uuid": (_set("device", "uuid"), ("uuid",)),
    "nic.mac": (_set("device", "mac"), ("mac",)),
    "nic.ip": (_set("device", "ip"), ("ip",)),
    "nic.nicparams": (_set("device", "nicparams"), ("nicparams", "of NIC")),
    "nic.nicparams.mode": (_set("nicparams", C.NIC_MODE), ("mode",)),
    "nic.nicparams.link": (_set("nicparams", C.NIC_LINK), ("link",)),
    "nic.nicparams.vlan": (_set("nicparams", C.NIC_VLAN), ("vlan",)),
    "nic.nicparams.link_state": (_set("nicparams", "link_state"), ("link_state",)),
    "seq": (_set("whole", "seq"), ("seq",)),
}


@pytest.fixture
def guest(boot: Callable[..., Running]) -> Running:
    run = boot("hp-prop")
    run.serial.wait(READY, BOOT)
    return run


def test_hostile_hot_added_devices(guest: Running, tmp_path: Any) -> None:
    files = hostile.Files.make(tmp_path / "hostile")
    counter = iter(range(1, 1 << 30))

    @EXAMPLES
    @given(kind=st.sampled_from([C.HOTPLUG_TARGET_DISK, C.HOTPLUG_TARGET_NIC]),
           data=st.data())
    def run(kind: str, data: st.DataObject) -> None:
        fields = DISK_FIELDS if kind == C.HOTPLUG_TARGET_DISK else NIC_FIELDS
        field = data.draw(st.sampled_from(sorted(fields)), label="field")
        value = data.draw(hostile.values(files), label="value")
        if kind == C.HOTPLUG_TARGET_DISK:
            device, extra = _disk(guest)
            if field == "extra.drive_uri":
                device.params = {C.LDP_ACCESS: C.DISK_USERSPACE}
        else:
            n = next(counter)
            device, extra = NIC(mac=f"aa:00:00:7b:{n >> 8 & 0xff:02x}:{n & 0xff:02x}",
                                nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                           C.NIC_LINK: "hvlbr0"}), None
        parts = {"device": device, "extra": extra, "seq": 1}
        apply, tokens = fields[field]
        apply(parts, value)
        children = DISK_CHILDREN if kind == C.HOTPLUG_TARGET_DISK else NIC_CHILDREN
        _try(guest, kind, parts["device"], parts["extra"], parts["seq"], tokens, children)

    run()


def test_hostile_nic_modifications(guest: Running, tmp_path: Any) -> None:
    files = hostile.Files.make(tmp_path / "hostile")
    nic = NIC(mac="aa:00:00:7c:00:01",
              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "hvlbr0"})
    guest.hv.HotAddDevice(guest.inst, C.HOTPLUG_TARGET_NIC, nic, None, 1)
    alias = device_alias("nic", nic.uuid)
    good = dict(nic.nicparams)

    @EXAMPLES
    @given(key=st.sampled_from([C.NIC_MODE, C.NIC_LINK, C.NIC_VLAN, "link_state"]),
           value=hostile.values(files))
    def run(key: str, value: Any) -> None:
        nic.nicparams = dict(good, **{key: value})
        before = _state(guest)
        try:
            guest.hv.HotModDevice(guest.inst, C.HOTPLUG_TARGET_NIC, nic, None, 1)
        except HypervisorError as err:
            _named(err, (key, "NIC", "nic"))
            if "the old device is back" in str(err):
                # Replaced, refused and put back: the same NIC where it was, under the
                # tap name libvirt gave it again.
                assert _without_tap(_state(guest)) == _without_tap(before), \
                    "the NIC put back differs from the old one"
                event("refused and put back")
            else:
                assert _state(guest) == before, "a refused modification changed the domain"
                event("refused")
            return
        event("modified")
        live, config, _meta = _state(guest)
        assert _device(live, alias) is not None and _device(config, alias) is not None
        nic.nicparams = dict(good)
        guest.hv.HotModDevice(guest.inst, C.HOTPLUG_TARGET_NIC, nic, None, 1)

    run()
    nic.nicparams = dict(good)
    guest.hv.HotDelDevice(guest.inst, C.HOTPLUG_TARGET_NIC, nic, None, 1)
