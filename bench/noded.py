"""Hypervisor calls the way Ganeti's node daemon makes them: one fresh child per RPC.

Run as root: .venv/bin/python bench/noded.py [--rounds 15] [--counts 1,10,50]

noded forks a child for every RPC (ganeti/http/server.py); the child builds a new
hypervisor object (``hypervisor.GetHypervisor``) and makes one call. This script rebuilds
that model and times each call inside the child, from before the hypervisor is built
until the call returns, for three sides, interleaved round by round, on real TCG guests:

* ``ganeti``:    the installed Ganeti's own hv_kvm (3.0 on Debian 12, 3.1 on 13) with guests it
  started itself; its runtime directory is a tmpfs in a mount namespace of its own.
* ``hvlibvirt``: the class Ganeti's hypervisor map serves after ``hvlibvirt ganeti
  enable``, its URI read from a config file (HVLIBVIRT_CONFIG) as on a node, guests on a
  private libvirtd.
* ``raw``:       libvirt-python doing the same work by hand: open the connection and make
  the calls the answer needs, telling our domains by a metadata read each; "raw without
  ownership" leaves that out (the floor for anything built on libvirt). hvlibvirt tells
  them by its ownership marks on the node (``hvlibvirt.ownership``), which its own
  earlier calls wrote, as on a node that has run for a while.

Each side has a parent process (a "runner") that imported what noded imports
(``ganeti.server.noded``) and holds no connection. At N = 1, 10 and 50 instances per side
(the first 10 booted guests, the rest started paused, so that 100 TCG guests do not eat
the two cores the timings run on; both ways they are live QEMU processes), it prints the
median, min and max of every call and the ratios, then:

* libvirt RPCs per call (a separate pass, untimed, with libvirt's client log on) for
  hvlibvirt and raw, by procedure;
* the same calls in a long-lived process (warm connection), hvlibvirt vs raw;
* StartInstance (call returns) vs raw defineXML + create of the same XML vs Ganeti;
* the import cost of ``hvlibvirt.kvm`` vs ``ganeti.hypervisor.hv_kvm`` in a fresh
  interpreter.

Prints figures; asserts nothing. Everything it starts is stopped and its work directory
removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The installed Ganeti's modules: its "default" link names the version that runs.
GANETI_MODULES = os.path.realpath("/usr/share/ganeti/default")
PYTHON = "/usr/bin/python3"  # Ganeti's interpreter, with Debian's libvirt and lxml

CALLS = ("ListInstances", "GetInstanceInfo", "GetAllInstancesInfo", "GetNodeInfo", "Verify",
         "HotplugSupported", "VerifyHotplugSupport", "StopInstance(stopped)",
         "GetMigrationStatus")
LISTING = ("ListInstances", "GetInstanceInfo", "GetAllInstancesInfo")
BOOTED = 10  # guests per side that boot; the others start paused
# Without a migration, hv_kvm's GetMigrationStatus retries query-migrate's empty answer
# 5 times, 2 s apart: 10 s that say nothing about the call's cost, so it is not timed.
NO_MIGRATION = "n/a (10 s retry loop)"

# libvirt's remote protocol procedure numbers (remote_protocol.x) for the log pass.
PROCEDURES = {
    1: "CONNECT_OPEN", 2: "CONNECT_CLOSE", 4: "CONNECT_GET_VERSION",
    7: "CONNECT_GET_CAPABILITIES", 9: "DOMAIN_CREATE", 11: "DOMAIN_DEFINE_XML",
    12: "DOMAIN_DESTROY", 14: "DOMAIN_GET_XML_DESC", 16: "DOMAIN_GET_INFO",
    23: "DOMAIN_LOOKUP_BY_NAME", 24: "DOMAIN_LOOKUP_BY_UUID",
    60: "CONNECT_SUPPORTS_FEATURE", 66: "AUTH_LIST", 150: "DOMAIN_IS_ACTIVE",
    151: "DOMAIN_IS_PERSISTENT", 163: "DOMAIN_GET_JOB_INFO", 196: "DOMAIN_CREATE_WITH_FLAGS",
    212: "DOMAIN_GET_STATE", 231: "DOMAIN_UNDEFINE_FLAGS", 234: "DOMAIN_DESTROY_FLAGS",
    258: "DOMAIN_SHUTDOWN_FLAGS", 264: "DOMAIN_SET_METADATA", 265: "DOMAIN_GET_METADATA",
    273: "CONNECT_LIST_ALL_DOMAINS", 298: "DOMAIN_GET_JOB_STATS",
    316: "DOMAIN_EVENT_CALLBACK_REGISTER_ANY", 317: "DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY",
    342: "CONNECT_GET_DOMAIN_CAPABILITIES", 344: "CONNECT_GET_ALL_DOMAIN_STATS",
    350: "DOMAIN_DEFINE_XML_FLAGS", 360: "CONNECT_REGISTER_CLOSE_CALLBACK",
    361: "CONNECT_UNREGISTER_CLOSE_CALLBACK",
}
REMOTE_PROGRAM = 0x20008086
ACTIVE_STATES = (1, 2, 3, 4, 7)  # running, blocked, paused, shutting down, pmsuspended
METADATA_NS = "urn:x-hvlibvirt:instance:1"  # hvlibvirt's metadata namespace
_TX = re.compile(r"RPC_CLIENT_MSG_TX_QUEUE: .* prog=(\d+) vers=\d+ proc=(\d+) type=0 ")


# ============================================================== runner (one per side)

def _instance_objects(spec: dict[str, Any]) -> tuple[Any, list[Any]]:
    """Ganeti objects for an instance spec (both hypervisors get Ganeti's own objects,
    as noded passes them)."""
    from ganeti import constants, objects

    hvparams = dict(constants.HVC_DEFAULTS[constants.HT_KVM], **spec["hvparams"])
    beparams = dict(constants.BEC_DEFAULTS, maxmem=spec["memory"], minmem=spec["memory"],
                    vcpus=1)
    disk = objects.Disk(dev_type=constants.DT_FILE, size=1, mode="rw", iv_name="disk/0",
                        uuid=spec["disk_uuid"], params={},
                        logical_id=(constants.FD_LOOP, spec["disk"]))
    inst = objects.Instance(name=spec["name"], uuid=spec["uuid"], hypervisor="kvm",
                            os="noop", primary_node="node1", hvparams=hvparams,
                            beparams=beparams, osparams={}, nics=[], disks=[disk.uuid],
                            disk_template=constants.DT_FILE, network_port=0,
                            admin_state=constants.ADMINST_UP)
    inst.disks_info = [disk]
    return inst, [(disk, spec["disk"], None)]


_KEEP: list[Any] = []


class Runner:
    """A noded-like parent: reads requests (JSON lines), forks a child per timed call."""

    def __init__(self, side: str) -> None:
        sys.path.insert(0, GANETI_MODULES)
        sys.path.insert(0, str(ROOT))
        import ganeti.server.noded  # noqa: F401  what noded has imported when it forks
        from ganeti import hypervisor

        if side == "libvirt":
            import libvirt
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raw's too: quiet
            from hvlibvirt.ganeti import serve
            serve(hypervisor._HYPERVISOR_MAP, ["kvm"])  # what "hvlibvirt ganeti enable" does
        self.hypervisor = hypervisor
        self.side = side
        self.cluster_hvparams: dict[str, Any] = {}

    # -- the work of one call, per side -------------------------------------------------
    def call(self, who: str, call: str, args: dict[str, Any]) -> Callable[[], Any]:
        """The work of one call, ready to run: what noded has before it calls the
        hypervisor (the RPC's arguments as Ganeti objects) is made here, untimed."""
        if who.startswith("raw"):
            return lambda: self.raw_call(call, args, ownership=who == "raw")
        hvp = self.cluster_hvparams
        get = self.hypervisor.GetHypervisor
        if call == "ListInstances":
            return lambda: get("kvm").ListInstances(hvparams=hvp)
        if call == "GetInstanceInfo":
            return lambda: get("kvm").GetInstanceInfo(args["name"], hvparams=hvp)
        if call == "GetAllInstancesInfo":
            return lambda: len(get("kvm").GetAllInstancesInfo(hvparams=hvp))
        if call == "GetNodeInfo":
            return lambda: sorted(get("kvm").GetNodeInfo(hvparams=hvp))
        if call == "Verify":
            return lambda: get("kvm").Verify(hvparams=hvp)
        inst, block = _instance_objects(args["spec"])
        if call == "HotplugSupported":
            return lambda: get("kvm").HotplugSupported(inst)
        if call == "VerifyHotplugSupport":
            return lambda: get("kvm").VerifyHotplugSupport(inst, "hotadd", "disk")
        if call == "StopInstance(stopped)":
            return lambda: get("kvm").StopInstance(inst, retry=True)
        if call == "GetMigrationStatus":
            return lambda: get("kvm").GetMigrationStatus(inst).status
        if call == "StartInstance":
            paused = args["spec"].get("paused", False)
            return lambda: get("kvm").StartInstance(inst, block, paused)
        if call == "ForceStop":
            return lambda: (get("kvm").StopInstance(inst, force=True),
                            get("kvm").CleanupInstance(inst.name))
        raise ValueError(call)

    def kill_ganeti_qemu(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Untimed cleanup, in this process: hv_kvm's forced stop waits for the QEMU to
        vanish, and its zombie, ours to reap (we are its subreaper), would not vanish
        while a forked child waits. Kill and reap here; hv_kvm removes its files."""
        hv = self.hypervisor.GetHypervisor("kvm")
        _pidfile, pid, alive = hv._InstancePidAlive(spec["name"])
        if alive:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        hv.CleanupInstance(spec["name"])
        return {"seconds": 0.0}

    def raw_call(self, call: str, args: dict[str, Any], ownership: bool) -> Any:
        """libvirt-python by hand. ``ownership``: test each domain for hvlibvirt's
        metadata as hvlibvirt must (it may not claim domains it did not create);
        without it, the bare listing: the floor of any libvirt-based answer."""
        import libvirt

        def ours(dom: Any) -> bool:
            if not ownership:
                return True
            try:
                dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
                return True
            except libvirt.libvirtError:
                return False

        conn = libvirt.open(args["uri"])
        _KEEP.append(conn)  # closed at exit, as hvlibvirt's cached one (no CLOSE RPC timed)
        if call == "ListInstances":
            running = (libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
                       | libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING
                       | libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED
                       | libvirt.VIR_CONNECT_LIST_DOMAINS_OTHER)
            return [d.name() for d in conn.listAllDomains(running) if ours(d)]
        if call == "GetInstanceInfo":
            dom = conn.lookupByName(args["name"])
            return ours(dom) and (dom.name(), dom.ID(), dom.info())
        if call == "GetAllInstancesInfo":
            return len([(d.name(), d.ID(), info) for d in conn.listAllDomains(0)
                        if (info := d.info())[0] in ACTIVE_STATES and ours(d)])
        if call == "GetNodeInfo":
            from hvlibvirt import node
            return node.linux_node_info(), conn.getVersion()
        if call == "Verify":
            return conn.getVersion()
        if call in ("HotplugSupported", "GetMigrationStatus"):
            dom = conn.lookupByName(args["spec"]["name"])
            return dom.jobStats() if call == "GetMigrationStatus" else dom.isActive()
        if call == "VerifyHotplugSupport":
            return conn.lookupByName(args["spec"]["name"]).XMLDesc(0)
        if call == "StopInstance(stopped)":
            try:
                conn.lookupByName(args["spec"]["name"])
            except libvirt.libvirtError:
                return None
            raise RuntimeError("the stopped instance exists")
        if call == "StartInstance":
            conn.defineXML(args["xml"]).create()
            return None
        if call == "ForceStop":
            dom = conn.lookupByName(args["spec"]["name"])
            dom.destroy()
            return dom.undefine()
        raise ValueError(call)

    # -- the fork ------------------------------------------------------------------------
    def forked(self, who: str, call: str, args: dict[str, Any]) -> dict[str, Any]:
        """The call in a fresh child, like noded's request handler: one call and exit."""
        def once() -> dict[str, Any]:
            work = self.call(who, call, args)
            start = time.perf_counter()
            result = work()
            return {"seconds": time.perf_counter() - start, "result": repr(result)[:200]}
        return self.in_child(once)

    @staticmethod
    def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``work()``'s reply, computed in a forked child, so that nothing it imports or
        caches reaches this runner (noded's parent never makes a hypervisor call)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            reply: dict[str, Any]
            try:
                reply = work()
            except BaseException as err:  # noqa: BLE001 - report, never hang the parent
                reply = {"error": f"{type(err).__name__}: {err}"}
            os.write(write_end, json.dumps(reply).encode())
            os._exit(0)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(pid, 0)
        return json.loads(b"".join(chunks))

    def inline(self, who: str, call: str, args: dict[str, Any], runs: int) -> dict[str, Any]:
        """The call ``runs`` times in one long-lived child: connection kept between runs."""
        return self.in_child(lambda: self._repeated(who, call, args, runs))

    def _repeated(self, who: str, call: str, args: dict[str, Any], runs: int) -> dict[str, Any]:
        import libvirt

        if who.startswith("raw"):
            conn = libvirt.open(args["uri"])
            opened = libvirt.open
            libvirt.open = lambda _uri: conn  # raw_call's open, made warm
        samples = []
        work = self.call(who, call, args)
        try:
            for _ in range(runs + 1):
                start = time.perf_counter()
                work()
                samples.append(time.perf_counter() - start)
        finally:
            if who.startswith("raw"):
                libvirt.open = opened
                conn.close()
        return {"seconds": statistics.median(samples[1:])}

    def serve(self) -> None:
        out = sys.stdout
        sys.stdout = sys.stderr  # nothing but replies on the pipe
        for line in sys.stdin:
            req = json.loads(line)
            if req["op"] == "hvparams":
                from ganeti import constants  # filled as Ganeti fills the cluster's
                self.cluster_hvparams = dict(constants.HVC_DEFAULTS[constants.HT_KVM],
                                             **req["hvparams"])
                reply: dict[str, Any] = {"ok": True}
            elif req["op"] == "call" and req["call"] == "ForceStop" and self.side == "ganeti":
                reply = self.kill_ganeti_qemu(req["args"]["spec"])
            elif req["op"] == "inline":
                reply = self.inline(req["who"], req["call"], req["args"], req["runs"])
            else:
                reply = self.forked(req["who"], req["call"], req["args"])
            self._reap()
            out.write(json.dumps(reply) + "\n")
            out.flush()

    @staticmethod
    def _reap() -> None:
        """Ganeti's QEMUs daemonize and become our children (we are their subreaper)."""
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def run_runner(side: str) -> None:
    import logging
    logging.basicConfig(level=logging.ERROR)  # hv_kvm's warnings are not figures
    if side == "ganeti":
        # A private /run for hv_kvm's runtime files (pid, ctrl, conf dirs) and a private
        # log directory for its QEMU logs; the QEMUs it daemonizes are reparented to us so
        # that their exit is reaped at once.
        for where in ("/run", "/var/log/ganeti"):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "hvl-bench", where],
                           check=True)
        os.makedirs("/run/ganeti", exist_ok=True)
        os.makedirs("/var/log/ganeti/kvm", exist_ok=True)
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    Runner(side).serve()


# ============================================================== orchestrator

class RunnerProcess:
    def __init__(self, side: str, env: dict[str, str], unshare: bool = False) -> None:
        argv = [PYTHON, str(Path(__file__).resolve()), "--runner", side]
        if unshare:
            argv = ["unshare", "--mount", "--propagation", "private", "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def request(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"runner exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def timed(runner: RunnerProcess, who: str, call: str, args: dict[str, Any]) -> float:
    reply = runner.request(op="call", who=who, call=call, args=args)
    if "error" in reply:
        raise RuntimeError(f"{who} {call}: {reply['error']}")
    return reply["seconds"]


def hvparams_for(image: Any, kvm_path: str) -> dict[str, Any]:
    return {"kernel_path": str(image.kernel), "initrd_path": str(image.initrd),
            "root_path": "/dev/vda", "kernel_args": "quiet panic=-1 hvlpoll=0",
            "kvm_flag": "disabled", "kvm_path": kvm_path, "serial_console": True,
            "vnc_bind_address": "", "spice_bind": ""}


class Fleet:
    """The instances of one side (Ganeti's or hvlibvirt's), started through its runner."""

    def __init__(self, runner: RunnerProcess, who: str, prefix: str, work: Path,
                 hvparams: dict[str, Any]) -> None:
        self.runner, self.who, self.prefix, self.work = runner, who, prefix, work
        self.hvparams = hvparams
        self.specs: list[dict[str, Any]] = []

    def spec(self, index: int, paused: bool = False) -> dict[str, Any]:
        disk = self.work / f"{self.prefix}{index:02d}.img"
        if not disk.exists():
            disk.write_bytes(b"\0" * 1024 * 1024)
        return {"name": f"{self.prefix}{index:02d}.bench.test", "uuid": str(uuid.uuid4()),
                "disk_uuid": str(uuid.uuid4()), "disk": str(disk), "memory": 128,
                "hvparams": self.hvparams, "paused": paused}

    def grow(self, count: int) -> None:
        while len(self.specs) < count:
            spec = self.spec(len(self.specs), paused=len(self.specs) >= BOOTED)
            timed(self.runner, self.who, "StartInstance", {"spec": spec})
            self.specs.append(spec)

    def stop_all(self) -> None:
        for spec in self.specs:
            try:
                timed(self.runner, self.who, "ForceStop", {"spec": spec})
            except RuntimeError as err:
                print(f"  cleanup: {err}", file=sys.stderr)
        self.specs.clear()


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def wait_idle(idle_share: float = 0.8, quiet_s: int = 3, limit_s: float = 120) -> float:
    """Wait until the host's CPUs have been at least ``idle_share`` idle for ``quiet_s``
    whole seconds in a row (booting TCG guests done), at least 10 s, at most ``limit_s``;
    the seconds waited. A fixed sleep let the N=1 round time guests still booting."""
    start = time.monotonic()
    time.sleep(10)
    quiet, before = 0, _cpu_times()
    while quiet < quiet_s and time.monotonic() - start < limit_s:
        time.sleep(1)
        now = _cpu_times()
        idle, total = now[0] - before[0], now[1] - before[1]
        quiet = quiet + 1 if total and idle / total >= idle_share else 0
        before = now
    return time.monotonic() - start


def summary(samples: list[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def fmt(samples: list[float]) -> str:
    med, low, high = summary(samples)
    return f"{med * 1e3:7.2f} ms [{low * 1e3:6.2f}-{high * 1e3:6.2f}]"


def measure_calls(count: int, rounds: int, runners: dict[str, RunnerProcess],
                  fleets: dict[str, Fleet], uri: str) -> dict[str, dict[str, list[float]]]:
    absent = fleets["hvlibvirt"].spec(99)
    absent["name"] = "stopped.bench.test"
    figures: dict[str, dict[str, list[float]]] = {}
    for call in CALLS:
        samples: dict[str, list[float]] = {"ganeti": [], "hvlibvirt": [], "raw": []}
        if call in LISTING:
            samples["raw-bare"] = []
        for _ in range(rounds):
            order = list(samples)
            random.shuffle(order)
            for who in order:
                if who == "ganeti" and call == "GetMigrationStatus":
                    continue  # see NO_MIGRATION
                fleet = fleets["ganeti" if who == "ganeti" else "hvlibvirt"]
                spec = absent if call == "StopInstance(stopped)" else fleet.specs[0]
                args = {"name": spec["name"], "spec": spec, "uri": uri}
                runner = runners["ganeti" if who == "ganeti" else "libvirt"]
                samples[who].append(timed(runner, who, call, args))
        figures[call] = samples
        ours = summary(samples["hvlibvirt"])[0]
        if samples["ganeti"]:
            theirs = (f"ganeti {fmt(samples['ganeti'])}", f"/ganeti "
                      f"{ours / summary(samples['ganeti'])[0]:5.2f}")
        else:
            theirs = (f"ganeti {NO_MIGRATION:>27}", "/ganeti   -  ")
        line = (f"  N={count:<3} {call:<22} {theirs[0]} | raw {fmt(samples['raw'])} | "
                f"hvlibvirt {fmt(samples['hvlibvirt'])} | {theirs[1]} | /raw "
                f"{ours / summary(samples['raw'])[0]:5.2f}")
        if "raw-bare" in samples:
            line += (f" | raw without ownership {fmt(samples['raw-bare'])} (/bare "
                     f"{ours / summary(samples['raw-bare'])[0]:5.2f})")
        print(line, flush=True)
    return figures


def count_rpcs(counter: RunnerProcess, log: Path, fleet: Fleet, uri: str) -> None:
    """One untimed child per call with libvirt's client log on: the RPCs it sent."""
    absent = dict(fleet.specs[0], name="stopped.bench.test")
    for call in CALLS:
        line = f"  {call:<22}"
        for who in ("hvlibvirt", "raw"):
            spec = absent if call == "StopInstance(stopped)" else fleet.specs[0]
            names = rpcs_sent(counter, log, who, call,
                              {"name": spec["name"], "spec": spec, "uri": uri})
            line += f" | {who} {len(names):2d}: {describe_rpcs(names)}"
        print(line, flush=True)


def count_start_rpcs(counter: RunnerProcess, log: Path, fleet: Fleet, uri: str) -> None:
    """The RPCs of one StartInstance (a paused guest, stopped right after), hvlibvirt
    against raw defineXML + create of the XML hvlibvirt renders."""
    line = f"  {'StartInstance':<22}"
    for who in ("hvlibvirt", "raw"):
        spec = fleet.spec(97, paused=True)
        spec["name"] = f"rpcs-{who}.bench.test"
        args = {"spec": spec, "uri": uri, "xml": _rendered_xml(spec, uri)}
        names = rpcs_sent(counter, log, who, "StartInstance", args)
        timed(counter, who, "ForceStop", args)
        line += f" | {who} {len(names):2d}: {describe_rpcs(names)}"
    print(line, flush=True)


def rpcs_sent(counter: RunnerProcess, log: Path, who: str, call: str,
              args: dict[str, Any]) -> list[str]:
    """The libvirt procedures one call sent, read from the counter's client log."""
    before = log.stat().st_size if log.exists() else 0
    timed(counter, who, call, args)
    with log.open(encoding="utf-8", errors="replace") as f:
        f.seek(before)
        sent = [(int(p), int(n)) for p, n in _TX.findall(f.read())]
    return [PROCEDURES.get(n, f"proc {n}") if p == REMOTE_PROGRAM else "KEEPALIVE"
            for p, n in sent]


def _rendered_xml(spec: dict[str, Any], uri: str) -> str:
    """The domain XML hvlibvirt renders for ``spec`` (what raw defines)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, GANETI_MODULES)
    from hvlibvirt.domain_xml import to_string
    from hvlibvirt.kvm import KVMHypervisor

    inst, block = _instance_objects(spec)
    return to_string(KVMHypervisor(uri=uri)._build_domain(inst, block, spec["memory"]))


def describe_rpcs(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{n}x{c}" if c > 1 else n for n, c in counts.items())


def measure_start(rounds: int, runners: dict[str, RunnerProcess], fleets: dict[str, Fleet],
                  uri: str) -> None:
    """StartInstance's return time (a booting guest, stopped right after) for the three
    sides; raw defines and creates the XML hvlibvirt renders for the same instance."""
    samples: dict[str, list[float]] = {"ganeti": [], "hvlibvirt": [], "raw": []}
    for index in range(rounds):
        order = list(samples)
        random.shuffle(order)
        for who in order:
            fleet = fleets["ganeti" if who == "ganeti" else "hvlibvirt"]
            runner = runners["ganeti" if who == "ganeti" else "libvirt"]
            spec = fleet.spec(90 + index)
            spec["name"] = f"start-{who}-{index}.bench.test"
            args: dict[str, Any] = {"spec": spec, "uri": uri}
            if who == "raw":
                args["xml"] = _rendered_xml(spec, uri)
            samples[who].append(timed(runner, who, "StartInstance", args))
            timed(runner, who, "ForceStop", args)
            time.sleep(0.5)
    print(f"  StartInstance          ganeti {fmt(samples['ganeti'])} | raw defineXML+create "
          f"{fmt(samples['raw'])} | hvlibvirt {fmt(samples['hvlibvirt'])} | /ganeti "
          f"{summary(samples['hvlibvirt'])[0] / summary(samples['ganeti'])[0]:5.2f} | /raw "
          f"{summary(samples['hvlibvirt'])[0] / summary(samples['raw'])[0]:5.2f}", flush=True)


def measure_imports(runs: int = 15) -> None:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{GANETI_MODULES}")
    codes = {"nothing": "pass", "hvlibvirt.kvm": "import hvlibvirt.kvm",
             "ganeti.hypervisor.hv_kvm": "import ganeti.hypervisor.hv_kvm"}
    samples: dict[str, list[float]] = {k: [] for k in codes}
    for _ in range(runs):
        for label, code in codes.items():
            start = time.perf_counter()
            subprocess.run([PYTHON, "-c", code], env=env, check=True)
            samples[label].append(time.perf_counter() - start)
    base = statistics.median(samples["nothing"])
    print(f"  fresh interpreter ({PYTHON}): {base * 1e3:.1f} ms to start", flush=True)
    for label in ("hvlibvirt.kvm", "ganeti.hypervisor.hv_kvm"):
        print(f"  import {label:<26} {(statistics.median(samples[label]) - base) * 1e3:7.1f} ms"
              f" on top", flush=True)


@contextlib.contextmanager
def lab() -> Iterator[tuple[Path, Any]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from lab.daemon import standalone_lab

    with standalone_lab("noded") as (work, (daemon,), _net):
        yield work, daemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--counts", default="1,10,50")
    parser.add_argument("--start-rounds", type=int, default=5)
    parser.add_argument("--runner", choices=("libvirt", "ganeti"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.runner:
        run_runner(opts.runner)
        return
    counts = [int(c) for c in opts.counts.split(",")]

    sys.path.insert(0, str(ROOT / "tests"))
    from lab.guest import build_guest, default_cache_dir

    print("import cost:", flush=True)
    measure_imports()
    image = build_guest(default_cache_dir())
    with lab() as (work, daemon):
        conf = work / "hvlibvirt.conf"
        conf.write_text(f"[kvm]\nuri = {daemon.uri}\n", encoding="utf-8")
        log = work / "libvirt-client.log"
        # Locks and ownership marks in the work directory, removed with it.
        env = dict(os.environ, HVLIBVIRT_CONFIG=str(conf),
                   HVLIBVIRT_RUN_DIR=str(work / "run"))
        count_env = dict(env, LIBVIRT_LOG_FILTERS="1:rpc.netclient",
                         LIBVIRT_LOG_OUTPUTS=f"1:file:{log}")
        runners = {"libvirt": RunnerProcess("libvirt", env),
                   "ganeti": RunnerProcess("ganeti", env, unshare=True)}
        counter = RunnerProcess("libvirt", count_env)
        hvparams = hvparams_for(image, "/usr/bin/qemu-system-x86_64")
        fleets = {"ganeti": Fleet(runners["ganeti"], "ganeti", "g", work, hvparams),
                  "hvlibvirt": Fleet(runners["libvirt"], "hvlibvirt", "h", work, hvparams)}
        try:
            cluster = json.loads(json.dumps(hvparams))
            for runner in (*runners.values(), counter):
                runner.request(op="hvparams", hvparams=cluster)
            print("\nStartInstance, a fresh child each, guest stopped right after:", flush=True)
            measure_start(opts.start_rounds, runners, fleets, daemon.uri)
            print("  libvirt RPCs of one StartInstance:", flush=True)
            count_start_rpcs(counter, log, fleets["hvlibvirt"], daemon.uri)
            for count in counts:
                print(f"\n{count} instance(s) per side; a fresh child per call "
                      f"({opts.rounds} rounds, median [min-max]):", flush=True)
                fleets["ganeti"].grow(count)
                fleets["hvlibvirt"].grow(count)
                settled = wait_idle()
                print(f"  (booting guests settled: host idle after {settled:.0f} s)", flush=True)
                measure_calls(count, opts.rounds, runners, fleets, daemon.uri)
                print(f"  libvirt RPCs per call (N={count}):", flush=True)
                count_rpcs(counter, log, fleets["hvlibvirt"], daemon.uri)
                print(f"  long-lived process, warm connection (N={count}, median of 200):",
                      flush=True)
                spec = fleets["hvlibvirt"].specs[0]
                for call in LISTING:
                    args = {"name": spec["name"], "spec": spec, "uri": daemon.uri}
                    warm = {who: runners["libvirt"].request(
                        op="inline", who=who, call=call, args=args, runs=200)["seconds"]
                        for who in ("hvlibvirt", "raw", "raw-bare")}
                    print(f"    {call:<22} raw {warm['raw'] * 1e3:6.3f} ms | hvlibvirt "
                          f"{warm['hvlibvirt'] * 1e3:6.3f} ms | /raw "
                          f"{warm['hvlibvirt'] / warm['raw']:5.2f} | raw without ownership "
                          f"{warm['raw-bare'] * 1e3:6.3f} ms", flush=True)
        finally:
            for fleet in fleets.values():
                fleet.stop_all()
            for runner in (*runners.values(), counter):
                runner.close()


if __name__ == "__main__":
    main()
