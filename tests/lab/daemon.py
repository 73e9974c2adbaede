"""Private privileged libvirtd daemons for the real tier, without systemd.

Each ``LibvirtDaemon`` runs as::

    ip netns exec NS unshare -m -u --propagation private python subreaper.py SPEC

where the subreaper bind-mounts the daemon's work directory over /etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt (plus private
copies of /etc/passwd and /etc/group holding the ``libvirt-qemu`` user that Debian's
QEMU driver resolves before reading qemu.conf), then starts virtlogd and libvirtd.
The host's /etc and libvirt state are never written; the only host change is creating
missing mount-point directories, which are removed again when the last harness
session on the machine is done with them.

The pieces it builds on live in their own modules:

* ``netns``: ``LabNetwork``, two network namespaces joined by a veth pair (one per
  daemon, so two daemons look like two hosts for migration) and a bridge in each;
* ``mountpoints``: ``HostMountpoints`` (the shared, reference-counted mount-point
  directories), ``LIBVIRT_DIRS`` and ``host_mountpoints``;
* ``procs``: the /proc helpers (``pids_in_netns``, ``pids_referencing``, ``describe``,
  ``kill_and_wait``) and ``_run``;
* ``errors``: ``LabError`` and ``LabLeakError``.

This module keeps ``LibvirtDaemon``, ``missing_prerequisites``, ``find_leftovers``,
``standalone_lab`` and the atexit safety net that stops daemons and networks a run
left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import libvirt
from lxml import etree

from .errors import LabError, LabLeakError
from .guest import default_cache_dir
from .mountpoints import _MOUNTPOINTS, LIBVIRT_DIRS, host_mountpoints
from .netns import _LIVE_NETWORKS, LabNetwork
from .procs import _alive, _all_pids, _cmdline, _ns_id, _run, describe, kill_and_wait, pids_referencing

log = logging.getLogger(__name__)

REQUIRED_TOOLS = ("libvirtd", "virtlogd", "qemu-system-x86_64", "ip", "unshare", "nsenter", "mount",
                  "apt-get", "apt-cache", "dpkg-deb")
SUBREAPER = Path(__file__).with_name("subreaper.py")
START_TIMEOUT_S = 30.0
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
QEMU_USER = "libvirt-qemu"
QEMU_PASSWD_LINE = f"{QEMU_USER}:x:64055:64055:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n"
QEMU_GROUP_LINE = f"{QEMU_USER}:x:64055:\n"
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def missing_prerequisites() -> list[str]:
    """Why the real tier cannot run here ([] if it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root (the private libvirtd needs CAP_SYS_ADMIN/CAP_NET_ADMIN)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t, path=DAEMON_ENV["PATH"]) is None]
    if missing:
        problems.append(f"missing tools: {', '.join(missing)}")
    if not os.access("/bin/busybox", os.X_OK):
        problems.append("missing /bin/busybox (package busybox-static)")
    if not glob.glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        problems.append("missing libvirt QEMU driver (package libvirt-daemon-driver-qemu)")
    return problems


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(missing)"


# ------------------------------------------------------------------------------ daemon

class LibvirtDaemon:
    """A privileged libvirtd (+ virtlogd) in a private mount/UTS namespace inside ``netns``
    (None: the caller's network namespace, e.g. inside a trixie root whose /run has no
    named namespaces).

    Everything lives under ``workdir``: configs (etc/), sockets (sock/), state (run/,
    lib/, cache/) and logs (log/: libvirtd.log, virtlogd.log, qemu/<domain>.log).
    """

    def __init__(self, name: str, workdir: Path, host_uuid: str, netns: str | None, ip: str, *,
                 log_level: int = 3, state_dir: Path | None = None) -> None:
        self.name = name
        self.workdir = Path(workdir).resolve()
        self.host_uuid = host_uuid
        self.netns = netns
        self.ip = ip
        self.log_level = log_level
        self.state_dir = state_dir or default_cache_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._mntns: tuple[int, int] | None = None
        self._leased = False
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        return f"LibvirtDaemon({self.name!r}, netns={self.netns!r}, ip={self.ip!r})"

    # -- paths
    @property
    def socket_path(self) -> Path:
        return self.workdir / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def log_dir(self) -> Path:
        """The daemon's /var/log/libvirt (libvirtd.log, virtlogd.log, qemu/)."""
        return self.workdir / "log"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "libvirtd.log"

    def qemu_log(self, domain_name: str) -> Path:
        """QEMU's stderr/command-line log for a domain."""
        return self.log_dir / "qemu" / f"{domain_name}.log"

    @property
    def reaper_pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- use
    def connect(self) -> libvirt.virConnect:
        """A new read-write connection (the caller closes it)."""
        return libvirt.open(self.uri)

    def nsenter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed to run in this daemon's mount, network and UTS namespaces."""
        if not self.reaper_pid:
            raise LabError(f"{self} is not running")
        return ["nsenter", "-t", str(self.reaper_pid), "-m", "-n", "-u", "--", *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command as the daemon sees the world (its /var/lib/libvirt, its netns)."""
        return _run(self.nsenter_argv(argv), check=check, timeout=timeout)

    def processes(self) -> list[int]:
        """Live processes of this daemon: its mount namespace, or mentioning its workdir."""
        found = set(pids_referencing(self.workdir))
        if self._mntns is not None:
            found.update(p for p in _all_pids() if _ns_id(p, "mnt") == self._mntns and _alive(p))
        return sorted(found)

    # -- lifecycle
    def _write_configs(self) -> None:
        def conf(values: dict[str, object]) -> str:
            lines = []
            for key, value in values.items():
                if isinstance(value, str):
                    assert '"' not in value and "\n" not in value, value
                    value = f'"{value}"'
                elif isinstance(value, list):
                    value = "[ " + ", ".join(f'"{v}"' for v in value) + " ]"
                lines.append(f"{key} = {value}")
            return "\n".join(lines) + "\n"

        etc = self.workdir / "etc"
        (etc / "libvirtd.conf").write_text(conf({
            "unix_sock_dir": str(self.socket_path.parent),
            "unix_sock_rw_perms": "0700",
            "unix_sock_ro_perms": "0700",
            "unix_sock_admin_perms": "0700",
            "auth_unix_rw": "none",
            "auth_unix_ro": "none",
            "host_uuid": self.host_uuid,
            "log_outputs": f"{self.log_level}:file:{self.daemon_log}",
        }))
        (etc / "virtlogd.conf").write_text(conf({
            "log_outputs": f"{self.log_level}:file:{self.log_dir / 'virtlogd.log'}",
        }))
        (etc / "qemu.conf").write_text(conf({
            "user": "root",
            "group": "root",
            "dynamic_ownership": 0,
            "remember_owner": 0,
            "security_driver": "none",
            "namespaces": [],          # no per-domain /dev namespace
            "cgroup_controllers": [],  # never create host cgroups (cgroup v1 here)
            "migration_host": self.ip,
            "migration_address": self.ip,
            # Host-wide SPICE TLS, as an operator would configure it for spice_use_tls
            # (certificates are only read when such a domain starts).
            "spice_tls": 1,
            "spice_tls_x509_cert_dir": str(self.workdir / "pki"),
        }))

    def _write_accounts(self) -> None:
        # Debian's QEMU driver resolves the compiled-in 'libvirt-qemu' user before reading
        # qemu.conf; without libvirt-daemon-system that user does not exist.
        for name, extra in (("passwd", QEMU_PASSWD_LINE), ("group", QEMU_GROUP_LINE)):
            text = Path("/etc", name).read_text()
            if not any(line.startswith(f"{QEMU_USER}:") for line in text.splitlines()):
                text = text.rstrip("\n") + "\n" + extra
            (self.workdir / name).write_text(text)

    def _spec(self) -> dict[str, object]:
        etc = self.workdir / "etc"
        commands: list[list[str]] = [
            ["mount", "--bind", str(self.workdir / "passwd"), "/etc/passwd"],
            ["mount", "--bind", str(self.workdir / "group"), "/etc/group"],
        ]
        commands += [["mount", "--bind", str(self.workdir / sub), target] for sub, target in LIBVIRT_DIRS.items()]
        libvirtd = ["libvirtd", "-d", "-p", str(self.workdir / "libvirtd.pid"), "-f", str(etc / "libvirtd.conf")]
        commands += [
            ["virtlogd", "-d", "-p", str(self.workdir / "virtlogd.pid"), "-f", str(etc / "virtlogd.conf")],
            libvirtd,
        ]
        return {"pidfile": str(self.workdir / "reaper.pid"), "hostname": self.name, "commands": commands,
                "restart": [libvirtd]}

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the daemon and wait until its socket answers and the QEMU driver works."""
        if self._proc is not None:
            raise LabError(f"{self} already started")
        t0 = time.monotonic()
        if len(str(self.socket_path)) > UNIX_PATH_MAX - 5:  # libvirt adds '-ro'/'-admin'
            raise LabError(f"socket path too long for AF_UNIX: {self.socket_path}")
        for sub in (*LIBVIRT_DIRS, "sock", "pki"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # A restart must not read the previous run's pids: a stale reaper.pid made the
        # launcher look "unshared" before it was, and its (host) mount namespace would
        # then have been taken for the daemon's.
        for stale in ("reaper.pid", "libvirtd.pid", "virtlogd.pid"):
            (self.workdir / stale).unlink(missing_ok=True)
        self._write_configs()
        self._write_accounts()
        _MOUNTPOINTS.acquire(self.state_dir)
        self._leased = True
        spec_path = self.workdir / "subreaper.json"
        spec_path.write_text(json.dumps(self._spec(), indent=1))
        argv = ["unshare", "-m", "-u", "--propagation", "private",
                sys.executable, "-I", str(SUBREAPER), str(spec_path)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.workdir / "launcher.log", "ab") as out:
            # Own session: a Ctrl-C aimed at pytest must not kill the daemons before teardown runs.
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=dict(DAEMON_ENV, HOME=str(self.workdir)), cwd=self.workdir,
                                          start_new_session=True)
        _LIVE_DAEMONS.add(self)
        try:
            self._wait_ready(t0 + timeout)
        except Exception as exc:
            detail = self._failure_detail()
            try:
                self.stop()
            except LabLeakError as leak:
                detail += f"\n{leak}"
            raise LabError(f"{self} failed to start: {exc}\n{detail}") from exc
        self.start_seconds = time.monotonic() - t0
        log.info("%s up in %.2fs at %s", self, self.start_seconds, self.uri)

    def kill_libvirtd(self, timeout: float = 10.0) -> int:
        """SIGKILL libvirtd (a crash: no cleanup; QEMUs and virtlogd keep running) and wait
        until it is gone; return its pid."""
        pid = _read_pid(self.workdir / "libvirtd.pid")
        if pid is None or not self._owns(pid) or not _alive(pid):
            raise LabError(f"{self}: no running libvirtd to kill")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise LabError(f"{self}: libvirtd {pid} survived SIGKILL")
            time.sleep(0.02)
        return pid

    def libvirtd_running(self) -> bool:
        """Whether this daemon's libvirtd process is alive."""
        pid = _read_pid(self.workdir / "libvirtd.pid")
        return pid is not None and _alive(pid) and self._owns(pid)

    def restart_libvirtd(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start libvirtd again after ``kill_libvirtd``: the subreaper runs it (SIGUSR1),
        so it has the same namespaces and parent; wait until it answers."""
        if self._proc is None or self._proc.poll() is not None:
            raise LabError(f"{self} is not running")
        pid = _read_pid(self.workdir / "libvirtd.pid")
        if pid is not None and _alive(pid) and self._owns(pid):
            raise LabError(f"{self}: libvirtd {pid} still runs")
        (self.workdir / "libvirtd.pid").unlink(missing_ok=True)
        os.kill(self._proc.pid, signal.SIGUSR1)
        self._wait_ready(time.monotonic() + timeout)

    def _failure_detail(self) -> str:
        return (f"--- {self.workdir / 'launcher.log'} (tail):\n{_tail(self.workdir / 'launcher.log')}\n"
                f"--- {self.daemon_log} (tail):\n{_tail(self.daemon_log)}")

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        libvirtd_pidfile = self.workdir / "libvirtd.pid"
        last_error = "socket never appeared"
        conn = None
        while conn is None:
            if self._proc.poll() is not None:
                raise LabError(f"launcher exited with code {self._proc.returncode}")
            if self._mntns is None and (self.workdir / "reaper.pid").exists():
                # The subreaper writes its pid after unshare: its mount namespace is the private one.
                mntns = _ns_id(self._proc.pid, "mnt")
                if mntns == _ns_id(os.getpid(), "mnt"):
                    raise LabError("the launcher reported ready before leaving the host's mount "
                                   "namespace; refusing to treat the host namespace as the daemon's")
                self._mntns = mntns
            pid = _read_pid(libvirtd_pidfile)
            if pid is not None and not _alive(pid):
                raise LabError("libvirtd exited during startup")
            if self.socket_path.exists():
                try:
                    conn = libvirt.open(self.uri)
                except libvirt.libvirtError as e:
                    last_error = str(e)
            if conn is None:
                if time.monotonic() > deadline:
                    raise LabError(f"no answer on {self.socket_path} in time; last error: {last_error}")
                time.sleep(0.05)
        try:
            # The first capabilities call runs the QEMU probe (~1.2 s): do it here so a broken
            # QEMU driver fails at startup with the daemon log attached, not inside a test.
            caps = etree.fromstring(conn.getCapabilities().encode())
        finally:
            conn.close()
        uuid = caps.findtext("host/uuid")
        if uuid != self.host_uuid:
            raise LabError(f"daemon reports host uuid {uuid}, configured {self.host_uuid}")
        if not caps.xpath("guest/arch[@name='x86_64']/domain[@type='qemu']"):
            raise LabError("QEMU driver offers no x86_64 domain type 'qemu'")

    def _owns(self, pid: int) -> bool:
        return (self._mntns is not None and _ns_id(pid, "mnt") == self._mntns) or str(self.workdir) in _cmdline(pid)

    def _destroy_domains(self, timeout: float = 15.0) -> None:
        """Destroy running domains through the API, giving up if libvirtd does not answer."""
        def work() -> None:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                log.warning("%s: cannot connect to destroy domains: %s", self, e)
                return
            try:
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    try:
                        dom.destroy()
                    except libvirt.libvirtError as e:
                        log.warning("%s: destroy %s: %s", self, dom.name(), e)
            finally:
                conn.close()

        # A wedged libvirtd would block the API call forever; the kill below still cleans up.
        worker = threading.Thread(target=work, name=f"destroy-{self.name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.warning("%s: libvirtd did not answer within %.0fs; killing it", self, timeout)

    def stop(self) -> None:
        """Stop everything this daemon started; raise LabLeakError if anything had to be force-killed."""
        leaks: list[str] = []
        try:
            if self._proc is not None:
                if self._proc.poll() is None and self.socket_path.exists():
                    self._destroy_domains()
                # libvirtd leaves guests running when it exits, so QEMUs are killed separately.
                for pidfile in (self.workdir / "libvirtd.pid", self.workdir / "virtlogd.pid"):
                    pid = _read_pid(pidfile)
                    if pid is not None and self._owns(pid):
                        kill_and_wait([pid], 10)
                qemu_pids = [_read_pid(Path(f)) for f in glob.glob(str(self.workdir / "run" / "qemu" / "*.pid"))
                             if not f.endswith("/driver.pid")]
                kill_and_wait([p for p in qemu_pids if p is not None and self._owns(p)], 5)
                if self._proc.poll() is None:
                    self._proc.terminate()  # the subreaper also terminates whatever is still its child
                    try:
                        self._proc.wait(15)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()
                        self._proc.wait(5)
            leftovers = self.processes()
            if leftovers:
                leaks = [describe(p) for p in leftovers]
                survivors = kill_and_wait(leftovers, 5)
                leaks += [f"could not kill {describe(p)}" for p in survivors]
        finally:
            if self._leased:
                self._leased = False
                _MOUNTPOINTS.release()
            _LIVE_DAEMONS.discard(self)
            self._proc = None  # a stopped daemon may be started again (restart tests)
            self._mntns = None
        if leaks:
            for leak in leaks:
                log.error("LAB LEAK (%s): %s", self.name, leak)
            raise LabLeakError(f"{self}: processes survived the orderly stop:\n  " + "\n  ".join(leaks))
        log.info("%s stopped", self)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def find_leftovers(workdir: Path, netns_names: Iterable[str], baseline_mounts: set[str],
                   state_dir: Path | None = None) -> list[str]:
    """Everything the lab should have removed but did not (empty list = clean host)."""
    problems = [f"process {describe(p)}" for p in pids_referencing(Path(workdir).resolve())]
    present = set(LabNetwork.list_netns())
    problems += [f"netns {ns}" for ns in netns_names if ns in present]
    watched = set(LIBVIRT_DIRS.values()) | {"/etc/passwd", "/etc/group"}
    problems += [f"mount {m}" for m in sorted(host_mountpoints() - baseline_mounts)
                 if m in watched or m.startswith(str(workdir))]
    if not _MOUNTPOINTS._users:  # only meaningful once this process released them
        users = (state_dir or default_cache_dir()) / "mountpoints.users"
        fd = os.open(users, os.O_RDWR | os.O_CREAT, 0o644) if users.parent.is_dir() else None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other session is using them
                problems += [f"mount-point directory {p}"
                             for p in _MOUNTPOINTS.created_and_present(users.parent)]
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    return problems


# Safety net for runs that never reach the fixture finalizers (e.g. a crash in a hook).
_LIVE_DAEMONS: set[LibvirtDaemon] = set()


@atexit.register
def _stop_everything() -> None:
    for daemon in list(_LIVE_DAEMONS):
        with contextlib.suppress(Exception):
            daemon.stop()
    for net in list(_LIVE_NETWORKS):
        with contextlib.suppress(Exception):
            net.teardown()


@contextlib.contextmanager
def standalone_lab(prefix: str, daemons: int = 1) -> Iterator[tuple[Path, list[LibvirtDaemon],
                                                                   LabNetwork]]:
    """The lab outside pytest (benchmark scripts): a fresh work directory, the network
    pair and ``daemons`` (1 or 2) private daemons, all torn down (and the directory
    removed) at the end."""
    work = Path(tempfile.mkdtemp(prefix=f"hvl-{prefix}-"))
    net = LabNetwork()
    started: list[LibvirtDaemon] = []
    try:
        net.setup()
        for index, end in enumerate((net.a, net.b)[:daemons]):
            daemon = LibvirtDaemon(f"{prefix}{index}", work / f"d{index}",
                                   str(uuid.uuid4()), end.netns, end.ip)
            started.append(daemon)
            daemon.start()
        yield work, started, net
    finally:
        try:
            for daemon in started:
                daemon.stop()
            net.teardown()
        finally:
            # Only after the daemons are gone (they keep sockets and logs there).
            shutil.rmtree(work, ignore_errors=True)
