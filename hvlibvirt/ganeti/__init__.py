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
    from hvlibvirt import config, connection, ownership
    from hvlibvirt.hypervisors import get_hypervisor_class
    from hvlibvirt.errors import HypervisorError

    classes = []
    for name in names:
        hypervisor_map[name] = get_hypervisor_class(name)
        classes.append(hypervisor_map[name])
    # noded forks a child per RPC from the process that runs this: parsed once here,
    # the file costs each child a stat instead of a parse (docs/costs.md).
    config.preload()
    connection.prepare_for_fork()
    try:
        # The ownership marks' directories, found (and checked) once here instead of in
        # each child's first listing. A URI configured later is found then.
        ownership.prepare_for_fork({cls.configured_uri() for cls in classes})
    except HypervisorError:
        pass  # a broken configuration file: the first real call reports it
