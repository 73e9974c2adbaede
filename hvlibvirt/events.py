"""Waiting for libvirt domain events instead of sleeping.

A waiter registers its callback *before* the caller triggers the action (reboot, device
detach, ...), so an event that arrives at once cannot be missed; ``wait`` then blocks
until a matching event or the deadline. Callbacks run in the event-loop thread that
``hvlibvirt.connection`` starts; the domain must come from a connection it serves
(``connection.get(uri, events=True)``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import libvirt

from hvlibvirt import connection
from hvlibvirt.errors import HypervisorError

EventPredicate = Callable[[tuple[Any, ...]], bool]

_ALIVE_POLL = 0.25  # seconds between checks that the connection can still bring events
# Registrations whose removal failed on a connection that still lives: libvirt refuses
# another callback for the same domain and event while one is tracked ("event callback
# already tracked"), so each is removed before the next registration on its connection.
_stale: list[tuple[libvirt.virConnect, int]] = []
_stale_lock = threading.Lock()


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())  # local state, no round trip
    except libvirt.libvirtError:
        return False


def _deregister(conn: libvirt.virConnect, callback_id: int) -> bool:
    """Remove a registration, asked twice; True once it is gone (with the connection,
    if that died)."""
    for _attempt in range(2):
        try:
            conn.domainEventDeregisterAny(callback_id)
            return True
        except libvirt.libvirtError:
            pass
    return not _alive(conn)


def _drop_stale(conn: libvirt.virConnect) -> None:
    """Remove what earlier waiters on ``conn`` could not (and forget dead connections')."""
    with _stale_lock:
        if not _stale:
            return
        left = [(c, i) for c, i in _stale if c is not conn or not _deregister(c, i)]
        _stale[:] = [(c, i) for c, i in left if c is conn or _alive(c)]


class DomainEventWaiter:
    """Collects events of one kind for one domain; use as a context manager."""

    def __init__(self, dom: libvirt.virDomain, event_id: int,
                 predicate: EventPredicate | None = None) -> None:
        conn = dom.connect()
        if not connection.serves_events(conn):
            raise HypervisorError(f"Internal error: events for {dom.name()} were asked for "
                                  "on a connection without the event loop")
        self._conn = conn
        self._predicate = predicate or (lambda _args: True)
        self._cond = threading.Condition()
        self._events: list[tuple[Any, ...]] = []
        _drop_stale(conn)
        self._callback_id: int | None = conn.domainEventRegisterAny(
            dom, event_id, self._on_event, None)

    def _on_event(self, _conn: libvirt.virConnect, _dom: libvirt.virDomain, *args: Any
                  ) -> None:
        details = args[:-1]  # the last argument is the opaque value we registered
        if self._predicate(details):
            with self._cond:
                self._events.append(details)
                self._cond.notify_all()

    def wait(self, timeout: float) -> tuple[Any, ...] | None:
        """The first matching event's details; None after ``timeout`` seconds, or as
        soon as the connection is dead (libvirtd died: no event can come over it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._events:
                left = deadline - time.monotonic()
                if left <= 0 or not _alive(self._conn):
                    break
                self._cond.wait(min(left, _ALIVE_POLL))
            return self._events[0] if self._events else None

    def close(self) -> None:
        if self._callback_id is not None:
            if not _deregister(self._conn, self._callback_id):
                with _stale_lock:
                    _stale.append((self._conn, self._callback_id))
            self._callback_id = None

    def __enter__(self) -> DomainEventWaiter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
