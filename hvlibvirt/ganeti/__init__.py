"""The seam to a Ganeti node.

Ganeti has no hypervisor plugins: ``ganeti/hypervisor/__init__.py`` maps each
hypervisor name to a class. ``hvlibvirt ganeti enable`` (``hvlibvirt.ganeti.node``)
diverts that file with dpkg and puts in its place a short module that runs Ganeti's
own file and then calls ``serve`` below for the hypervisors hvlibvirt takes over.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping


def serve(hypervisor_map: MutableMapping[str, type], names: Iterable[str]) -> None:
    """Point Ganeti's ``_HYPERVISOR_MAP`` entries ``names`` at hvlibvirt's classes."""
    from hvlibvirt import config, get_hypervisor_class

    for name in names:
        hypervisor_map[name] = get_hypervisor_class(name)
    # noded forks a child per RPC from the process that runs this: parsed once here,
    # the file costs each child a stat instead of a parse (~2 ms in a fresh child).
    config.preload()
