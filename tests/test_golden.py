"""Golden domain XML: every case in tests/golden_cases.py against tests/fixtures/golden/.

Regenerate all files with ``HVLIBVIRT_REGEN_GOLDEN=1 pytest tests/test_golden.py``: that
run rewrites the files (and removes files without a case) and then fails on purpose, so
a regeneration never passes silently. Review the diff, then run again without it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

import golden_cases
from hvlibvirt import get_hypervisor_class
from hvlibvirt.domain_xml import to_string
from hvlibvirt.ganeti import facts

GOLDEN_DIR = Path(__file__).resolve().parent / "fixtures" / "golden"
SCHEMA = "/usr/share/libvirt/schemas/domain.rng"
REGEN = os.environ.get("HVLIBVIRT_REGEN_GOLDEN") == "1"
NAMES = golden_cases.NAMES
# Tier 1 but for the Xen cases started on libvirt's test driver (tier 2).


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.xml"


@pytest.fixture(scope="module")
def relaxng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(SCHEMA))


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {name: golden_cases.build(name).render() for name in NAMES}


@pytest.mark.tier1
def test_enough_distinct_cases(rendered: dict[str, str]) -> None:
    assert len(golden_cases.KVM_NAMES) >= 22
    assert len(golden_cases.XEN_NAMES) >= 10
    assert len(set(rendered.values())) == len(NAMES), "two cases render the same XML"


@pytest.mark.tier1
@pytest.mark.parametrize("name", NAMES)
def test_matches_golden(name: str, rendered: dict[str, str]) -> None:
    path = golden_path(name)
    if REGEN:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rendered[name].encode())
        pytest.fail(f"HVLIBVIRT_REGEN_GOLDEN=1: rewrote {path}; review the diff and rerun "
                    "without HVLIBVIRT_REGEN_GOLDEN", pytrace=False)
    assert path.is_file(), (f"no golden file {path}; create it with "
                            "HVLIBVIRT_REGEN_GOLDEN=1 pytest tests/test_golden.py")
    expected = path.read_bytes()
    actual = rendered[name].encode()
    if actual != expected:
        import difflib
        diff = "".join(difflib.unified_diff(
            expected.decode().splitlines(keepends=True), actual.decode().splitlines(keepends=True),
            fromfile=f"golden/{name}.xml", tofile="generated", n=2))
        pytest.fail(f"{name}: generated XML differs from {path} (regenerate with "
                    f"HVLIBVIRT_REGEN_GOLDEN=1 if intended):\n{diff}", pytrace=False)


@pytest.mark.tier1
def test_no_stale_golden_files() -> None:
    present = {p.name for p in GOLDEN_DIR.iterdir()} if GOLDEN_DIR.is_dir() else set()
    stale = sorted(present - {f"{name}.xml" for name in NAMES})
    if REGEN and stale:
        for file_name in stale:
            (GOLDEN_DIR / file_name).unlink()
        pytest.fail(f"HVLIBVIRT_REGEN_GOLDEN=1: removed stale golden files {stale}",
                    pytrace=False)
    assert not stale, f"golden files without a case in golden_cases.py: {stale}"


@pytest.mark.tier1
@pytest.mark.parametrize("name", NAMES)
def test_valid_against_libvirt_schema(name: str, rendered: dict[str, str],
                                      relaxng: etree.RelaxNG) -> None:
    root = etree.fromstring(rendered[name].encode())
    assert relaxng.validate(root), f"{name}: {relaxng.error_log}"


# Cases with values valid from a later Ganeti than the standalone one (3.0) on.
GANETI_OF = {"templates_file": (3, 1)}  # disk_aio io_uring


@pytest.mark.tier1
@pytest.mark.parametrize("name", NAMES)
def test_hvparams_pass_check_parameter_syntax(name: str) -> None:
    case = golden_cases.build(name)
    hv_class = get_hypervisor_class(case.hypervisor)
    if name in GANETI_OF:
        hv_class = hv_class.following(facts.from_tables(GANETI_OF[name]))
    hv_class.CheckParameterSyntax(case.hvparams)


@pytest.mark.tier1
@pytest.mark.parametrize("name", NAMES)
def test_rendering_twice_gives_identical_bytes(name: str, rendered: dict[str, str]) -> None:
    case = golden_cases.build(name)
    inst, block = case.objects()
    first = to_string(case.tree(inst, block))
    second = to_string(copy.deepcopy(case).tree(copy.deepcopy(inst), copy.deepcopy(block)))
    assert first.encode() == second.encode() == rendered[name].encode()


_OTHER_PROCESS = """
import json, sys
import golden_cases
json.dump({n: golden_cases.build(n).render() for n in golden_cases.NAMES}, sys.stdout)
"""


@pytest.mark.tier1
def test_identical_bytes_in_another_process(rendered: dict[str, str]) -> None:
    """Another interpreter with another hash seed renders the same bytes (no dependence
    on set/dict iteration order or object identity)."""
    env = dict(os.environ, PYTHONHASHSEED="12345")
    tests_dir = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _OTHER_PROCESS], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    other = json.loads(proc.stdout)
    assert [n for n in NAMES if other[n] != rendered[n]] == []


@pytest.mark.tier2
@pytest.mark.parametrize("name", golden_cases.XEN_NAMES)
def test_xen_case_defines_and_starts_on_the_test_driver(name: str,
                                                        rendered: dict[str, str]) -> None:
    """Every Xen shape is accepted by libvirt's parser (with RNG validation) and runs on
    the test driver, and what libvirt keeps is still a xen domain of the same guest type
    with the same devices."""
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(rendered[name], libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        dom.create()
        assert dom.isActive()
        live = etree.fromstring(dom.XMLDesc(0).encode())
        ours = etree.fromstring(rendered[name].encode())
        assert live.get("type") == "xen"
        assert live.findtext("os/type") == ours.findtext("os/type")
        assert live.find("os/type").get("machine") == ours.find("os/type").get("machine")
        aliases = sorted(live.xpath("devices/*/alias/@name"))
        assert aliases == sorted(ours.xpath("devices/*/alias/@name"))
        # libvirt keeps IDE disks sorted by name; the names themselves must not change
        assert sorted(live.xpath("devices/disk/target/@dev")) == \
            sorted(ours.xpath("devices/disk/target/@dev"))
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()
