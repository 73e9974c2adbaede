"""Attach a terminal to an instance's serial console through libvirt.

This is what Ganeti's ssh console command runs on the primary node (Ganeti's own
wrapper talks to QEMU's monitor and socat). The console stream is opened first and a
paused instance is resumed after that, so nothing the guest prints is lost - the way
``gnt-instance start --paused`` followed by ``gnt-instance console`` works in Ganeti.
Ctrl-] (0x1d) detaches.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty

import libvirt

from hvlibvirt import connection
from hvlibvirt.errors import HypervisorError

ESCAPE = b"\x1d"


def _pump_output(stream: libvirt.virStream, out_fd: int, done: threading.Event) -> None:
    try:
        while not done.is_set():
            data = stream.recv(65536)
            if not isinstance(data, bytes) or not data:
                break
            os.write(out_fd, data)
    except (libvirt.libvirtError, OSError):
        pass
    finally:
        done.set()


def attach(uri: str, name: str, in_fd: int | None = None, out_fd: int | None = None) -> int:
    """Bridge ``in_fd``/``out_fd`` (stdin/stdout) to the console of instance ``name``."""
    in_fd = sys.stdin.fileno() if in_fd is None else in_fd
    out_fd = sys.stdout.fileno() if out_fd is None else out_fd
    conn = connection.get(uri)
    with connection.libvirt_errors("open the console", name):
        dom = conn.lookupByName(name)
        stream = conn.newStream(0)
        # FORCE: a stale session (a dropped ssh connection) must not lock the user out.
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    done = threading.Event()
    reader = threading.Thread(target=_pump_output, args=(stream, out_fd, done), daemon=True)
    reader.start()
    saved = termios.tcgetattr(in_fd) if os.isatty(in_fd) else None
    if saved is not None:
        # TCSANOW, not setraw's default TCSAFLUSH: what the user typed while the
        # console was opening (a slow node) is sent, not thrown away.
        tty.setraw(in_fd, termios.TCSANOW)
    try:
        while not done.is_set():
            ready, _, _ = select.select([in_fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(in_fd, 4096)
            if not data:
                done.wait()  # input closed: keep showing output until the console ends
                break
            if ESCAPE in data:
                data = data.split(ESCAPE, 1)[0]
                if data:
                    stream.send(data)
                break
            stream.send(data)
    except libvirt.libvirtError as err:
        raise HypervisorError(f"Console of instance {name} failed: {err}") from err
    finally:
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        done.set()
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
    return 0
