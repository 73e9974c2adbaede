"""One node of the lab Ganeti cluster: a private filesystem view, a holder process, daemons.

A node is a holder process (tests/lab/cluster_holder.py) in its own network, mount and
UTS namespaces. In its mount namespace /etc, /usr, /var, /root and /srv are overlayfs
mounts whose lower layer is the host's directory and whose upper layer lives in the
node's work directory; /run and /tmp are private directories of the work directory.
So everything Ganeti, dpkg, apt, sshd and libvirtd write inside the node lands under
``workdir/overlay/<dir>/upper``, ``workdir/run`` or ``workdir/tmp`` and never on the
host, and what the host has installed (Ganeti, QEMU, libvirt, Python) is what the node
runs. With ``lower`` another root (a merged-/usr Debian tree: /bin, /lib and /sbin lead
into /usr) takes the host's place, and the node runs that release instead. Files the
harness wants in the node are written into the upper layers before the overlays are
mounted (``seed``) or through the node afterwards (``write``).

Every command runs as a child of the holder (``run``), so daemons started inside the
node (sshd, libvirtd, virtlogd, Ganeti's daemons, QEMU) are the holder's descendants
and are reaped by it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import libvirt

from .daemon import QEMU_GROUP_LINE, QEMU_PASSWD_LINE, QEMU_USER
from .errors import LabError
from .procs import _alive, describe, kill_and_wait, pids_in_netns, pids_referencing

log = logging.getLogger(__name__)

HOLDER = Path(__file__).with_name("cluster_holder.py")
OVERLAID = ("/etc", "/usr", "/var", "/root", "/srv")
PRIVATE = ("/run", "/tmp")
# The environment of every command in a node: the host's (pyenv, venv, ...) stays out,
# so python3 is Debian's /usr/bin/python3 as on a real Ganeti node.
NODE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
            "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh",
            "DEBIAN_FRONTEND": "noninteractive"}
START_TIMEOUT_S = 30.0
LIBVIRTD_TIMEOUT_S = 30.0
LIBVIRTD_LOG = "/var/log/libvirt/libvirtd.log"
UNIX_PATH_MAX = 107


class ClusterError(LabError):
    """A command in a node failed, or a node could not be set up."""


def _libvirt_conf(values: dict[str, object]) -> str:
    """libvirt's config syntax: strings quoted, lists as [ "a", "b" ]."""
    lines = []
    for key, value in values.items():
        if isinstance(value, str):
            value = json.dumps(value)
        elif isinstance(value, list):
            value = "[ " + ", ".join(json.dumps(v) for v in value) + " ]"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


class ClusterNode:
    """A lab Ganeti node. ``prepare()`` and ``start()`` it, then ``run()`` commands in it."""

    def __init__(self, name: str, domain: str, ip: str, netns: str, workdir: Path, host_uuid: str,
                 binds: dict[str, Path] | None = None, lower: Path = Path("/")) -> None:
        self.name = name
        self.fqdn = f"{name}.{domain}"
        self.ip = ip
        self.netns = netns
        self.workdir = Path(workdir).resolve()
        self.host_uuid = host_uuid
        # node path -> host directory bind-mounted there (after the overlays), e.g. the
        # shared-file storage both nodes see
        self.binds = dict(binds or {})
        # the tree whose /etc, /usr, /var, /root and /srv the overlays lie over: the
        # host's, or another release's root (tests/lab/upgrade_cluster.py)
        self.lower = Path(lower)
        # libvirt's TLS files (node path -> content, mode; tests/lab/libvirt_tls.py): with
        # them libvirtd also listens for TLS on the node's address
        self.tls: dict[str, tuple[bytes, int]] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"ClusterNode({self.fqdn!r}, ip={self.ip!r}, netns={self.netns!r})"

    # ------------------------------------------------------------------ paths
    @property
    def socket(self) -> Path:
        return self.workdir / "holder.sock"

    @property
    def holder_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def host_path(self, node_path: str) -> Path:
        """Where ``node_path`` (under an overlaid or private directory) is on the host.

        Under an overlaid directory this is the path in the upper layer: it holds what
        the node wrote (and the seeds), not what it only reads from the host's layer.
        """
        for top in PRIVATE:
            if node_path == top or node_path.startswith(top + "/"):
                return self.workdir / top.lstrip("/") / node_path[len(top) + 1:]
        for top in OVERLAID:
            if node_path == top or node_path.startswith(top + "/"):
                return self.workdir / "overlay" / top.lstrip("/") / "upper" / node_path[len(top) + 1:]
        raise ValueError(f"{node_path} is the host's own path in {self.name}, not node-private")

    @property
    def libvirt_uri(self) -> str:
        """The node's libvirtd as seen from the host (inside the node: qemu:///system)."""
        return f"qemu+unix:///system?socket={self.host_path('/run/libvirt/libvirt-sock')}"

    # ------------------------------------------------------------------ files
    def seed(self, node_path: str, text: str | bytes, mode: int = 0o644) -> Path:
        """Put a file into the node before ``start`` (into the upper layer)."""
        if self._proc is not None:
            raise ClusterError(f"{self.name}: seed() is for files written before start(); use write()")
        path = self.host_path(node_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        path.chmod(mode)
        return path

    def seed_dir(self, node_path: str, mode: int = 0o755) -> Path:
        path = self.host_path(node_path)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path

    def write(self, node_path: str, text: str, mode: str = "0644") -> None:
        """Write a file through the running node (its overlay sees the change)."""
        self.run(["install", "-D", "-m", mode, "/dev/stdin", node_path], input=text)

    def read(self, node_path: str) -> str:
        """A file as the node sees it (host layer included)."""
        return self.run(["cat", node_path]).stdout

    def libvirtd_trouble(self, lines: int = 12) -> list[str]:
        """The last errors and warnings in the node's libvirtd log, read from the host
        (the node may be what failed)."""
        try:
            text = self.host_path(LIBVIRTD_LOG).read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " error : " in line or " warning : " in line][-lines:]

    # ------------------------------------------------------------------ set-up
    def prepare(self, hosts: str) -> None:
        """Create the node's trees and the files it needs before its first start."""
        for path in (str(self.workdir), str(self.lower)):
            if "," in path or ":" in path:
                raise ClusterError(f"overlayfs options cannot name {path} (',' or ':')")
        if len(str(self.socket)) > UNIX_PATH_MAX:
            raise ClusterError(f"socket path too long for AF_UNIX: {self.socket}")
        if any(str(self.workdir).startswith(top + "/") for top in OVERLAID):
            raise ClusterError(f"the work directory {self.workdir} must not be under an overlaid "
                               f"directory ({', '.join(OVERLAID)})")
        for top in OVERLAID:
            for layer in ("upper", "work"):
                (self.workdir / "overlay" / top.lstrip("/") / layer).mkdir(parents=True, exist_ok=True)
        (self.workdir / "run").mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        (self.workdir / "tmp").chmod(0o1777)
        self.seed_dir("/run/lock", 0o1777)
        self.seed_dir("/run/sshd", 0o755)   # sshd's privilege-separation directory
        if not self.host_path("/run/shm").is_symlink():
            os.symlink("/dev/shm", self.host_path("/run/shm"))  # as on the host
        self.seed("/etc/hosts", hosts)
        self._seed_accounts()
        self._seed_ssh_host_keys()
        self._seed_libvirt()
        for node_path in self.binds:
            if any(node_path.startswith(top + "/") for top in OVERLAID):
                self.seed_dir(node_path)  # else the host has the mount point

    def _seed_accounts(self) -> None:
        # Debian's QEMU driver resolves the compiled-in 'libvirt-qemu' user before it
        # reads qemu.conf; without libvirt-daemon-system the host has no such user.
        for name, extra in (("passwd", QEMU_PASSWD_LINE), ("group", QEMU_GROUP_LINE)):
            text = (self.lower / "etc" / name).read_text()
            if not any(line.startswith(f"{QEMU_USER}:") for line in text.splitlines()):
                self.seed(f"/etc/{name}", text.rstrip("\n") + "\n" + extra)

    def _seed_ssh_host_keys(self) -> None:
        """Host keys of the node's own (gnt-cluster init wants the RSA one; a joining
        node later gets the cluster's keys from Ganeti, into its overlay)."""
        keydir = self.seed_dir("/etc/ssh")
        for kind, bits in (("rsa", ["-b", "2048"]), ("ecdsa", []), ("ed25519", [])):
            key = keydir / f"ssh_host_{kind}_key"
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", kind, *bits, "-C", f"root@{self.fqdn}",
                            "-f", str(key)], check=True, capture_output=True, timeout=60)

    def _seed_libvirt(self) -> None:
        # libvirtd keeps its default paths: /run/libvirt, /var/lib/libvirt, ... are the
        # node's, so qemu:///system inside the node reaches the node's own daemon.
        # The host may lack them (tier 3 creates and removes them as mount points).
        for path in ("/var/log/libvirt/qemu", "/var/lib/libvirt", "/var/cache/libvirt"):
            self.seed_dir(path)
        self.seed("/etc/libvirt/libvirtd.conf", _libvirt_conf({
            "unix_sock_rw_perms": "0700",
            "unix_sock_ro_perms": "0700",
            "unix_sock_admin_perms": "0700",
            "auth_unix_rw": "none",
            "auth_unix_ro": "none",
            "listen_tcp": 0,
            **({"listen_tls": 1, "listen_addr": self.ip} if self.tls else {}),
            "host_uuid": self.host_uuid,  # two nodes must look like two hosts to migrate
            # A failed migration is read afterwards: its job and the peers' keepalive in full.
            "log_filters": "1:rpc.keepalive 1:qemu.qemu_migration",
            "log_level": 3,
            "log_outputs": f"1:file:{LIBVIRTD_LOG}",
        }))
        for path, (content, mode) in self.tls.items():
            self.seed(path, content, mode)
        self.seed("/etc/libvirt/virtlogd.conf", _libvirt_conf({
            "log_outputs": "3:file:/var/log/libvirt/virtlogd.log",
        }))
        self.seed("/etc/libvirt/qemu.conf", _libvirt_conf({
            "user": "root",
            "group": "root",
            "dynamic_ownership": 0,
            "remember_owner": 0,
            "security_driver": "none",
            "namespaces": [],          # QEMU must see the node's /srv and /run (the disks)
            "cgroup_controllers": [],  # never create host cgroups
            "migration_host": self.ip,
            "migration_address": self.ip,
        }))

    def _mounts(self) -> list[list[str]]:
        mounts = []
        # The overlay that hides ``lower`` (a root kept under /var/cache) goes last: a
        # mounted overlay keeps its layers, a path to them must resolve when it mounts.
        for top in sorted(OVERLAID, key=self.lower.is_relative_to):
            layers, lower = self.workdir / "overlay" / top.lstrip("/"), self.lower / top.lstrip("/")
            mounts.append(["mount", "-t", "overlay", f"hvlg-{self.name}", "-o",
                           f"lowerdir={lower},upperdir={layers / 'upper'},workdir={layers / 'work'}", top])
        mounts += [["mount", "--bind", str(src), target] for target, src in self.binds.items()]
        # /tmp last: the work directory itself may be under the host's /tmp.
        mounts += [["mount", "--bind", str(self.workdir / top.lstrip("/")), top] for top in PRIVATE]
        return mounts

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the holder (namespaces + mounts); return once it accepts commands."""
        if self._proc is not None:
            raise ClusterError(f"{self.name} already started")
        t0 = time.monotonic()
        pidfile = self.workdir / "holder.pid"
        pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        spec = self.workdir / "holder.json"
        spec.write_text(json.dumps({"pidfile": str(pidfile), "socket": str(self.socket),
                                    "hostname": self.fqdn, "mounts": self._mounts()}, indent=1))
        argv = ["ip", "netns", "exec", self.netns, "unshare", "-m", "-u", "--propagation", "private",
                sys.executable, "-I", str(HOLDER), "serve", str(spec)]
        with open(self.workdir / "holder.log", "ab") as out:
            # Own session: a Ctrl-C aimed at pytest must not kill the node before teardown.
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=dict(NODE_ENV), cwd="/", start_new_session=True)
        while not pidfile.exists():
            if self._proc.poll() is not None:
                raise ClusterError(f"{self.name}: holder exited ({self._proc.returncode}):\n{self.holder_log()}")
            if time.monotonic() - t0 > timeout:
                raise ClusterError(f"{self.name}: holder not ready in {timeout:.0f}s:\n{self.holder_log()}")
            time.sleep(0.02)
        log.info("%s: holder %d up in %.2fs", self.name, self._proc.pid, time.monotonic() - t0)

    def holder_log(self) -> str:
        try:
            return (self.workdir / "holder.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no holder log)"

    # ------------------------------------------------------------------ commands
    def run_argv(self, argv: list[str], cwd: str = "/") -> list[str]:
        """The host command line that runs ``argv`` in this node (for a pty, a pipe...)."""
        if self.holder_pid is None:
            raise ClusterError(f"{self.name} is not running")
        return [sys.executable, "-I", str(HOLDER), "run", str(self.socket), cwd, *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 120.0, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node; ``check`` raises ClusterError (with its output) on failure."""
        full_env = dict(NODE_ENV, **(env or {}))
        try:
            proc = subprocess.run(self.run_argv(argv), input=input, capture_output=True, text=True,
                                  timeout=timeout, env=full_env, check=False)
        except subprocess.TimeoutExpired as err:
            raise ClusterError(f"{self.name}: {argv!r} did not finish in {timeout:.0f}s; output so far:\n"
                               f"{_text(err.stdout)}{_text(err.stderr)}") from None
        proc.args = argv  # what ran in the node, not the client that carried it
        if check and proc.returncode != 0:
            raise ClusterError(f"{self.name}: {argv!r} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
        return proc

    # ------------------------------------------------------------------ daemons
    def start_sshd(self) -> None:
        """sshd with the defaults (port 22 of the node's netns, /run/sshd.pid), so
        Debian's /etc/init.d/ssh, which Ganeti runs, acts on this node's sshd only."""
        self.run(["/usr/sbin/sshd"])
        self._wait_pidfile("/run/sshd.pid", 10.0)

    def _running(self, pidfile: str) -> int | None:
        """The live pid a node's pidfile names, if any."""
        pid = _read_pid(self.host_path(pidfile))
        return pid if pid is not None and _alive(pid) else None

    def _wait_pidfile(self, pidfile: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (pid := self._running(pidfile)) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: no live pid in {pidfile} after {timeout:.0f}s")
            time.sleep(0.02)
        return pid

    def start_libvirtd(self, timeout: float = LIBVIRTD_TIMEOUT_S) -> None:
        """virtlogd and libvirtd in the node; wait until the QEMU driver answers."""
        t0 = time.monotonic()
        if not self._running("/run/virtlogd.pid"):  # stop_libvirtd leaves virtlogd running
            self.run(["virtlogd", "-d"])
        self.host_path("/run/libvirtd.pid").unlink(missing_ok=True)
        self.run(["libvirtd", "-d", *(["--listen"] if self.tls else [])])
        deadline = t0 + timeout
        last = "no socket"
        while True:
            try:
                conn = libvirt.open(self.libvirt_uri)
                try:
                    # The first capabilities call runs the QEMU probe (~1 s): pay it here.
                    conn.getCapabilities()
                finally:
                    conn.close()
                break
            except libvirt.libvirtError as err:
                last = str(err)
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: libvirtd not answering after {timeout:.0f}s: {last}\n"
                                   f"{_tail(self.host_path('/var/log/libvirt/libvirtd.log'))}")
            time.sleep(0.05)
        log.info("%s: libvirtd up in %.2fs", self.name, time.monotonic() - t0)

    def stop_libvirtd(self) -> None:
        """Stop libvirtd only (its QEMUs and virtlogd keep running, as on a real host)."""
        pid = _read_pid(self.host_path("/run/libvirtd.pid"))
        if pid is not None and pid in self.processes():
            survivors = kill_and_wait([pid], 15)
            if survivors:
                raise ClusterError(f"{self.name}: libvirtd {pid} survived SIGKILL")

    def restart_libvirtd(self) -> None:
        self.stop_libvirtd()
        self.start_libvirtd()

    # ------------------------------------------------------------------ teardown
    def processes(self) -> list[int]:
        """Live processes of this node: in its netns, or naming its work directory."""
        return sorted(set(pids_in_netns(self.netns)) | set(pids_referencing(self.workdir)))

    def _destroy_domains(self) -> None:
        try:
            conn = libvirt.open(self.libvirt_uri)
        except libvirt.libvirtError:
            return  # libvirtd is down: its QEMUs are killed below
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                try:
                    dom.destroy()
                except libvirt.libvirtError as err:
                    log.warning("%s: destroy %s: %s", self.name, dom.name(), err)
        finally:
            conn.close()

    def stop(self) -> list[str]:
        """Stop everything in the node, in order; return what had to be force-killed."""
        if self._proc is None:
            return []
        if self._proc.poll() is None:
            # Ganeti's daemons first: a watcher or noded must not restart what we stop next.
            self.run(["/usr/lib/ganeti/daemon-util", "stop-all"], check=False, timeout=60)
            if self.host_path("/run/libvirt/libvirt-sock").exists():
                self._destroy_domains()
            pids = [_read_pid(p) for p in self.host_path("/run/ganeti/kvm-hypervisor/pid").glob("*")]
            pids += [_read_pid(self.host_path(f"/run/{d}.pid")) for d in ("libvirtd", "virtlogd", "sshd")]
            pids += [_read_pid(p) for p in self.host_path("/run/libvirt/qemu").glob("*.pid")
                     if p.name != "driver.pid"]
            mine = set(self.processes())
            kill_and_wait([p for p in pids if p is not None and p in mine], 10)
        leaks = [describe(p) for p in self.processes() if p != self.holder_pid]
        if leaks:
            log.warning("%s: still running after the orderly stop: %s", self.name, leaks)
        if self._proc.poll() is None:
            self._proc.terminate()  # the holder SIGTERMs and SIGKILLs whatever is left
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        survivors = self.processes()
        if survivors:
            leaks += [f"could not kill {describe(p)}" for p in survivors]
            kill_and_wait(survivors, 5)
        self._proc = None
        return leaks


# ------------------------------------------------------------------------------ console

CONSOLE_ESCAPE = b"\x1d"  # Ctrl-]: detaches hv_kvm's socat and hvlibvirt's console
PROBE, PROBE_ANSWER = "echo HVL-CON-$((6*7))", b"HVL-CON-42"
END, END_ANSWER = "echo HVL-END-$((6*7))", b"HVL-END-42"


class ConsoleSession:
    """An interactive console command (``gnt-instance console NAME``) run in a node on a pty.

    The markers are computed by the guest's shell (``$((6*7))``), so the terminal's echo
    of what we type never matches them. Keys typed before the console is connected are
    lost: the probe is typed again until the shell answers it.
    """

    def __init__(self, node: ClusterNode, argv: list[str], what: str) -> None:
        self.node = node
        self.argv = argv
        self.what = what
        self.buf = b""
        self.fd = -1

    def exchange(self, typed: str, expect: str, timeout: float) -> str:
        """Type ``typed``; return its output once it matches ``expect``; detach with Ctrl-]."""
        master, slave = pty.openpty()
        self.fd = master
        proc = None
        try:
            proc = subprocess.Popen(self.node.run_argv(self.argv), stdin=slave, stdout=slave, stderr=slave,
                                    start_new_session=True, env=dict(NODE_ENV, TERM="vt100"))
            os.close(slave)
            slave = -1
            deadline = time.monotonic() + timeout
            while not self._read_until(PROBE_ANSWER, 2.0):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise self._error("the guest's shell never answered")
                self._type(PROBE)
            start = len(self.buf)
            self._type(f"{typed}; {END}")
            if not self._read_until(END_ANSWER, max(deadline - time.monotonic(), 5.0)):
                raise self._error(f"no end marker after {typed!r}")
            answer = self._answer(start)
            if not re.search(expect, answer):
                raise self._error(f"{typed!r} answered {answer!r}, which does not match {expect!r}")
            os.write(master, CONSOLE_ESCAPE)
            self._read_until(b"", 10.0, eof=True)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                raise self._error("Ctrl-] did not end the console") from None
            return answer
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for fd in (master, slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _answer(self, start: int) -> str:
        """What follows the last echo of the typed line (the local pty and the guest's
        shell may both echo it), up to the end marker."""
        text = self.buf[start:].decode(errors="replace").split(END_ANSWER.decode(), 1)[0]
        echoed = text.rfind(END)
        return text[echoed:].split("\n", 1)[-1] if echoed >= 0 else text

    def _read_until(self, marker: bytes, timeout: float, eof: bool = False) -> bool:
        """Read until ``marker`` is in the buffer (or, with ``eof``, the command exits)."""
        deadline = time.monotonic() + timeout
        while eof or marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every writer of the pty is gone
                data = b""
            if not data:
                return eof or marker in self.buf
            self.buf += data
        return True

    def _type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def _error(self, what: str) -> ClusterError:
        tail = self.buf[-1500:].decode(errors="replace").replace("\x1b", "^[")
        return ClusterError(f"{self.what} on {self.node.name}: {what}; console output:\n{tail}")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None



def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"({path} missing)"


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data

