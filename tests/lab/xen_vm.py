"""Tier 6's machine: QEMU (TCG) booting Xen as a multiboot kernel with the dom0 kernel
and initrd as modules, the dom0 disk from ``xen_image``, reached over ssh on a loopback
port (QEMU's user network with ``restrict=on``: nothing leaves QEMU but that forward).

``Dom0.call(hv, method, *args)`` runs one hypervisor call in dom0 through
``xen_node.py`` (a forked child per call, as Ganeti's node daemon); ``Dom0.sh(cmd)``
runs a command there; ``Dom0.faults()`` lists the signatures of the known fault of a
nested Xen under TCG (processes in dom0 or a guest dying of memory corruption), which
the tests tell apart from a failed hvlibvirt assertion.

TCG workarounds, all here and none in the library's XML:

* ``-cpu qemu64,+svm,+npt``: an AMD-vendor CPU with SVM and NPT, so Xen offers HVM
  with HAP. With ``-cpu max`` (the reference recipe's, with ``-smap`` for TCG's IRETQ)
  processes in dom0 and the guests die of corrupted memory within the first guest
  cycle, on QEMU 7.2 and 10 and Xen 4.17 and 4.20 alike; with this model a dom0 ran
  an hour of guest cycles without one (docs/xen-tier.md). It also has no RDTSCP,
  whose intercept TCG misreports, which kills HVM guests otherwise;
* one vCPU and single-threaded TCG;
* dom0's kernel at ``loglevel=7``: segfault reports are KERN_INFO, and on the serial
  log they stay readable when the process that died is dom0's sshd.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.xen_image import NODE_FILES, boot_files, build_rootfs, make_image

log = logging.getLogger(__name__)

QEMU = os.environ.get("HVLIBVIRT_XEN_QEMU", "qemu-system-x86_64")
CPU = os.environ.get("HVLIBVIRT_XEN_CPU", "qemu64,+svm,+npt")
MEMORY_MIB = 4096
DOM0_MEMORY_MIB = 1024
XEN_ARGS = ("console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
            f"dom0_mem={DOM0_MEMORY_MIB}M,max:{DOM0_MEMORY_MIB}M dom0_max_vcpus=1 noreboot")
DOM0_ARGS = "root=/dev/vda rw console=hvc0 loglevel=7"
READY = "HVL-DOM0-READY libvirt=0"
BOOT_TIMEOUT = 900
# Kernel and systemd lines of a process or domain dying of the known fault.
FAULT = re.compile(r"segfault at|general protection|traps: |invalid opcode|code=dumped|"
                   r"Kernel panic|Oops:|BUG: |corrupted|\(XEN\) .*(Fatal|crashed|Unhandled)")
RUN_PREFIX = "hvl-xen-"


class Dom0Error(RuntimeError):
    """dom0 did not boot, or stopped answering."""


PEER_NET = "10.79.0"  # the link between the two dom0s of a pair


@dataclass(frozen=True)
class PeerLink:
    """A pair of dom0s joined by a second NIC each: QEMU's UDP socket network, one
    loopback port per end, so either may boot first. Host ``index`` (1 or 2) is
    ``xendom{index - 1}`` at ``10.79.0.<index>``; both have the pair's root key, so each
    libvirtd reaches the other over ``xen+ssh://`` (what a migration needs)."""

    ports: tuple[int, int]
    private_key: str
    public_key: str

    @classmethod
    def new(cls) -> PeerLink:
        with tempfile.TemporaryDirectory(dir="/var/tmp", prefix=RUN_PREFIX + "key-") as tmp:
            key = Path(tmp) / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "hvl-tier6-pair", "-f", str(key)], check=True)
            return cls((_free_port("udp"), _free_port("udp")), key.read_text(),
                       key.with_suffix(".pub").read_text())

    @staticmethod
    def address(index: int) -> str:
        return f"{PEER_NET}.{index}"

    @staticmethod
    def hostname(index: int) -> str:
        return f"xendom{index - 1}"

    def qemu_args(self, index: int) -> list[str]:
        local, remote = self.ports if index == 1 else self.ports[::-1]
        return ["-netdev", f"socket,id=n1,udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}",
                "-device", f"virtio-net-pci,netdev=n1,mac=52:54:00:79:00:0{index}",
                "-uuid", f"00000000-0000-4000-8000-00000000790{index}"]

    def files(self, index: int, host_key: str) -> dict[str, tuple[str, int]]:
        """This end's identity, written into its dom0 image."""
        hosts = "".join(f"{self.address(i)} {self.hostname(i)}\n" for i in (1, 2))
        return {
            "etc/hostname": (self.hostname(index) + "\n", 0o644),
            "etc/hosts": (f"127.0.0.1 localhost\n{hosts}", 0o644),
            # Sorted before the image's DHCP match of every NIC: this one is static.
            "etc/systemd/network/05-peer.network": (
                f"[Match]\nMACAddress=52:54:00:79:00:0{index}\n[Network]\n"
                f"Address={self.address(index)}/24\n", 0o644),
            "root/.ssh/authorized_keys": (host_key + self.public_key, 0o600),
            "root/.ssh/id_ed25519": (self.private_key, 0o600),
            "root/.ssh/config": ("Host xendom* 10.79.0.*\n  StrictHostKeyChecking no\n"
                                 "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n", 0o600),
        }


def _free_port(kind: str = "tcp") -> int:
    with socket.socket(type=socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prune_run_dirs(run_root: Path) -> None:
    """Remove run dirs (6 GB sparse images) of test processes killed before their
    teardown; their QEMU died with them."""
    for path in run_root.glob(RUN_PREFIX + "*"):
        try:
            os.kill(int((path / "owner.pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            pass  # not ours to judge (no owner file yet, or another user's)


def _die_with_parent() -> None:
    # QEMU must not outlive the test session, however that ends.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Dom0:
    """One booted nested Xen host. Use as a context manager, or start()/stop()."""

    def __init__(self, cache_dir: Path, package: Path, run_root: Path = Path("/var/tmp"),
                 link: tuple[PeerLink, int] | None = None):
        """``link``: this dom0's end (1 or 2) of a pair's link."""
        self.cache_dir, self.package, self.run_root = cache_dir, package, run_root
        self.link = link
        self.dir: Path | None = None
        self.qemu: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.node: subprocess.Popen[str] | None = None
        self._node_lock = threading.Lock()
        self.boot_seconds = 0.0
        self.owned = True  # started (and so stopped) by this object

    @classmethod
    def attached(cls, cache_dir: Path, package: Path, port: int, run_dir: Path) -> Dom0:
        """A dom0 another process booted (``python -m lab.xen_vm``), given this package."""
        dom0 = cls(cache_dir, package)
        dom0.dir, dom0.port, dom0.owned = run_dir, port, False
        tar = subprocess.run(["tar", "-C", str(package.parent), "--exclude=__pycache__",
                              "-cf", "-", package.name], check=True, capture_output=True).stdout
        subprocess.run([*dom0.ssh_argv(), "rm -rf /opt/hvlibvirt/hvlibvirt && "
                        "tar -C /opt/hvlibvirt -xf -"],
                       input=tar, check=True, timeout=120)
        for script in NODE_FILES:
            subprocess.run([*dom0.ssh_argv(), f"cat > /opt/hvlibvirt/{script.name}"],
                           input=script.read_bytes(), check=True, timeout=60)
        return dom0

    # -- life ----------------------------------------------------------------------
    def start(self) -> None:
        rootfs = build_rootfs(self.cache_dir)
        _prune_run_dirs(self.run_root)
        self.dir = Path(tempfile.mkdtemp(dir=self.run_root, prefix=RUN_PREFIX))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        key = self.dir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hvl-tier6",
                        "-f", str(key)], check=True)
        host_key = key.with_suffix(".pub").read_text()
        files = self.link[0].files(self.link[1], host_key) if self.link else None
        make_image(rootfs, self.package, host_key, self.dir / "dom0.img", files)
        xen, kernel, initrd = boot_files(rootfs)
        # QEMU's multiboot loader takes the ELF32 image, not Debian's gzipped one.
        (self.dir / "xen").write_bytes(gzip.decompress(xen.read_bytes()))
        self.port = _free_port()
        argv = [QEMU, "-accel", "tcg,thread=single", "-machine", "q35", "-cpu", CPU,
                "-smp", "1", "-m", str(MEMORY_MIB), "-display", "none", "-no-reboot",
                "-monitor", "none", "-kernel", str(self.dir / "xen"), "-append", XEN_ARGS,
                # Modules: "kernel args,initrd" (a comma in the args would split them).
                "-initrd", f"{kernel} {DOM0_ARGS},{initrd}",
                "-drive", f"file={self.dir / 'dom0.img'},if=virtio,format=raw,cache=unsafe",
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=n0",
                *(self.link[0].qemu_args(self.link[1]) if self.link else ()),
                "-serial", f"file:{self.serial_path}"]
        t0 = time.monotonic()
        self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "qemu.log", "wb"),
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        log.info("dom0 up in %.0fs (ssh port %d)", self.boot_seconds, self.port)

    @property
    def serial_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "serial.log"

    def serial(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self, t0: float) -> None:
        assert self.qemu is not None
        while READY not in self.serial():
            if self.qemu.poll() is not None:
                raise Dom0Error(f"QEMU exited ({self.qemu.returncode}) while booting:\n"
                                + self.serial()[-3000:])
            if time.monotonic() - t0 > BOOT_TIMEOUT:
                raise Dom0Error("dom0 not ready after %ds:\n%s" % (BOOT_TIMEOUT,
                                                                   self.serial()[-3000:]))
            time.sleep(1)
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.sh("true", timeout=30, check=False).returncode == 0:
                    return
            if time.monotonic() - t0 > BOOT_TIMEOUT:
                raise Dom0Error("dom0's sshd does not answer")
            time.sleep(2)

    def stop(self) -> None:
        """Power dom0 off (Xen halts), then make sure QEMU is gone; remove the run dir."""
        if self.node is not None:
            self.node.kill()
            self.node.wait()
            self.node = None
        if self.qemu is not None:
            if self.qemu.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.sh("poweroff", timeout=10, check=False)
                try:
                    self.qemu.wait(30)
                except subprocess.TimeoutExpired:
                    self.qemu.kill()
                    self.qemu.wait()
            self.qemu = None
        if self.dir is not None and self.owned:
            keep = os.environ.get("HVLIBVIRT_XEN_KEEP")
            if keep:
                shutil.copytree(self.dir, keep, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("dom0.img", "xen"))
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Dom0:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dom0 --------------------------------------------------------------------
    def ssh_argv(self, *extra: str) -> list[str]:
        assert self.dir is not None
        return ["ssh", "-p", str(self.port), "-i", str(self.dir / "id_ed25519"),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
                *extra, "root@127.0.0.1"]

    def sh(self, command: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in dom0's shell (a fixed string of the test's, never input)."""
        proc = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise Dom0Error(f"dom0 {command!r} failed ({proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def call(self, hv: str, method: str, *args: Any, timeout: float = 300,
             fail_at: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """One hypervisor call in a forked dom0 child; the node script's answer.
        ``fail_at``: libvirt counted in the child, its call number ``fail_at`` failed
        (0: only counted); the answer's ``calls`` names them."""
        request = {"hv": hv, "method": method, "args": args, "kwargs": kwargs}
        if fail_at is not None:
            request["fail_at"] = fail_at
        return self._node_request(request, method, timeout)

    def node_view(self, name: str, reported: str | None = None, timeout: float = 120
                  ) -> dict[str, Any]:
        """What xl and libvirt have of the domain ``name`` and, with ``reported`` (a
        hypervisor name), what that class reports of it (the node script's ``view``)."""
        request = {"view": name} if reported is None else {"view": name, "reported": reported}
        return self._node_request(request, f"view {name}", timeout)

    def _node_request(self, request: dict[str, Any], what: str, timeout: float
                      ) -> dict[str, Any]:
        with self._node_lock:
            if self.node is None or self.node.poll() is not None:
                self.node = subprocess.Popen(
                    [*self.ssh_argv(), "python3", "/opt/hvlibvirt/xen_node.py"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=open(self.dir / "node.log", "a"), text=True)
            assert self.node.stdin is not None and self.node.stdout is not None
            self.node.stdin.write(json.dumps(request) + "\n")
            self.node.stdin.flush()
            line = _readline(self.node, timeout)
            if not line:
                self.node.kill()
                self.node = None
                raise Dom0Error(f"{what}: the node script in dom0 gave no answer")
            return json.loads(line)

    def faults(self) -> list[str]:
        """Lines showing the known infrastructure fault in dom0's kernel log, its systemd
        journal or Xen's console; dom0 not answering is one too."""
        lines = [ln for ln in self.serial().splitlines() if FAULT.search(ln)]
        try:
            proc = self.sh("journalctl -b -o cat --no-pager -p warning", timeout=60,
                           check=False)
        except subprocess.TimeoutExpired:
            return [*lines, "dom0: ssh timed out"]
        if proc.returncode != 0:
            return [*lines, f"dom0: ssh failed ({proc.returncode}) {proc.stderr.strip()}"]
        return lines + [ln for ln in proc.stdout.splitlines() if FAULT.search(ln)]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """A line from ``proc``'s stdout, or '' after ``timeout`` seconds or at its end."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def main() -> None:
    """Boot a dom0 (``--pair``: two, linked) and keep it until one stops, for
    HVLIBVIRT_XEN_ATTACH (and HVLIBVIRT_XEN_PEER_ATTACH)."""
    import hvlibvirt
    from lab.guest import default_cache_dir

    import sys

    logging.basicConfig(level=logging.INFO)
    package = Path(hvlibvirt.__file__).resolve().parent
    link = PeerLink.new() if "--pair" in sys.argv[1:] else None
    dom0s = [Dom0(default_cache_dir(), package, link=(link, i) if link else None)
             for i in ((1, 2) if link else (1,))]
    try:
        for dom0, var in zip(dom0s, ("HVLIBVIRT_XEN_ATTACH", "HVLIBVIRT_XEN_PEER_ATTACH")):
            dom0.start()
            print(f"export {var}={dom0.port}:{dom0.dir}", flush=True)
        while all(d.qemu is not None and d.qemu.poll() is None for d in dom0s):
            time.sleep(5)
    except KeyboardInterrupt:
        pass
    finally:
        for dom0 in dom0s:
            dom0.stop()


if __name__ == "__main__":
    main()
