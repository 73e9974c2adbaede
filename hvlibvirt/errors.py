"""Exceptions raised by hvlibvirt.

Inside Ganeti (when ``ganeti.errors`` is importable) ours subclass Ganeti's own
``HypervisorError`` and ``HotplugError``, so every ``except errors.HypervisorError`` in
Ganeti's backend and cmdlib, and cluster verify's ``except errors.GenericError``, catch
what we raise. Outside Ganeti they are plain exceptions with the same hierarchy:
``HotplugError`` is a ``HypervisorError``.
"""

from __future__ import annotations

try:
    from ganeti import errors as _ganeti
except ImportError:  # not inside Ganeti
    _ganeti = None

#: whether our exceptions are Ganeti's (decided once, when this module is imported)
INSIDE_GANETI = _ganeti is not None

_HYPERVISOR_BASES: tuple[type, ...] = (_ganeti.HypervisorError,) if _ganeti else (Exception,)
_HOTPLUG_BASES: tuple[type, ...] = (_ganeti.HotplugError,) if _ganeti else ()


class HypervisorError(*_HYPERVISOR_BASES):  # type: ignore[misc]
    """A hypervisor operation failed or its input was invalid."""


class HotplugError(HypervisorError, *_HOTPLUG_BASES):  # type: ignore[misc]
    """A device hot-add, hot-remove or hot-modify failed or is impossible."""
