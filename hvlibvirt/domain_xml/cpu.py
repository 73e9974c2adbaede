"""vCPUs: count, pinning (cpu_mask) and the CPU model and topology (cpu_type, cpu_*)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, params
from hvlibvirt.errors import HypervisorError

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FEATURE = re.compile(r"^([+-]?)([A-Za-z0-9_.-]+)(?:=(on|off|true|false))?$")


def _cpuset(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def vcpu(root: etree._Element, vcpus: int) -> None:
    etree.SubElement(root, "vcpu", placement="static").text = str(vcpus)


def cputune(hvparams: Mapping[str, Any], vcpus: int) -> etree._Element | None:
    """cpu_mask: one mask pins every vCPU and the emulator threads to it; several masks
    (one per vCPU) pin each vCPU, ``all`` leaving that vCPU unpinned."""
    mask = hvparams[C.HV_CPU_MASK]
    try:
        entries = params.parse_multi_cpu_mask(mask)
    except ValueError as err:
        raise HypervisorError(f"Invalid cpu_mask {mask!r}: {err}") from None
    if not entries or entries == [list(C.CPU_PINNING_OFF)]:
        return None
    tune = etree.Element("cputune")
    if len(entries) == 1:
        cpuset = _cpuset(entries[0])
        for index in range(vcpus):
            etree.SubElement(tune, "vcpupin", vcpu=str(index), cpuset=cpuset)
        etree.SubElement(tune, "emulatorpin", cpuset=cpuset)
        return tune
    if len(entries) != vcpus:
        raise HypervisorError(f"Invalid cpu_mask {mask!r}: it has {len(entries)} entries but "
                              f"the instance has {vcpus} vCPUs (use one entry or one per vCPU)")
    for index, cpus in enumerate(entries):
        if cpus != list(C.CPU_PINNING_OFF):
            etree.SubElement(tune, "vcpupin", vcpu=str(index), cpuset=_cpuset(cpus))
    return tune


def _topology(hvparams: Mapping[str, Any], vcpus: int) -> dict[str, str] | None:
    sockets, cores, threads = (hvparams[C.HV_CPU_SOCKETS], hvparams[C.HV_CPU_CORES],
                               hvparams[C.HV_CPU_THREADS])
    if not (sockets or cores or threads):
        return None
    # QEMU fills in what -smp leaves out; libvirt needs all three, multiplying to vcpus.
    threads = threads or 1
    if not cores:
        cores = max(vcpus // ((sockets or 1) * threads), 1)
    if not sockets:
        sockets = max(vcpus // (cores * threads), 1)
    if sockets * cores * threads != vcpus:
        raise HypervisorError(
            f"Invalid CPU topology: cpu_sockets={sockets} x cpu_cores={cores} x "
            f"cpu_threads={threads} = {sockets * cores * threads}, but vcpus is {vcpus}")
    return {"sockets": str(sockets), "dies": "1", "cores": str(cores), "threads": str(threads)}


def cpu(hvparams: Mapping[str, Any], vcpus: int) -> etree._Element | None:
    """cpu_type: ``host`` -> host-passthrough; ``model[,+feat,-feat,feat=on]`` -> custom."""
    spec = hvparams[C.HV_CPU_TYPE]
    topology = _topology(hvparams, vcpus)
    if not spec and topology is None:
        return None
    elem = etree.Element("cpu")
    if spec == "host":
        elem.set("mode", "host-passthrough")
    elif spec:
        model, *features = spec.split(",")
        if not _MODEL.match(model):
            raise HypervisorError(f"Invalid cpu_type {spec!r}: bad model name {model!r}")
        elem.set("mode", "custom")
        elem.set("match", "exact")
        etree.SubElement(elem, "model", fallback="forbid").text = model
    if topology is not None:
        etree.SubElement(elem, "topology", **topology)
    for feature in features if spec and spec != "host" else []:
        m = _FEATURE.match(feature)
        if m is None or (m.group(1) and m.group(3)):
            raise HypervisorError(f"Invalid cpu_type {spec!r}: cannot express {feature!r} "
                                  "(use +flag, -flag or flag=on|off)")
        off = m.group(1) == "-" or m.group(3) in ("off", "false")
        etree.SubElement(elem, "feature", policy="disable" if off else "require",
                         name=m.group(2))
    return elem
