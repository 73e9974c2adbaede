"""The way back: a domain that came in by the handover leaves live, through Ganeti's
migration calls, for a node where Ganeti's own KVM hypervisor (hv_kvm) serves.

The handover built the domain's device model from hv_kvm's runtime, so that runtime,
kept in our metadata (``keep``), still describes the QEMU as long as its disks and
NICs are the ones the handover made (a fingerprint of them is kept alongside). For
such a domain MigrationInfo answers with that runtime, verbatim: an hv_kvm target
starts its incoming QEMU from it, an hvlibvirt target starts the handover's relay, and
both then listen on the instance's ``migration_port``. MigrateInstance therefore sends
QEMU's own stream there (``migrate``), as hv_kvm does, through libvirt's QEMU monitor
passthrough: libvirt has no migration to a plain QEMU. libvirt marks the domain
tainted ("custom-monitor") and sees only the guest pause at the end; the status polls
ask QEMU (``status``) and FinalizeMigrationSource destroys the domain or resumes the
guest (``finalize_source``).

The runtime goes alone, to hvlibvirt targets too: hv_kvm's FinalizeMigrationDst saves
what its AcceptInstance got verbatim as its runtime file, and its MigrationInfo answers
with that file, so anything added for hvlibvirt would come back later from an hv_kvm
source, which only ever sends QEMU's stream.

A domain hvlibvirt started itself, or whose disks or NICs changed since it came in,
has no runtime hv_kvm could reproduce: its MigrationInfo stays the domain XML, which
only hvlibvirt reads (docs/handover.md says what an hv_kvm target answers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import libvirt
import libvirt_qemu
from lxml import etree

from hvlibvirt import connection, constants as C, instance_metadata, ownership
from hvlibvirt.domain_xml import metadata, parser
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover.model import ONE_WAY_CAPABILITIES
from hvlibvirt.objects import MigrationStatus, new_migration_status

log = logging.getLogger(__name__)

VIA = metadata.HV_KVM_STREAM
CANCEL_TIMEOUT = 30.0  # seconds for QEMU to end a cancelled migration
# QEMU's query-migrate statuses that are an end, as Ganeti names them; every other
# (setup, active, device, pre-switchover, ...) is a migration under way.
_ENDS = {"completed": C.HV_MIGRATION_COMPLETED, "failed": C.HV_MIGRATION_FAILED,
         "cancelled": C.HV_MIGRATION_CANCELLED,
         "none": C.HV_MIGRATION_FAILED}  # no migration (a restarted QEMU)
_MIB = 1024 * 1024
# Capabilities libvirt sets for itself that do not shape the stream.
_LIBVIRTS_OWN = frozenset({"events"})


def devices(root: etree._Element) -> str:
    """Fingerprint of the Ganeti disks and NICs (our ``ua-`` aliases) of a domain XML:
    what hv_kvm's runtime describes and hotplug changes (slot, source, MAC, model)."""
    found = []
    for elem in root.iterfind("devices/*"):
        alias = elem.xpath("string(alias/@name)")
        if elem.tag not in ("disk", "interface") or not alias.startswith("ua-"):
            continue
        address = elem.find("address")
        source = elem.find("source")
        found.append([
            elem.tag, elem.get("type"), alias,
            {} if address is None else {k: _number(v) for k, v in address.items()},
            {} if source is None else {k: v for k, v in source.items() if k != "index"},
            elem.xpath("string(mac/@address)").lower(),
            elem.xpath("string(model/@type)")])
    found.sort(key=lambda item: item[2])
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:32]


def _number(value: str) -> Any:
    try:
        return int(value, 0)
    except ValueError:
        return value


def kept_runtime(root: etree._Element) -> str | None:
    """hv_kvm's runtime the domain XML ``root`` (with our metadata) was built from, if
    hv_kvm can still reproduce the domain from it; else None."""
    elem = metadata.find(root)
    if elem is None:
        return None
    meta = metadata.parse(elem)
    if not meta.hv_kvm_runtime or meta.hv_kvm_devices != devices(root):
        return None
    return meta.hv_kvm_runtime


def migratable_root(dom: libvirt.virDomain) -> etree._Element:
    """The domain's migratable XML, the one flavour ``devices`` is computed on."""
    with connection.libvirt_errors("read the migratable XML", dom.name()):
        return parser.parse_tree(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))


def keep(dom: libvirt.virDomain, runtime: str | bytes) -> None:
    """After a handover: keep the runtime the domain was built from, and its devices."""
    if isinstance(runtime, bytes):
        runtime = runtime.decode()
    instance_metadata.keep_hv_kvm_runtime(dom, runtime, devices(migratable_root(dom)))


def forget(dom: libvirt.virDomain) -> bool:
    """Drop the kept runtime (an operator's choice once no hv_kvm node is left): the
    domain's MigrationInfo becomes its XML, so it moves between hvlibvirt nodes by
    libvirt's own migration and can no longer go back to hv_kvm live. False when
    nothing was kept."""
    meta = instance_metadata.read(dom)
    if meta is None or meta.hv_kvm_runtime is None:
        return False
    instance_metadata.keep_hv_kvm_runtime(dom, None, None)
    return True


def qmp(dom: libvirt.virDomain, command: str, **arguments: Any) -> Any:
    """Run a QMP command in the domain's QEMU through libvirt; its ``return`` value."""
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    with connection.libvirt_errors(f"run QEMU's {command}", dom.name()):
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(request), 0))
    if "error" in reply:
        raise HypervisorError(f"QEMU's {command} failed for instance {dom.name()}: "
                              f"{reply['error'].get('desc', reply['error'])}")
    return reply.get("return")


def migrate(dom: libvirt.virDomain, hvparams: Mapping[str, Any], target: str,
            live: bool) -> None:
    """Send QEMU's stream to ``tcp:target:migration_port`` as hv_kvm does (its
    bandwidth, downtime and one-way capabilities) and return while it runs."""
    name = dom.name()
    port, bandwidth, downtime = (_number_param(name, hvparams, param) for param in (
        C.HV_MIGRATION_PORT, C.HV_MIGRATION_BANDWIDTH, C.HV_MIGRATION_DOWNTIME))
    caps = [c for c in str(hvparams.get(C.HV_KVM_MIGRATION_CAPS) or "").split(":") if c]
    other = sorted(set(caps) - ONE_WAY_CAPABILITIES)
    if other:
        raise HypervisorError(f"Cannot migrate {name} by QEMU's own stream with "
                              f"{C.HV_KVM_MIGRATION_CAPS} {':'.join(other)}: only "
                              f"{', '.join(sorted(ONE_WAY_CAPABILITIES))} work over the "
                              "one-way stream from a libvirt domain")
    qmp(dom, "migrate-set-parameters", **{"max-bandwidth": bandwidth * _MIB,
                                          "downtime-limit": downtime})
    _set_capabilities(dom, set(caps))
    instance_metadata.set_migration_target(dom, target, VIA)
    if not live:
        with connection.libvirt_errors("pause the guest", name):
            dom.suspend()
    host = f"[{target}]" if ":" in target else target
    qmp(dom, "migrate", uri=f"tcp:{host}:{port}")


def _number_param(name: str, hvparams: Mapping[str, Any], param: str) -> int:
    """An integer hvparam; HypervisorError naming it."""
    value = hvparams.get(param)
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HypervisorError(f"Cannot migrate {name} by QEMU's own stream: invalid "
                              f"{param} {value!r}") from None


def _set_capabilities(dom: libvirt.virDomain, wanted: set[str]) -> None:
    """Exactly ``wanted`` on, every other capability that shapes the stream off: the
    target's QEMU reads the stream hv_kvm's would send (libvirt sets them anew for each
    migration of its own)."""
    current = {c["capability"]: c["state"] for c in qmp(dom, "query-migrate-capabilities")}
    unknown = wanted - set(current)
    if unknown:
        raise HypervisorError(f"QEMU of {dom.name()} lacks the migration capabilities "
                              f"{', '.join(sorted(unknown))}")
    change = [{"capability": cap, "state": cap in wanted} for cap, state in current.items()
              if cap not in _LIBVIRTS_OWN and state != (cap in wanted)]
    if change:
        qmp(dom, "migrate-set-capabilities", capabilities=change)


def status(dom: libvirt.virDomain) -> MigrationStatus:
    """The stream's status, from QEMU's query-migrate."""
    info = qmp(dom, "query-migrate") or {}
    verdict = _ENDS.get(info.get("status", "none"), C.HV_MIGRATION_ACTIVE)
    if info.get("status") == "failed":
        log.warning("Migration of %s by QEMU's own stream failed: %s", dom.name(),
                    info.get("error-desc", "QEMU gave no reason"))
    ram = info.get("ram") or {}
    return new_migration_status(status=verdict, transferred_ram=ram.get("transferred"),
                                total_ram=ram.get("total") or None)


def finalize_source(uri: str, dom: libvirt.virDomain, success: bool) -> None:
    """Success: the guest runs on the target; the domain goes (QEMU must say the stream
    completed). Failure: end the stream and make sure the guest runs here again (Ganeti
    has stopped the target's QEMU by then, as it does for hv_kvm's own migrations)."""
    name = dom.name()
    state = (qmp(dom, "query-migrate") or {}).get("status", "none")
    with connection.libvirt_errors("finalize the migration", name):
        if success:
            if state != "completed":
                raise HypervisorError(f"Migration of {name} by QEMU's own stream was "
                                      f"reported successful but QEMU says {state!r}")
            ownership.forget(uri, dom)
            dom.destroy()
            if dom.isPersistent():
                dom.undefine()
            return
        if state not in _ENDS:
            qmp(dom, "migrate_cancel")
            deadline = time.monotonic() + CANCEL_TIMEOUT
            while (qmp(dom, "query-migrate") or {}).get("status", "none") not in _ENDS:
                if time.monotonic() > deadline:
                    raise HypervisorError(f"The migration of {name} did not stop")
                time.sleep(0.1)
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    instance_metadata.set_migration_target(dom, None)
