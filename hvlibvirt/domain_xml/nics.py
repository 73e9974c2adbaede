"""``<interface>`` elements for Ganeti NICs.

Modes: ``bridged`` (a Linux bridge; a VLAN is set on the bridge port), ``openvswitch``
(an OVS bridge with a virtualport; VLANs as OVS tags) and ``routed`` (a tap with no
bridge; routing is the node's business, as in Ganeti). Ganeti's VLAN syntax:
``.100`` or ``100`` (untagged access port), ``:100:200`` (tagged trunk), ``.100:200``
(untagged 100 plus tagged 200).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import identity, inputs
from hvlibvirt.errors import HypervisorError

# Not one of Ganeti's nicparams: an hvlibvirt extension to take a NIC's link down
# (hot-modifiable) without removing it.
NIC_LINK_STATE = "link_state"
_VLAN = re.compile(r"^(?:\.?(\d+))?((?::\d+)*)\Z")
_MAX_VLAN = 4094


def _not_a_string(value: Any, what: str) -> HypervisorError:
    return HypervisorError(f"Invalid {what}: {repr(value)[:60]} is a {type(value).__name__}; "
                           "Ganeti's VLANs are strings (.N, N, :N:M or .N:M)")


def parse_vlan(value: str, what: str) -> tuple[int | None, list[int]]:
    """Ganeti's VLAN string -> (untagged VLAN or None, tagged VLANs)."""
    if not isinstance(value, str):
        raise _not_a_string(value, what)
    match = _VLAN.match(value)
    if not value or match is None:
        raise HypervisorError(f"Invalid {what}: {value!r} (expected .N, N, :N:M or .N:M)")
    untagged = int(match.group(1)) if match.group(1) else None
    tagged = [int(v) for v in match.group(2).split(":") if v]
    for vid in ([untagged] if untagged is not None else []) + tagged:
        if not 1 <= vid <= _MAX_VLAN:
            raise HypervisorError(f"Invalid {what}: VLAN {vid} is outside 1-{_MAX_VLAN}")
    return untagged, tagged


def vlan_of(nicparams: Mapping[str, Any], what: str) -> str:
    """The NIC's vlan nicparam ("" for none), refused when not a string before anything
    else looks at it (such as whether this libvirt sets VLANs on Linux bridges)."""
    vlan = nicparams.get(C.NIC_VLAN)
    if vlan is None:
        return ""
    if not isinstance(vlan, str):
        raise _not_a_string(vlan, f"vlan of {what}")
    return vlan


def _vlan(elem: etree._Element, value: str, what: str) -> None:
    untagged, tagged = parse_vlan(value, what)
    vlan = etree.SubElement(elem, "vlan")
    if tagged:
        vlan.set("trunk", "yes")
    if untagged is not None:
        tag = etree.SubElement(vlan, "tag", id=str(untagged))
        if tagged:
            tag.set("nativeMode", "untagged")
    for vid in tagged:
        etree.SubElement(vlan, "tag", id=str(vid))


def _connected(nic: Any, what: str, linux_bridge_vlans: bool) -> etree._Element:
    """The ``<interface>`` with what every hypervisor shares: mode, MAC, bridge, OVS
    port, VLAN and link state (model, driver and alias are added by the callers)."""
    nicparams = inputs.nicparams(nic, what)
    mode = nicparams.get(C.NIC_MODE) or C.NIC_MODE_BRIDGED
    link = nicparams.get(C.NIC_LINK) or ""
    vlan = vlan_of(nicparams, what)
    if mode in (C.NIC_MODE_BRIDGED, C.NIC_MODE_OVS):
        if not link:
            raise HypervisorError(f"Invalid link of {what}: {mode} mode needs a bridge name")
        elem = etree.Element("interface", type="bridge")
    elif mode == C.NIC_MODE_ROUTED:
        elem = etree.Element("interface", type="ethernet")
    else:
        raise HypervisorError(f"Invalid mode of {what}: {mode!r} (hvlibvirt supports "
                              "bridged, routed and openvswitch)")
    mac = getattr(nic, "mac", None)
    etree.SubElement(elem, "mac", address=identity.mac_address(mac, f"mac of {what}"))
    if mode != C.NIC_MODE_ROUTED:
        etree.SubElement(elem, "source", bridge=identity.interface_name(link,
                                                                          f"link of {what}"))
    if mode == C.NIC_MODE_OVS:
        etree.SubElement(elem, "virtualport", type="openvswitch")
    if vlan:
        if mode == C.NIC_MODE_ROUTED:
            raise HypervisorError(f"Invalid vlan of {what}: routed NICs have no VLAN")
        if mode == C.NIC_MODE_BRIDGED and not linux_bridge_vlans:
            raise HypervisorError(f"Cannot honour the vlan of {what}: this libvirt sets "
                                  "VLANs on Linux bridge ports only from version 11.1 on; "
                                  "use openvswitch mode or a VLAN-specific bridge")
        _vlan(elem, vlan, f"vlan of {what}")
    link_state = nicparams.get(NIC_LINK_STATE)
    if link_state not in (None, "", "up", "down"):
        raise HypervisorError(f"Invalid {NIC_LINK_STATE} of {what}: {link_state!r} "
                              "(expected up or down)")
    if link_state == "down":
        etree.SubElement(elem, "link", state="down")
    return elem


def interface(nic: Any, index: int, hvparams: Mapping[str, Any],
              linux_bridge_vlans: bool = True) -> etree._Element:
    """The KVM ``<interface>`` for ``instance.nics[index]`` (address and boot added by
    the caller)."""
    what = f"NIC {index}"
    alias = identity.device_alias("nic", getattr(nic, "uuid", None))
    elem = _connected(nic, what, linux_bridge_vlans)
    nic_type = hvparams[C.HV_NIC_TYPE]
    virtio = nic_type == C.HT_NIC_PARAVIRTUAL
    etree.SubElement(elem, "model", type="virtio" if virtio else nic_type)
    if virtio:
        driver = etree.SubElement(elem, "driver",
                                  name="vhost" if hvparams[C.HV_VHOST_NET] else "qemu")
        queues = hvparams.get(C.HV_VIRTIO_NET_QUEUES) or 1
        if queues > 1:
            driver.set("queues", str(queues))
    etree.SubElement(elem, "alias", name=alias)
    return elem


XEN_PV_MODEL = "netfront"


def xen_model(hvparams: Mapping[str, Any], hvm: bool) -> str:
    """The libxl NIC model: netfront for paravirtual NICs; on HVM, the emulated card
    nic_type names (libxl adds its PV twin)."""
    nic_type = hvparams[C.HV_NIC_TYPE] if hvm else C.HT_NIC_PARAVIRTUAL
    return XEN_PV_MODEL if nic_type == C.HT_NIC_PARAVIRTUAL else nic_type


def xen_interface(nic: Any, index: int, model: str | None, script: str | None
                  ) -> etree._Element:
    """The Xen ``<interface>`` for ``instance.nics[index]``: libxl's vif with the NIC's IP
    (for routing scripts), the vif script and the model."""
    what = f"NIC {index}"
    alias = identity.device_alias("nic", getattr(nic, "uuid", None))
    nicparams = inputs.nicparams(nic, what)
    vlan = vlan_of(nicparams, what)
    mode = nicparams.get(C.NIC_MODE) or C.NIC_MODE_BRIDGED
    if vlan and mode == C.NIC_MODE_BRIDGED:
        raise HypervisorError(f"Cannot honour the vlan of {what}: libxl sets VLANs on "
                              "openvswitch ports only; use openvswitch mode or a "
                              "VLAN-specific bridge")
    if vlan and all(parse_vlan(vlan, f"vlan of {what}")):
        raise HypervisorError(f"Cannot honour the vlan of {what}: {vlan!r} mixes an "
                              "untagged and tagged VLANs, which libxl cannot express (use "
                              ".N or :N:M)")
    elem = _connected(nic, what, linux_bridge_vlans=True)
    ip = getattr(nic, "ip", None)
    if ip:
        try:
            ipaddress.ip_address(ip if isinstance(ip, str) else "")  # not a number
        except ValueError:
            raise HypervisorError(f"Invalid ip of {what}: {ip!r}") from None
        etree.SubElement(elem, "ip", address=ip)
    if script:
        etree.SubElement(elem, "script", path=identity.absolute_path(script, "vif_script"))
    if model:
        etree.SubElement(elem, "model", type=model)
    etree.SubElement(elem, "alias", name=alias)
    return elem


def blamed_link(root: etree._Element, message: str) -> str:
    """Which NIC libvirt's failure ``message`` is about, when it quotes one's bridge and
    nothing else (libvirt 11: "Cannot get interface MTU on 'br9'"); '' otherwise."""
    for elem in root.iterfind("devices/interface"):
        bridge = elem.find("source").get("bridge") if elem.find("source") is not None else None
        if bridge and f"'{bridge}'" in message:
            alias = elem.find("alias")
            nic = alias.get("name") if alias is not None else "a NIC"
            return f" (the link of {nic}: is there a bridge {bridge} on this node?)"
    return ""

