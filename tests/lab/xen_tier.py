"""Tier 6 for the tests: the running nested Xen (``XenLab``), Ganeti's objects sent to
dom0, guest consoles read in dom0, and the one retry the tier allows.

A test that fails while dom0's logs show the known fault of a nested Xen under TCG (see
``xen_vm.FAULT``), or while dom0 stops answering, runs once more on a freshly imaged and
booted dom0 (``run_with_retry``, called from tests/tiers/xen.py's ``pytest_pyfunc_call``); the
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.xen_vm import Dom0, Dom0Error, PeerLink

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

    def __init__(self, cache_dir: Path, package: Path,
                 link: tuple[PeerLink, int] | None = None):
        """``link``: this host's end of a pair (see ``PeerLink``)."""
        self.cache_dir, self.package, self.link = cache_dir, package, link
        self.host = PeerLink.hostname(link[1] if link else 1)  # for the summary
        self.dom0: Dom0 | None = None
        self.retries: list[str] = []
        self.console_retypes: list[str] = []  # console_session's second tries
        self.boots: list[float] = []
        # Fault lines in each dom0's logs when it is stopped: a passing run's count too.
        self.fault_lines: list[str] = []
        self._booted = threading.Event()
        self._booted.set()
        self._released = threading.Event()
        self._boot_error: BaseException | None = None
        LABS.append(self)

    def start(self) -> None:
        dom0 = Dom0(self.cache_dir, self.package, link=self.link)
        dom0.start()
        self.dom0 = dom0
        self.boots.append(dom0.boot_seconds)

    def start_in_background(self) -> None:
        """Build and boot the first dom0 in a thread, while the other tiers run (a boot
        is minutes of one core under TCG); ``ready()`` waits for it. The thread lives
        until ``stop()``: QEMU's parent-death signal follows the thread that forked it."""
        self._booted.clear()
        threading.Thread(target=self._boot_and_hold, name="tier6-dom0", daemon=True).start()

    def _boot_and_hold(self) -> None:
        try:
            self.start()
        except BaseException as err:  # handed to ready(), in the test's thread
            self._boot_error = err
        finally:
            self._booted.set()
        self._released.wait()

    def ready(self) -> None:
        """Wait for a background boot; raise what it raised."""
        self._booted.wait()
        if self._boot_error is not None:
            err, self._boot_error = self._boot_error, None
            raise err

    def attach(self, port: str, run_dir: str) -> None:
        """Use a dom0 that ``python -m lab.xen_vm`` booted, with this hvlibvirt."""
        self.dom0 = Dom0.attached(self.cache_dir, self.package, int(port), Path(run_dir))

    def stop(self) -> None:
        self._booted.wait()
        if self.dom0 is not None:
            qemu = self.dom0.qemu
            if qemu is None or qemu.poll() is None:  # attached, or still running
                self.fault_lines.extend(self.dom0.faults())
            self.dom0.stop()
            self.dom0 = None
        self._released.set()

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

    def faulted(self, hv: str, method: str, fail_at: int, *args: Any, bound: float,
                **kwargs: Any) -> dict[str, Any]:
        """``method`` with libvirt's call number ``fail_at`` failed in the dom0 child
        (0: none), within ``bound`` seconds (else Dom0Error): the node script's answer,
        ``calls`` included (tests/lab/xen_node.py)."""
        assert self.dom0 is not None
        return self.dom0.call(hv, method, *args, timeout=bound, fail_at=fail_at, **kwargs)

    def view(self, name: str, reported: str | None = None) -> dict[str, Any]:
        """What xl and libvirt have of the domain ``name`` and, with ``reported``, what
        that hypervisor class reports of it (tests/lab/xen_node.py)."""
        assert self.dom0 is not None
        return self.dom0.node_view(name, reported)

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
        """The guest's latest complete HVL-DEV report as a dict (blk, net, mem). A report
        need not start its line: the console shell's prompt (and its cursor query) ends
        without a newline, and a report printed after it shares the prompt's line."""
        reports = _DEV_REPORT.findall(self.console(name))
        assert reports, f"{name}: no HVL-DEV line yet"
        return dict(field.split("=", 1) for field in reports[-1].split())

    def wait_dev(self, name: str, check: Callable[[dict[str, str]], bool],
                 timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            dev = self.last_dev(name)
            if check(dev) or time.monotonic() > deadline:
                return dev
            time.sleep(2)

    def console_session(self, argv: list[str], typed: str, expect: str,
                        timeout: float = 60, attempts: int = 3) -> str:
        """Run a console command (Ganeti's InstanceConsole command) in dom0 on a pty,
        type ``typed`` once it is attached, and read until ``expect`` appears.

        A nested dom0 under load can take longer to start the command than the pause
        before typing allows, and what reaches the guest's shell before its prompt is
        gone: without an answer the line is typed again on a new session, at most
        ``attempts`` times, each noted in ``console_retypes`` (printed in the summary).
        The text of every session is returned, so a failing check shows all of them."""
        assert self.dom0 is not None
        command = " ".join(shlex.quote(a) for a in argv)
        texts = []
        for attempt in range(1, attempts + 1):
            out = self._one_console_session(command, typed, expect, timeout / attempts)
            texts.append(f"--- console session {attempt} ---\n{out}")
            if expect in out:
                break
            self.console_retypes.append(f"{typed.strip()!r}: no {expect!r} in session "
                                        f"{attempt}")
        return "\n".join(texts)

    def _one_console_session(self, command: str, typed: str, expect: str,
                             timeout: float) -> str:
        assert self.dom0 is not None
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


_DEV_REPORT = re.compile(r"HVL-DEV ([^\n]*)\n")


def is_ready_line(text: str, guest_type: str) -> bool:
    return re.search(rf"HVL-READY hv=xen guest_type={guest_type}\b", text) is not None
