"""Build (and cache) the lab guest: a Debian cloud kernel plus a busybox initramfs.

Nothing is installed on the host: the kernel package is fetched with ``apt-get
download`` and unpacked with ``dpkg-deb -x``. The initramfs ``/init`` reports on the
serial console what host-side tests need to observe:

* ``HVL-DEV blk=vda,sda net=eth0,lo mem=<MemTotal kB> size=vda:<sectors>,...`` at
  boot and whenever it changes (polled every 0.1 s; kernel option ``hvlpoll=0``
  turns polling off, ``hvlpoll=0.5`` slows it down);
* ``HVL-READY uptime=<seconds>`` once modules are loaded and acpid listens;
* ``HVL-MODPROBE-FAILED <module>`` if a module fails to load.

``REQUIRED_MODULES`` load at every boot. ``OPTIONAL_MODULES`` the kernel ships (see
``GuestImage.extra_modules``) are in the initramfs but load only when asked for with
the kernel option ``hvlmods=ata_piix,...``: probing the IDE controller alone costs
~0.5 s of boot under TCG.
* ``HVL-ACPI-POWEROFF`` when the ACPI power button is pressed (then ``poweroff -f``).

After HVL-READY a shell runs on ttyS0.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "HVLIBVIRT_TEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/hvlibvirt-tests")
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
# Arguments the guest kernel needs; quiet keeps the serial log small and fast under TCG.
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1"

# Present at every boot: loaded by /init, unless the kernel has them built in (Debian 13's
# cloud kernel builds virtio_pci and virtio_console in).
REQUIRED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon", "virtio_scsi",
                    "sd_mod", "virtio_console", "button", "evdev")
# Shipped when the kernel has them (the cloud kernel has none of the NIC/LSI ones),
# loaded only on request (hvlmods=).
OPTIONAL_MODULES = ("ata_piix", "sym53c8xx", "e1000", "8139cp")
KEEP_INITRDS = 5
# Bump when the build procedure changes in a way the hashed inputs do not capture.
BUILD_FORMAT = 1

INIT_SCRIPT = r"""#!/bin/sh
# hvlibvirt lab guest /init (busybox). Reports state on ttyS0 for the host-side tests.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/ttyS0 2>&1
poll=0.1
extra=""
for a in $(cat /proc/cmdline); do
  case $a in
    hvlpoll=*) poll=${a#hvlpoll=} ;;
    hvlmods=*) extra=$(echo "${a#hvlmods=}" | tr , ' ') ;;
  esac
done
for m in $(cat /etc/hvl-modules) $extra; do modprobe "$m" 2>/dev/null || echo "HVL-MODPROBE-FAILED $m"; done

# The power button only produces an input event; acpid maps it to PWRF/00000080.
acpid -d -c /etc/acpi </dev/null &
apid=$!
# A button press before acpid opened the input devices is lost: wait for that (max 2 s).
i=0
while [ $i -lt 40 ] && ! ls -l /proc/$apid/fd 2>/dev/null | grep -q /dev/input/event; do
  sleep 0.05; i=$((i + 1))
done

devstate() {
  blk=""; size=""; net=""
  for d in /sys/block/*; do
    [ -e "$d" ] || continue
    n=${d##*/}
    blk="$blk${blk:+,}$n"
    size="$size${size:+,}$n:$(cat "$d/size")"
  done
  for d in /sys/class/net/*; do
    [ -e "$d" ] || continue
    net="$net${net:+,}${d##*/}"
  done
  mem=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  echo "blk=$blk net=$net mem=$mem size=$size"
}
old=$(devstate)
echo "HVL-DEV $old"
if [ "$poll" != 0 ]; then
  (
    while :; do
      new=$(devstate)
      if [ "$new" != "$old" ]; then echo "HVL-DEV $new"; old=$new; fi
      sleep "$poll"
    done
  ) &
fi
echo "HVL-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
while :; do
  setsid cttyhack sh -l </dev/ttyS0 >/dev/ttyS0 2>&1 || sleep 1
done
"""

ACPI_POWER_SCRIPT = """#!/bin/sh
echo "HVL-ACPI-POWEROFF" >/dev/ttyS0
poweroff -f
"""


@dataclass(frozen=True)
class GuestImage:
    """A bootable lab guest: pass ``kernel``/``initrd`` to a direct-kernel-boot domain."""

    kernel: Path
    initrd: Path
    kernel_version: str
    modules: tuple[str, ...] = ()  # modules loaded at every boot
    extra_modules: tuple[str, ...] = ()  # in the initramfs, loaded with kernel option hvlmods=a,b
    cmdline: str = KERNEL_CMDLINE


def default_cache_dir() -> Path:
    """``$HVLIBVIRT_TEST_CACHE`` or /var/cache/hvlibvirt-tests."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE_DIR


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builds between concurrent test sessions sharing one cache."""
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f"{argv!r} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def resolve_kernel_package(metapackage: str = KERNEL_METAPACKAGE) -> str:
    """The concrete ``linux-image-<version>`` package the metapackage depends on."""
    out = _run(["apt-cache", "depends", metapackage]).stdout
    m = re.search(r"^\s*Depends:\s*(linux-image-\S+)", out, re.MULTILINE)
    if not m:
        raise RuntimeError(f"apt-cache depends {metapackage}: no linux-image dependency in:\n{out}")
    return m.group(1)


def _ensure_kernel(kdir: Path) -> tuple[Path, str, Path]:
    """Download and unpack the kernel once; return (vmlinuz, version, .deb)."""
    stamp = kdir / "kernel.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        vmlinuz, deb = kdir / info["version"] / "vmlinuz", kdir / info["deb"]
        if vmlinuz.exists() and deb.exists():
            return vmlinuz, info["version"], deb
    pkg = resolve_kernel_package()
    log.info("downloading %s", pkg)
    t0 = time.monotonic()
    kdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kdir) as tmp:
        # The sandbox option silences apt's warning about _apt not being able to write here.
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg], cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"apt-get download {pkg} produced {debs}")
        deb = kdir / debs[0].name
        os.replace(debs[0], deb)
    with tempfile.TemporaryDirectory(dir=kdir) as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp])
        versions = os.listdir(_modules_root(Path(tmp)))
        if len(versions) != 1:
            raise RuntimeError(f"{deb.name}: expected one module tree, found {versions}")
        version = versions[0]
        (kdir / version).mkdir(exist_ok=True)
        vmlinuz = kdir / version / "vmlinuz"
        shutil.copyfile(Path(tmp, "boot", f"vmlinuz-{version}"), vmlinuz)
    stamp.write_text(json.dumps({"package": pkg, "version": version, "deb": deb.name}))
    log.info("kernel %s ready in %.1fs", version, time.monotonic() - t0)
    return vmlinuz, version, deb


def _modules_root(tree: Path) -> Path:
    """The ``modules`` directory of an unpacked kernel package: lib/modules up to Debian 12,
    usr/lib/modules from Debian 13 (merged /usr)."""
    for candidate in (tree / "lib" / "modules", tree / "usr" / "lib" / "modules"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"no lib/modules or usr/lib/modules in {tree}")


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\..*)?$", "", os.path.basename(path)).replace("-", "_")


def builtin_modules(modules_dir: Path) -> set[str]:
    """The modules this kernel has built in (its modules.builtin)."""
    listing = modules_dir / "modules.builtin"
    if not listing.exists():
        return set()
    return {_module_name(line) for line in listing.read_text().split()}


def _module_closure(modules_dir: Path, required: tuple[str, ...],
                    optional: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(module files relative to modules_dir incl. dependencies, optional modules available).
    A required module the kernel has built in needs no file."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[_module_name(path)] = (path, rest.split())
    by_path = {path: name for name, (path, _) in deps.items()}
    builtin = builtin_modules(modules_dir)
    missing = [m for m in required if m not in deps and m not in builtin]
    if missing:
        raise RuntimeError(f"kernel lacks required modules {missing} (neither a file nor built in)")
    required = tuple(m for m in required if m in deps)
    available = [m for m in optional if m in deps]
    skipped = [m for m in optional if m not in deps]
    if skipped:
        log.info("optional guest modules not shipped by this kernel: %s", skipped)
    files: set[str] = set()
    todo = [*required, *available]
    while todo:
        path, more = deps[todo.pop()]
        if path not in files:
            files.add(path)
            todo.extend(by_path[p] for p in more)
    return sorted(files), available


def _newc_archive(root: Path) -> bytes:
    """The initramfs cpio (newc) of ``root``, gzip-compressed, with a stable file order."""
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for n in sorted(dirnames + filenames):
            names.append(os.path.join(".", rel, n) if rel != "." else f"./{n}")
    cpio = subprocess.run([str(BUSYBOX), "cpio", "-o", "-H", "newc"], cwd=root, check=True,
                          input=("\n".join(names) + "\n").encode(), capture_output=True).stdout
    return gzip.compress(cpio, compresslevel=6, mtime=0)


def _initrd_key(version: str) -> str:
    """Hash of every input of the initramfs, so a changed /init forces a rebuild."""
    h = hashlib.sha256()
    st = BUSYBOX.stat()
    for part in (str(BUILD_FORMAT), version, INIT_SCRIPT, ACPI_POWER_SCRIPT, ",".join(REQUIRED_MODULES),
                 ",".join(OPTIONAL_MODULES), f"{st.st_size}:{st.st_mtime_ns}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def unpack_modules(deb: Path, version: str, tree: Path) -> Path:
    """Unpack the kernel .deb into ``tree``; its module directory, with modules.dep."""
    _run(["dpkg-deb", "-x", str(deb), str(tree)])
    mod_src = _modules_root(tree) / version
    if not (mod_src / "modules.dep").exists():
        # Debian generates modules.dep in postinst, which never runs for an unpacked .deb.
        # depmod -b reads <base>/lib/modules; a merged-/usr package (Debian 13) has only
        # usr/lib, so lib points there as on the installed system.
        if not (tree / "lib").exists():
            (tree / "lib").symlink_to("usr/lib")
        _run([str(BUSYBOX), "depmod", "-b", str(tree), version])
    return mod_src


def _copy_module(src: Path, dst_dir: Path) -> None:
    """Copy a module into ``dst_dir``, uncompressed (Debian 13 ships .ko.xz): the guest's
    busybox then needs no decompressor and TCG no time to unpack it at every boot."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".xz":
        (dst_dir / src.stem).write_bytes(lzma.decompress(src.read_bytes()))
    elif src.suffix == ".gz":
        (dst_dir / src.stem).write_bytes(gzip.decompress(src.read_bytes()))
    elif src.suffix == ".ko":
        shutil.copyfile(src, dst_dir / src.name)
    else:
        raise RuntimeError(f"{src}: a module compression the lab guest cannot unpack")


def fill_initramfs(root: Path, mod_src: Path, version: str, files: list[str],
                   boot_modules: tuple[str, ...]) -> None:
    """Copy the module ``files`` (and their index) and busybox with its applet links into
    ``root``; /etc/hvl-modules lists what /init loads at every boot (``boot_modules``
    but those the kernel has built in)."""
    mod_dst = root / "lib" / "modules" / version
    for rel in files:
        _copy_module(mod_src / rel, (mod_dst / rel).parent)
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (mod_src / extra).exists():
            shutil.copyfile(mod_src / extra, mod_dst / extra)
    _run([str(BUSYBOX), "depmod", "-b", str(root), version])
    shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in _run([str(BUSYBOX), "--list"]).stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    builtin = builtin_modules(mod_src)
    (root / "etc" / "hvl-modules").write_text(
        "".join(f"{m}\n" for m in boot_modules if m not in builtin))


def _build_initrd(deb: Path, version: str, out: Path, work: Path) -> list[str]:
    """Unpack the kernel .deb, assemble the initramfs in ``out``; return the optional modules in it."""
    tree, root = work / "deb", work / "root"
    mod_src = unpack_modules(deb, version, tree)
    files, available = _module_closure(mod_src, REQUIRED_MODULES, OPTIONAL_MODULES)
    for d in ("bin", "etc/acpi/PWRF", "proc", "sys", "dev", "tmp", "run", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    fill_initramfs(root, mod_src, version, files, REQUIRED_MODULES)
    for path, text in ((root / "init", INIT_SCRIPT), (root / "etc/acpi/PWRF/00000080", ACPI_POWER_SCRIPT)):
        path.write_text(text)
        path.chmod(0o755)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(_newc_archive(root))
    os.replace(tmp_out, out)
    return available


def _prune_initrds(cache_dir: Path, keep: Path) -> None:
    """Keep the newest few initramfs files; older sessions may still be using them."""
    olds = sorted((p for p in cache_dir.glob("initrd-*.img") if p != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for p in olds[KEEP_INITRDS - 1:]:
        p.unlink(missing_ok=True)
        p.with_suffix(".modules").unlink(missing_ok=True)


def build_guest(cache_dir: Path | None = None) -> GuestImage:
    """Return the lab guest, downloading/building only what the cache lacks.

    Cold: ~3-5 s (kernel download + unpack + initramfs). Warm: a few stat calls.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".build.lock"):
        vmlinuz, version, deb = _ensure_kernel(cache_dir / "kernel")
        key = _initrd_key(version)
        initrd = cache_dir / f"initrd-{version}-{key}.img"
        modules_file = initrd.with_suffix(".modules")
        if not (initrd.exists() and modules_file.exists()):
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(dir=cache_dir) as work:
                available = _build_initrd(deb, version, initrd, Path(work))
            modules_file.write_text(",".join(available))
            log.info("built %s (%d KiB) in %.1fs", initrd.name, initrd.stat().st_size // 1024,
                     time.monotonic() - t0)
            _prune_initrds(cache_dir, initrd)
        extra = tuple(m for m in modules_file.read_text().split(",") if m)
    return GuestImage(kernel=vmlinuz, initrd=initrd, kernel_version=version, modules=REQUIRED_MODULES,
                      extra_modules=extra)
