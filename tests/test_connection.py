"""The connection module: caching, the event loop thread, reconnects, error conversion."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import libvirt
import pytest

from hvlibvirt import connection
from hvlibvirt.errors import HotplugError, HypervisorError
from marks import FORK_WITH_THREADS


pytestmark = pytest.mark.tier2

URI = "test:///default"


def test_one_cached_connection_per_uri() -> None:
    first = connection.get(URI)
    assert connection.get(URI) is first
    assert URI in connection._connections  # noqa: SLF001


def test_event_loop_runs_in_one_daemon_thread() -> None:
    connection.get(URI, events=True)
    connection.get(URI, events=True)
    connection.get(URI)
    loops = [t for t in threading.enumerate() if t.name == "libvirt-events"]
    assert len(loops) == 1 and loops[0].daemon and loops[0].is_alive()


def test_lifecycle_events_are_delivered() -> None:
    conn = connection.get(URI, events=True)
    seen = threading.Event()

    def on_event(_conn, dom, event, _detail, _opaque) -> None:
        if dom.name() == "test" and event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
            seen.set()

    cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event,
                                     None)
    try:
        dom = conn.lookupByName("test")
        dom.suspend()
        dom.resume()
        assert seen.wait(5), "no SUSPENDED event: the event loop thread is not running"
    finally:
        conn.domainEventDeregisterAny(cb)


def test_plain_calls_start_no_event_loop() -> None:
    """What a fresh noded child does: open, call, exit, without a loop thread."""
    code = ("import threading; from hvlibvirt import connection; "
            "connection.get('test:///default').listAllDomains(0); "
            "print(sorted(t.name for t in threading.enumerate()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "['MainThread']"


def test_asking_for_events_replaces_a_plain_connection() -> None:
    """Domains must come from the connection their events are registered on, so a
    plain connection is replaced, and plain callers share the new one from then on."""
    code = ("from hvlibvirt import connection as c; u = 'test:///default'; "
            "plain = c.get(u); ev = c.get(u, events=True); "
            "print(ev is not plain, c.get(u) is ev)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["True", "True"]


@FORK_WITH_THREADS
def test_a_forked_child_opens_its_own_connection() -> None:
    parent = connection.get(URI)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        ok = connection.get(URI) is not parent
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert connection.get(URI) is parent


def test_a_dead_connection_is_replaced() -> None:
    old = connection.get(URI)
    old.close()  # what a daemon restart looks like from the client: not alive any more
    new = connection.get(URI)
    assert new is not old
    assert new.isAlive() and new.getType() == "TEST"


def test_drop_forgets_the_connection() -> None:
    connection.get(URI)
    connection.drop(URI)
    assert URI not in connection._connections  # noqa: SLF001
    assert connection.get(URI).isAlive()


def test_open_failure_is_a_hypervisor_error_naming_the_uri() -> None:
    with pytest.raises(HypervisorError, match=r"connect to test:///no/such/node\.xml"):
        connection.get("test:///no/such/node.xml")


def test_libvirt_errors_converts_with_operation_and_instance() -> None:
    with pytest.raises(HotplugError, match="Failed to attach of instance web1: Domain not found"):
        with connection.libvirt_errors("attach", "web1", HotplugError):
            connection.get(URI).lookupByName("no-such-domain-xyz")


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError):
        with connection.libvirt_errors("anything"):
            raise KeyError("x")


class _RestartedUnderneath:
    """A cached plain connection whose libvirtd restarted: it still says it is alive
    (nothing told it), its next call fails, and then it knows."""

    def __init__(self) -> None:
        self.alive = True

    def isAlive(self) -> bool:  # noqa: N802 - libvirt's name
        return self.alive

    def listAllDomains(self, _flags: int) -> list:  # noqa: N802
        self.alive = False
        raise libvirt.libvirtError("Cannot write data: Broken pipe")


def test_call_asks_again_on_a_new_connection_when_the_cached_one_died() -> None:
    connection.get(URI)
    stale = _RestartedUnderneath()
    with connection._lock:
        connection._connections[URI] = stale  # type: ignore[assignment]
    names = connection.call(URI, lambda conn: [d.name() for d in conn.listAllDomains(0)])
    assert "test" in names
    assert connection.get(URI) is not stale


def test_call_does_not_repeat_what_a_live_connection_refused() -> None:
    calls = []

    def lookup(conn: libvirt.virConnect) -> libvirt.virDomain:
        calls.append(conn)
        return conn.lookupByName("no-such-domain-xyz")

    with pytest.raises(libvirt.libvirtError, match="Domain not found"):
        connection.call(URI, lookup)
    assert len(calls) == 1
