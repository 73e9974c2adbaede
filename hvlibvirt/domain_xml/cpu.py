"""vCPUs: count, pinning (cpu_mask) and the CPU model and topology (cpu_type, cpu_*)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, params
from hvlibvirt.errors import HypervisorError

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_FEATURE = re.compile(r"^([+-]?)([A-Za-z0-9_.-]+)(?:=(on|off|true|false))?\Z")


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


# xl (libxl) CPUID flag names that libvirt spells differently; libvirt translates them
# back when it builds the libxl configuration.
_LIBXL_TO_LIBVIRT_FLAGS = {
    "cmpxchg16": "cx16", "cntxid": "cid", "dscpl": "ds_cpl", "pclmulqdq": "pclmuldq",
    "sse3": "pni", "htt": "ht", "psn": "pn", "clfsh": "clflush", "sysenter": "sep",
    "cmpxchg8": "cx8", "nodeid": "nodeid_msr", "altmovcr8": "cr8legacy",
    "lahfsahf": "lahf_lm", "cmplegacy": "cmp_legacy", "ffxsr": "fxsr_opt",
    "page1gb": "pdpe1gb", "ibrsb": "spec-ctrl",
}
_XL_FLAG = re.compile(r"^([a-z0-9_.-]+)=([01])\Z")


def xen_cpuid(value: str) -> etree._Element | None:
    """Ganeti's xen ``cpuid`` in xl's form ``host,<flag>=0|1,...`` -> host-passthrough
    with a required (1) or disabled (0) feature per flag; None when empty."""
    if not value:
        return None
    host, *flags = [part.strip() for part in value.split(",")]
    if host != "host":
        raise HypervisorError(f"Invalid cpuid {value!r}: only xl's 'host,<flag>=0|1,...' "
                              "form can be expressed in libvirt")
    elem = etree.Element("cpu", mode="host-passthrough")
    for flag in flags:
        m = _XL_FLAG.match(flag)
        if m is None:
            raise HypervisorError(f"Invalid cpuid {value!r}: cannot express {flag!r} (use "
                                  "<flag>=0 or <flag>=1)")
        name = _LIBXL_TO_LIBVIRT_FLAGS.get(m.group(1), m.group(1))
        etree.SubElement(elem, "feature", policy="require" if m.group(2) == "1" else "disable",
                         name=name)
    return elem
