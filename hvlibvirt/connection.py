"""The one place that opens libvirt connections.

* One connection per URI per process, cached and reused (Ganeti builds a new hypervisor
  object for every RPC, so the object itself must hold nothing).
* libvirt's default event loop runs in one daemon thread, registered before the first
  open: events (lifecycle, DEVICE_REMOVED, ...) and keepalive depend on it.
* A cached connection that libvirt reports dead (the daemon restarted, the socket
  closed) is dropped and reopened on the next use.
* ``libvirt_errors`` turns ``libvirtError`` into our ``HypervisorError`` naming the
  operation and carrying libvirt's message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import libvirt

from hvlibvirt.errors import HypervisorError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_connections: dict[str, libvirt.virConnect] = {}
_owner_pid: int | None = None
_loop_thread: threading.Thread | None = None


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # pragma: no cover - keep the loop alive
            log.exception("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    with _lock:
        _ensure_event_loop_locked()


def _ensure_event_loop_locked() -> None:
    global _loop_thread, _owner_pid
    if _loop_thread is not None and _owner_pid == os.getpid():
        return
    if _owner_pid is not None and _owner_pid != os.getpid():
        # After fork() the parent's thread and connections do not exist here; libvirt
        # forbids registering the default loop twice, so the child reuses the
        # registration and only starts a new thread.
        _connections.clear()
    else:
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()
    _owner_pid = os.getpid()
    _loop_thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
    _loop_thread.start()


def _on_close(conn: libvirt.virConnect, reason: int, uri: str) -> None:
    log.info("libvirt connection to %s closed (reason %d)", uri, reason)
    with _lock:
        if _connections.get(uri) is conn:
            del _connections[uri]


def get(uri: str) -> libvirt.virConnect:
    """Return this process's open connection to ``uri``, opening it if needed."""
    with _lock:
        _ensure_event_loop_locked()
        conn = _connections.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
            log.info("libvirt connection to %s is dead; reconnecting", uri)
            del _connections[uri]
        with libvirt_errors(f"connect to {uri}"):
            conn = libvirt.open(uri)
        try:
            conn.registerCloseCallback(_on_close, uri)
        except libvirt.libvirtError:
            pass  # drivers without a remote socket (test://) have nothing to close
        _connections[uri] = conn
        return conn


def drop(uri: str) -> None:
    """Forget (and close) the cached connection to ``uri``, if any."""
    with _lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def is_cached(uri: str) -> bool:
    """Whether this process holds an open connection to ``uri`` (for tests and callers
    that want to prove they did not connect)."""
    with _lock:
        return uri in _connections


@contextlib.contextmanager
def libvirt_errors(operation: str, instance: str | None = None,
                   error_class: type[HypervisorError] = HypervisorError) -> Iterator[None]:
    """Convert a libvirtError raised inside the block into ``error_class``."""
    try:
        yield
    except libvirt.libvirtError as err:
        subject = f" of instance {instance}" if instance else ""
        raise error_class(f"Failed to {operation}{subject}: {err.get_error_message() or err}"
                          ) from err
