"""The hvparam tables by Ganeti hypervisor name, and what Ganeti's constants module
derives from them: ``HVC_DEFAULTS`` (Ganeti 3.0's defaults, for our three hypervisors)
and ``HVS_PARAMETER_TYPES`` (every hvparam's value type). The rows are the only source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hvlibvirt import constants as C
from hvlibvirt.kvm_params import KVM_PARAMS
from hvlibvirt.params import HvParam
from hvlibvirt.xen_params import XEN_HVM_PARAMS, XEN_PVM_PARAMS

TABLES: Final[Mapping[str, Mapping[str, HvParam]]] = {
    C.HT_KVM: KVM_PARAMS, C.HT_XEN_PVM: XEN_PVM_PARAMS, C.HT_XEN_HVM: XEN_HVM_PARAMS}
HVC_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    hv: {name: row.default for name, row in table.items()} for hv, table in TABLES.items()}
HVS_PARAMETER_TYPES: Final[dict[str, str]] = {
    name: row.value_type for table in TABLES.values() for name, row in table.items()}
