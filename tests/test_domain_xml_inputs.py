"""Bad input to the domain XML builder: a clear HypervisorError naming the field, and
hostile strings that never change the XML structure."""

from __future__ import annotations

import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import nics
from hvlibvirt.errors import HypervisorError
from xmlcases import disk, instance, nic, render

pytestmark = pytest.mark.tier1


def rejects(match: str, hv: dict | None = None, **fields) -> None:
    inst, block = instance(hv, **fields)
    with pytest.raises(HypervisorError, match=match):
        render(inst, block)


def rejects_block(match: str, block_devices: list, hv: dict | None = None) -> None:
    inst, _ = instance(hv, n_disks=0)
    with pytest.raises(HypervisorError, match=match):
        render(inst, block_devices)


@pytest.mark.parametrize("template", ["floppy9", "diskless", None, ""])
def test_unknown_disk_template(template) -> None:
    rejects_block("dev_type of disk 0", [(disk(dev_type=template), "/dev/x", None)])


@pytest.mark.parametrize("uuid", [None, "", "not-a-uuid-at-all", "932df160-7a22-4067",
                                  # a regex's "$" would take a trailing newline
                                  "932df160-7a22-4067-9f6d-3e0a0b1c2d3e\n"])
def test_missing_or_bad_disk_uuid(uuid) -> None:
    bad = disk(dev_type=C.DT_PLAIN)
    bad.uuid = uuid
    rejects_block("disk uuid", [(bad, "/dev/x", None)])


@pytest.mark.parametrize("mac", ["", None, "zz:00:00:00:00:01", "aa:00:00:00:01",
                                 "aa-00-00-00-00-01", "01:00:5e:00:00:01",
                                 "aa:00:00:00:00:01\n"])
def test_bad_mac(mac) -> None:
    rejects("mac of NIC 0", nics=[nic(0, mac=mac)])


def test_bad_nic_uuid() -> None:
    bad = nic(0)
    bad.uuid = "nope"
    rejects("nic uuid", nics=[bad])


@pytest.mark.parametrize("mode,link", [("bridged", ""), ("openvswitch", ""),
                                       ("pool", "x"), ("ext", "x"), ("weird", "x")])
def test_bad_nic_mode_or_link(mode: str, link: str) -> None:
    rejects("of NIC 0", nics=[nic(0, mode=mode, link=link)])


@pytest.mark.parametrize("vlan", [".abc", "5000", ".0", ":", "100:", "1.2", "100\n"])
def test_bad_vlan(vlan: str) -> None:
    bad = nic(0)
    bad.nicparams[C.NIC_VLAN] = vlan
    rejects("vlan of NIC 0", nics=[bad])


def test_routed_nic_with_vlan() -> None:
    bad = nic(0, mode=C.NIC_MODE_ROUTED, link="")
    bad.nicparams[C.NIC_VLAN] = ".100"
    rejects("routed NICs have no VLAN", nics=[bad])


def test_more_devices_than_free_pci_slots() -> None:
    # Slots 12-31 are free with the default reservation: 20 devices fit, 21 do not.
    inst, block = instance(n_disks=10, nics=[nic(i) for i in range(10)])
    render(inst, block)
    inst, block = instance(n_disks=10, nics=[nic(i) for i in range(11)])
    with pytest.raises(HypervisorError, match="No free PCI slot for NIC 10"):
        render(inst, block)


@pytest.mark.parametrize("name", ["a'b", "in<st>", "x y", "", None, "-lead", "a" * 300,
                                  "evil\nname", "inst1.example.com\n"])
def test_hostile_instance_names(name) -> None:
    inst, block = instance()
    inst.name = name
    with pytest.raises(HypervisorError, match="instance name"):
        render(inst, block)


@pytest.mark.parametrize("path", ["relative/path", "/dev/x\n<evil/>", "/dev/\x00x", ""])
def test_bad_disk_paths(path: str) -> None:
    rejects_block("link_name of disk 0|has neither", [(disk(dev_type=C.DT_PLAIN), path, None)])


@pytest.mark.parametrize("uri", ["rbd:poolonly", "rbd:pool/img:conf=/etc/x",
                                 "gluster://host", "gopher://x/y/z", "iscsi://h/iqn/0"])
def test_bad_userspace_uris(uri: str) -> None:
    d = disk(dev_type=C.DT_RBD, params={C.LDP_ACCESS: C.DISK_USERSPACE})
    rejects_block("drive_uri of disk 0", [(d, None, uri)])


def test_block_devices_must_be_triples() -> None:
    rejects_block(r"block_devices\[0\]", [(disk(dev_type=C.DT_PLAIN), "/dev/x")])


def test_hostile_strings_do_not_change_the_structure() -> None:
    kernel_args = "ro' /><evil attr='x'/><cmdline>&amp; \"quoted\""
    inst, block = instance({C.HV_KERNEL_ARGS: kernel_args,
                            C.HV_KVM_EXTRA: "-smbios 'type=1,product=<evil/>'"})
    block[0] = (block[0][0], "/srv/disk'\"<evil/>.img", None)
    root = etree.fromstring(render(inst, block).encode())
    assert not list(root.iter("evil"))
    assert root.findtext("os/cmdline") == f"root=/dev/vda1 {kernel_args} console=ttyS0,38400"
    assert root.find("devices/disk/source").get("dev") == "/srv/disk'\"<evil/>.img"
    args = [a.get("value") for a in root.iter("{http://libvirt.org/schemas/domain/qemu/1.0}arg")]
    assert args == ["-smbios", "type=1,product=<evil/>"]
    assert len(root.findall("os")) == 1


def test_a_bridge_that_is_no_interface_name_is_refused() -> None:
    inst, block = instance({}, nics=[nic(0, link="br0'/><source bridge='evil")])
    with pytest.raises(HypervisorError, match="link of NIC 0"):
        render(inst, block)


def test_control_characters_in_kernel_args_are_refused() -> None:
    rejects("kernel_args", {C.HV_KERNEL_ARGS: "ro\nquiet"})


@pytest.mark.parametrize("hv,match", [
    ({C.HV_CPU_MASK: "0:1:2"}, "cpu_mask .* 3 entries but the instance has 2 vCPUs"),
    ({C.HV_CPU_SOCKETS: 3}, "cpu_sockets=3"),
    ({C.HV_CPU_CORES: 2, C.HV_CPU_THREADS: 2}, "vcpus is 2"),
    ({C.HV_VNC_BIND_ADDRESS: "192.0.2.1"}, None),  # valid: network_port 5901 is set
])
def test_cpu_and_graphics_consistency(hv: dict, match: str | None) -> None:
    inst, block = instance(hv)
    if match is None:
        render(inst, block)
        return
    with pytest.raises(HypervisorError, match=match):
        render(inst, block)


@pytest.mark.parametrize("port", [None, 5900, 80, True, 70000])
def test_graphics_need_a_network_port(port) -> None:
    rejects("network_port", {C.HV_VNC_BIND_ADDRESS: "192.0.2.1"}, network_port=port)


def test_read_only_ide_disk_is_refused() -> None:
    inst, block = instance({C.HV_DISK_TYPE: C.HT_DISK_IDE}, n_disks=1)
    inst.disks_info[0].mode = C.DISK_RDONLY
    with pytest.raises(HypervisorError, match="read-only, which IDE hard disks cannot be"):
        render(inst, block)


def test_bad_disk_mode() -> None:
    inst, block = instance(n_disks=1)
    inst.disks_info[0].mode = "rx"
    with pytest.raises(HypervisorError, match="mode of disk 0"):
        render(inst, block)


def test_scsi_block_needs_a_block_device() -> None:
    d = disk(dev_type=C.DT_FILE)
    rejects_block("scsi-block needs a block device", [(d, "/srv/a.img", None)],
                  {C.HV_DISK_TYPE: "scsi-block"})


def test_too_many_ide_devices() -> None:
    # The IDE cdrom takes the first unit (Ganeti's -drive order), so the fourth disk is one
    # too many.
    inst, block = instance({C.HV_DISK_TYPE: C.HT_DISK_IDE, C.HV_CDROM_IMAGE_PATH: "/a.iso"},
                           n_disks=4)
    with pytest.raises(HypervisorError, match="Too many IDE devices at disk 3"):
        render(inst, block)


@pytest.mark.parametrize("beparams", [{}, {"maxmem": 0, "vcpus": 1},
                                      {"maxmem": 128, "vcpus": "2"}, {"maxmem": True, "vcpus": 1}])
def test_bad_beparams(beparams: dict) -> None:
    rejects("beparams", beparams=beparams)


def test_read_only_disks_are_marked() -> None:
    inst, block = instance(n_disks=1)
    inst.disks_info[0].mode = C.DISK_RDONLY
    root = etree.fromstring(render(inst, block).encode())
    assert root.find("devices/disk/readonly") is not None


NOT_STRINGS = [100, 0, -1, 2**70, 1.5, True, False, [], ["100"], [100, 200], {}, {"a": 1}, (),
               b"100", bytearray(b"1")]


@pytest.mark.parametrize("linux_bridge_vlans", [True, False])
@pytest.mark.parametrize("mode", [C.NIC_MODE_BRIDGED, C.NIC_MODE_OVS, C.NIC_MODE_ROUTED])
@pytest.mark.parametrize("vlan", NOT_STRINGS, ids=repr)
def test_non_string_vlan_is_refused_whatever_libvirt_sets(vlan: object, mode: str,
                                                          linux_bridge_vlans: bool) -> None:
    """The answer does not depend on whether this libvirt sets VLANs on Linux bridges
    (libvirt >= 11.1), which used to decide which refusal came first."""
    bad = nic(0, mode=mode, link="" if mode == C.NIC_MODE_ROUTED else "br0")
    bad.nicparams[C.NIC_VLAN] = vlan
    with pytest.raises(HypervisorError, match=r"vlan of NIC 0.*strings"):
        nics.interface(bad, 0, tables.HVC_DEFAULTS[C.HT_KVM], linux_bridge_vlans)
    with pytest.raises(HypervisorError, match=r"vlan of NIC 0.*strings"):
        nics.xen_interface(bad, 0, nics.XEN_PV_MODEL, None)


@pytest.mark.parametrize("vlan", NOT_STRINGS, ids=repr)
def test_parse_vlan_refuses_non_strings(vlan: object) -> None:
    with pytest.raises(HypervisorError, match="vlan of NIC 3"):
        nics.parse_vlan(vlan, "vlan of NIC 3")  # type: ignore[arg-type]


def test_kvm_refuses_a_non_string_vlan_before_asking_libvirt() -> None:
    """StartInstance asks libvirt's version only for VLANs on Linux bridges; a VLAN that
    is not a string is refused before that question (no connection is opened)."""
    from hvlibvirt import kvm

    bad = nic(0)
    bad.nicparams[C.NIC_VLAN] = 100
    inst, _ = instance(nics=[bad])
    with pytest.raises(HypervisorError, match="vlan of NIC 0"):
        kvm._bridged_vlans(inst)


def test_an_unset_vlan_is_none_or_empty() -> None:
    for unset in (None, ""):
        ok = nic(0)
        ok.nicparams[C.NIC_VLAN] = unset
        assert nics.interface(ok, 0, tables.HVC_DEFAULTS[C.HT_KVM], False).find("vlan") is None
