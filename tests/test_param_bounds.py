"""Bounds CheckParameterSyntax enforces before it expands or parses anything big (issue 23):
cpu_mask CPU numbers and entry counts, on KVM and both Xen hypervisors.

Pure: classmethods on plain dicts and the XML builders' helpers, no libvirt.
"""

from __future__ import annotations

import copy

import pytest

from hvlibvirt import constants as C, params as P
from hvlibvirt import tables
from hvlibvirt.domain_xml import cpu
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor

pytestmark = pytest.mark.tier1

CLASSES = {C.HT_KVM: KVMHypervisor, C.HT_XEN_PVM: XenPvmHypervisor,
           C.HT_XEN_HVM: XenHvmHypervisor}
ALL = pytest.mark.parametrize("hv", sorted(CLASSES))
TOP = C.MAX_HOST_CPUS - 1


def hvparams(hv: str, **overrides: object) -> dict:
    hvp = copy.deepcopy(tables.HVC_DEFAULTS[hv])
    hvp.update(overrides)
    return hvp


def refused(hv: str, name: str, value: object) -> str:
    with pytest.raises(HypervisorError) as exc:
        CLASSES[hv].CheckParameterSyntax(hvparams(hv, **{name: value}))
    assert f"'{name}'" in str(exc.value)
    return str(exc.value)


# -- cpu_mask ----------------------------------------------------------------------------
HUGE_MASKS = [
    "0-1000000000000",                       # a range that once expanded before any bound
    f"0-{C.MAX_HOST_CPUS}",
    str(C.MAX_HOST_CPUS),
    "0-" + "9" * 5000,                        # more digits than int() converts
    "1,0-99999999999999999999:all",
    f"all:{C.MAX_HOST_CPUS}",
    ":".join([f"0-{TOP}"] * (C.MAX_VCPUS + 1)),  # more entries than any instance's vCPUs
]


@ALL
@pytest.mark.parametrize("mask", HUGE_MASKS, ids=lambda m: m[:30])
def test_cpu_mask_beyond_the_bounds_is_refused_before_expanding(hv: str, mask: str) -> None:
    msg = refused(hv, C.HV_CPU_MASK, mask)
    assert "beyond" in msg or "entries" in msg


@ALL
@pytest.mark.parametrize("mask", [f"0-{TOP}", str(TOP), f"{TOP}:all", f"0,{TOP}",
                                  f"0{TOP}"])
def test_cpu_mask_up_to_the_bound_is_accepted(hv: str, mask: str) -> None:
    CLASSES[hv].CheckParameterSyntax(hvparams(hv, **{C.HV_CPU_MASK: mask}))


def test_cpu_mask_bound_message_names_the_limit() -> None:
    msg = refused(C.HT_KVM, C.HV_CPU_MASK, "0-1000000000000")
    assert str(TOP) in msg and "1000000000000" in msg


def test_cpu_ranges_do_not_expand() -> None:
    assert P.cpu_ranges(f"0-{TOP},3") == [(0, TOP), (3, 3)]
    assert P.multi_cpu_ranges(f"0-{TOP}:all") == [[(0, TOP)], None]
    assert P.cpu_ranges("007") == [(7, 7)]      # leading zeros are the number, not digits


@pytest.mark.parametrize("mask", HUGE_MASKS, ids=lambda m: m[:30])
def test_parsers_raise_value_error_for_huge_masks(mask: str) -> None:
    with pytest.raises(ValueError):
        P.parse_multi_cpu_mask(mask)


@pytest.mark.parametrize("mask", ["0-1000000000000", f"{C.MAX_HOST_CPUS}", "0-" + "9" * 5000])
def test_single_cpu_mask_check_is_bounded_too(mask: str) -> None:
    for check in (P.REQ_CPU_MASK_CHECK, P.OPT_CPU_MASK_CHECK):
        assert check[1](mask) is False


@pytest.mark.parametrize("value", [1, None, ["0"], b"0"])
def test_cpu_mask_parsers_refuse_non_strings_with_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        P.multi_cpu_ranges(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        P.cpu_ranges(value)  # type: ignore[arg-type]


def test_builder_pins_the_widest_mask_and_refuses_beyond() -> None:
    pins = cpu.vcpu_pins(f"0-{TOP}", 2)
    assert [index for index, _ in pins] == [0, 1]
    assert pins[0][1].endswith(f",{TOP}") and pins[0][1].count(",") == TOP
    for mask in HUGE_MASKS:
        with pytest.raises(HypervisorError, match="cpu_mask"):
            cpu.vcpu_pins(mask, 2)
