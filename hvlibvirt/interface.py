"""Ganeti's interface methods, and the one mechanism that keeps libvirt's errors inside.

``guard`` wraps every method named in ``METHODS`` where it is defined (once, when the
first hypervisor class having it is created: ``BaseHypervisor.__init_subclass__``), so
that a ``libvirtError`` raised at any libvirt call within it, in its cleanup and logging
paths too, leaves it as a ``HypervisorError`` naming the method, the instance and
libvirt's message (an ``OSError`` likewise). Ganeti's node daemon catches only
``HypervisorError`` around these calls, and its hotplug RPCs only ``HotplugError``: the
hotplug methods raise that, for our own errors too. Errors the code raises itself pass
unchanged, with their precise messages.

The success path pays one function frame and a ``try``; the instance name is worked out
from the arguments only when an error is converted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import libvirt

from hvlibvirt import connection
from hvlibvirt.errors import HotplugError, HypervisorError

#: the hotplug methods: what they raise must be a HotplugError
HOTPLUG_METHODS = frozenset({
    "HotplugSupported", "VerifyHotplugSupport", "HotAddDevice", "HotDelDevice",
    "HotModDevice", "ResizeDisk"})
#: every public method that may reach libvirt (Ganeti's names, and ``domain_xml``)
METHODS = HOTPLUG_METHODS | frozenset({
    "StartInstance", "StopInstance", "RebootInstance", "CleanupInstance", "ListInstances",
    "GetInstanceInfo", "GetAllInstancesInfo", "GetNodeInfo", "Verify", "VerifyInstance",
    "RestoreInstance", "BalloonInstanceMemory", "GetInstanceConsole", "MigrationInfo",
    "AcceptInstance", "MigrateInstance", "GetMigrationStatus", "FinalizeMigrationSource",
    "FinalizeMigrationDst", "CheckParameterSyntax", "ValidateParameters",
    "AssessParameters", "PowercycleNode", "domain_xml"})

_MARK = "__hvlibvirt_guarded__"
# Where the instance is among a method's arguments (the first one present and named).
_INSTANCE_ARGS = ("instance", "instance_name", "name")


def guard(cls: type) -> None:
    """Wrap, where it is defined (``cls`` or a base such as BaseHypervisor), each method of ``METHODS`` that ``cls`` has and that is not wrapped yet; an
    override calling ``super()`` runs two wrappers, which is harmless."""
    for name in METHODS:
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is None or owner is object:
            continue
        raw = owner.__dict__[name]
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        func = raw.__func__ if kind else raw
        if not callable(func) or getattr(func, _MARK, False):
            continue
        error = HotplugError if name in HOTPLUG_METHODS else HypervisorError
        wrapped = _guarded(func, name, error)
        setattr(owner, name, kind(wrapped) if kind else wrapped)


def _guarded(func: Callable[..., Any], method: str, error: type[HypervisorError]
             ) -> Callable[..., Any]:
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except libvirt.libvirtError as err:
            connection.drop_dead()
            raise error(f"{method} failed{_subject(func, args, kwargs)}: libvirt: "
                        f"{err.get_error_message() or err}") from err
        except OSError as err:  # this node's files and processes (/proc, a helper)
            raise error(f"{method} failed{_subject(func, args, kwargs)}: {err}") from err
        except HypervisorError as err:
            if isinstance(err, error):
                raise
            raise error(str(err)) from err

    setattr(guarded, _MARK, True)
    return guarded


def _subject(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> str:
    """" for instance NAME" after the instance a call was about, from its arguments
    (error path only); "" when it has none."""
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return ""
    for key in _INSTANCE_ARGS:
        value = bound.get(key)
        name = value if isinstance(value, str) else getattr(value, "name", None)
        if isinstance(name, str) and name:
            return f" for instance {name}"
    return ""
