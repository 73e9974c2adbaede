"""The relay: QEMU's migration stream from hv_kvm's source into libvirt's restore.

``AcceptInstance`` runs in a process of its own that ends right away (Ganeti's node
daemon forks one per call), and the stream comes later, when the source migrates. So
the relay is a detached helper (``hvlibvirt handover-relay SPEC``, the domain XML on
its stdin) that:

1. listens on the migration address and port (before AcceptInstance returns, so the
   source's ``migrate`` finds it) and says so on stdout;
2. makes a FIFO in a private directory under a trusted one (``hvlibvirt.trusted``;
   next to the lock directory, never in /tmp) and has libvirt restore from it:
   ``virDomainRestoreFlags(FIFO)`` makes libvirtd open the FIFO, read the save-image
   header and XML this relay writes first, start QEMU and feed it the rest;
3. copies the one TCP connection into the FIFO until the source closes it.

libvirtd's worker blocks in ``open()`` until a writer comes, and QEMU waits for the
stream without a timeout: so the relay always opens the write end (even only to close
it), gives up on a source that does not connect or stalls (closing the FIFO ends the
restore with an error; libvirt then kills its QEMU and drops the domain), and on
SIGTERM does the same. Whoever kills it uses ``stop``, which also unblocks and removes
what a killed relay left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import libvirt

from hvlibvirt import config, trusted
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover import saveimage
from hvlibvirt import helper as helpers

log = logging.getLogger(__name__)

HELPER_COMMAND = "handover-relay"
READY = b"listening\n"
READY_TIMEOUT = 30.0    # seconds for the helper to listen
OPEN_TIMEOUT = 60.0     # seconds for libvirtd to open the FIFO
ACCEPT_TIMEOUT = 300.0  # seconds for the source to connect
STALL_TIMEOUT = 60.0    # seconds without a byte from the source before giving up
RESTORE_TIMEOUT = 600.0  # seconds for libvirt's restore to return once the stream ended
STOP_TIMEOUT = 10.0
_CHUNK = 1 << 20


def root_dir() -> str:
    """Where relays make their private directories: in the node's runtime directory
    (``/run/hvlibvirt/handover`` for root), on the node libvirtd runs on."""
    return os.path.join(config.run_dir(), "handover")


def work_dir(uri: str, name: str) -> str:
    digest = hashlib.sha256(f"{uri}\0{name}".encode(errors="surrogateescape")).hexdigest()
    return os.path.join(root_dir(), f"{name}.{digest[:16]}")


def start(uri: str, name: str, xml: str, host: str, port: int, was_running: bool,
          header_reads: int = 1) -> None:
    """Start the relay for instance ``name`` and return once it listens on
    ``host:port``; HypervisorError (and no helper left) if it cannot. libvirt's restore
    reads the header ``header_reads`` times (``saveimage.header_reads``)."""
    spec = {"uri": uri, "name": name, "host": host, "port": int(port),
            "running": bool(was_running), "header_reads": int(header_reads)}
    helper = helpers.spawn(HELPER_COMMAND, spec, f"Handover of {name}: cannot start the relay",
                           stdin=subprocess.PIPE)
    try:
        helper.stdin.write(xml.encode())
        helper.stdin.close()
        line = _read_line(helper, READY_TIMEOUT)
    except BaseException:
        _kill(helper)
        raise
    finally:
        helper.stdout.close()  # what it says later goes nowhere (it is detached)
    if line != READY:
        _kill(helper)
        rest = line.decode(errors="replace").strip()
        raise HypervisorError(f"Handover of {name}: the relay failed: "
                              f"{rest or f'exit code {helper.returncode}'}")
    helpers.reap_later(HELPER_COMMAND, helper)


def _read_line(helper: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The helper's first line, or all it said before it exited."""
    fd, buf = helper.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HypervisorError(f"the handover relay did not listen within {timeout:.0f}s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                helper.wait()
                break
            buf += chunk
    return buf


def _kill(helper: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(helper.pid, signal.SIGTERM)
    try:
        helper.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(helper.pid, signal.SIGKILL)
        helper.wait()


def relay_pids(uri: str, name: str) -> list[int]:
    """Pids of this user's running relays for ``name`` at ``uri``."""
    return helpers.helper_pids(HELPER_COMMAND, {"uri": uri, "name": name})


def wait(uri: str, name: str, timeout: float) -> bool:
    """Wait until no relay of ``name`` runs; whether none does."""
    deadline = time.monotonic() + timeout
    while relay_pids(uri, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(uri: str, name: str, timeout: float = STOP_TIMEOUT) -> None:
    """End every relay of ``name`` (SIGTERM: each closes its FIFO, which fails libvirt's
    restore; SIGKILL if it lingers) and remove what a killed one left, unblocking a
    libvirtd still waiting to open its FIFO."""
    for pid in relay_pids(uri, name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not wait(uri, name, timeout):
        for pid in relay_pids(uri, name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not wait(uri, name, timeout):
            raise HypervisorError(f"The handover relay of {name} did not end")
    _remove(work_dir(uri, name))


def _remove(directory: str) -> None:
    fifo = os.path.join(directory, "stream")
    with contextlib.suppress(OSError):  # a restore blocked in open() gets EOF
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    shutil.rmtree(directory, ignore_errors=True)


class _Relay:
    """One run of the helper (see the module docstring)."""

    def __init__(self, spec: dict[str, Any], xml: str) -> None:
        self.spec, self.xml = spec, xml
        self.directory = work_dir(spec["uri"], spec["name"])
        self.fifo = os.path.join(self.directory, "stream")
        self.restore_error: str | None = None
        self.restore_done = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> int:
        listener = self._listen()
        try:
            why = trusted.why_untrusted(root_dir(), create=True)
            if why:
                raise HypervisorError(f"cannot use {root_dir()}: {why}")
            _remove(self.directory)  # what an earlier, killed relay left
            os.mkdir(self.directory, 0o700)
            os.mkfifo(self.fifo, 0o600)
            os.write(1, READY)
            return self._relay(listener)
        finally:
            listener.close()
            _remove(self.directory)

    def _listen(self) -> socket.socket:
        host, port = self.spec["host"], self.spec["port"]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
            listener.listen(1)
        except OSError as err:
            listener.close()
            raise HypervisorError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        return listener

    def _restore(self) -> None:
        try:
            conn = libvirt.open(self.spec["uri"])
            try:
                saveimage.check_version(conn.getLibVersion())
                conn.restoreFlags(self.fifo, None, libvirt.VIR_DOMAIN_SAVE_RUNNING
                                  if self.spec["running"] else libvirt.VIR_DOMAIN_SAVE_PAUSED)
            finally:
                conn.close()
        except (libvirt.libvirtError, HypervisorError) as err:
            self.restore_error = str(err)
        finally:
            self.restore_done.set()

    def _open_fifo(self) -> int:
        """The FIFO's write end, once libvirtd has opened its read end."""
        deadline = time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                return fd
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            if self.restore_done.is_set() or self.stopping.is_set() \
                    or time.monotonic() > deadline:
                raise HypervisorError(self.restore_error or "libvirtd did not open the "
                                      "stream")
            time.sleep(0.01)

    def _relay(self, listener: socket.socket) -> int:
        restore = threading.Thread(target=self._restore, name="restore", daemon=True)
        restore.start()
        fd = self._open_fifo()
        moved = 0
        try:
            self._write_header(fd)
            conn = self._accept(listener)
            with conn:
                last = time.monotonic()
                while True:
                    if self.stopping.is_set():
                        raise HypervisorError("stopped")
                    ready, _, _ = select.select([conn], [], [], 0.5)
                    if not ready:
                        if time.monotonic() - last > STALL_TIMEOUT:
                            raise HypervisorError(f"the source sent nothing for "
                                                  f"{STALL_TIMEOUT:.0f}s")
                        continue
                    last = time.monotonic()
                    chunk = conn.recv(_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    moved += len(chunk)
        except (OSError, HypervisorError) as err:
            # Closing the FIFO below ends the restore with an error.
            log.warning("Handover of %s: %s", self.spec["name"], err)
        finally:
            os.close(fd)
        self.restore_done.wait(RESTORE_TIMEOUT)
        if self.restore_error or not self.restore_done.is_set():
            os.write(2, f"restore of {self.spec['name']} failed after {moved} bytes: "
                        f"{self.restore_error or 'no answer'}\n".encode())
            return 1
        return 0

    def _write_header(self, fd: int) -> None:
        """The save-image header and XML, once for each time libvirtd's restore reads
        them: the pipe keeps what one open leaves for the next (this end stays open),
        and each read takes exactly one header and its XML."""
        header = saveimage.build(self.xml, self.spec["running"])
        for _read in range(self.spec.get("header_reads", 1)):
            view = memoryview(header)
            while view:
                view = view[os.write(fd, view):]

    def _accept(self, listener: socket.socket) -> socket.socket:
        deadline = time.monotonic() + ACCEPT_TIMEOUT
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([listener], [], [], min(left, 0.5))
            if ready:
                conn, _ = listener.accept()
                return conn
        raise HypervisorError("the source did not connect")


def run_helper(spec_json: str) -> int:
    """``hvlibvirt handover-relay SPEC`` (the XML on stdin)."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    spec = json.loads(spec_json)
    xml = sys.stdin.read()
    relay = _Relay(spec, xml)

    def stop_relay(_signum: int, _frame: Any) -> None:
        relay.stopping.set()

    signal.signal(signal.SIGTERM, stop_relay)
    try:
        return relay.run()
    except (OSError, HypervisorError) as err:
        with contextlib.suppress(OSError):
            os.write(1, f"{err}\n".encode())
        return 1
