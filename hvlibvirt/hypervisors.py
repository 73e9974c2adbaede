"""The hypervisor classes by their Ganeti names."""

from __future__ import annotations

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError


def get_hypervisor_class(name: str) -> type:
    """Return the hypervisor class for a Ganeti hypervisor name (kvm, xen-pvm, xen-hvm)."""
    # Imported here so that ``import hvlibvirt`` stays cheap and never touches libvirt.
    from hvlibvirt.kvm import KVMHypervisor
    from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor

    classes = {
        constants.HT_KVM: KVMHypervisor,
        constants.HT_XEN_PVM: XenPvmHypervisor,
        constants.HT_XEN_HVM: XenHvmHypervisor,
    }
    try:
        return classes[name]
    except KeyError:
        raise HypervisorError(
            f"Unknown hypervisor {name!r}; known: {', '.join(sorted(classes))}") from None
