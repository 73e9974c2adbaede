"""The live handover: a QEMU that Ganeti's KVM hypervisor (hv_kvm) started on another
node becomes, through Ganeti's own migration calls, a libvirt domain managed here.

Ganeti calls the target's AcceptInstance with the source's MigrationInfo, which for
hv_kvm is its serialized runtime (``runtime``). This package translates that runtime
into a domain XML that reproduces hv_kvm's device model exactly (``model``), refusing
before any data moves what it cannot reproduce; then a relay (``relay``) listens on
the migration port, as hv_kvm's incoming QEMU would, and feeds the stream, behind
libvirt's save-image header (``saveimage``), to ``virDomainRestoreFlags``. The source
runs hv_kvm's plain ``migrate tcp:TARGET:PORT``; FinalizeMigrationDst then makes the
restored (transient) domain persistent. From then on it is one of hvlibvirt's
instances: our metadata is in its XML from the start.

``accept`` and ``finalize_dst`` are what the migration calls hook into; they take the
hypervisor object for its connection, URI and node facts.
"""

from __future__ import annotations

import logging
from typing import Any

import libvirt
from lxml import etree

from hvlibvirt import connection, constants as C, kvm_node, ownership
from hvlibvirt.domain_xml import identity, nics, to_string
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover import model, relay, runtime, saveimage

log = logging.getLogger(__name__)

FINALIZE_TIMEOUT = 120.0  # seconds for the relay's restore to finish once the source is done

looks_like_hv_kvm = runtime.looks_like_hv_kvm


def node_facts(hv: Any, instance: Any, parsed: runtime.KvmRuntime) -> model.NodeFacts:
    """Read what the translation needs from this node."""
    name = instance.name
    conn = hv._conn()
    with connection.libvirt_errors("read the host capabilities", name):
        caps = etree.fromstring(conn.getCapabilities().encode())
    aliases = {m.text: m.get("canonical")
               for m in caps.iterfind("guest/arch[@name='x86_64']/machine[@canonical]")}
    hvp = model.effective_hvparams(parsed, instance.hvparams)
    log_dir = getattr(hv, "serial_log_dir", None)
    vlans = any(nics.vlan_of(dict(dev.fields.get("nicparams") or {}), f"NIC {dev.index}")
                for dev in parsed.nics)
    return model.NodeFacts(
        machine_aliases=aliases,
        serial_log=kvm_node.serial_log_file(log_dir, name) if log_dir else None,
        vnc_password=kvm_node.vnc_password(instance.hvparams)
        if parsed.has("-vnc") and instance.hvparams.get(C.HV_VNC_PASSWORD_FILE) else None,
        security_label=kvm_node.dac_label(instance.hvparams[C.HV_SECURITY_DOMAIN])
        if instance.hvparams.get(C.HV_SECURITY_MODEL) == C.HT_SM_USER else None,
        linux_bridge_vlans=hv._linux_bridge_vlans() if vlans else True)


def domain_xml(hv: Any, instance: Any, info: str) -> tuple[runtime.KvmRuntime, str]:
    """The runtime and the domain XML that takes it over; HypervisorError naming what
    cannot be reproduced."""
    parsed = runtime.parse(info)
    root = model.build(parsed, instance, node_facts(hv, instance, parsed))
    return parsed, to_string(root)


def accept(hv: Any, instance: Any, info: str, target: str) -> None:
    """AcceptInstance for hv_kvm's runtime: translate, check, start the relay."""
    name = identity.instance_name(getattr(instance, "name", None))
    parsed, xml = domain_xml(hv, instance, info)
    with connection.libvirt_errors("read libvirt's version", name):
        saveimage.check_version(hv._conn().getLibVersion())
    found = hv._accept_problems(name, etree.fromstring(xml.encode()))
    if found:
        raise HypervisorError(f"Cannot accept instance {name}: " + "; ".join(found))
    try:
        port = int(instance.hvparams[C.HV_MIGRATION_PORT])
    except (KeyError, TypeError, ValueError):
        raise HypervisorError(f"Cannot accept instance {name}: no valid "
                              f"{C.HV_MIGRATION_PORT}") from None
    try:
        relay.start(hv.uri, name, xml, target, port, model.was_running(parsed))
    except OSError as err:
        raise HypervisorError(f"Handover of {name}: the relay failed: {err}") from err


def finalize_dst(hv: Any, instance: Any, success: bool) -> None:
    """Before FinalizeMigrationDst's own checks. Success: let the relay's restore finish
    and make the restored domain persistent. Failure: end the relay (libvirt then drops
    the half-restored domain; the caller removes anything left)."""
    name = identity.instance_name(getattr(instance, "name", None))
    if not success:
        relay.stop(hv.uri, name)
        return
    if not relay.wait(hv.uri, name, FINALIZE_TIMEOUT):
        relay.stop(hv.uri, name)
        raise HypervisorError(f"Handover of {name}: the restore did not finish within "
                              f"{FINALIZE_TIMEOUT:.0f}s")
    dom = hv._lookup(name)
    with connection.libvirt_errors("finalize the handover", name):
        if dom is None or not dom.isActive():
            return  # FinalizeMigrationDst says it does not run here
        if not dom.isPersistent():
            conn = hv._conn()
            conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                       | libvirt.VIR_DOMAIN_XML_SECURE))
        ownership.remember(hv.uri, dom)
