"""The holder of one lab Ganeti node: namespace anchor, child subreaper and command runner.

Server (started by tests/lab/cluster_node.py inside a fresh network namespace)::

    ip netns exec NS unshare -m -u --propagation private python -I cluster_holder.py serve SPEC.json

SPEC is ``{"pidfile": str, "socket": str, "hostname": str, "mounts": [argv, ...]}``. The
holder marks itself PR_SET_CHILD_SUBREAPER, listens on ``socket``, runs the mount
commands (the node's overlays), sets the hostname, writes its pid and then starts
every command it is asked to run as its own child.

Client (what ``ClusterNode.run`` executes on the host)::

    python -I cluster_holder.py run SOCKET CWD ARGV...

passes its stdin/stdout/stderr and environment to the holder, which runs ARGV with
them in a new session; the client exits with ARGV's exit status (128+N for signal N).
If the client dies first (a timeout), the holder kills ARGV's session.

Why not ``nsenter``: nsenter gives a command the node's namespaces but not its
ancestry. Daemons that command starts (``gnt-cluster init`` starts Ganeti's daemons,
hv_kvm daemonizes QEMU) would orphan to PID 1, which here reaps late, and Ganeti takes
a zombie QEMU for a running one. Started by the holder, every process of the node is
the holder's descendant and is reaped at once.

Standard library only: it runs with ``sys.executable -I`` and must not import the project.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import termios
import time

PR_SET_CHILD_SUBREAPER = 36
KILL_GRACE_S = 5.0
MAX_REQUEST = 1 << 20

log = logging.getLogger("hvlg-holder")

# Run with -I (no script directory on sys.path): the sibling subreaper module has the
# one way of listing this process's children, re-parented orphans included.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from subreaper import children as _children  # noqa: E402


# ------------------------------------------------------------------------------ server

def _signal_all(pids: list[int], sig: int, group: bool = False) -> None:
    for pid in pids:
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _make_ctty() -> None:
    """In the child (after setsid): a terminal on stdin becomes the controlling tty,
    as it would in a login session (ssh -t and the consoles expect one)."""
    if os.isatty(0):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Holder:
    """The serve loop: one request per connection, replies with the exit status."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.running: dict[int, socket.socket] = {}  # command pid -> its client
        self.doomed: dict[int, float] = {}  # command pid -> when to SIGKILL its session
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self.wakeup = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the fd
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(rfd, selectors.EVENT_READ, "signal")

    def _on_sigterm(self, _signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _children()
            _signal_all(pids, sig)
            deadline = time.monotonic() + KILL_GRACE_S
            while pids and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.05)
                pids = _children()
        sys.exit(0)

    def _start(self, conn: socket.socket) -> None:
        data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
        try:
            req = json.loads(data)
            if len(fds) != 3:
                raise ValueError(f"expected 3 descriptors, got {len(fds)}")
            proc = subprocess.Popen(req["argv"], stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                    cwd=req["cwd"], env=req["env"], start_new_session=True,
                                    preexec_fn=_make_ctty)  # noqa: PLW1509 (no threads here)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as err:
            conn.sendall(json.dumps({"error": f"cannot start: {err}"}).encode())
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        # The holder reaps with waitpid(-1); Popen must never wait for this pid itself.
        proc.returncode = 0
        self.running[proc.pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, proc.pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.doomed.pop(pid, None)
            conn = self.running.pop(pid, None)
            if conn is None:
                continue  # an orphan re-parented to us, or a command whose client left
            self.sel.unregister(conn)
            try:
                conn.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass
            conn.close()

    def _client_gone(self, pid: int) -> None:
        """The client disconnected before its command ended (it timed out): kill the command."""
        conn = self.running.pop(pid)
        self.sel.unregister(conn)
        conn.close()
        _signal_all([pid], signal.SIGTERM, group=True)
        self.doomed[pid] = time.monotonic() + KILL_GRACE_S

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "accept":
                    conn, _ = self.listener.accept()
                    self._start(conn)
                elif key.data == "signal":
                    try:
                        while os.read(self.wakeup, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    try:
                        if conn.recv(1, socket.MSG_PEEK) == b"":
                            self._client_gone(key.data)
                    except OSError:
                        self._client_gone(key.data)
            self._reap()
            now = time.monotonic()
            for pid, when in list(self.doomed.items()):
                if now >= when:
                    _signal_all([pid], signal.SIGKILL, group=True)
                    del self.doomed[pid]


def serve(spec_path: str) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s holder[%(process)d] %(message)s")
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.error("prctl(PR_SET_CHILD_SUBREAPER): %s", os.strerror(ctypes.get_errno()))
        return 1
    # Bound before the mounts: the socket must be where the host sees it, and the mounts
    # may hide that path (a private /tmp) inside the node.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(spec["socket"])
    listener.listen(64)
    piddir = os.open(os.path.dirname(spec["pidfile"]), os.O_RDONLY | os.O_DIRECTORY)
    for argv in spec["mounts"]:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode
        if rc != 0:
            log.error("%s failed with exit code %d", argv, rc)
            return 2
    socket.sethostname(spec["hostname"])
    # Through the directory opened before the mounts, and atomically: the host starts
    # using the node as soon as the pidfile exists.
    name = os.path.basename(spec["pidfile"])
    fd = os.open(f"{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=piddir)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os.rename(f"{name}.tmp", name, src_dir_fd=piddir, dst_dir_fd=piddir)
    os.close(piddir)
    log.info("node %s ready", spec["hostname"])
    Holder(listener).serve()
    return 0


# ------------------------------------------------------------------------------ client

def run(sock_path: str, cwd: str, argv: list[str]) -> int:
    """Have the holder run ``argv`` on our stdin/stdout/stderr; return its exit code."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    req = json.dumps({"argv": argv, "cwd": cwd, "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [req], [0, 1, 2])
    reply = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except InterruptedError:
            continue
        except OSError as err:
            if err.errno == errno.ECONNRESET:
                break
            raise
        if not chunk:
            break
        reply += chunk
    if not reply:
        sys.stderr.write("cluster_holder: the holder closed the connection without a status\n")
        return 125
    answer = json.loads(reply)
    if "error" in answer:
        sys.stderr.write(f"cluster_holder: {answer['error']}\n")
        return 127
    rc = int(answer["rc"])
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "serve":
        return serve(argv[2])
    if len(argv) >= 5 and argv[1] == "run":
        return run(argv[2], argv[3], argv[4:])
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
