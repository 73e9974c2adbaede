"""One hypervisor call in a process of its own, as Ganeti's node daemon makes them (a
child per RPC): a JSON request on stdin, a JSON answer on stdout.

Run by path with ``python -I`` so that it imports only the standard library and the
interpreter's own hvlibvirt: the upgrade tier runs it with Debian 12's Python on the host
and with Debian 13's inside the trixie root (tests/lab/upgrade.py). The request::

    {"uri": ..., "migration_uri": ..., "serial_log_dir": ..., "method": "AcceptInstance",
     "instance": {Instance fields, disks_info and nics as lists of field dicts},
     "args": [...], "block_devices": [[disk fields, path, uri], ...]}

The instance goes into ``args`` at ``instance_at`` (default 0; MigrateInstance's is 1),
``block_devices`` (StartInstance's) right after it. The answer is ``{"result": ...}``
(a MigrationStatus as its dict, tuples as lists) or ``{"error": [type name, message]}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any


def instance_from_json(fields: dict[str, Any]) -> Any:
    """hvlibvirt's Instance from the dict ``instance_to_json`` made."""
    from hvlibvirt.objects import NIC, Disk, Instance

    fields = dict(fields)
    fields["disks_info"] = [Disk(**d) for d in fields.get("disks_info", [])]
    fields["nics"] = [NIC(**n) for n in fields.get("nics", [])]
    fields["tags"] = set(fields.get("tags", []))
    return Instance(**fields)


def instance_to_json(instance: Any) -> dict[str, Any]:
    """A dataclass Instance as plain JSON values (its tags as a sorted list)."""
    fields = dataclasses.asdict(instance)
    fields["tags"] = sorted(fields["tags"])
    return fields


def _plain(value: Any) -> Any:
    if hasattr(value, "ToDict"):
        return value.ToDict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def call(request: dict[str, Any]) -> Any:
    from hvlibvirt.kvm import KVMHypervisor
    from hvlibvirt.objects import Disk

    hv = KVMHypervisor(uri=request["uri"], migration_uri=request.get("migration_uri"),
                       serial_log_dir=request.get("serial_log_dir"))
    args = list(request.get("args", []))
    at = request.get("instance_at", 0)
    if "instance" in request:
        args.insert(at, instance_from_json(request["instance"]))
    if "block_devices" in request:
        args.insert(at + 1, [(Disk(**d), path, uri) for d, path, uri in request["block_devices"]])
    return _plain(getattr(hv, request["method"])(*args, **request.get("kwargs", {})))


def main() -> int:
    request = json.load(sys.stdin)
    try:
        answer: dict[str, Any] = {"result": call(request)}
    except Exception as err:  # the caller sees it by name, as Ganeti's RPC reports it
        answer = {"error": [type(err).__name__, str(err)]}
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
