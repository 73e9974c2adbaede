"""Tier 6 for the tests: the running nested Xen (``XenLab``), Ganeti's objects sent to
dom0, guest consoles read in dom0, and the one retry the tier allows.

A test that fails while dom0's logs show the known fault of a nested Xen under TCG (see
``xen_vm.FAULT``), or while dom0 stops answering, runs once more on a freshly imaged and
booted dom0 (``run_with_retry``, called from conftest's ``pytest_pyfunc_call``); the
retry and the lines that caused it are reported at the end of the session. A failure
without those signatures is an hvlibvirt failure and is never retried.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.xen_vm import Dom0, Dom0Error

log = logging.getLogger(__name__)

CONSOLE_DIR = "/var/log/xen/console"
VIRSH = "virsh -c xen:///system"
LABS: list[XenLab] = []  # this session's, for the terminal summary


class NodeError(Exception):
    """A hypervisor call in dom0 raised: ``name`` and ``mro`` are its class names."""

    def __init__(self, answer: dict[str, Any]):
        super().__init__(f"{answer['error']}: {answer['message']}")
        self.name, self.mro, self.message = answer["error"], answer["mro"], answer["message"]
        self.traceback = answer.get("traceback", "")


class XenLab:
    """The session's nested Xen host, replaced by a fresh one after a known fault."""

    def __init__(self, cache_dir: Path, package: Path):
        self.cache_dir, self.package = cache_dir, package
        self.dom0: Dom0 | None = None
        self.retries: list[str] = []
        self.boots: list[float] = []
        LABS.append(self)

    def start(self) -> None:
        self.dom0 = Dom0(self.cache_dir, self.package)
        self.dom0.start()
        self.boots.append(self.dom0.boot_seconds)

    def attach(self, port: str, run_dir: str) -> None:
        """Use a dom0 that ``python -m lab.xen_vm`` booted, with this hvlibvirt."""
        self.dom0 = Dom0.attached(self.cache_dir, self.package, int(port), Path(run_dir))

    def stop(self) -> None:
        if self.dom0 is not None:
            self.dom0.stop()
            self.dom0 = None

    def replace(self) -> None:
        self.stop()
        self.start()

    # -- calls -----------------------------------------------------------------------
    def call(self, hv: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` of the ``hv`` hypervisor class in a fresh dom0 child; its result,
        or NodeError carrying the exception it raised."""
        assert self.dom0 is not None
        answer = self.dom0.call(hv, method, *args, **kwargs)
        if "crash" in answer:
            raise Dom0Error(f"{method}: the node child died (status {answer['crash']})")
        if "error" in answer:
            raise NodeError(answer)
        return answer["result"]

    def sh(self, command: str, timeout: float = 120, check: bool = True) -> str:
        assert self.dom0 is not None
        return self.dom0.sh(command, timeout=timeout, check=check).stdout

    # -- guests --------------------------------------------------------------------
    def console_path(self, name: str) -> str:
        return f"{CONSOLE_DIR}/guest-{name}.log"

    def console(self, name: str) -> str:
        return self.sh(f"cat {shlex.quote(self.console_path(name))} 2>/dev/null || true"
                       ).replace("\r", "")

    def capture_serial(self, name: str) -> None:
        """Copy an HVM guest's emulated serial port (a pty QEMU opens; xenconsoled logs
        PV consoles only) into its console log."""
        q = shlex.quote
        self.sh(f"p=$({VIRSH} ttyconsole {q(name)}) && [ -n \"$p\" ] && "
                f"(setsid sh -c \"exec cat $p >> {q(self.console_path(name))}\" "
                "</dev/null >/dev/null 2>&1 &)")

    def wait_console(self, name: str, pattern: str, count: int = 1, timeout: float = 120
                     ) -> str:
        """Wait until the console shows ``pattern`` (an extended regex, no quotes) at
        least ``count`` times; the console text."""
        path = shlex.quote(self.console_path(name))
        pat = shlex.quote(pattern)
        proc = self.dom0.sh(  # type: ignore[union-attr]
            f"for i in $(seq {int(timeout)}); do "
            f"[ \"$(grep -caE {pat} {path} 2>/dev/null)\" -ge {count} ] && exit 0; "
            "sleep 1; done; exit 1", timeout=timeout + 60, check=False)
        text = self.console(name)
        if proc.returncode != 0:
            raise AssertionError(f"{name}: no {count}x /{pattern}/ on the console after "
                                 f"{timeout:.0f}s:\n{text[-3000:]}")
        return text

    def last_dev(self, name: str) -> dict[str, str]:
        """The guest's latest HVL-DEV report as a dict (blk, net, mem)."""
        lines = [ln for ln in self.console(name).splitlines() if ln.startswith("HVL-DEV ")]
        assert lines, f"{name}: no HVL-DEV line yet"
        return dict(field.split("=", 1) for field in lines[-1].split()[1:])

    def wait_dev(self, name: str, check: Callable[[dict[str, str]], bool],
                 timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            dev = self.last_dev(name)
            if check(dev) or time.monotonic() > deadline:
                return dev
            time.sleep(2)

    def console_session(self, argv: list[str], typed: str, expect: str,
                        timeout: float = 60) -> str:
        """Run a console command (Ganeti's InstanceConsole command) in dom0 on a pty,
        type ``typed`` once it is attached, and read until ``expect`` appears."""
        assert self.dom0 is not None
        command = " ".join(shlex.quote(a) for a in argv)
        proc = subprocess.Popen([*self.dom0.ssh_argv("-tt"), command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = b""
        try:
            time.sleep(3)
            assert proc.stdin is not None and proc.stdout is not None
            # busybox's shell asks the terminal for its cursor position (ESC [6n) and
            # waits for the answer before it reads a line: give it one, then the line.
            proc.stdin.write(b"\x1b[1;1R\r")
            proc.stdin.flush()
            time.sleep(2)
            proc.stdin.write(typed.encode())
            proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while expect.encode() not in out and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 1)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    out += chunk
        finally:
            proc.kill()
            proc.wait()
        return out.decode(errors="replace").replace("\r", "")

    # -- the retry -------------------------------------------------------------------
    def run_with_retry(self, test: Callable[[], None], nodeid: str) -> None:
        """Run ``test``; after a failure that the known fault explains, once more on a
        fresh dom0."""
        before = set(self.dom0.faults()) if self.dom0 is not None else set()
        try:
            test()
            return
        except Exception as err:
            faults = self._new_faults(before)
            if not faults:
                raise
            report = (f"{nodeid}: retried on a fresh dom0 after the known fault "
                      f"({type(err).__name__}: {str(err)[:200]}); fault lines: "
                      + " | ".join(faults[:5]))
            log.warning("%s", report)
            self.retries.append(report)
        self.replace()
        test()

    def _new_faults(self, before: set[str]) -> list[str]:
        if self.dom0 is None:
            return ["dom0 is gone"]
        if self.dom0.qemu is not None and self.dom0.qemu.poll() is not None:
            return [f"the nested QEMU exited ({self.dom0.qemu.returncode})"]
        return [ln for ln in self.dom0.faults() if ln not in before]


def is_ready_line(text: str, guest_type: str) -> bool:
    return re.search(rf"HVL-READY hv=xen guest_type={guest_type}\b", text) is not None
