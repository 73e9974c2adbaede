"""Instance, disk and NIC objects with Ganeti's field names.

The hypervisor classes never check the type of what they are given: they read
attributes by name, so Ganeti's own ``ganeti.objects`` instances work unchanged.
These dataclasses are for users without Ganeti (and for our tests and demo).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hvlibvirt import constants
from hvlibvirt.errors import INSIDE_GANETI, HypervisorError


def _new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass
class Disk:
    """A Ganeti disk (``objects.Disk``); ``size`` is in MiB."""

    uuid: str = field(default_factory=_new_uuid)
    name: str | None = None
    dev_type: str = constants.DT_PLAIN
    logical_id: Any = None
    children: list[Any] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    iv_name: str = ""
    size: int = 0
    mode: str = constants.DISK_RDWR
    params: dict[str, Any] = field(default_factory=dict)
    spindles: int | None = None
    pci: int | None = None
    hvinfo: dict[str, Any] = field(default_factory=dict)
    serial_no: int = 1
    dynamic_params: dict[str, Any] = field(default_factory=dict)
    forthcoming: bool = False


@dataclass
class NIC:
    """A Ganeti NIC (``objects.NIC``); ``nicparams`` holds mode, link and vlan."""

    uuid: str = field(default_factory=_new_uuid)
    name: str | None = None
    mac: str = ""
    ip: str | None = None
    network: str | None = None
    nicparams: dict[str, Any] = field(default_factory=dict)
    netinfo: dict[str, Any] | None = None
    pci: int | None = None
    hvinfo: dict[str, Any] = field(default_factory=dict)


@dataclass
class Instance:
    """A Ganeti instance (``objects.Instance``) as the node daemon sees it.

    ``hvparams`` and ``beparams`` are expected fully filled (cluster defaults merged),
    as Ganeti's RPC layer delivers them; ``disks_info`` carries the Disk objects.
    """

    name: str
    uuid: str = field(default_factory=_new_uuid)
    primary_node: str | None = None
    secondary_nodes: list[str] = field(default_factory=list)
    os: str = ""
    hypervisor: str = constants.HT_KVM
    hvparams: dict[str, Any] = field(default_factory=dict)
    beparams: dict[str, Any] = field(default_factory=dict)
    osparams: dict[str, Any] = field(default_factory=dict)
    osparams_private: dict[str, Any] = field(default_factory=dict)
    admin_state: str = "up"
    admin_state_source: str = "admin"
    nics: list[NIC] = field(default_factory=list)
    disks: list[str] = field(default_factory=list)
    disks_info: list[Disk] = field(default_factory=list)
    disk_template: str = constants.DT_PLAIN
    disks_active: bool = True
    network_port: int | None = None
    serial_no: int = 1
    ctime: float = 0.0
    mtime: float = 0.0
    tags: set[str] = field(default_factory=set)

    def GetTags(self) -> list[str]:  # noqa: N802 - Ganeti's name
        """Return the instance tags, as Ganeti's TaggableObject does."""
        return sorted(self.tags)


class _RpcObject:
    """What Ganeti's ``ConfigObject`` gives the objects that cross its RPC: a dict of
    the fields that are set, and back."""

    def ToDict(self) -> dict[str, Any]:  # noqa: N802 - Ganeti's name
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def FromDict(cls, value: Mapping[str, Any]) -> Any:  # noqa: N802 - Ganeti's name
        if not isinstance(value, Mapping):
            raise HypervisorError(f"{cls.__name__}.FromDict expects a dict, got "
                                  f"{type(value).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(map(str, value)) - known)
        if unknown:
            raise HypervisorError(f"{cls.__name__}.FromDict: unknown fields {unknown}")
        return cls(**{str(k): v for k, v in value.items()})


@dataclass
class InstanceConsole(_RpcObject):
    """How to reach an instance's console (Ganeti's ``objects.InstanceConsole``)."""

    instance: str
    kind: str
    message: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    command: list[str] | None = None
    display: int | None = None

    def Validate(self) -> bool:  # noqa: N802 - Ganeti's name
        """Check the field combination Ganeti requires for ``kind``; raise if wrong."""
        problems = []
        if self.kind not in constants.CONS_ALL:
            problems.append(f"unknown console kind {self.kind!r}")
        if not self.instance:
            problems.append("instance name missing")
        needs = {
            "message": self.kind == constants.CONS_MESSAGE,
            "host": self.kind != constants.CONS_MESSAGE,
            "port": self.kind in (constants.CONS_VNC, constants.CONS_SPICE),
            "user": self.kind == constants.CONS_SSH,
            "command": self.kind == constants.CONS_SSH,
            "display": self.kind == constants.CONS_VNC,
        }
        problems += [f"{attr} is required for a {self.kind} console"
                     for attr, required in needs.items()
                     if required and not getattr(self, attr)]
        if problems:
            raise HypervisorError("Invalid console: " + "; ".join(problems))
        return True


@dataclass
class MigrationStatus(_RpcObject):
    """Progress of a migration (Ganeti's ``objects.MigrationStatus``); RAM in bytes."""

    status: str = constants.HV_MIGRATION_FAILED
    transferred_ram: int | None = None
    total_ram: int | None = None
    postcopy_status: str | None = None

    def Validate(self) -> bool:  # noqa: N802 - Ganeti's name
        """Check that ``status`` is one Ganeti knows; raise if not."""
        if self.status not in constants.HV_KVM_MIGRATION_VALID_STATUSES:
            raise HypervisorError(f"Invalid migration status {self.status!r}")
        return True


def _ganeti_class(name: str) -> type | None:
    """Ganeti's own class of that name when we run inside Ganeti, else None."""
    if not INSIDE_GANETI:
        return None
    from ganeti import objects as ganeti_objects  # already imported by Ganeti itself
    return getattr(ganeti_objects, name)


def new_instance_console(**values: Any) -> Any:
    """An ``InstanceConsole``: Ganeti's inside Ganeti (its RPC calls ``ToDict`` and the
    client ``FromDict(...).Validate()``), ours outside."""
    return (_ganeti_class("InstanceConsole") or InstanceConsole)(**values)


def new_migration_status(**values: Any) -> Any:
    """A ``MigrationStatus``: Ganeti's inside Ganeti (noded returns ``.ToDict()``), ours
    outside."""
    return (_ganeti_class("MigrationStatus") or MigrationStatus)(**values)
