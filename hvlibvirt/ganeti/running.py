"""Which instances run on this node, on each side of the switch.

Switching a node while instances run hides them from the hypervisor that takes over:
Ganeti then reports them down and its watcher starts them again, a second QEMU on the
same disks. ``enable`` asks which of Ganeti's own KVM instances run, ``disable`` which
of hvlibvirt's; each refuses unless forced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hvlibvirt.errors import HypervisorError

#: Ganeti's hv_kvm keeps one pid file per instance here, named after the instance
KVM_PID_DIR = "/var/run/ganeti/kvm-hypervisor/pid"


def ganeti_kvm_instances(pid_dir: str, proc: str = "/proc") -> list[str]:
    """Instances of Ganeti's hv_kvm running here: their pid file names a live QEMU whose
    ``-name`` is the instance (the identity hv_kvm itself checks; a pid reused by
    another process fails it)."""
    try:
        names = sorted(os.listdir(pid_dir))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise HypervisorError(f"Cannot list Ganeti's KVM pid files in {pid_dir}: "
                              f"{err.strerror}") from None
    return [name for name in names
            if _runs_qemu_named(_read_pid(os.path.join(pid_dir, name)), name, proc)]


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _runs_qemu_named(pid: int | None, name: str, proc: str) -> bool:
    if pid is None or pid <= 0:
        return False
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False  # gone (a zombie's empty cmdline fails below)
    try:
        exe = os.path.basename(os.readlink(os.path.join(proc, str(pid), "exe")))
    except OSError:
        exe = ""
    if not any(k in prog for prog in (exe, os.path.basename(argv[0])) for k in ("qemu", "kvm")):
        return False
    # hv_kvm passes "-name NAME", with ",debug-threads=on" on older QEMU
    return any(arg == "-name" and value.split(",", 1)[0] == name
               for arg, value in zip(argv, argv[1:]))


def hvlibvirt_instances(hypervisors: Iterable[str]) -> tuple[list[str], list[str]]:
    """(running instances of hvlibvirt as "name (hypervisor)", the hypervisors whose
    libvirt could not be asked, each with why)."""
    from hvlibvirt.hypervisors import get_hypervisor_class

    running: list[str] = []
    unknown: list[str] = []
    for hv_name in hypervisors:
        try:  # a broken configuration file fails here too: libvirt cannot be asked
            running += [f"{name} ({hv_name})"
                        for name in get_hypervisor_class(hv_name)().ListInstances()]
        except HypervisorError as err:
            unknown.append(f"{hv_name}: {err}")
    return running, unknown


def refusal(action: str, override: str, running: list[str],
            unknown: list[str] | None = None) -> str | None:
    """The one-line refusal of ``action`` (e.g. "disable"), naming what runs and the
    command that overrides; None if nothing stops it."""
    if not running and not unknown:
        return None
    parts = []
    if running:
        parts.append(f"instances run on this node: {', '.join(running)}")
    if unknown:
        parts.append(f"cannot ask libvirt which instances run ({'; '.join(unknown)})")
    return (f"Refusing to {action}: {'; '.join(parts)}. Ganeti would lose sight of them "
            "and could start them a second time on the same disks: move them away first "
            "(gnt-node migrate, gnt-instance failover or shutdown), or switch anyway with "
            f"'{override}'")
