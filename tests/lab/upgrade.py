"""Two nodes across the Debian 12 -> 13 upgrade, for the upgrade tier
(tests/test_real_upgrade.py): this host's libvirt 9 / QEMU 7.2 and the trixie root's
libvirt 11 / QEMU 10, each driven by its own release's Python and hvlibvirt.

* ``Node``: where hypervisor calls run, one process per call (``lab/hv_call.py``), as
  Ganeti's node daemon forks a child per RPC; its libvirt URI; its address (what Ganeti
  passes as the migration target).
* ``trixie_node``: starts ``lab.trixie_node`` inside the root (scripts/trixie-root.sh
  ``run``) in one of the lab's network namespaces, with this checkout bound at
  /srv/hvlibvirt (the root's Debian 13 venv kept) and a shared directory bound at its own
  path: both daemons' sockets (each libvirtd reaches the other's for a peer-to-peer
  migration), the guest's kernel, disks and serial logs. The migration stream itself
  crosses the veth between the namespaces, as between two hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvlibvirt.errors import HypervisorError

from . import trixie_node as trixie_runner
from .errors import LabError, LabLeakError
from .guest import default_cache_dir
from .hv_call import instance_to_json
from .procs import pids_referencing

CHECKOUT = Path(__file__).resolve().parents[2]
HV_CALL = Path(__file__).with_name("hv_call.py")
TRIXIE_SCRIPT = CHECKOUT / "scripts" / "trixie-root.sh"
INSIDE = Path("/srv/hvlibvirt")  # where the checkout is inside the root
INSIDE_PYTHON = INSIDE / ".venv" / "bin" / "python"
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CALL_TIMEOUT = 120.0
START_TIMEOUT = 90.0


def trixie_root() -> Path:
    """The trixie root tier 7 makes (scripts/trixie-root.sh's choice of path)."""
    cache = Path(os.environ.get("HVLIBVIRT_TEST_CACHE") or default_cache_dir())
    return Path(os.environ.get("HVLIBVIRT_TRIXIE_ROOT") or cache / "trixie")


def trixie_problem(root: Path) -> str | None:
    """Why the root cannot host the Debian 13 node (None when it can)."""
    if not (root / "usr" / "sbin" / "libvirtd").exists():
        return f"no trixie root with libvirtd at {root}"
    if not (root / str(INSIDE_PYTHON).lstrip("/")).exists():
        return f"no Debian 13 venv at {root}{INSIDE_PYTHON}"
    return None


@dataclass
class Node:
    """One node: ``argv`` runs lab/hv_call.py there; ``uri`` is its libvirtd (the same path
    on both sides); ``peer_uri`` the other node's, as this node's libvirtd reaches it (the
    migration URI); ``ip`` what Ganeti names it by as a migration target."""

    name: str
    argv: list[str]
    uri: str
    ip: str
    serial_log_dir: str
    peer_uri: str = ""
    env: dict[str, str] | None = None

    def call(self, method: str, instance: Any = None, *args: Any, instance_at: int = 0,
             block_devices: list[tuple[Any, str, Any]] | None = None, **kwargs: Any) -> Any:
        """Run ``method`` in a fresh process on this node and return its result (plain
        JSON values); a HypervisorError there is raised here with its message."""
        request: dict[str, Any] = {
            "uri": self.uri, "migration_uri": self.peer_uri or None,
            "serial_log_dir": self.serial_log_dir, "method": method, "args": list(args),
            "kwargs": kwargs, "instance_at": instance_at}
        if instance is not None:
            request["instance"] = instance_to_json(instance)
        if block_devices is not None:
            request["block_devices"] = [[dataclasses.asdict(d), path, uri]
                                        for d, path, uri in block_devices]
        done = subprocess.run(self.argv, input=json.dumps(request), capture_output=True,
                              text=True, timeout=CALL_TIMEOUT, env=self.env, check=False)
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise LabError(f"{self.name}: {method} exited {done.returncode} without an "
                           f"answer:\n{done.stdout}\n{done.stderr}") from None
        if "error" in answer:
            kind, message = answer["error"]
            if kind == "HypervisorError":
                raise HypervisorError(message)
            raise LabError(f"{self.name}: {method} raised {kind}: {message}\n{done.stderr}")
        return answer["result"]


def host_node(uri: str, ip: str, serial_log_dir: Path) -> Node:
    """This host (Debian 12): the test's own interpreter and checkout."""
    return Node("deb12", [sys.executable, "-I", str(HV_CALL)], uri, ip, str(serial_log_dir),
                env=dict(os.environ))


@contextlib.contextmanager
def trixie_node(root: Path, shared: Path, netns: str, ip: str, host_uuid: str,
                serial_log_dir: Path) -> Iterator[tuple[Node, dict[str, Any]]]:
    """The Debian 13 node in ``netns``, its daemon's work directory in ``shared``; yields
    the node and its facts (libvirt and QEMU versions). Raises LabLeakError at the end
    if the root's side left anything behind."""
    env = {"PATH": INSIDE_PATH, "HVLIBVIRT_TRIXIE_ROOT": str(root),
           "HVLIBVIRT_TRIXIE_SRC": str(CHECKOUT), "HVLIBVIRT_TRIXIE_SHARE": str(shared)}
    workdir = shared / trixie_runner.NAME
    argv = ["ip", "netns", "exec", netns, "bash", str(TRIXIE_SCRIPT), "run",
            "env", f"PYTHONPATH={INSIDE / 'tests'}", str(INSIDE_PYTHON), "-m", "lab.trixie_node",
            str(shared), host_uuid, ip]
    log_path = shared / "deb13-runner.log"
    with open(log_path, "ab") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, env=env, text=True, start_new_session=True)
    try:
        line = _readline(proc, START_TIMEOUT)
        facts = json.loads(line) if line.startswith("{") else {}
        if "pid" not in facts:
            raise LabError(f"the trixie node did not start: {line!r}\n"
                           f"{log_path.read_text(errors='replace')[-3000:]}")
        call = ["nsenter", "-t", str(facts["pid"]), "-m", "-n", "--", "/usr/bin/env", "-i",
                f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", str(INSIDE_PYTHON), "-I",
                str(INSIDE / "tests" / "lab" / HV_CALL.name)]
        yield Node("deb13", call, facts["uri"], ip, str(serial_log_dir)), facts
    finally:
        _stop(proc, log_path, workdir)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The runner's next line, or '' if it says nothing within ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen[str], log_path: Path, workdir: Path) -> None:
    """Close the runner's stdin (it stops its daemon), wait, and check for leftovers."""
    try:
        out, _ = proc.communicate(timeout=60)  # closes its stdin first
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise LabLeakError(f"the trixie node did not stop in time; see {log_path}") from None
    last = (out.strip().splitlines() or [""])[-1]
    leaks = json.loads(last).get("leaks", []) if last.startswith("{") else [f"no report: {last!r}"]
    leaks += [f"process {pid} uses {workdir}" for pid in pids_referencing(workdir)]
    if proc.returncode or leaks:
        raise LabLeakError(f"the trixie node (exit {proc.returncode}) left things behind: "
                           f"{leaks}; see {log_path}")
