"""``hvlibvirt ganeti check``: would hvlibvirt accept every instance of this cluster?

Run on the master before ``enable`` (it only reads Ganeti's configuration file): each
instance's hvparams are filled the way Ganeti fills them (cluster defaults, then the
OS's hvparams, then the instance's own) and given to hvlibvirt's CheckParameterSyntax,
so every value hvlibvirt cannot honour is listed before any node switches. The cluster
is judged by its own Ganeti version (the configuration's): that version's defaults,
names and valid values, from the installed Ganeti of that version where there is one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from hvlibvirt.hypervisors import get_hypervisor_class
from hvlibvirt.errors import HypervisorError
from hvlibvirt.ganeti import facts

CONFIG_DATA = "/var/lib/ganeti/config.data"


def problems(config_data: Mapping[str, Any], hypervisors: tuple[str, ...],
             share_root: str = facts.SHARE_ROOT) -> Iterator[tuple[str, str]]:
    """(instance or 'cluster', problem) for every refusal, in name order; Ganeti's
    installed versions are looked for under ``share_root``."""
    ganeti = facts.of_cluster(config_data.get("version"), share_root)
    cluster = config_data.get("cluster", {})
    for hv_name in hypervisors:
        hv_class = get_hypervisor_class(hv_name).following(ganeti)
        defaults = dict(hv_class.DEFAULTS, **cluster.get("hvparams", {}).get(hv_name, {}))
        yield from (("cluster", f"{hv_name}: {p}") for p in _refusals(hv_class, defaults))
        instances = sorted(config_data.get("instances", {}).values(),
                           key=lambda i: i.get("name", ""))
        for inst in instances:
            if inst.get("hypervisor") != hv_name:
                continue
            hvparams = dict(defaults)
            os_name = inst.get("os", "")
            for os_key in dict.fromkeys((os_name.split("+", 1)[0], os_name)):
                hvparams.update(cluster.get("os_hvp", {}).get(os_key, {}).get(hv_name, {}))
            hvparams.update(inst.get("hvparams", {}))
            yield from ((inst.get("name", "?"), p) for p in _refusals(hv_class, hvparams))


def _refusals(hv_class: type, hvparams: Mapping[str, Any]) -> list[str]:
    try:
        hv_class.CheckParameterSyntax(hvparams)
    except HypervisorError as err:
        return [str(err)]
    return []


def check(path: str, hypervisors: tuple[str, ...]) -> list[tuple[str, str]]:
    """Read Ganeti's configuration file and list what hvlibvirt would refuse."""
    try:
        with open(path, encoding="utf-8") as f:
            config_data = json.load(f)
    except (OSError, ValueError) as err:
        raise HypervisorError(f"Cannot read Ganeti's configuration {path}: {err}") from None
    if not isinstance(config_data, dict):
        raise HypervisorError(f"{path} is not Ganeti's configuration")
    return list(problems(config_data, hypervisors))
