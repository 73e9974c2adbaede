"""Exceptions raised by hvlibvirt.

The names and the hierarchy follow Ganeti's ``ganeti.errors`` so that a
Ganeti node daemon can treat ours exactly like its own: ``HotplugError`` is a
``HypervisorError``.
"""

from __future__ import annotations


class HypervisorError(Exception):
    """A hypervisor operation failed or its input was invalid."""


class HotplugError(HypervisorError):
    """A device hot-add, hot-remove or hot-modify failed or is impossible."""
