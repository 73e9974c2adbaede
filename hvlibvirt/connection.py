"""The one place that opens libvirt connections.

* One connection per URI per process, cached and reused (Ganeti builds a new hypervisor
  object for every RPC, so the object itself must hold nothing).
* Plain by default: Ganeti's node daemon forks a fresh child for every RPC, and in a
  fresh process libvirt's event loop (a thread, keepalive, a close callback) costs more
  than the call. Operations that wait for events (reboot, hot-unplug) ask for
  ``get(uri, events=True)`` *before* they look anything up: it registers libvirt's
  default event loop, runs it in a daemon thread and, if the cached connection was
  opened without it, replaces that connection (domains must come from the connection
  their events are registered on). Once the loop runs, every connection the process
  opens has keepalive and close detection.
* A cached connection that libvirt reports dead (the daemon restarted, the socket
  closed) is dropped and reopened on the next use. With the loop running that is noticed
  at once; without it, only when a call on the dead socket fails. So the first, reading
  call of an operation goes through ``call``, which then reconnects and asks again: the
  call after a libvirtd restart works, in a long-lived process too.
* ``libvirt_errors`` turns ``libvirtError`` into our ``HypervisorError`` naming the
  operation and carrying libvirt's message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar

import libvirt

from hvlibvirt.errors import HypervisorError

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()
_connections: dict[str, libvirt.virConnect] = {}
_with_events: set[str] = set()  # URIs whose cached connection the event loop serves
_inherited: list[libvirt.virConnect] = []  # a forked child's copies of its parent's
_owner_pid: int | None = None
_loop_thread: threading.Thread | None = None
_registered = False
_silenced = False


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


def prepare_for_fork() -> None:
    """Work a forking parent (noded) does once so that each child need not: libvirt's
    error handler is process state that fork copies."""
    with _lock:
        _silence_libvirt_locked()


def _silence_libvirt_locked() -> None:
    global _silenced
    if not _silenced:
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        _silenced = True


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # pragma: no cover - keep the loop alive
            log.exception("libvirt event loop iteration failed")


def _ensure_event_loop_locked() -> None:
    global _loop_thread, _registered
    if _owner_pid != os.getpid():
        _forget_parent_locked()
    if _loop_thread is not None:
        return
    if not _registered:
        libvirt.virEventRegisterDefaultImpl()
        _registered = True  # libvirt forbids registering twice, even in a forked child
    _loop_thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
    _loop_thread.start()


def _on_close(conn: libvirt.virConnect, reason: int, uri: str) -> None:
    log.info("libvirt connection to %s closed (reason %d)", uri, reason)
    with _lock:
        if _connections.get(uri) is conn:
            del _connections[uri]
            _with_events.discard(uri)


def get(uri: str, events: bool = False) -> libvirt.virConnect:
    """Return this process's open connection to ``uri``, opening it if needed; with
    ``events``, one that libvirt's event loop serves (see the module docstring)."""
    with _lock:
        if _owner_pid != os.getpid():
            _forget_parent_locked()
        conn = _connections.get(uri)
        if conn is not None:
            if _alive(conn) and (not events or uri in _with_events):
                return conn
            log.info("libvirt connection to %s is %s; reconnecting", uri,
                     "without events" if _alive(conn) else "dead")
            del _connections[uri]
            _with_events.discard(uri)
        if events:
            _ensure_event_loop_locked()
        _silence_libvirt_locked()
        if not isinstance(uri, str) or "\x00" in uri:
            # libvirt-python would raise ValueError/TypeError for these, not libvirtError.
            raise HypervisorError(f"Failed to connect to {uri!r}: not a libvirt URI")
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as err:
            raise HypervisorError(f"Failed to connect to {uri}: "
                                  f"{err.get_error_message() or err}") from err
        if _loop_thread is not None:
            try:
                conn.registerCloseCallback(_on_close, uri)
            except libvirt.libvirtError:
                pass  # drivers without a remote socket (test://) have nothing to close
            _with_events.add(uri)
        _connections[uri] = conn
        return conn


def call(uri: str, read: Callable[[libvirt.virConnect], T], events: bool = False) -> T:
    """``read(connection)``, asked once more on a new connection if the cached one turned
    out dead (libvirtd restarted since it was opened). Only for calls that can be
    repeated safely (lookups, listings, reads): the first call fails before the request
    reaches the daemon only if the socket is closed; otherwise it raises."""
    conn = get(uri, events)
    try:
        return read(conn)
    except libvirt.libvirtError:
        if _alive(conn):
            raise
        log.info("libvirt connection to %s was dead; reconnecting", uri)
        drop_dead()
    return read(get(uri, events))


def serves_events(conn: libvirt.virConnect) -> bool:
    """Whether ``conn`` was opened by this process with the event loop running."""
    with _lock:
        return (_loop_thread is not None and _owner_pid == os.getpid()
                and any(c is conn for uri, c in _connections.items() if uri in _with_events))


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _forget_parent_locked() -> None:
    """Make this process the owner (at the first call, and in a forked child: the
    parent's connections and loop thread are not ours to use)."""
    global _loop_thread, _owner_pid
    for conn in _connections.values():
        # Never close a parent's connection here: its socket is shared, and libvirt-python
        # closes on garbage collection, which would end the *parent's* session (its next
        # call fails with a broken pipe). Detached and kept, it is just forgotten.
        conn._o = None  # noqa: SLF001 - what libvirt-python's __del__ would close
        _inherited.append(conn)
    _connections.clear()
    _with_events.clear()
    _loop_thread = None
    _owner_pid = os.getpid()


def drop_dead() -> None:
    """Forget cached connections libvirt has given up on (called after a failed call)."""
    with _lock:
        for uri, conn in list(_connections.items()):
            if not _alive(conn):
                del _connections[uri]
                _with_events.discard(uri)


def drop(uri: str) -> None:
    """Forget (and close) the cached connection to ``uri``, if any."""
    with _lock:
        conn = _connections.pop(uri, None)
        _with_events.discard(uri)
    if conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def keeps_domains_in_process(uri: str) -> bool:
    """Whether ``uri``'s driver keeps its domains inside the process that opened it
    (libvirt's test driver; an embedded driver, ``?root=``): nothing about them may be
    kept on the node for other processes."""
    return uri.startswith("test:") or "root=" in urllib.parse.urlsplit(uri).query


@contextlib.contextmanager
def libvirt_errors(operation: str, instance: str | None = None,
                   error_class: type[HypervisorError] = HypervisorError) -> Iterator[None]:
    """Convert a libvirtError raised inside the block into ``error_class``."""
    try:
        yield
    except libvirt.libvirtError as err:
        drop_dead()
        subject = f" of instance {instance}" if instance else ""
        raise error_class(f"Failed to {operation}{subject}: {err.get_error_message() or err}"
                          ) from err
