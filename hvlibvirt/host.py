"""One libvirt URI as this process uses it: its connection, domain lookups, and which
domains are instances. The hypervisor classes and their collaborators (migration)
share one ``Host``; it never connects before it is asked something."""

from __future__ import annotations

import libvirt

from hvlibvirt import connection, ownership
from hvlibvirt.errors import HypervisorError


class Host:
    """The libvirt daemon at ``uri``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def conn(self, events: bool = False) -> libvirt.virConnect:
        """This process's connection; ``events`` for operations that wait for libvirt
        events, asked for before the domain is looked up (see ``connection``)."""
        return connection.get(self.uri, events)

    def lookup(self, name: str) -> libvirt.virDomain | None:
        """The domain called ``name``, or None if libvirt has none."""
        try:
            return connection.call(self.uri, lambda conn: conn.lookupByName(name))
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"Failed to look up instance {name}: {err}") from err

    def owned(self, name: str) -> libvirt.virDomain | None:
        """The domain for instance ``name`` if it exists and is ours, else None."""
        dom = self.lookup(name)
        if dom is None or not ownership.is_ours(self.uri, dom):
            return None
        return dom
