"""A domain's serial console read through libvirt (virDomainOpenConsole), into a file.

Used when a domain's XML has no ``<serial><log>`` file of its own (the library's XML):
the bytes go to ``path`` so ``SerialLog`` can wait on them like on a console log. The
capture has a connection of its own, so the stream never waits behind the test's own
calls on a shared connection.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import libvirt

log = logging.getLogger(__name__)


class ConsoleCapture:
    """Copy a running domain's console to ``path`` in a background thread until EOF."""

    def __init__(self, uri: str, name: str, path: Path) -> None:
        self.path = Path(path)
        self.ended: str | None = None  # why the copy stopped, once it has
        self._conn = libvirt.open(uri)
        self._stream = self._conn.newStream(0)
        # FORCE: take the console over from any earlier (stale) session.
        self._conn.lookupByName(name).openConsole(None, self._stream,
                                                  libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self._thread = threading.Thread(target=self._pump, name=f"console-{name}",
                                        daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with open(self.path, "ab", buffering=0) as out:
            while True:
                try:
                    data = self._stream.recv(65536)
                except libvirt.libvirtError as err:
                    self.ended = f"stream error: {err}"
                    break
                if data == -2:  # would block: nothing buffered yet
                    time.sleep(0.01)
                    continue
                if not isinstance(data, bytes) or not data:
                    self.ended = f"end of stream ({data!r})"
                    break
                out.write(data)
        log.info("console capture of %s ended: %s", self.path.name, self.ended)

    def send(self, text: str) -> None:
        """Type ``text`` on the console (the guest runs a shell on ttyS0)."""
        data = text.encode()
        while data:
            sent = self._stream.send(data)
            data = data[sent:] if isinstance(sent, int) and sent > 0 else b""

    def close(self) -> None:
        try:
            self._stream.abort()
        except libvirt.libvirtError:
            pass
        self._thread.join(5)
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass
