"""A real two-node Ganeti 3.0 cluster on this one machine (the test suite's tier 5).

Nodes ``gnta`` and ``gntb`` (domain gnt.test) are tests/lab/cluster_node.py nodes: a
holder process each, private network + mount + UTS namespaces, overlayfs over /etc,
/usr, /var, /root and /srv, private /run and /tmp, with sshd and libvirtd (+ virtlogd)
inside. Each node's netns has a bridge (``gntbr0``) holding the node IP, the master IP
(on the master) and the instances' NICs; a veth pair joins the two bridges.

``Cluster.up()`` builds the network and nodes, installs hvlibvirt from the project's
.deb in each node and enables it (``hvlibvirt ganeti enable``), runs ``gnt-cluster init``
on gnta and ``gnt-node add`` for gntb. ``teardown()`` stops everything and raises
``LabLeakError`` naming whatever it finds left behind (process, namespace, mount, loop
device, or a change to the host's Ganeti, ssh, dpkg or account files).

Outside pytest use ``standalone_cluster()``::

    with standalone_cluster() as cluster:
        cluster.gnt("gnt-instance", "list")
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import libvirt_tls
from .cluster_node import NODE_ENV, OVERLAID, PRIVATE, ClusterError, ClusterNode, ConsoleSession
from .daemon import missing_prerequisites
from .errors import LabError, LabLeakError
from .guest import GuestImage, build_guest, default_cache_dir
from .host_state import (MachineLock, host_snapshot, loop_devices_of, mounts_referencing,
                         snapshot_changes)
from .mountpoints import HostMountpoints, host_mountpoints
from .netns import LabNetwork
from .procs import describe, kill_and_wait, pids_in_netns, pids_referencing
from .serial import SerialLog

log = logging.getLogger(__name__)

DOMAIN = "gnt.test"
CLUSTER_NAME = f"gntcl.{DOMAIN}"
SUBNET = "10.78.0"
MASTER_IP = f"{SUBNET}.100"
NODE_IPS = {"gnta": f"{SUBNET}.1", "gntb": f"{SUBNET}.2"}
BRIDGE = "gntbr0"
NETNS_PREFIX = "hvlg"  # tier 3's namespaces are "hvl-...": the two never clash
GUEST_DIR = "/srv/lab-guest"  # the guest kernel + initramfs, same path on both nodes
FILE_STORAGE = "/srv/ganeti/file-storage"
SHARED_FILE_STORAGE = "/srv/ganeti/shared-file-storage"
SERIAL_LOG_DIR = "/var/log/hvlibvirt"
# Ganeti adopts block devices only under /dev/disk/: both nodes get the same private
# one (a work directory bind) holding links to the lab's loop devices.
DEV_DISK = "/dev/disk"
REPO = Path(__file__).resolve().parents[2]
DEB_GLOB = "dist/python3-hvlibvirt_*_all.deb"
DEB_ENV = "HVLIBVIRT_DEB"  # a .deb to install instead of building one
# Ganeti's default instance policy wants disks of at least 1 GiB.
IPOLICY_BOUNDS = ("min:disk-size=16,memory-size=64,cpu-count=1,disk-count=1,nic-count=0,spindle-use=1"
                  "/max:disk-size=1048576,memory-size=32768,cpu-count=8,disk-count=16,nic-count=8,"
                  "spindle-use=12")
REQUIRED_TOOLS = ("gnt-cluster", "sshd", "ssh-keygen", "socat", "losetup", "apt-get", "dpkg-divert")
GNT_TIMEOUT_S = 300.0
_DEV_DISK_MOUNTPOINT = HostMountpoints((DEV_DISK,), "cluster-mountpoints")



def cluster_prerequisites() -> list[str]:
    """Why this machine cannot host the cluster ([] if it can)."""
    problems = missing_prerequisites()
    dirs = NODE_ENV["PATH"].split(":")
    missing = [t for t in REQUIRED_TOOLS if not any(os.access(f"{d}/{t}", os.X_OK) for d in dirs)]
    if missing:
        problems.append(f"missing tools: {', '.join(missing)} (packages ganeti, ganeti-haskell-3.0, "
                        "openssh-server, socat)")
    with open("/proc/filesystems", encoding="ascii") as f:
        if "overlay" not in f.read():
            problems.append("the kernel has no overlayfs")
    return problems


def ensure_deb(repo: Path = REPO) -> Path:
    """The .deb to install: $HVLIBVIRT_DEB, else dist/'s newest, rebuilt with
    scripts/build-deb.sh when missing or older than the sources (tier 5 must test the
    code in the tree, not an old build)."""
    if os.environ.get(DEB_ENV):
        return Path(os.environ[DEB_ENV]).resolve()
    sources = [p for pattern in ("hvlibvirt/**/*.py", "pyproject.toml", "debian/**/*", "scripts/build-deb.sh")
               for p in repo.glob(pattern) if p.is_file()]
    newest_source = max((p.stat().st_mtime for p in sources), default=0.0)
    debs = sorted(repo.glob(DEB_GLOB), key=lambda p: p.stat().st_mtime)
    if debs and debs[-1].stat().st_mtime >= newest_source:
        return debs[-1]
    script = repo / "scripts" / "build-deb.sh"
    if not script.exists():
        raise ClusterError(f"no up-to-date {DEB_GLOB} and no {script} to build one")
    log.info("building the .deb with %s", script)
    done = subprocess.run(["bash", str(script)], cwd=repo, capture_output=True, text=True, timeout=900,
                          check=False)
    debs = sorted(repo.glob(DEB_GLOB), key=lambda p: p.stat().st_mtime)
    if done.returncode != 0 or not debs:
        raise ClusterError(f"{script} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return debs[-1]


# ------------------------------------------------------------------------------ network

class ClusterNetwork:
    """Netns ``hvlg-a-<pid>`` and ``hvlg-b-<pid>``, a bridge holding the node IP in each,
    and a veth pair joining the two bridges."""

    def __init__(self, tag: str | None = None) -> None:
        tag = tag or str(os.getpid())
        self.netns = {name: f"{NETNS_PREFIX}-{name[-1]}-{tag}" for name in NODE_IPS}
        self._created: list[str] = []

    @staticmethod
    def cleanup_stale() -> list[str]:
        """Delete ``hvlg-[ab]-<pid>`` namespaces whose session is gone (killing what runs there)."""
        removed = []
        for ns in LabNetwork.list_netns():
            m = re.fullmatch(rf"{NETNS_PREFIX}-[ab]-(\d+)", ns)
            if not m or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            kill_and_wait(pids_in_netns(ns), 5)
            _host(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
        if removed:
            log.warning("removed stale cluster namespaces %s", removed)
        return removed

    def setup(self) -> None:
        self.cleanup_stale()
        for name, ns in self.netns.items():
            _host(["ip", "netns", "add", ns])
            self._created.append(ns)
            for argv in (["link", "set", "lo", "up"], ["link", "add", BRIDGE, "type", "bridge"],
                         ["addr", "add", f"{NODE_IPS[name]}/24", "dev", BRIDGE], ["link", "set", BRIDGE, "up"]):
                _host(["ip", "-n", ns, *argv])
        a, b = self.netns["gnta"], self.netns["gntb"]
        # Both ends are created inside their namespaces: nothing appears on the host.
        _host(["ip", "link", "add", "hvlg-va", "netns", a, "type", "veth", "peer", "name", "hvlg-vb", "netns", b])
        for ns, veth in ((a, "hvlg-va"), (b, "hvlg-vb")):
            _host(["ip", "-n", ns, "link", "set", veth, "master", BRIDGE, "up"])

    def teardown(self) -> list[str]:
        """Delete the namespaces; return what still ran in them (it is killed)."""
        leaks = []
        for ns in self._created:
            stragglers = pids_in_netns(ns)
            leaks += [f"process in netns {ns}: {describe(p)}" for p in stragglers]
            kill_and_wait(stragglers, 5)
            _host(["ip", "netns", "del", ns], check=False)
        present = set(LabNetwork.list_netns())
        self._created = [ns for ns in self._created if ns in present]
        return leaks + [f"netns {ns}" for ns in self._created]


@dataclass
class Timings:
    """Seconds spent in each phase of up() and teardown()."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - t0, 2)
            log.info("cluster %s: %.2fs", name, self.phases[name])


# ------------------------------------------------------------------------------ the cluster

HVLIBVIRT_CONF = "/etc/hvlibvirt/hvlibvirt.conf"


def hvlibvirt_conf(migration_uri: str = "qemu+ssh://{target}/system") -> str:
    """A node's hvlibvirt.conf: qemu:///system is the node's own libvirtd (/run/libvirt
    is node-private); serial_log_dir lets the tests read the guest's console output as
    a file."""
    return (f"[kvm]\nuri = qemu:///system\nmigration_uri = {migration_uri}\n"
            f"serial_log_dir = {SERIAL_LOG_DIR}\n")


class Cluster:
    """The two-node cluster: ``up()``, then ``gnt()`` / ``run()`` / ``console()``, ``teardown()``.

    ``hvlibvirt=False`` leaves Ganeti's own hv_kvm serving ``kvm`` (no .deb installed).
    ``libvirt_tls=True`` has each node's libvirtd also listen for TLS (a lab CA's
    certificates, tests/lab/libvirt_tls.py), for ``migration_uri = qemu+tls://...``.
    """

    def __init__(self, workdir: Path, *, guest: GuestImage | None = None, deb: Path | None = None,
                 hvlibvirt: bool = True, tag: str | None = None,
                 libvirt_tls: bool = False) -> None:
        self.workdir = Path(workdir).resolve()
        self.guest = guest
        self.deb = deb
        self.hvlibvirt = hvlibvirt
        self.net = ClusterNetwork(tag)
        binds = {SHARED_FILE_STORAGE: self.workdir / "shared-file-storage", DEV_DISK: self.workdir / "dev-disk"}
        self.nodes = {name: ClusterNode(name, DOMAIN, ip, self.net.netns[name], self.workdir / name,
                                        str(uuid.uuid4()), binds=binds)
                      for name, ip in NODE_IPS.items()}
        self.libvirt_tls = libvirt_tls
        self.timings = Timings()
        self.loop_devices: list[str] = []
        self._baseline_mounts: set[str] = set()
        self._baseline_files: dict[str, tuple[int, int, int] | None] = {}
        self._leased = False
        self._machine_lock = MachineLock()
        self._up = False

    # ------------------------------------------------------------------ names
    @property
    def master(self) -> ClusterNode:
        return self.nodes["gnta"]

    def node(self, node: str | ClusterNode) -> ClusterNode:
        """A node by short name, FQDN or itself."""
        return node if isinstance(node, ClusterNode) else self.nodes[node.split(".", 1)[0]]

    @staticmethod
    def fqdn(name: str) -> str:
        return name if name.endswith(f".{DOMAIN}") else f"{name}.{DOMAIN}"

    @staticmethod
    def hvparams(**overrides: str) -> str:
        """The ``-H kvm:...`` value that boots the lab guest under TCG (this machine's
        /dev/kvm cannot run a Linux guest)."""
        params = {"kernel_path": f"{GUEST_DIR}/vmlinuz", "initrd_path": f"{GUEST_DIR}/initrd.img",
                  "kvm_flag": "disabled", "kvm_path": "/usr/bin/qemu-system-x86_64",
                  "serial_console": "true", "vnc_bind_address": "", "root_path": "/dev/vda",
                  "kernel_args": "quiet panic=-1"}
        params.update(overrides)
        return "kvm:" + ",".join(f"{k}={v}" for k, v in params.items())

    # ------------------------------------------------------------------ commands
    def run(self, node: str | ClusterNode, argv: list[str], check: bool = True, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node``."""
        return self.node(node).run(argv, check=check, timeout=timeout, input=input)

    def gnt(self, *argv: str, check: bool = True, timeout: float = GNT_TIMEOUT_S
            ) -> subprocess.CompletedProcess[str]:
        """A command on the master: ``gnt("gnt-node", "list")``."""
        t0 = time.monotonic()
        proc = self.master.run(list(argv), check=check, timeout=timeout)
        log.info("%s -> %d in %.2fs", shlex.join(argv), proc.returncode, time.monotonic() - t0)
        return proc

    def virsh(self, node: str | ClusterNode, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """virsh on the node's own libvirtd, run inside the node."""
        return self.run(node, ["virsh", "-q", "-c", "qemu:///system", *argv], check=check, timeout=60)

    def console(self, node: str | ClusterNode, instance: str, typed: str, expect: str,
                timeout: float = 60.0) -> str:
        """Run ``gnt-instance console`` in ``node`` (the master) on a pty, type ``typed``
        into the guest's shell, wait until its output matches ``expect``, detach with
        Ctrl-]; return that output. ClusterError if any of it does not happen."""
        fqdn = self.fqdn(instance)
        return ConsoleSession(self.node(node), ["gnt-instance", "console", fqdn],
                              f"console of {fqdn}").exchange(typed, expect, timeout)

    def instance_fields(self, instance: str, *fields: str) -> list[str]:
        """``gnt-instance list`` fields of one instance, e.g. ("pnode", "oper_state")."""
        out = self.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o", ",".join(fields),
                       self.fqdn(instance)).stdout
        return out.strip().split("|")

    def serial_log(self, node: str | ClusterNode, instance: str) -> SerialLog:
        """The instance's serial console output on ``node`` (hvlibvirt's serial_log_dir)."""
        return SerialLog(self.node(node).host_path(f"{SERIAL_LOG_DIR}/{self.fqdn(instance)}.serial"))

    def hvlibvirt_ganeti(self, node: str | ClusterNode, action: str, *options: str) -> str:
        """``hvlibvirt ganeti enable|disable|status [OPTION...]`` in ``node``; its message.
        (status exits non-zero while Ganeti's own hypervisors are active, like an init
        script's.)"""
        return self.run(node, ["hvlibvirt", "ganeti", action, *options],
                        check=action != "status", timeout=120).stdout.strip()

    def restart_libvirtd(self, node: str | ClusterNode) -> None:
        self.node(node).restart_libvirtd()

    def stop_libvirtd(self, node: str | ClusterNode) -> None:
        self.node(node).stop_libvirtd()

    def start_libvirtd(self, node: str | ClusterNode) -> None:
        self.node(node).start_libvirtd()

    def blockdev(self, name: str, mib: int) -> str:
        """A loop device over a fresh file of the work directory, as
        /dev/disk/by-id/hvlg-<name> on both nodes (Ganeti adopts only paths there)."""
        backing = self.workdir / "loop" / f"{name}.img"
        backing.parent.mkdir(exist_ok=True)
        with open(backing, "wb") as f:
            f.truncate(mib * 1024 * 1024)
        dev = _host(["losetup", "--find", "--show", str(backing)]).stdout.strip()
        self.loop_devices.append(dev)
        link = self.workdir / "dev-disk" / "by-id" / f"hvlg-{name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(dev)
        return f"{DEV_DISK}/by-id/{link.name}"

    # ------------------------------------------------------------------ bring-up
    def up(self) -> None:
        """Build the whole cluster (see the module docstring); on failure tear it down again."""
        problems = cluster_prerequisites()
        if problems:
            raise LabError("cannot host the Ganeti cluster: " + "; ".join(problems))
        with self.timings.phase("machine lock"):
            self._machine_lock.acquire()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._baseline_mounts = host_mountpoints()
            self._baseline_files = host_snapshot()
        except BaseException:
            self._machine_lock.release()
            raise
        self._up = True
        _LIVE_CLUSTERS.add(self)
        try:
            with self.timings.phase("prepare"):
                self.guest = self.guest or build_guest()
                if self.hvlibvirt and self.deb is None:
                    self.deb = ensure_deb()
                _DEV_DISK_MOUNTPOINT.acquire(default_cache_dir())
                self._leased = True
                self.net.setup()
                if self.libvirt_tls:
                    made = libvirt_tls.make(self.workdir / "pki",
                                            {n.fqdn: n.ip for n in self.nodes.values()})
                    for node in self.nodes.values():
                        node.tls = made[node.fqdn]
                for node in self.nodes.values():
                    self._prepare(node)
            with self.timings.phase("nodes"):
                for node in self.nodes.values():
                    node.start()
                    node.start_sshd()
                for node in self.nodes.values():
                    node.start_libvirtd()
            if self.hvlibvirt:
                with self.timings.phase("install"):
                    for node in self.nodes.values():
                        self.install_hvlibvirt(node)
            with self.timings.phase("init"):
                self._init()
            with self.timings.phase("node-add"):
                self._add_node(self.nodes["gntb"])
        except BaseException as err:
            try:
                self.teardown()
            except (LabError, OSError, subprocess.SubprocessError) as leak:  # keep the cause, add these
                err.add_note(f"and the teardown after it: {leak}")
            raise

    def _prepare(self, node: ClusterNode) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        for shared in node.binds.values():
            shared.mkdir(exist_ok=True)
        hosts = ["127.0.0.1 localhost", *(f"{ip} {name}.{DOMAIN} {name}" for name, ip in NODE_IPS.items()),
                 f"{MASTER_IP} {CLUSTER_NAME} {CLUSTER_NAME.split('.')[0]}"]
        node.prepare("\n".join(hosts) + "\n")
        # gnt-cluster init refuses storage directories this file does not list, and
        # gnt-node add does not create the storage directory on the new node.
        node.seed("/etc/ganeti/file-storage-paths", f"{FILE_STORAGE}\n{SHARED_FILE_STORAGE}\n")
        node.seed_dir(FILE_STORAGE)
        # Root's ssh client as an operator would set it up for libvirt's qemu+ssh
        # (migration): libvirt runs plain ssh as root, with root's key (Ganeti made it);
        # every node carries the cluster's host key, which Ganeti keeps in its own
        # known_hosts under the cluster name. Ganeti's own ssh calls pass these options
        # on the command line, so the file changes nothing for them.
        node.seed_dir("/root/.ssh", 0o700)
        node.seed("/root/.ssh/config", (
            f"Host *.{DOMAIN} {SUBNET}.*\n"
            "    UserKnownHostsFile /var/lib/ganeti/known_hosts\n"
            f"    HostKeyAlias {CLUSTER_NAME}\n"
            "    BatchMode yes\n"), 0o600)
        node.seed(HVLIBVIRT_CONF, hvlibvirt_conf())
        node.seed_dir(SERIAL_LOG_DIR)
        self._seed_noop_os(node)
        assert self.guest is not None
        node.seed_dir(GUEST_DIR)
        for src, name in ((self.guest.kernel, "vmlinuz"), (self.guest.initrd, "initrd.img")):
            _link_or_copy(Path(src), node.host_path(f"{GUEST_DIR}/{name}"))

    @staticmethod
    def _seed_noop_os(node: ClusterNode) -> None:
        """An OS definition (API 20) whose scripts do nothing: the guest boots its kernel."""
        base = "/srv/ganeti/os/noop"
        node.seed(f"{base}/ganeti_api_version", "20\n")
        node.seed(f"{base}/parameters.list", "")  # an API-20 OS without it is invalid
        for script in ("create", "import", "export", "rename", "verify"):
            node.seed(f"{base}/{script}", "#!/bin/sh\nexit 0\n", 0o755)

    def install_hvlibvirt(self, node: ClusterNode) -> None:
        """Install the project's .deb in ``node`` and make it serve Ganeti's ``kvm``.

        apt-get (not dpkg -i), as an operator would: it checks the package's
        dependencies (the host has them, so nothing is downloaded). Inside the node it
        writes only the node's overlays, dpkg's database and lock included; the
        package's maintainer scripts only byte-compile.
        """
        assert self.deb is not None
        inside = f"/tmp/{self.deb.name}"  # the node's private /tmp: the .deb may live where it cannot see
        _link_or_copy(self.deb, node.host_path(inside))
        node.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", inside], timeout=300)
        self.hvlibvirt_ganeti(node, "enable")

    def _init(self) -> None:
        self.gnt("gnt-cluster", "init", "--enabled-hypervisors=kvm",
                 "--enabled-disk-templates=file,sharedfile,blockdev",
                 f"--file-storage-dir={FILE_STORAGE}", f"--shared-file-storage-dir={SHARED_FILE_STORAGE}",
                 "--no-etc-hosts", f"--master-netdev={BRIDGE}", f"--nic-parameters=mode=bridged,link={BRIDGE}",
                 "-H", self.hvparams(), f"--ipolicy-bounds-specs={IPOLICY_BOUNDS}", CLUSTER_NAME)
        # init returns while master-ip-setup is still configuring the master IP.
        self._wait(lambda: f" {MASTER_IP}/" in self.run(self.master, ["ip", "-4", "-o", "addr", "show", "dev",
                                                                     BRIDGE]).stdout,
                   30, f"master IP {MASTER_IP} on {BRIDGE}")

    def _add_node(self, node: ClusterNode) -> None:
        # gnt-node add logs in to the new node as root with the master's key (init made it),
        # as an operator would have arranged beforehand.
        key = self.master.read("/root/.ssh/id_rsa.pub")
        existing = node.run(["cat", "/root/.ssh/authorized_keys"], check=False).stdout
        node.write("/root/.ssh/authorized_keys", existing + key, "0600")
        self.gnt("gnt-node", "add", "--no-ssh-key-check", node.fqdn)
        # The master's daemons send the cluster's files to the new node after the job
        # ended; a verify before they arrive reports them missing (CI, 2026-12-02, with
        # two nested Xen hosts booting beside: rapi.pem not yet on gntb).
        self._wait(lambda: node.run(["test", "-e", "/var/lib/ganeti/rapi.pem"],
                                    check=False).returncode == 0,
                   120, f"Ganeti to copy rapi.pem to {node.fqdn}")

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        """Stop every daemon, guest and holder, delete the namespaces and loop devices,
        release the mount point; raise LabLeakError naming anything left behind."""
        if not self._up:
            return
        self._up = False
        _LIVE_CLUSTERS.discard(self)
        try:
            leaks: list[str] = []
            t0 = time.monotonic()
            for node in self.nodes.values():
                try:
                    leaks += [f"{node.name}: {p}" for p in node.stop()]
                except (LabError, OSError, subprocess.SubprocessError) as err:  # the other node still stops
                    leaks.append(f"{node.name}: stop failed: {err}")
            leaks += self.net.teardown()
            self._detach_loop_devices()
            if self._leased:
                self._leased = False
                _DEV_DISK_MOUNTPOINT.release()
            self.timings.phases["teardown"] = round(time.monotonic() - t0, 2)
            problems = leaks + self.leftovers()
            if problems:
                for p in problems:
                    log.error("CLUSTER LEAK: %s", p)
                raise LabLeakError("the Ganeti cluster left things behind:\n  " + "\n  ".join(problems))
        finally:
            self._machine_lock.release()  # after the leak check: it reads shared host state
        log.info("cluster torn down in %.2fs, nothing left behind", self.timings.phases["teardown"])

    def _detach_loop_devices(self, timeout: float = 15.0) -> None:
        """Detach the lab's loop devices. A guest's last close can trail its process's
        death by a moment (a busy device is only marked for auto-clear), so wait for them
        to go, detaching again, before the leak check looks."""
        deadline = time.monotonic() + timeout
        while True:
            for dev in self.loop_devices:
                _host(["losetup", "--detach", dev], check=False)
            if not loop_devices_of(self.workdir) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.loop_devices = []

    def leftovers(self) -> list[str]:
        """Everything teardown should have removed (empty: the host is clean)."""
        problems = [f"process {describe(p)}" for p in pids_referencing(self.workdir)]
        present = set(LabNetwork.list_netns())
        problems += [f"netns {ns}" for ns in self.net.netns.values() if ns in present]
        problems += [f"mount {m}" for m in sorted(host_mountpoints() - self._baseline_mounts) if self._is_ours(m)]
        problems += [f"mount {m}" for m in mounts_referencing(self.workdir)]
        problems += [f"loop device {d}" for d in loop_devices_of(self.workdir)]
        if not _mountpoint_in_use(default_cache_dir()):
            problems += [f"mount-point directory {p}"
                         for p in _DEV_DISK_MOUNTPOINT.created_and_present(default_cache_dir())]
        return problems + snapshot_changes(self._baseline_files, host_snapshot(), "host file")

    def _is_ours(self, mountpoint: str) -> bool:
        """Mounts this cluster makes (other sessions' tier-3 mounts may come and go)."""
        roots = (str(self.workdir), *OVERLAID, DEV_DISK, *(f"/run/netns/{ns}" for ns in self.net.netns.values()))
        return mountpoint in PRIVATE or any(mountpoint == r or mountpoint.startswith(r + "/") for r in roots)


def _mountpoint_in_use(state_dir: Path) -> bool:
    """True while a session (this one included) holds the /dev/disk mount point."""
    users = state_dir / f"{_DEV_DISK_MOUNTPOINT.name}.users"
    if not users.exists():
        return False
    fd = os.open(users, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# Safety net for runs that never reach the fixture's finalizer (a crash in a hook, ^C twice).
_LIVE_CLUSTERS: set[Cluster] = set()


@atexit.register
def _teardown_everything() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.teardown()


# ------------------------------------------------------------------------------ helpers

def _host(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterError(f"{argv!r} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (same filesystem: free) or copy a file into a node's tree."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


@contextlib.contextmanager
def standalone_cluster(workdir: Path | None = None, **kwargs: object) -> Iterator[Cluster]:
    """The cluster outside pytest (benchmarks): up, yield, teardown with the leak check.

    Without ``workdir`` a fresh directory under /tmp is used and removed afterwards.
    Keyword arguments go to ``Cluster`` (``hvlibvirt=False``: Ganeti's own hv_kvm).
    """
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="hvlg-")) if workdir is None else Path(workdir)
    cluster = Cluster(work, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.up()
        yield cluster
    finally:
        try:
            cluster.teardown()
        finally:  # also when teardown's leak check raises
            if own:
                _host(["rm", "-rf", "--one-file-system", str(work)], check=False)
