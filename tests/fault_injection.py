"""libvirt failing on demand at the Nth call: the mechanism both fault tiers share
(tests/test_libvirt_faults.py on the test driver, tests/test_real_libvirt_faults.py on a
private libvirtd, tests/test_real_migration_faults.py between two).

``instrument(monkeypatch)`` wraps libvirt.open and every method of virConnect and
virDomain (but two pure-Python accessors, ``LOCAL``) in libvirt-python itself, so every
call the library makes, through whatever code path, is counted; only the calls of the
thread that armed it count (libvirt's event loop runs in a thread of its own). Armed
with ``fail_at=N``, call N raises a ``libvirtError`` whose message contains
``INJECTED``.

Tier 6 ships this module into dom0 (tests/lab/xen_image.py), where Debian's python3 has
no pytest: ``instrument`` needs only a ``setattr(target, name, value)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import libvirt

if TYPE_CHECKING:
    import pytest

INJECTED = "injected failure"
# Pure Python in libvirt-python: they never reach libvirt. (The calls libvirt answers
# from the client's memory, name(), UUIDString(), isAlive()..., are failed too.)
LOCAL = frozenset({"connect", "c_pointer"})


def error(message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises one: an internal error carrying ``message``."""
    err = libvirt.libvirtError(message)
    err.err = (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_NONE, message,
               libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return err


class Faults:
    """Counts this thread's libvirt calls while armed; call number ``fail_at`` raises."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.armed = False
        self.fail_at: int | None = None
        self.calls: list[str] = []

    def arm(self, fail_at: int | None) -> None:
        self.armed, self.fail_at, self.calls = True, fail_at, []

    def disarm(self) -> None:
        self.armed = False

    def hit(self, what: str) -> None:
        if not self.armed or threading.get_ident() != self.thread:
            return
        self.calls.append(what)
        if len(self.calls) == self.fail_at:
            raise error(f"{INJECTED} at call {self.fail_at} ({what})")


def counted(faults: Faults, what: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, counted (and failed on demand) by ``faults`` as ``what``."""
    def call(*args: Any, **kwargs: Any) -> Any:
        faults.hit(what)
        return func(*args, **kwargs)
    return call


def instrument(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Every libvirt entry point counted by one Faults (undone with ``monkeypatch``)."""
    state = Faults()
    for cls in (libvirt.virConnect, libvirt.virDomain):
        for name, attr in list(vars(cls).items()):
            if callable(attr) and not name.startswith("_") and name not in LOCAL:
                monkeypatch.setattr(cls, name, counted(state, f"{cls.__name__}.{name}", attr))
    monkeypatch.setattr(libvirt, "open", counted(state, "libvirt.open", libvirt.open))
    return state


def causes(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and what caused it, outermost first."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def carries_injected(err: BaseException) -> bool:
    """Whether an injected failure is among ``err``'s causes."""
    return any(isinstance(e, libvirt.libvirtError) and INJECTED in str(e) for e in causes(err))
