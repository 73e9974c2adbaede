"""hvlibvirt: Ganeti's hypervisor interface (KVM, Xen PVM, Xen HVM) on libvirt.

Typical use, the way Ganeti's node daemon uses its own hypervisor modules::

    from hvlibvirt import get_hypervisor_class
    hv = get_hypervisor_class("kvm")()        # constructing never connects
    hv.CheckParameterSyntax(instance.hvparams)
    hv.StartInstance(instance, block_devices, startup_paused=False)
"""

from __future__ import annotations

from hvlibvirt import constants
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.helper import helper_command
from hvlibvirt.hypervisors import get_hypervisor_class

__all__ = ["HypervisorError", "HotplugError", "get_hypervisor_class", "helper_command",
           "constants"]
__version__ = "0.1.0"
