"""Tier 6's dom0: a Debian 12 root filesystem with Xen 4.17, libvirt's libxl driver,
Ganeti 3.0's Python modules and the lab's Xen guest, built once into the test cache.

``build_rootfs(cache_dir)`` debootstraps and configures the tree (about 3 minutes cold,
a stat when cached; the key hashes every input below). ``make_image(rootfs, hvlibvirt,
out)`` turns it into a fresh ext4 disk for one session (a few seconds), with the
hvlibvirt being tested copied in, so a dom0 never runs yesterday's library.

The workarounds a nested Xen under QEMU's TCG needs are here or in ``xen_vm``, never in
the library's XML:

* libvirt's libxl driver refuses to start when no CPU model matches the host CPU (TCG has
  no VME, and Xen hides SEP on an AMD-vendor CPU): ``hwcap-shim.so``, preloaded into
  libvirtd, reports SEP, which the emulated CPU does implement;
* libvirtd must start after Debian's ``xen`` service, or the libxl driver never loads;
* xenconsoled only writes PV guest consoles to files with ``--log=guest``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lab.guest import _locked, _run
from lab.xen_guest import DOM0_INITRD, DOM0_ISO, DOM0_KERNEL, build_xen_guest

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = os.environ.get("HVLIBVIRT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
XEN_VERSION = "4.17"
PACKAGES = (
    # Xen, the dom0 kernel, libvirt's libxl driver
    "linux-image-amd64", "xen-system-amd64", "qemu-system-xen", "libvirt-daemon",
    "libvirt-daemon-driver-xen", "libvirt-daemon-system", "libvirt-clients",
    # what hvlibvirt and Ganeti's objects need in dom0 (Debian's Python, as on a node)
    "python3-libvirt", "python3-lxml", "python3-psutil", "ganeti-3.0",
    # the lab: ssh from the host, bridges for guest NICs, loop devices for file disks
    "openssh-server", "bridge-utils", "iproute2", "e2fsprogs", "busybox-static",
    "initramfs-tools", "zstd", "netbase", "util-linux", "procps",
)
# Bump when the configuration below changes in a way the hashed inputs do not capture.
BUILD_FORMAT = 1
NODE_SCRIPT = Path(__file__).with_name("xen_node.py")
# Beside it in /opt/hvlibvirt: what it instruments libvirt-python with for a request's
# ``fail_at`` (the tests' own module, shared with the other fault tiers).
NODE_FILES = (NODE_SCRIPT, Path(__file__).parent.parent / "fault_injection.py")
SHIM_SOURCE = r"""/* tier 6: report SEP in libxl's physinfo so libvirt's CPU decoder finds a model */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libxl.h>
int libxl_get_physinfo(libxl_ctx *ctx, libxl_physinfo *physinfo)
{
    static int (*real)(libxl_ctx *, libxl_physinfo *);
    if (!real)
        real = (int (*)(libxl_ctx *, libxl_physinfo *))dlsym(RTLD_NEXT, "libxl_get_physinfo");
    int rc = real(ctx, physinfo);
    /* CPUID.1:EDX bit 1 (VME) and bit 11 (SEP): libvirt needs one of them */
    if (rc == 0 && physinfo->hw_cap[0] && !(physinfo->hw_cap[0] & ((1u << 1) | (1u << 11))))
        physinfo->hw_cap[0] |= 1u << 11;
    return rc;
}
"""
# name -> content, relative to the root filesystem.
CONFIG_FILES = {
    "etc/hostname": "xendom0\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 xendom0\n",
    "etc/fstab": "/dev/vda / ext4 defaults,noatime 0 1\n",
    "etc/ssh/sshd_config.d/hvl.conf": "UseDNS no\nPermitRootLogin prohibit-password\n",
    # QEMU's user network (restrict=on) only carries the host's ssh forward.
    "etc/systemd/network/10-dhcp.network": "[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n",
    # A bridge for guest NICs (Ganeti's bridged mode), with no uplink.
    "etc/systemd/network/20-xenbr0.netdev": "[NetDev]\nName=xenbr0\nKind=bridge\n",
    "etc/systemd/network/21-xenbr0.network":
        "[Match]\nName=xenbr0\n[Network]\nAddress=10.78.0.1/24\nConfigureWithoutCarrier=yes\n",
    "etc/systemd/system/libvirtd.service.d/xen.conf":
        "[Unit]\nWants=xen.service\nAfter=xen.service\n"
        "[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/hwcap-shim.so\n",
    "etc/systemd/system/hvl-ready.service":
        "[Unit]\nAfter=libvirtd.service ssh.service xen.service\n"
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'virsh -c xen:///system version "
        ">/dev/null 2>&1; echo \"HVL-DOM0-READY libvirt=$?\" >/dev/hvc0'\n"
        "[Install]\nWantedBy=multi-user.target\n",
}
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "systemd-networkd-wait-online.service", "ganeti.service",
                "man-db.timer", "fstrim.timer",
                # nothing may save, restore or resume guests behind the tests' back
                "libvirt-guests.service", "xendomains.service")
ENABLED_UNITS = ("systemd-networkd.service", "hvl-ready.service")


def _key() -> str:
    h = hashlib.sha256()
    for part in (str(BUILD_FORMAT), SUITE, MIRROR, " ".join(PACKAGES), SHIM_SOURCE,
                 json.dumps(CONFIG_FILES, sort_keys=True), " ".join(MASKED_UNITS),
                 " ".join(ENABLED_UNITS)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    mounted = []
    try:
        for d in ("proc", "sys", "dev", "dev/pts"):
            _run(["mount", "--bind", f"/{d}", str(root / d)])
            mounted.append(root / d)
        yield
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], check=False)


def _install(root: Path, logfile: Path) -> None:
    """Debootstrap, then the packages from the full suite (Xen's and the kernel's current
    versions live in bookworm-updates and -security, which debootstrap does not know)."""
    _run(["debootstrap", "--variant=minbase",
          "--include=systemd-sysv,udev,kmod,ca-certificates", SUITE, str(root), MIRROR])
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    security = MIRROR.rsplit("/debian", 1)[0] + "/debian-security"
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    # Maintainer scripts must not start Xen, libvirtd or sshd on the build host.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    with _chroot_mounts(root), open(logfile, "w") as out:
        subprocess.run(["chroot", str(root), "sh", "-c",
                        "apt-get update -q && apt-get install -y -q --no-install-recommends "
                        + " ".join(PACKAGES) + " && apt-get clean"],
                       check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _build_shim(root: Path, work: Path) -> None:
    """The libxl CPU-feature shim, compiled on the host against libxen-dev's headers
    (downloaded and unpacked, not installed)."""
    _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "libxen-dev"],
         cwd=work)
    (deb,) = work.glob("libxen-dev_*.deb")
    _run(["dpkg-deb", "-x", str(deb), str(work / "xdev")])
    (work / "shim.c").write_text(SHIM_SOURCE)
    out = root / "usr/local/lib/hwcap-shim.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{work}/xdev/usr/include",
          "-o", str(out), str(work / "shim.c"), "-ldl"])


def _configure(root: Path, cache_dir: Path) -> None:
    for rel, text in CONFIG_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["chroot", str(root), "systemctl", "mask", *MASKED_UNITS],
                   check=False, capture_output=True)
    _run(["chroot", str(root), "systemctl", "enable", *ENABLED_UNITS])
    xen_default = root / "etc/default/xen"
    lines = [ln for ln in xen_default.read_text().splitlines()
             if not ln.startswith("XENCONSOLED_ARGS=")]
    lines.append('XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"')
    xen_default.write_text("\n".join(lines) + "\n")
    (root / "var/log/xen/console").mkdir(parents=True, exist_ok=True)
    # dom0 keeps its fixed memory; guests take Xen's free heap.
    for conf, line in (("etc/xen/xl.conf", 'autoballoon="off"'),
                       ("etc/libvirt/libxl.conf", "autoballoon = 0")):
        path = root / conf
        path.write_text(path.read_text() + line + "\n")
    guest = build_xen_guest(cache_dir)
    for src, dest in ((guest.kernel, DOM0_KERNEL), (guest.initrd, DOM0_INITRD),
                      (guest.iso, DOM0_ISO)):
        path = root / dest.relative_to("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)


def build_rootfs(cache_dir: Path) -> Path:
    """The configured dom0 tree in ``cache_dir/xen``, built when missing."""
    base = cache_dir / "xen"
    base.mkdir(parents=True, exist_ok=True)
    root = base / f"rootfs-{_key()}"
    with _locked(base / ".build.lock"):
        if (root / ".complete").exists():
            return root
        t0 = time.monotonic()
        for old in base.glob("rootfs-*"):
            shutil.rmtree(old, ignore_errors=True)
        work = Path(tempfile.mkdtemp(dir=base, prefix="build-"))
        try:
            tree = work / "rootfs"
            tree.mkdir()
            _install(tree, base / "install.log")
            _build_shim(tree, work)
            _configure(tree, cache_dir)
            (tree / ".complete").write_text(time.strftime("%F %T\n"))
            os.replace(tree, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("dom0 root filesystem built in %.0fs", time.monotonic() - t0)
    return root


def boot_files(root: Path) -> tuple[Path, Path, Path]:
    """(Xen, dom0 kernel, dom0 initrd) inside the tree."""
    xen = next(root.glob(f"boot/xen-{XEN_VERSION}-amd64.gz"))
    kernel = sorted(root.glob("boot/vmlinuz-*-amd64"))[-1]
    initrd = root / "boot" / kernel.name.replace("vmlinuz", "initrd.img")
    return xen, kernel, initrd


def make_image(root: Path, package: Path, authorized_key: str, out: Path,
               files: dict[str, tuple[str, int]] | None = None) -> None:
    """A fresh dom0 disk at ``out``: the tree, this session's hvlibvirt package in
    /opt/hvlibvirt, the node script, the host's ssh key and ``files`` (path relative to
    the root -> (content, mode): this host's identity in a pair of dom0s)."""
    with tempfile.TemporaryDirectory(dir=out.parent) as extra:
        overlay = Path(extra)
        shutil.copytree(package, overlay / "opt/hvlibvirt/hvlibvirt",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for script in NODE_FILES:
            shutil.copyfile(script, overlay / "opt/hvlibvirt" / script.name)
        ssh = overlay / "root/.ssh"
        ssh.mkdir(parents=True, mode=0o700)
        (ssh / "authorized_keys").write_text(authorized_key)
        (ssh / "authorized_keys").chmod(0o600)
        for rel, (text, mode) in (files or {}).items():
            path = overlay / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        out.unlink(missing_ok=True)
        with open(out, "wb") as f:
            f.truncate(6 << 30)
        # mkfs -d copies one tree: stage the tree's top level and the overlay side by side
        # through a bind-free merge (hard links keep it cheap).
        tops = sorted(str(p) for p in overlay.iterdir())
        staging = overlay / "staging"
        _run(["cp", "-al", str(root), str(staging)])
        # Replaced, not written through: the staged files are hard links into the cache.
        _run(["cp", "-a", "--remove-destination", *tops, f"{staging}/"])
        _run(["mkfs.ext4", "-q", "-F", "-L", "xendom0", "-d", str(staging), str(out)])
