"""Facts about this Linux machine, as Ganeti's ``hv_base`` computes them, and its
powercycle.

KVM nodes report these whether or not libvirtd answers: Ganeti's node_info and
node_verify RPCs call GetNodeInfo unguarded, so a daemon problem must not hide the
node's memory and CPUs. The arithmetic is Ganeti's: ``memory_free`` is MemFree +
Buffers + Cached and ``memory_dom0`` is Active (each in MiB, each rounded down).
"""

from __future__ import annotations

import logging
import os
import subprocess

from hvlibvirt.errors import HypervisorError

log = logging.getLogger(__name__)

MEMINFO = "/proc/meminfo"
CPUINFO = "/proc/cpuinfo"
NUMA_NODES = "/sys/devices/system/node"
SYSRQ_TRIGGER = "/proc/sysrq-trigger"
REBOOT_COMMAND = ("reboot", "-n", "-f")


def linux_node_info(meminfo: str | None = None, cpuinfo: str | None = None) -> dict[str, int]:
    """Ganeti's ``GetLinuxNodeInfo`` keys (memory in MiB) from /proc-format files
    (``MEMINFO`` and ``CPUINFO``, looked up at call time, unless given)."""
    meminfo = meminfo or MEMINFO
    cpuinfo = cpuinfo or CPUINFO
    try:
        fields = _read_meminfo(meminfo)
        total = fields["MemTotal"] // 1024
        free = sum(fields[key] // 1024 for key in ("MemFree", "Buffers", "Cached"))
        dom0 = fields["Active"] // 1024
        cpu_total, sockets = _read_cpuinfo(cpuinfo)
    except (OSError, UnicodeDecodeError) as err:
        raise HypervisorError(f"Failed to read node information: {err}") from None
    except KeyError as err:
        raise HypervisorError(f"Failed to read node information: {meminfo} has no "
                              f"{err.args[0]}") from None
    if not cpu_total:
        raise HypervisorError(f"Failed to count the node's CPUs in {cpuinfo}")
    return {
        "memory_total": total,
        "memory_free": free,
        "memory_dom0": dom0,
        "cpu_total": cpu_total,
        "cpu_dom0": cpu_total,
        "cpu_nodes": _numa_nodes(),
        "cpu_sockets": sockets,
    }


def _read_meminfo(path: str) -> dict[str, int]:
    """Field -> kB."""
    fields = {}
    with open(path, encoding="ascii") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            value = rest.split()
            if value and value[0].isdigit():
                fields[key.strip()] = int(value[0])
    return fields


def _read_cpuinfo(path: str) -> tuple[int, int]:
    """(processors, sockets); one socket where the file names no physical ids."""
    processors, sockets = 0, set()
    with open(path, encoding="ascii", errors="replace") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "processor":
                processors += 1
            elif key == "physical id":
                sockets.add(value.strip())
    return processors, max(len(sockets), 1)


def _numa_nodes() -> int:
    try:
        return max(sum(1 for n in os.listdir(NUMA_NODES)
                       if n.startswith("node") and n[4:].isdigit()), 1)
    except OSError:
        return 1


def powercycle() -> None:
    """Hard-reset this machine: sysrq 'b', or ``reboot -n -f`` where sysrq is missing."""
    try:
        with open(SYSRQ_TRIGGER, "w", encoding="ascii") as trigger:
            trigger.write("b")
        return
    except OSError as err:
        log.warning("Cannot use %s (%s); running %s", SYSRQ_TRIGGER, err,
                    " ".join(REBOOT_COMMAND))
        cause = err
    try:
        result = subprocess.run(REBOOT_COMMAND, capture_output=True, text=True, check=False)
    except OSError as run_err:
        raise HypervisorError(f"Failed to powercycle the node: {run_err}") from cause
    if result.returncode != 0:
        raise HypervisorError(f"Failed to powercycle the node: "
                              f"{result.stderr.strip() or result.returncode}") from cause
