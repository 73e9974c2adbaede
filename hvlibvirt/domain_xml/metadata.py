"""Our ``<metadata>`` element: the Ganeti facts libvirt does not hold.

It records the instance uuid and hypervisor, the hvparams in force when the domain
was started, and each device's uuid -> alias; for a domain that came in by the
handover, the runtime of Ganeti's KVM it was built from. Everything derivable from the rest of
the domain XML (PCI slots, SCSI targets) is deliberately not stored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError

NAMESPACE = "urn:x-hvlibvirt:instance:1"
PREFIX = "hvl"
_NSMAP = {PREFIX: NAMESPACE}


def _q(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


@dataclass
class InstanceMetadata:
    """The content of our metadata element."""

    instance_uuid: str
    hypervisor: str
    hvparams: dict[str, Any] = field(default_factory=dict)
    # (kind, device uuid, alias) in device order
    devices: list[tuple[str, str, str]] = field(default_factory=list)
    # Set when this library asked the domain to stop, so that a shutdown the guest did
    # on its own (Ganeti's "user shutdown") can be told apart from ours.
    stop_requested: bool = False
    # Aliases whose hot-unplug the guest has not acknowledged yet (see hotplug/steps.py).
    pending_unplug: list[str] = field(default_factory=list)
    # Where a migration started by MigrateInstance goes, until it is finalized.
    migration_target: str | None = None
    # How it goes: None for libvirt's migration, HV_KVM_STREAM for QEMU's own stream
    # to Ganeti's KVM (handover.back), which libvirt does not know of.
    migration_via: str | None = None
    # A domain that came in by the handover: hv_kvm's runtime it was built from (JSON,
    # as hv_kvm gave it) and the fingerprint of its disks and NICs then, which tells
    # whether hv_kvm can still reproduce it (handover.back).
    hv_kvm_runtime: str | None = None
    hv_kvm_devices: str | None = None


HV_KVM_STREAM = "hv_kvm"  # migration_via: QEMU's stream to Ganeti's KVM


def _encode(value: Any) -> tuple[str, str]:
    if value is None:
        return "none", ""
    if isinstance(value, bool):
        return constants.VTYPE_BOOL, "true" if value else "false"
    if isinstance(value, int):
        return constants.VTYPE_INT, str(value)
    return constants.VTYPE_STRING, str(value)


def _decode(vtype: str, text: str) -> Any:
    if vtype == "none":
        return None
    if vtype == constants.VTYPE_BOOL:
        return text == "true"
    if vtype == constants.VTYPE_INT:
        return int(text)
    return text


def build(meta: InstanceMetadata) -> etree._Element:
    """Return the ``<hvl:instance>`` element (to be placed inside ``<metadata>``)."""
    root = _hvparams_element(meta.hvparams)
    root.set("uuid", meta.instance_uuid)
    root.set("hypervisor", meta.hypervisor)
    if meta.stop_requested:
        root.set("stop", "requested")
    if meta.migration_target:
        root.set("migrating-to", meta.migration_target)
    if meta.migration_via:
        root.set("migrating-via", meta.migration_via)
    devices = etree.SubElement(root, _q("devices"))
    for kind, dev_uuid, alias in meta.devices:
        etree.SubElement(devices, _q("device"), kind=kind, uuid=dev_uuid, alias=alias)
    for alias in meta.pending_unplug:
        etree.SubElement(root, _q("unplug"), alias=alias)
    if meta.hv_kvm_runtime is not None:
        try:
            etree.SubElement(root, _q("hv-kvm-runtime"), devices=meta.hv_kvm_devices or ""
                             ).text = meta.hv_kvm_runtime
        except ValueError:
            raise HypervisorError("hv_kvm's runtime has characters XML cannot hold"
                                  ) from None
    return root


def _hvparams_element(hvparams: dict[str, Any]) -> etree._Element:
    """``<hvl:instance><hvl:hvparams>`` for ``hvparams``."""
    root = etree.Element(_q("instance"), nsmap=_NSMAP)
    params = etree.SubElement(root, _q("hvparams"))
    for name in sorted(hvparams):
        vtype, text = _encode(hvparams[name])
        try:
            etree.SubElement(params, _q("param"), name=name, type=vtype).text = text
        except ValueError:
            raise HypervisorError(f"Invalid {name}: {text!r} has characters XML "
                                  "cannot hold") from None
    return root


def parse(element: etree._Element) -> InstanceMetadata:
    """Read an ``<hvl:instance>`` element back; raise HypervisorError if malformed."""
    if element.tag != _q("instance"):
        raise HypervisorError(f"Not hvlibvirt metadata: {element.tag}")
    try:
        hvparams = {p.get("name"): _decode(p.get("type"), p.text or "")
                    for p in element.iterfind(f"{_q('hvparams')}/{_q('param')}")}
        devices = [(d.get("kind"), d.get("uuid"), d.get("alias"))
                   for d in element.iterfind(f"{_q('devices')}/{_q('device')}")]
        runtime = element.find(_q("hv-kvm-runtime"))
        return InstanceMetadata(instance_uuid=element.get("uuid", ""),
                                hypervisor=element.get("hypervisor", ""),
                                hvparams=hvparams, devices=devices,
                                stop_requested=element.get("stop") == "requested",
                                migration_target=element.get("migrating-to"),
                                migration_via=element.get("migrating-via"),
                                hv_kvm_runtime=None if runtime is None
                                else runtime.text or "",
                                hv_kvm_devices=None if runtime is None
                                else runtime.get("devices"),
                                pending_unplug=[u.get("alias") for u in
                                                element.iterfind(_q("unplug"))])
    except (TypeError, ValueError) as err:
        raise HypervisorError(f"Malformed hvlibvirt metadata: {err}") from err


def from_libvirt(root: etree._Element) -> InstanceMetadata:
    """Read what ``virDomainGetMetadata`` returns (parsed: ``parser.parse_tree``): our
    element, but libvirt strips its namespace, so put the children back into it first."""
    for elem in root.iter():
        if isinstance(elem.tag, str) and not elem.tag.startswith("{"):
            elem.tag = _q(elem.tag)
    return parse(root)


def to_libvirt(meta: InstanceMetadata) -> str:
    """The XML string ``virDomainSetMetadata`` takes for our namespace: the element
    without a namespace (libvirt puts it into the one the call names)."""
    root = build(meta)
    for elem in root.iter():
        elem.tag = etree.QName(elem).localname
    etree.cleanup_namespaces(root)
    return etree.tostring(root, encoding="unicode")


def find(domain: etree._Element) -> etree._Element | None:
    """Our metadata element inside a full ``<domain>`` tree, or None."""
    return domain.find(f"metadata/{_q('instance')}")

