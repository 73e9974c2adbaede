"""One live handover as the handover tests and bench/handover.py run it.

Node A is network namespace ``a`` with a plain QEMU whose command line and runtime come
from Ganeti 3.0's own hv_kvm (``hv_kvm_source.py``, Debian's package unpacked, never
installed); node B is namespace ``b`` with a private libvirtd. ``hand_over`` makes
Ganeti's calls in Ganeti's order: hv_kvm's MigrationInfo (its runtime) -> hvlibvirt's
AcceptInstance on B (a process in B's namespace, as noded's child would be) -> hv_kvm's
MigrateInstance and GetMigrationStatus polls on A -> hvlibvirt's FinalizeMigrationDst
on B -> hv_kvm's FinalizeMigrationSource on A. ``to_hv_kvm`` is the same move the way
hv_kvm migrates today (a second QEMU with ``-incoming`` on B), for comparison.

The guest prints a counter with its boot id on its serial console (``start_ticker``):
the counter continuing with the same boot id on the other side is the proof that it
did not reboot; the downtime is the source QEMU's STOP to the target QEMU's RESUME,
both QEMU's own timestamps on one host clock.

``state`` is a dict (``new_state``): the Ganeti share, the work directory, the spec
hv_kvm_source.py takes, the serial log directory, both daemons and the network; what a
run starts is recorded there, and ``clean`` removes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from hvlibvirt import connection, constants as C
from hvlibvirt.handover import relay
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance

from .instances import READY
from .qmp import QMP
from .serial import SerialLog, SerialTimeout

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("hv_kvm_source.py")
TESTS = Path(__file__).resolve().parents[1]
BOOT = 180.0  # seconds for the source guest to boot (TCG, shared cores)
TICK = re.compile(r"TICK (\d+) ([0-9a-f-]{36})")
# Started on the guest's shell: a counter with the boot id, five times a second.
TICKER = ("(n=0; b=$(cat /proc/sys/kernel/random/boot_id); while :; do n=$((n+1)); "
          "echo TICK $n $b; sleep 0.2; done) &\n")
ACCEPT = textwrap.dedent("""
    import json, sys
    from hvlibvirt.kvm import KVMHypervisor
    from hvlibvirt.objects import Disk, Instance
    uri, spec, info_path, target, log_dir = sys.argv[1:6]
    spec = json.loads(spec)
    hv = KVMHypervisor(uri=uri, serial_log_dir=log_dir)
    inst = Instance(name=spec["name"], uuid=spec["uuid"], hvparams=spec["hvparams"],
                    beparams=spec["beparams"], network_port=spec["network_port"])
    hv.AcceptInstance(inst, open(info_path).read(), target)
""")
GUEST_TROUBLE = re.compile(r"Segmentation fault|kernel BUG|Oops|Kernel panic|general protection")


class GuestFault(AssertionError):
    """The guest crashed a program or its kernel after a live migration."""


def healthy(text: str, where: str) -> None:
    """A guest whose memory or devices changed under it crashes programs or its kernel."""
    trouble = GUEST_TROUBLE.search(text)
    if trouble is not None:
        raise GuestFault(f"the guest is in trouble {where}: {text[trouble.start():][:2000]}")


def ticks_on(console: SerialLog, pattern: str, where: str, since: int = 0) -> re.Match:
    """The guest's counter reaching ``pattern``; a guest that crashed instead is a
    GuestFault (what a wait for its counter would only report as silence)."""
    try:
        return console.wait(pattern, 60, since=since)
    except SerialTimeout:
        healthy(console.text(), where)
        raise


def once_more_after_guest_fault(attempt: Callable[[], None], clean_up: Callable[[], None]
                                ) -> None:
    """Run ``attempt``; after a GuestFault (a TCG guest crashed or stalled after its
    move), ``clean_up`` and run it once more on a fresh guest. A second fault fails."""
    try:
        attempt()
    except GuestFault as fault:
        log.warning("TCG migration fault, trying once more on a fresh guest: %s",
                    str(fault)[:300])
        clean_up()
        attempt()


class SourceSerial:
    """hv_kvm's serial socket (``-serial unix:...,server,nowait``), read line by line."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.append((time.time(), line.decode(errors="replace").rstrip("\r")))

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def wait(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.1)
        tail = "\n".join(line for _, line in self.lines[-15:])
        raise AssertionError(f"no {pattern!r} on the source's serial within {timeout}s:\n{tail}")

    def ticks(self) -> list[tuple[float, int, str]]:
        return [(t, int(m.group(1)), m.group(2)) for t, line in list(self.lines)
                if (m := TICK.search(line))]

    def text(self) -> str:
        return "\n".join(line for _, line in list(self.lines))

    def close(self) -> None:
        self.sock.close()


def start_ticker(serial: SourceSerial) -> str:
    """Start the counter on the guest's shell; its boot id once it counts."""
    serial.send(TICKER)
    deadline = time.monotonic() + 60
    while len(serial.ticks()) < 5:
        if time.monotonic() > deadline:
            raise AssertionError("the guest does not tick")
        time.sleep(0.1)
    return serial.ticks()[-1][2]


def wait_ticking_past(serial: SourceSerial, last: int, where: str, timeout: float = 60) -> None:
    """Wait for the counter on ``serial`` to pass ``last`` + 25 (five seconds on)."""
    deadline = time.monotonic() + timeout
    while not any(n > last + 25 for _, n, _ in serial.ticks()):
        if time.monotonic() > deadline:
            healthy(serial.text(), where)
            raise AssertionError(f"the guest does not tick {where}: {serial.lines[-10:]}")
        time.sleep(0.1)


def source(state: dict, *args: str, netns: str | None = None, workdir: Path | None = None,
           spec: dict | None = None) -> str:
    """Run hv_kvm_source.py (in ``netns`` if given); its stdout."""
    argv = [sys.executable, str(SOURCE), str(state["share"]), str(workdir or state["work"]),
            json.dumps(spec or state["spec"]), *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"hv_kvm_source {args}: {done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_state(share: Path, workdir: Path, guest: Any, net: Any, daemon_a: Any,
              daemon_b: Any, memory: int = 128) -> dict:
    """A handover's state: hv_kvm's instance (one disk, one NIC on the lab bridge) in
    ``workdir``/a, serial logs in ``workdir``/serial."""
    work = workdir / "a"
    work.mkdir()
    disk = work / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    spec = {
        "name": f"ho{os.getpid() % 10000}.example.com",
        "uuid": "8f0e6f0a-6b0e-4a57-9e0c-1b2c3d4e5f60", "memory": memory,
        "vcpus": 1, "network_port": 11002,
        "hvparams": {"kvm_path": "/usr/bin/qemu-system-x86_64", "kvm_flag": "disabled",
                     "kernel_path": str(guest.kernel), "initrd_path": str(guest.initrd),
                     "root_path": "/dev/vda", "kernel_args": "quiet panic=-1",
                     "serial_speed": 115200, "vnc_bind_address": "127.0.0.1",
                     "migration_port": free_port()},
        "disks": [{"uuid": "11111111-2222-4333-8444-555555555555", "path": str(disk)}],
        "nics": [{"uuid": "44444444-5555-4666-8777-888888888888", "mac": "aa:00:00:12:34:56",
                  "link": net.bridge, "tap": "hotap0"}],
    }
    return {"share": share, "work": work, "spec": spec, "log_dir": workdir / "serial",
            "daemon": daemon_b, "daemon_a": daemon_a, "net": net}


def clean(state: dict) -> None:
    """Nothing of a handover left: the source QEMU, a baseline target, the relay, the
    domain on either side, the serial logs (a next try starts with an empty console)."""
    name = state["spec"]["name"]
    for key in ("proc", "target_proc"):
        proc = state.pop(key, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
    relay.stop(state["daemon"].uri, name)
    for daemon in (state["daemon"], state["daemon_a"]):
        conn = libvirt.open(daemon.uri)
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
    for log_file in Path(state["log_dir"]).glob("*.serial"):
        log_file.unlink()


def start_source(state: dict) -> tuple[dict, subprocess.Popen, SourceSerial]:
    """Ganeti's hv_kvm builds the instance; its QEMU runs in namespace a, booted."""
    work, spec, net = state["work"], state["spec"], state["net"]
    made = json.loads(source(state))
    argv = list(made["argv"])
    argv[argv.index("-D") + 1] = str(work / "qemu.log")  # hv_kvm's is /var/log/ganeti/kvm
    for sub in ("pid", "ctrl"):
        (work / "kvm" / sub).mkdir(parents=True, exist_ok=True)
    with open(work / "qemu.out", "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", net.a.netns, *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    state["proc"] = proc
    serial = SourceSerial(made["serial"])
    subprocess.run(["ip", "-n", net.a.netns, "link", "set", spec["nics"][0]["tap"], "master",
                    net.bridge, "up"], check=True, capture_output=True)
    serial.wait(READY, BOOT)
    return made, proc, serial


def instance_of(spec: dict, hvparams: dict) -> Instance:
    """The Ganeti instance of ``spec`` with the hvparams hv_kvm's runtime carries."""
    return Instance(name=spec["name"], uuid=spec["uuid"], hvparams=hvparams,
                    beparams={"maxmem": spec["memory"], "minmem": spec["memory"],
                              "vcpus": spec["vcpus"]}, network_port=spec["network_port"])


def accept(state: dict, inst: Instance, info_file: Path, side: str = "b",
           log_dir: Path | None = None) -> None:
    """hvlibvirt's AcceptInstance on node ``side`` from a process in its namespace."""
    net = state["net"]
    end, daemon = (net.b, state["daemon"]) if side == "b" else (net.a, state["daemon_a"])
    spec = {"name": inst.name, "uuid": inst.uuid, "hvparams": inst.hvparams,
            "beparams": inst.beparams, "network_port": inst.network_port}
    done = subprocess.run(
        ["ip", "netns", "exec", end.netns, sys.executable, "-c", ACCEPT, daemon.uri,
         json.dumps(spec), str(info_file), end.ip, str(log_dir or state["log_dir"])],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(TESTS)))
    if done.returncode != 0:
        raise AssertionError(f"AcceptInstance on {side}: {done.stderr[-3000:]}")


def hand_over(state: dict, made: dict) -> tuple[Instance, str, dict]:
    """hv_kvm's QEMU (``made``, running) to hvlibvirt on B by Ganeti's calls: the
    instance, hv_kvm's runtime and the figures (total_s from MigrateInstance to the
    last status poll, status_polls, downtime_ms). Raises AssertionError if hv_kvm
    reports anything but completed (after both finalize calls, as Ganeti makes them)."""
    spec, daemon = state["spec"], state["daemon"]
    info = made["runtime"]  # hv_kvm's MigrationInfo: its runtime file, verbatim
    info_file = state["work"] / "info"
    info_file.write_text(info)
    inst = instance_of(spec, json.loads(info)[2])
    events = QMP(made["qmp"].replace(".qmp", ".kvmd"))  # kvmd's socket: only events read
    conn_b = connection.get(daemon.uri, events=True)
    resumed: list[float] = []  # the target QEMU's RESUME, QEMU's own timestamp
    callback = libvirt_qemu.qemuMonitorEventRegister(
        conn_b, None, "RESUME",
        lambda _c, dom, _e, sec, usec, _d, _o: resumed.append(sec + usec / 1e6)
        if dom.name() == spec["name"] else None, None, 0)
    try:
        accept(state, inst, info_file)
        t0 = time.time()
        statuses = json.loads(source(state, "migrate", state["net"].b.ip))
        total = statuses[-1][0] - t0
        success = statuses[-1][1] == C.HV_MIGRATION_COMPLETED
        target = KVMHypervisor(uri=daemon.uri, serial_log_dir=str(state["log_dir"]))
        target.FinalizeMigrationDst(inst, info, success)
        source(state, "finalize", "true" if success else "false")
        if not success:
            raise AssertionError(f"hv_kvm's migration ended {statuses[-1]}")
        state["proc"].wait(30)
        stop = events.event_time("STOP")
    finally:
        libvirt_qemu.qemuMonitorEventDeregister(conn_b, callback)
        events.close()
    figures = {"total_s": round(total, 2), "status_polls": len(statuses),
               "downtime_ms": round((resumed[-1] - stop) * 1000, 1) if stop and resumed
               else None}
    return inst, info, figures


def to_hv_kvm(state: dict, made: dict, serial: SourceSerial) -> dict:
    """What hv_kvm does today, for comparison: the same move to a second QEMU with the
    same command line plus ``-incoming tcp:IP:PORT`` in namespace b (hv_kvm's
    AcceptInstance); its figures as ``hand_over``'s once the guest (its counter on
    ``serial``) counts on there, same boot."""
    spec, net = state["spec"], state["net"]
    work_b = state["work"].parent / "b"
    work_b.mkdir(exist_ok=True)
    spec_b = json.loads(json.dumps(spec))
    spec_b["nics"][0]["tap"] = "hotap1"
    made_b = json.loads(source(state, workdir=work_b, spec=spec_b))
    argv = list(made_b["argv"])
    argv[argv.index("-D") + 1] = str(work_b / "qemu.log")
    argv += ["-incoming", f"tcp:{net.b.ip}:{spec['hvparams']['migration_port']}"]
    for sub in ("pid", "ctrl"):
        (work_b / "kvm" / sub).mkdir(parents=True, exist_ok=True)
    with open(work_b / "qemu.out", "wb") as out:
        state["target_proc"] = subprocess.Popen(
            ["ip", "netns", "exec", net.b.netns, *argv], stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    target_serial = SourceSerial(made_b["serial"])
    subprocess.run(["ip", "-n", net.b.netns, "link", "set", "hotap1", "master", net.bridge,
                    "up"], check=True, capture_output=True)
    target_events = QMP(made_b["qmp"].replace(".qmp", ".kvmd"))
    events = QMP(made["qmp"].replace(".qmp", ".kvmd"))
    try:
        t0 = time.time()
        statuses = json.loads(source(state, "migrate", net.b.ip))
        total = statuses[-1][0] - t0
        if statuses[-1][1] != C.HV_MIGRATION_COMPLETED:
            raise AssertionError(f"hv_kvm's migration ended {statuses[-1]}")
        source(state, "finalize", "true")
        state["proc"].wait(30)
        stop, resume = events.event_time("STOP"), target_events.event_time("RESUME")
    finally:
        events.close()
        target_events.close()
    _, last, boot_id = serial.ticks()[-1]
    wait_ticking_past(target_serial, last, "after hv_kvm's migration")
    if {b for _, _, b in target_serial.ticks()} != {boot_id}:
        raise AssertionError("the guest rebooted in hv_kvm's migration")
    healthy(target_serial.text(), "after hv_kvm's migration")
    target_serial.close()
    return {"total_s": round(total, 2), "status_polls": len(statuses),
            "downtime_ms": round((resume - stop) * 1000, 1) if stop and resume else None}
