"""hvlibvirt: Ganeti's hypervisor interface (KVM, Xen PVM, Xen HVM) on libvirt.

Typical use, the way Ganeti's node daemon uses its own hypervisor modules::

    from hvlibvirt import get_hypervisor_class
    hv = get_hypervisor_class("kvm")()        # constructing never connects
    hv.CheckParameterSyntax(instance.hvparams)
    hv.StartInstance(instance, block_devices, startup_paused=False)
"""

from __future__ import annotations

import os
import sys

from hvlibvirt import constants
from hvlibvirt.errors import HotplugError, HypervisorError

__all__ = ["HypervisorError", "HotplugError", "get_hypervisor_class", "helper_command",
           "constants"]
__version__ = "0.1.0"


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


def helper_command(*args: str) -> list[str]:
    """argv running ``hvlibvirt ARGS`` with this interpreter and this installed copy of
    the package, by absolute paths: the console command Ganeti runs over ssh and the
    migration helper must not depend on the caller's ``sys.path`` or PYTHONPATH."""
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "__main__.py"), *args]
