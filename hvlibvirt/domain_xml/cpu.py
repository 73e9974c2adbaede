"""vCPUs: count, pinning (cpu_mask) and the CPU model and topology (cpu_type, cpu_*)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, param_values, params
from hvlibvirt.errors import HypervisorError

def _cpuset(ranges: list[tuple[int, int]]) -> str:
    """A libvirt cpuset naming every CPU of ``ranges`` once, in order."""
    cpus = sorted({cpu for lower, upper in ranges for cpu in range(lower, upper + 1)})
    return ",".join(str(c) for c in cpus)


def vcpu(root: etree._Element, vcpus: int) -> None:
    etree.SubElement(root, "vcpu", placement="static").text = str(vcpus)


def vcpu_pins(mask: str, vcpus: int) -> list[tuple[int, str]]:
    """cpu_mask as (vCPU, cpuset) pins: one mask pins every vCPU to it; one mask per vCPU
    pins each, ``all`` leaving that vCPU unpinned. No pins for ``all`` or an empty mask.
    The entry count is checked before any range is expanded."""
    try:
        entries = params.multi_cpu_ranges(mask)
    except ValueError as err:
        raise HypervisorError(f"Invalid cpu_mask {str(mask)[:40]!r}: {err}") from None
    if not entries or entries == [None]:
        return []
    if len(entries) == 1:
        return [(index, _cpuset(entries[0])) for index in range(vcpus)]
    if len(entries) != vcpus:
        raise HypervisorError(f"Invalid cpu_mask {str(mask)[:40]!r}: it has {len(entries)} "
                              f"entries but the instance has {vcpus} vCPUs (use one entry "
                              "or one per vCPU)")
    return [(index, _cpuset(ranges)) for index, ranges in enumerate(entries)
            if ranges is not None]


def cputune(hvparams: Mapping[str, Any], vcpus: int) -> etree._Element | None:
    """KVM's cpu_mask: vCPU pins, and with a single mask the emulator threads too."""
    pins = vcpu_pins(hvparams[C.HV_CPU_MASK], vcpus)
    if not pins:
        return None
    tune = etree.Element("cputune")
    for index, cpuset in pins:
        etree.SubElement(tune, "vcpupin", vcpu=str(index), cpuset=cpuset)
    if len(params.multi_cpu_ranges(hvparams[C.HV_CPU_MASK])) == 1:
        etree.SubElement(tune, "emulatorpin", cpuset=pins[0][1])
    return tune


def xen_cputune(hvparams: Mapping[str, Any], vcpus: int) -> etree._Element:
    """Xen: the credit scheduler weight (cpu_weight) and a pin for every pinned vCPU
    (libxl reads per-vCPU pins only, never <vcpu cpuset>; its device model has no
    emulator threads to pin)."""
    tune = etree.Element("cputune")
    etree.SubElement(tune, "shares").text = str(hvparams[C.HV_CPU_WEIGHT])
    for index, cpuset in vcpu_pins(hvparams[C.HV_CPU_MASK], vcpus):
        etree.SubElement(tune, "vcpupin", vcpu=str(index), cpuset=cpuset)
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
    features: list[tuple[str, bool]] = []
    if spec == param_values.CPU_HOST:
        elem.set("mode", "host-passthrough")
    elif spec:
        model, features = param_values.cpu_model(spec)
        elem.set("mode", "custom")
        elem.set("match", "exact")
        etree.SubElement(elem, "model", fallback="forbid").text = model
    if topology is not None:
        etree.SubElement(elem, "topology", **topology)
    for name, on in features:
        etree.SubElement(elem, "feature", policy="require" if on else "disable", name=name)
    return elem


def xen_cpuid(value: str) -> etree._Element | None:
    """Ganeti's xen ``cpuid`` in xl's form ``host,<flag>=0|1,...`` -> host-passthrough
    with a required (1) or disabled (0) feature per flag; None when empty."""
    if not value:
        return None
    elem = etree.Element("cpu", mode="host-passthrough")
    for name, required in param_values.xen_cpuid_flags(value):
        etree.SubElement(elem, "feature", policy="require" if required else "disable",
                         name=name)
    return elem
