"""A domain's serial console read through libvirt (virDomainOpenConsole), into a file.

Used when a domain's XML has no ``<serial><log>`` file of its own (the library's XML):
the bytes go to ``path`` so ``SerialLog`` can wait on them like on a console log.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import libvirt

log = logging.getLogger(__name__)


class ConsoleCapture:
    """Copy a running domain's console to ``path`` in a background thread until EOF."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, path: Path) -> None:
        self.path = Path(path)
        self._stream = conn.newStream(0)
        # FORCE: take the console over from any earlier (stale) session.
        dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self._thread = threading.Thread(target=self._pump, name=f"console-{dom.name()}",
                                        daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with open(self.path, "ab", buffering=0) as out:
            while True:
                try:
                    data = self._stream.recv(65536)
                except libvirt.libvirtError as err:
                    log.debug("console stream ended: %s", err)
                    return
                if not isinstance(data, bytes) or not data:
                    return
                out.write(data)

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
