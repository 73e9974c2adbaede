"""Read the lab guest's serial console log (written by virtlogd) and wait for lines on it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 0.05
TAIL_CHARS = 2000

# Only complete lines count: virtlogd may flush half a line.
_DEV_RE = re.compile(r"HVL-DEV ([^\r\n]*)\r?\n")

DevState = dict[str, Any]


class SerialTimeout(TimeoutError, AssertionError):
    """A pattern did not appear in the serial log in time (a test failure, not an error)."""


def parse_dev(line: str) -> DevState:
    """Parse the payload of an ``HVL-DEV`` line.

    ``blk=vda,sda net=eth0,lo mem=94800 size=vda:65536,sda:2048`` becomes
    ``{"blk": ["vda", "sda"], "net": ["eth0", "lo"], "mem": 94800,
    "sizes": {"vda": 65536, "sda": 2048}}``.
    """
    fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
    sizes: dict[str, int] = {}
    for item in filter(None, fields.get("size", "").split(",")):
        name, _, sectors = item.partition(":")
        # A device going away while the guest reports can leave its size unread
        # ("vdb:"): it is listed, its size is not known.
        if sectors.isdigit():
            sizes[name] = int(sectors)
    return {
        "blk": [b for b in fields.get("blk", "").split(",") if b],
        "net": [n for n in fields.get("net", "").split(",") if n],
        "mem": int(fields["mem"]) if fields.get("mem", "").isdigit() else 0,
        "sizes": sizes,
    }


class SerialLog:
    """The guest serial console as captured by ``<serial><log file=.../>``.

    Offsets are character offsets into the decoded text; use ``mark()`` before an
    action and ``wait(..., since=mark)`` to see only what the action caused.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SerialLog({str(self.path)!r})"

    def text(self) -> str:
        """Everything logged so far ('' before the file exists)."""
        try:
            return self.path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """The current length, to pass as ``since`` to a later wait."""
        return len(self.text())

    def tail(self, chars: int = TAIL_CHARS) -> str:
        """The end of the log, for failure messages."""
        return self.text()[-chars:]

    def _timeout(self, what: str, timeout: float, since: int) -> SerialTimeout:
        text = self.text()
        return SerialTimeout(
            f"{what} did not appear in {self.path} within {timeout:.1f}s "
            f"(searched from offset {since} of {len(text)}); log tail:\n{text[-TAIL_CHARS:]}")

    def wait(self, pattern: str | re.Pattern[str], timeout: float, since: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` matches the log at/after offset ``since``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text(), since)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise self._timeout(f"pattern {rx.pattern!r}", timeout, since)
            time.sleep(POLL_S)

    def devs(self, since: int = 0) -> list[DevState]:
        """Every complete HVL-DEV line at/after ``since``, parsed, oldest first."""
        return [parse_dev(m.group(1)) for m in _DEV_RE.finditer(self.text(), since)]

    def last_dev(self) -> DevState | None:
        """The newest HVL-DEV line parsed (see ``parse_dev``), None if there is none yet."""
        devs = self.devs()
        return devs[-1] if devs else None

    def wait_dev(self, predicate: Callable[[DevState], bool], timeout: float, since: int = 0) -> DevState:
        """Wait until an HVL-DEV line at/after ``since`` satisfies ``predicate``; return it.

        Example: ``log.wait_dev(lambda d: "vda" in d["blk"], 10, since=mark)``.
        """
        deadline = time.monotonic() + timeout
        while True:
            for dev in reversed(self.devs(since)):
                if predicate(dev):
                    return dev
            if time.monotonic() >= deadline:
                raise self._timeout("an HVL-DEV line satisfying the predicate", timeout, since)
            time.sleep(POLL_S)
