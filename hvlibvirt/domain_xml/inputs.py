"""The shape of the objects Ganeti hands a hypervisor: beparams, the NIC list, each
NIC's nicparams, block_devices and each disk's params.

Each is checked where it is first read, so a malformed one (a careless caller's None,
a number where a dict belongs) is a HypervisorError naming it, not an AttributeError
deep in a builder. Values inside them are checked by the builders that use them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from hvlibvirt import constants as C
from hvlibvirt.errors import HypervisorError

BlockDevice = tuple[Any, "str | None", "str | None"]
# A larger count would only make the builders write one pin per vCPU for nothing.
MAX_VCPUS = C.MAX_VCPUS
# libvirt keeps memory in bytes in a signed 64-bit integer (QEMU does too): 2**63 bytes.
MAX_MEMORY_MIB = 2**43 - 1


def beparam(instance: Any, key: str) -> int:
    """A positive integer from ``instance.beparams`` (maxmem, minmem, vcpus); Ganeti
    fills them from the cluster's defaults, so each must be there."""
    name = getattr(instance, "name", None)
    values = getattr(instance, "beparams", None)
    if not isinstance(values, Mapping):
        raise HypervisorError(f"Invalid beparams of instance {name}: {values!r} (a dict "
                              "with maxmem, minmem and vcpus is expected)")
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HypervisorError(f"Invalid beparams {key} of instance {name}: {value!r} "
                              "(a positive integer is expected)")
    upper = MAX_VCPUS if key == "vcpus" else MAX_MEMORY_MIB
    if value > upper:
        raise HypervisorError(f"Invalid beparams {key} of instance {name}: {value} (at most "
                              f"{upper})")
    return value


def _is_list(value: Any, length: int | None = None) -> bool:
    """A list or tuple (of ``length`` items): a string is a sequence too, but not one."""
    return (isinstance(value, Sequence) and not isinstance(value, (str, bytes))
            and (length is None or len(value) == length))


def _sequence(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not _is_list(value):
        raise HypervisorError(f"Invalid {what}: {value!r} (a list is expected)")
    return value


def _optional_dict(obj: Any, attr: str, what: str) -> Mapping[str, Any]:
    """``obj.attr`` if it is a dict, {} if it is missing or None."""
    values = getattr(obj, attr, None)
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise HypervisorError(f"Invalid {attr} of {what}: {values!r} (a dict is expected)")
    return values


def nic_list(instance: Any) -> Sequence[Any]:
    """``instance.nics`` (None and an empty list both mean no NIC)."""
    return _sequence(getattr(instance, "nics", None), "nics")


def nicparams(nic: Any, what: str) -> Mapping[str, Any]:
    """The nicparams dict of the NIC ``what`` names (missing means Ganeti's defaults)."""
    return _optional_dict(nic, "nicparams", what)


def block_devices(value: Any) -> list[BlockDevice]:
    """Ganeti's block_devices: a list of (disk, link_name, drive_uri) triples."""
    entries = _sequence(value, "block_devices")
    result = []
    for index, entry in enumerate(entries):
        if not _is_list(entry, 3):
            raise HypervisorError(f"Invalid block_devices[{index}]: expected (disk, "
                                  "link_name, drive_uri)")
        result.append((entry[0], entry[1], entry[2]))
    return result


def disk_extra(value: Any, what: str) -> tuple[Any, Any]:
    """A disk hot-add's ``extra``: Ganeti's (link_name, drive_uri) pair (a two-letter
    string would unpack too, so the shape is checked, not just unpacked)."""
    if not _is_list(value, 2):
        raise HypervisorError(f"{what}: extra must be (link_name, drive_uri), not {value!r}")
    return value[0], value[1]


def disk_params(disk_obj: Any, what: str) -> Mapping[str, Any]:
    """The params dict of the disk ``what`` names (missing means none)."""
    return _optional_dict(disk_obj, "params", what)


def one_of(value: Any, allowed: Collection[str], what: str, expected: str) -> str:
    """``value`` if it is one of the strings ``allowed`` (a list or dict is not, rather
    than an unhashable-type TypeError)."""
    if not isinstance(value, str) or value not in allowed:
        raise HypervisorError(f"Invalid {what}: {value!r} ({expected})")
    return value
