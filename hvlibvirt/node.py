"""Facts about this Linux machine, as Ganeti's ``hv_base`` computes them, and its
powercycle.

KVM nodes report these whether or not libvirtd answers: Ganeti's node_info and
node_verify RPCs call GetNodeInfo unguarded, so a daemon problem must not hide the
node's memory and CPUs. The arithmetic is that of the Ganeti followed (each figure in
MiB, each field rounded down): up to 3.0 ``memory_free`` is MemFree + Buffers + Cached
and ``memory_dom0`` is Active; from 3.1 on ``memory_free`` is MemAvailable and
``memory_dom0`` is MemTotal - ``memory_free``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable

from hvlibvirt.errors import HypervisorError

log = logging.getLogger(__name__)

MEMINFO = "/proc/meminfo"
CPUINFO = "/proc/cpuinfo"
NUMA_NODES = "/sys/devices/system/node"
SYSRQ_TRIGGER = "/proc/sysrq-trigger"
REBOOT_COMMAND = ("reboot", "-n", "-f")


def _cache_counts_as_free(fields: dict[str, int], total: int) -> tuple[int, int]:
    return sum(fields[key] // 1024 for key in ("MemFree", "Buffers", "Cached")), \
        fields["Active"] // 1024


def _available_is_free(fields: dict[str, int], total: int) -> tuple[int, int]:
    free = fields["MemAvailable"] // 1024
    return free, total - free


#: (memory_free, memory_dom0) in MiB from /proc/meminfo's fields (kB) and MemTotal
#: (MiB), by the Ganeti version that introduced the arithmetic
MEMORY_ARITHMETIC: dict[tuple[int, int], Callable[[dict[str, int], int], tuple[int, int]]] = {
    (3, 0): _cache_counts_as_free,
    (3, 1): _available_is_free,
}


def linux_node_info(meminfo: str | None = None, cpuinfo: str | None = None,
                    ganeti: tuple[int, int] = (3, 0)) -> dict[str, int]:
    """Ganeti's ``GetLinuxNodeInfo`` keys (memory in MiB, by Ganeti version ``ganeti``'s
    arithmetic) from /proc-format files (``MEMINFO`` and ``CPUINFO``, looked up at call
    time, unless given)."""
    meminfo = meminfo or MEMINFO
    cpuinfo = cpuinfo or CPUINFO
    arithmetic = MEMORY_ARITHMETIC[max(v for v in MEMORY_ARITHMETIC
                                       if v <= max(ganeti, min(MEMORY_ARITHMETIC)))]
    try:
        fields = _read_meminfo(meminfo)
        total = fields["MemTotal"] // 1024
        free, dom0 = arithmetic(fields, total)
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
