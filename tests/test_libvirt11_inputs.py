"""Values libvirt 11 (Debian 13) answers in its own words, naming no field, are checked
before libvirt sees them: bridge names ("Cannot get interface MTU on 'über'"), machine
types QEMU 10 dropped, and bridges of an incoming migration where libvirt's interface
driver is not installed (Debian 13 packages it apart)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import libvirt
import pytest

from hvlibvirt import constants as C, migrator
from hvlibvirt import tables
from hvlibvirt.domain_xml import GuestTarget, identity
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.kvm_node import check_machine
from hvlibvirt.objects import NIC, Disk, Instance

pytestmark = pytest.mark.tier2


@pytest.mark.parametrize("name", ["br0", "hvlbr0", "xenbr0", "eth0.100", "br-ex", "br_int",
                                  "a" * 15, "vlan@x", "0br"])
def test_interface_names_accepted(name: str) -> None:
    assert identity.interface_name(name, "link of NIC 0") == name


@pytest.mark.parametrize("name", ["\u00fcber", "", "a" * 16, "-rf", "--help", "a b", "a/b",
                                  "eth0:1", ".", "..", ".x", "%s%n", "$(id)", "br0\n", None,
                                  7, b"br0", ["br0"]])
def test_interface_names_refused(name: Any) -> None:
    with pytest.raises(HypervisorError, match="link of NIC 0"):
        identity.interface_name(name, "link of NIC 0")


def _instance(link: Any) -> tuple[Instance, list[tuple[Disk, str, None]]]:
    disk = Disk(uuid="932df160-7a22-4067-a566-7e0ca8386133", size=64)
    nic = NIC(uuid="003fc157-66a8-4e6d-8b7e-4a6d1ecdd4b7", mac="aa:00:00:35:d0:7e",
              nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: link})
    inst = Instance(name="ifname.example.com", hvparams=dict(
        tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="", kvm_path=sys.executable),
        beparams={"maxmem": 128, "minmem": 128, "vcpus": 1}, nics=[nic], disks=[disk.uuid],
        disks_info=[disk])
    return inst, [(disk, "/dev/null", None)]


@pytest.mark.parametrize("link", ["\u00fcber", "-rf", "x" * 16])
def test_start_with_a_bad_bridge_name_names_the_link(link: str) -> None:
    hv = KVMHypervisor(uri="test:///default")
    inst, block = _instance(link)
    with pytest.raises(HypervisorError, match="link of NIC"):
        hv.StartInstance(inst, block, False)
    assert inst.name not in hv.ListInstances()


# -- machine types --------------------------------------------------------------------------
CAPS = """<capabilities><host/>
  <guest><os_type>hvm</os_type>
    <arch name='x86_64'><emulator>{emulator}</emulator>
      <machine maxCpus='255'>pc-i440fx-10.0</machine>
      <machine canonical='pc-i440fx-10.0' maxCpus='255'>pc</machine>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-q35-10.0' maxCpus='4096'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'><machine maxCpus='255'>pc-kvm-only</machine></domain>
    </arch>
  </guest>
</capabilities>"""


def _target(machine: str | None, emulator: str = "/usr/bin/qemu-system-x86_64") -> GuestTarget:
    return GuestTarget(domain_type="kvm", arch="x86_64", machine=machine, emulator=emulator)


@pytest.mark.parametrize("machine", [None, "pc", "q35", "pc-i440fx-7.2", "pc-q35-10.0",
                                     "pc-kvm-only"])
def test_offered_machine_types_pass(machine: str | None) -> None:
    check_machine(CAPS.format(emulator="/usr/bin/qemu-system-x86_64"), _target(machine))


@pytest.mark.parametrize("machine", ["pc-i440fx-2.3", "pc-1.4", "virt", "\u00fcber"])
def test_machine_types_the_emulator_lacks_name_the_parameter(machine: str) -> None:
    with pytest.raises(HypervisorError, match="'machine_version'.*pc-i440fx-7.2"):
        check_machine(CAPS.format(emulator="/usr/bin/qemu-system-x86_64"), _target(machine))


def test_machine_of_another_emulator_or_an_unlisted_driver_is_not_judged() -> None:
    check_machine(CAPS.format(emulator="/usr/bin/qemu-system-x86_64"),
                  _target("pc-1.4", emulator="/opt/qemu/bin/qemu-system-x86_64"))
    check_machine("<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>"
                  "<emulator>/usr/bin/test-hv</emulator><domain type='test'/></arch></guest>"
                  "</capabilities>", _target("pc-1.4", emulator="/usr/bin/test-hv"))


def test_start_on_a_driver_listing_no_machine_types_is_not_judged() -> None:
    """The test driver lists no machine types: nothing is judged there (and the
    domain is defined as asked)."""
    hv = KVMHypervisor(uri="test:///default")
    inst, block = _instance("br0")
    inst.hvparams[C.HV_KVM_MACHINE_VERSION] = "pc-i440fx-2.3"
    try:
        hv.StartInstance(inst, block, False)
    finally:
        hv.StopInstance(inst, force=True)
        hv.CleanupInstance(inst.name)


# -- bridges of an incoming migration -------------------------------------------------------
class _Conn:
    """A connection whose interface lookups fail with libvirt error ``code``."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def interfaceLookupByName(self, name: str) -> None:  # noqa: N802
        err = libvirt.libvirtError(self.message)
        err.err = (self.code, libvirt.VIR_FROM_INTERFACE, self.message, 2, None, None, None,
                   0, 0)
        raise err


NO_DRIVER = _Conn(libvirt.VIR_ERR_NO_SUPPORT, "this function is not supported by the "
                  "connection driver: virConnectInterfaceLookupByName")


@pytest.fixture
def sys_class_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "br0" / "bridge").mkdir(parents=True)
    monkeypatch.setattr(migrator, "SYS_CLASS_NET", str(tmp_path))
    return tmp_path


def test_without_the_interface_driver_a_local_bridge_is_read_from_sysfs(
        sys_class_net: Path) -> None:
    hv = KVMHypervisor(uri="qemu:///system")
    assert hv.migrator.bridge_problem(NO_DRIVER, "br0") is None
    assert hv.migrator.bridge_problem(NO_DRIVER, "br9") == "bridge br9 does not exist here"


def test_without_the_interface_driver_a_remote_bridge_says_what_to_install(
        sys_class_net: Path) -> None:
    hv = KVMHypervisor(uri="qemu+ssh://node2/system")
    problem = hv.migrator.bridge_problem(NO_DRIVER, "br0")
    assert problem and "libvirt-daemon-driver-interface" in problem and "br0" in problem


def test_with_the_interface_driver_libvirt_answers(sys_class_net: Path) -> None:
    hv = KVMHypervisor(uri="qemu:///system")
    missing = _Conn(libvirt.VIR_ERR_NO_INTERFACE, "Interface not found")
    assert hv.migrator.bridge_problem(missing, "br0") == "bridge br0 does not exist here"
    assert "not a network interface name" in hv.migrator.bridge_problem(NO_DRIVER, "\u00fcber")


def test_a_start_failure_quoting_a_bridge_names_the_nic() -> None:
    from lxml import etree

    from hvlibvirt.domain_xml import nics

    root = etree.fromstring(
        "<domain><devices><interface type='bridge'><source bridge='br0'/>"
        "<alias name='ua-nic-1'/></interface><interface type='bridge'>"
        "<source bridge='br9'/><alias name='ua-nic-2'/></interface>"
        "<interface type='ethernet'/></devices></domain>")
    assert nics.blamed_link(root, "Cannot get interface MTU on 'br9': No such device") == \
        " (the link of ua-nic-2: is there a bridge br9 on this node?)"
    assert nics.blamed_link(root, "internal error: something else") == ""
