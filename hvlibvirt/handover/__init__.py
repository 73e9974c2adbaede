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
instances: our metadata is in its XML from the start, and keeps the runtime for the
way back to an hv_kvm node (``back``).

``accept`` and ``finalize_dst`` are what KVM's migrator (``migrator.KvmMigrator``)
hands an hv_kvm runtime to; they take the migrator for its libvirt host, its pre-flight
checks and the node's serial log directory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import libvirt
from lxml import etree

from hvlibvirt import connection, constants as C, kvm_node, ownership
from hvlibvirt.domain_xml import identity, nics, parser, to_string
from hvlibvirt.errors import HypervisorError
from hvlibvirt.host import Host
from hvlibvirt.handover import back, model, relay, runtime, saveimage

log = logging.getLogger(__name__)


class Migrator(Protocol):
    """What the handover uses of the migrator that hands it a runtime."""

    host: Host
    serial_log_dir: Callable[[], str | None]
    ganeti: tuple[int, int]

    def accept_problems(self, name: str, root: etree._Element) -> list[str]: ...

FINALIZE_TIMEOUT = 120.0  # seconds for the relay's restore to finish once the source is done

looks_like_hv_kvm = runtime.looks_like_hv_kvm


def node_facts(migrator: Migrator, instance: Any, parsed: runtime.KvmRuntime
               ) -> model.NodeFacts:
    """Read what the translation needs from this node."""
    name = instance.name
    conn = migrator.host.conn()
    with connection.libvirt_errors("read the host capabilities", name):
        caps = parser.parse_tree(conn.getCapabilities(), "host capabilities")
    aliases = {m.text: m.get("canonical")
               for m in caps.iterfind("guest/arch[@name='x86_64']/machine[@canonical]")}
    hvp = model.effective_hvparams(parsed, instance.hvparams)
    log_dir = migrator.serial_log_dir()
    vlans = any(nics.vlan_of(dict(dev.fields.get("nicparams") or {}), f"NIC {dev.index}")
                for dev in parsed.nics)
    return model.NodeFacts(
        machine_aliases=aliases,
        serial_log=kvm_node.serial_log_file(log_dir, name) if log_dir else None,
        vnc_password=kvm_node.vnc_password(instance.hvparams)
        if parsed.has("-vnc") and instance.hvparams.get(C.HV_VNC_PASSWORD_FILE) else None,
        security_label=kvm_node.dac_label(instance.hvparams[C.HV_SECURITY_DOMAIN])
        if instance.hvparams.get(C.HV_SECURITY_MODEL) == C.HT_SM_USER else None,
        linux_bridge_vlans=kvm_node.linux_bridge_vlans(conn) if vlans else True,
        ganeti=migrator.ganeti)


def domain_xml(migrator: Migrator, instance: Any, info: str
               ) -> tuple[runtime.KvmRuntime, str]:
    """The runtime and the domain XML that takes it over; HypervisorError naming what
    cannot be reproduced."""
    parsed = runtime.parse(info)
    root = model.build(parsed, instance, node_facts(migrator, instance, parsed))
    return parsed, to_string(root)


def accept(migrator: Migrator, instance: Any, info: str, target: str) -> None:
    """AcceptInstance for hv_kvm's runtime: translate, check, start the relay."""
    name = identity.instance_name(getattr(instance, "name", None))
    parsed, xml = domain_xml(migrator, instance, info)
    with connection.libvirt_errors("read libvirt's version", name):
        lib_version = migrator.host.conn().getLibVersion()
    saveimage.check_version(lib_version)
    found = migrator.accept_problems(name, parser.parse_tree(xml))
    if found:
        raise HypervisorError(f"Cannot accept instance {name}: " + "; ".join(found))
    try:
        port = int(instance.hvparams[C.HV_MIGRATION_PORT])
    except (KeyError, TypeError, ValueError):
        raise HypervisorError(f"Cannot accept instance {name}: no valid "
                              f"{C.HV_MIGRATION_PORT}") from None
    try:
        relay.start(migrator.host.uri, name, xml, target, port, model.was_running(parsed),
                    saveimage.header_reads(lib_version))
    except OSError as err:
        raise HypervisorError(f"Handover of {name}: the relay failed: {err}") from err


def finalize_dst(migrator: Migrator, instance: Any, success: bool, info: str | bytes
                 ) -> None:
    """Before FinalizeMigrationDst's own checks. Success: let the relay's restore finish,
    make the restored domain persistent and keep ``info``, the runtime it was built
    from, for the way back (``back``). Failure: end the relay (libvirt then drops
    the half-restored domain; the caller removes anything left)."""
    name = identity.instance_name(getattr(instance, "name", None))
    uri = migrator.host.uri
    if not success:
        relay.stop(uri, name)
        return
    if not relay.wait(uri, name, FINALIZE_TIMEOUT):
        relay.stop(uri, name)
        raise HypervisorError(f"Handover of {name}: the restore did not finish within "
                              f"{FINALIZE_TIMEOUT:.0f}s")
    dom = migrator.host.lookup(name)
    with connection.libvirt_errors("finalize the handover", name):
        if dom is None or not dom.isActive():
            return  # FinalizeMigrationDst says it does not run here
        if not dom.isPersistent():
            migrator.host.conn().defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                       | libvirt.VIR_DOMAIN_XML_SECURE))
        ownership.remember(uri, dom)
    try:
        back.keep(dom, info)
    except HypervisorError as err:  # the handover itself succeeded
        log.warning("%s cannot go back to Ganeti's KVM without a restart: %s", name, err)
