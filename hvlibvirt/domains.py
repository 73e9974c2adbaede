"""What libvirt knows about the domains this library created.

Metadata reads and updates, and the Ganeti info tuple, with the per-call cost kept
down: Ganeti's node daemon asks for instance info constantly, from a fresh process each
time, so the info is one ``virDomainGetInfo`` round trip, which never reaches QEMU, and
ownership (a domain is an instance only if it carries our metadata) is mostly a stat
(``hvlibvirt.ownership``).
"""

from __future__ import annotations

import logging

import libvirt

from hvlibvirt import constants, instance_metadata
from hvlibvirt.ownership import is_ours

log = logging.getLogger(__name__)

InstanceInfo = tuple[str, int, int, int, int, float]
SHUTDOWN_INFO_ID = -1

_ACTIVE_STATES = frozenset({libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED,
                            libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_SHUTDOWN,
                            libvirt.VIR_DOMAIN_PMSUSPENDED})

# listAllDomains flags for "running" as Ganeti means it: active and not yet marked shut
# off. libxl marks a domain its guest powered off SHUTOFF before it has destroyed it, and
# ACTIVE alone would still list it meanwhile. Flag groups are ANDed: one RPC.
LIST_RUNNING = (libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE | libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING
                | libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED | libvirt.VIR_CONNECT_LIST_DOMAINS_OTHER)

# Ganeti reports a guest's own power-off for KVM only with the user_shutdown hvparam;
# for Xen always.
_USER_SHUTDOWN_GATES = {constants.HT_KVM: constants.HV_KVM_USER_SHUTDOWN}


def is_active_state(state: int) -> bool:
    """Ganeti counts paused (and shutting-down) domains as running."""
    return state in _ACTIVE_STATES


def info_tuple(dom: libvirt.virDomain, info: list[int]) -> InstanceInfo | None:
    """Ganeti's ``(name, id, memory MiB, vcpus, RUNNING, cpu seconds)`` from
    ``virDomainGetInfo``, whose memory figure libvirt keeps current from balloon
    events without asking QEMU (the bulk statistics API asks QEMU, for every domain).
    None if the domain stopped meanwhile."""
    _state, _maxmem, mem_kib, vcpus, cpu_ns = info
    dom_id = dom.ID()
    if dom_id < 0:
        # The handle is older than the start (listed or looked up while the domain was
        # defined but not yet running) and carries the id of then: ask again.
        dom_id = dom.connect().lookupByUUID(dom.UUID()).ID()
        if dom_id < 0:
            return None
    return (dom.name(), dom_id, mem_kib // 1024, vcpus, constants.HV_STATE_RUNNING,
            cpu_ns / 1e9)


def instance_info(dom: libvirt.virDomain) -> InstanceInfo | None:
    """The info tuple of one of our domains: running, user-shut-down, or None."""
    info = dom.info()
    if is_active_state(info[0]):
        return info_tuple(dom, info)
    state, reason = dom.state()
    return user_shutdown_info(dom, state, reason)


def own_instance_info(uri: str, dom: libvirt.virDomain) -> InstanceInfo | None:
    """``instance_info`` of any listed domain, None unless it is ours: the state comes
    first, so that inactive domains are only looked at if their guest shut them down
    (and then the metadata read answers whether they are ours)."""
    info = dom.info()
    if is_active_state(info[0]):
        return info_tuple(dom, info) if is_ours(uri, dom) else None
    state, reason = dom.state()
    return user_shutdown_info(dom, state, reason)


def user_shutdown_info(dom: libvirt.virDomain, state: int, reason: int) -> InstanceInfo | None:
    """The SHUTDOWN tuple for an instance the guest powered off itself (for KVM only
    when its ``user_shutdown`` hvparam asks for that); None otherwise."""
    if state != libvirt.VIR_DOMAIN_SHUTOFF or reason != libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN:
        return None
    meta = instance_metadata.read(dom)
    if meta is None or meta.stop_requested:
        return None
    gate = _USER_SHUTDOWN_GATES.get(meta.hypervisor)
    if gate is not None and not meta.hvparams.get(gate):
        return None
    return (dom.name(), SHUTDOWN_INFO_ID, 0, 0, constants.HV_STATE_SHUTDOWN, 0.0)
