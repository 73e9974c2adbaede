"""A minimal QMP client: commands and timestamped events of a QEMU the tests started
themselves (the handover's source)."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


class QMP:
    """One QMP connection; ``events`` collects every event QEMU sends, in a thread."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.events: list[dict[str, Any]] = []
        self._replies: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.file.readline()  # greeting
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.cmd("qmp_capabilities")

    def _read(self) -> None:
        try:
            for line in self.file:
                msg = json.loads(line)
                with self._cond:
                    if "event" in msg:
                        self.events.append(msg)
                    else:
                        self._replies.append(msg)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._replies.append({"error": {"desc": "connection closed"}})
            self._cond.notify_all()

    def cmd(self, name: str, **args: Any) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        with self._cond:
            self.file.write(json.dumps(msg).encode() + b"\n")
            self._cond.wait_for(lambda: self._replies, timeout=30)
            reply = self._replies.pop(0)
        if "error" in reply:
            raise RuntimeError(f"{name}: {reply['error']}")
        return reply["return"]

    def event_time(self, name: str) -> float | None:
        """QEMU's timestamp of the last ``name`` event, None if none came."""
        with self._cond:
            found = [e for e in self.events if e["event"] == name]
        if not found:
            return None
        stamp = found[-1]["timestamp"]
        return stamp["seconds"] + stamp["microseconds"] / 1e6

    def close(self) -> None:
        self.sock.close()
