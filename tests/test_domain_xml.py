"""Tier 1: the domain XML builder and parser (pure; libvirt's RelaxNG schema)."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import (GuestTarget, StartupOptions, addresses, build_domain,
                                  identity, metadata, parse_domain, to_string)
from hvlibvirt.errors import HypervisorError
from hvlibvirt.objects import NIC, Disk, Instance

pytestmark = pytest.mark.tier1

SCHEMA = "/usr/share/libvirt/schemas/domain.rng"
KVM = GuestTarget(domain_type="kvm", arch="x86_64", machine="pc", emulator="/usr/bin/kvm")


@pytest.fixture(scope="module")
def relaxng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(SCHEMA))


def make_instance(n_disks: int = 2, n_nics: int = 2, **hv_overrides) -> tuple[Instance, list]:
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="/boot/vmlinuz", **hv_overrides)
    disks = [Disk(uuid=f"{i:08x}-1111-2222-3333-444455556666", dev_type=C.DT_PLAIN, size=64)
             for i in range(n_disks)]
    nics = [NIC(uuid=f"{i:08x}-aaaa-bbbb-cccc-ddddeeeeffff", mac=f"aa:00:00:00:00:{i:02x}",
                nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "br0"})
            for i in range(n_nics)]
    inst = Instance(name="inst1.example.com", uuid="6a2dc1f0-3d5e-4f38-9c1b-2f1e8d7c6b5a",
                    hvparams=hvparams, beparams={"maxmem": 256, "minmem": 128, "vcpus": 2},
                    disks_info=disks, nics=nics)
    block = [(d, f"/var/run/ganeti/instance-disks/{inst.name}:{i}", None)
             for i, d in enumerate(disks)]
    return inst, block


def render(inst: Instance, block: list, target: GuestTarget = KVM, mem: int = 200) -> str:
    options = StartupOptions(target=target, startup_memory=mem)
    return to_string(build_domain(inst, block, inst.hvparams, options))


def test_valid_against_libvirt_schema(relaxng: etree.RelaxNG) -> None:
    inst, block = make_instance()
    root = etree.fromstring(render(inst, block).encode())
    assert relaxng.validate(root), relaxng.error_log


def test_schema_catches_a_broken_document(relaxng: etree.RelaxNG) -> None:
    # Proves the validation above can fail.
    inst, block = make_instance()
    root = etree.fromstring(render(inst, block).encode())
    root.set("type", "bogus")
    assert not relaxng.validate(root)


def test_identical_inputs_give_identical_bytes() -> None:
    inst, block = make_instance()
    assert render(inst, block) == render(copy.deepcopy(inst), copy.deepcopy(block))


def test_remembered_trees_follow_every_change_and_are_copies() -> None:
    # build_domain remembers its trees (domain_xml.memo): a remembered tree must be the
    # one a fresh build gives, change with any nested field, and be the caller's own.
    inst, block = make_instance()
    options = StartupOptions(target=KVM, startup_memory=200)
    fresh = render(copy.deepcopy(inst), copy.deepcopy(block))
    trees = [build_domain(inst, block, inst.hvparams, options) for _ in range(3)]
    assert {to_string(t) for t in trees} == {fresh}
    assert len({id(t) for t in trees}) == 3
    trees[2].find("name").text = "changed"
    assert to_string(build_domain(inst, block, inst.hvparams, options)) == fresh
    inst.nics[1].nicparams[C.NIC_LINK] = "br9"
    block[0][0].mode = C.DISK_RDONLY
    inst.hvparams[C.HV_ACPI] = 1  # == True, but recorded as an int: not True's tree
    changed = render(inst, block)
    assert "br9" in changed and "<readonly/>" in changed and 'name="acpi" type="int"' in changed
    assert changed == render(copy.deepcopy(inst), copy.deepcopy(block))
    del block[1][0].mode  # the class default, rw: remembered after two renders
    assert render(inst, block) == render(inst, block)
    block[1][0].mode = None  # what a getattr default tells from missing: still an error
    with pytest.raises(HypervisorError, match="mode of disk 1"):
        render(inst, block)


def test_pci_slots_start_at_the_reservation_disks_first() -> None:
    inst, block = make_instance(n_disks=2, n_nics=2)
    live = parse_domain(render(inst, block))
    slots = {alias: int(dev.address["slot"], 16) for alias, dev in live.devices.items()}
    disk_aliases = [identity.device_alias("disk", d.uuid) for d in inst.disks_info]
    nic_aliases = [identity.device_alias("nic", n.uuid) for n in inst.nics]
    assert [slots[a] for a in disk_aliases + nic_aliases] == [12, 13, 14, 15]


def test_pci_reservation_zero_skips_the_platform_slots() -> None:
    inst, block = make_instance(n_disks=1, n_nics=1, kvm_pci_reservations=0)
    live = parse_domain(render(inst, block))
    # USB on the PIIX3 (slot 1), the VGA card and the balloon at their fixed slots, then
    # the first slot after the fixed platform range for the disk and the NIC.
    first = max(addresses.CDROM_SLOTS) + 1
    assert sorted(live.pci_slots) == [addresses.PIIX3_SLOT, addresses.VIDEO_SLOT,
                                      addresses.BALLOON_SLOT, first, first + 1]


def test_running_out_of_pci_slots_is_a_clear_error() -> None:
    inst, block = make_instance(n_disks=0, n_nics=8, kvm_pci_reservations=28)
    with pytest.raises(HypervisorError, match="No free PCI slot for NIC 4"):
        render(inst, block)


@pytest.mark.parametrize("controller,model,field", [
    ("virtio-scsi-pci", "virtio-scsi", "target"), ("megasas", "lsisas1078", "target"),
    ("lsi", "lsilogic", "unit"), ("dc390", "dc390", "unit")])
def test_scsi_disks_get_one_scsi_id_each(relaxng: etree.RelaxNG, controller: str, model: str,
                                         field: str) -> None:
    # libvirt maps 'unit' to the SCSI id on lsilogic/dc390 and 'target' on the others.
    inst, block = make_instance(n_disks=3, n_nics=0, disk_type="scsi-hd",
                                scsi_controller_type=controller)
    xml = render(inst, block)
    root = etree.fromstring(xml.encode())
    assert relaxng.validate(root), relaxng.error_log
    ids = [int(d.address[field]) for d in parse_domain(xml).devices.values()
           if d.address.get("type") == "drive"]
    assert ids == [0, 1, 2]
    (ctrl,) = root.findall("devices/controller[@type='scsi']")
    assert ctrl.get("model") == model
    assert ctrl.find("address").get("slot") == f"0x{addresses.SCSI_CONTROLLER_SLOT:02x}"


def test_aliases_follow_ganeti_devid() -> None:
    assert (identity.device_alias("disk", "932df160-7a22-4067-a566-7e0ca8386133")
            == "ua-disk-932df160-7a22-4067")
    assert (identity.device_alias("nic", "003fc157-66a8-4e6d-8b7e-4a6d1ecdd4b7")
            == "ua-nic-003fc157-66a8-4e6d")
    with pytest.raises(HypervisorError, match="uuid"):
        identity.device_alias("nic", "not-a-uuid")


def test_metadata_round_trip() -> None:
    inst, block = make_instance(n_disks=1, n_nics=1)
    live = parse_domain(render(inst, block))
    assert live.meta is not None
    assert live.meta.instance_uuid == inst.uuid
    assert live.meta.hvparams == inst.hvparams  # types survive: bools, ints, strings
    assert [kind for kind, _, _ in live.meta.devices] == ["disk", "nic"]
    assert {alias for _, _, alias in live.meta.devices} == set(live.devices)


def test_metadata_element_is_namespaced() -> None:
    inst, block = make_instance(n_disks=0, n_nics=0)
    root = etree.fromstring(render(inst, block).encode())
    (child,) = root.find("metadata")
    assert etree.QName(child).namespace == metadata.NAMESPACE


def test_kernel_boot_and_memory() -> None:
    inst, block = make_instance(n_disks=0, n_nics=0, kernel_args="ro quiet")
    root = etree.fromstring(render(inst, block, mem=200).encode())
    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.findtext("os/cmdline") == "root=/dev/vda1 ro quiet console=ttyS0,38400"
    assert root.findtext("memory") == "256" and root.findtext("currentMemory") == "200"
    assert root.findtext("vcpu") == "2"


def test_missing_beparams_are_refused() -> None:
    inst, block = make_instance()
    inst.beparams = {"minmem": 128}
    with pytest.raises(HypervisorError, match="maxmem"):
        render(inst, block)
