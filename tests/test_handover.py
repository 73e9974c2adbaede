"""Tier 1: the handover from Ganeti's KVM (hvlibvirt.handover), pure.

The runtimes in tests/fixtures/handover/ were made by Ganeti 3.0's own hv_kvm module
(tests/lab/hv_kvm_source.py); experiment-inst1-live.xml is the domain XML a hand-made
experiment (2026-12-06, libvirt 9.0, QEMU 7.2) restored an hv_kvm-style QEMU into
without a reboot: the guest-visible device model of ours must be the same.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import metadata, to_string
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover import model, runtime, saveimage
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance

pytestmark = pytest.mark.tier1

FIXTURES = Path(__file__).parent / "fixtures" / "handover"
SCHEMA = "/usr/share/libvirt/schemas/domain.rng"
UUID = "8f0e6f0a-6b0e-4a57-9e0c-1b2c3d4e5f60"
PC = {"pc": "pc-i440fx-7.2"}  # the alias as QEMU 7.2 resolves it


def load(name: str) -> str:
    return (FIXTURES / name).read_text().strip()


def instance_for(info: str, **hvparams) -> SimpleNamespace:
    data = json.loads(info)
    name = data[0][data[0].index("-name") + 1]
    return SimpleNamespace(name=name, uuid=UUID, hvparams={**data[2], **hvparams})


def changed(info: str, hvparams: dict | None = None, argv=None) -> str:
    """The runtime with some hvparams changed (as if the instance had started so) or
    another command line."""
    data = json.loads(info)
    data[2].update(hvparams or {})
    if argv is not None:
        data[0] = argv(data[0])
    return json.dumps(data)


def build(info: str, facts: model.NodeFacts | None = None, **conf) -> etree._Element:
    parsed = runtime.parse(info)
    return model.build(parsed, instance_for(info, **conf),
                       facts or model.NodeFacts(machine_aliases=PC))


# -- runtime ---------------------------------------------------------------------

def test_recognises_hv_kvm_runtime_not_our_xml() -> None:
    info = load("ganeti30-vnc-2cpu.runtime")
    assert runtime.looks_like_hv_kvm(info)
    assert runtime.looks_like_hv_kvm(info.encode())
    for other in ("<domain type='kvm'/>", "", "[]", "[1, 2, 3]", "not json [", None, 5,
                  json.dumps([["qemu"], {}, {}])):
        assert not runtime.looks_like_hv_kvm(other)


def test_parses_hv_kvm_runtime() -> None:
    parsed = runtime.parse(load("ganeti30-vnc-2cpu.runtime"))
    assert parsed.kvm_path == "/usr/bin/qemu-system-x86_64"
    assert parsed.value("-m") == "128"  # hv_kvm stores the size as a number
    assert parsed.value("-machine") == "pc-i440fx-7.2"
    assert [d.pci_slot for d in parsed.disks] == [0xC]
    assert [n.pci_slot for n in parsed.nics] == [0xD]
    assert parsed.disks[0].link.endswith("disk0")
    assert parsed.hvparams[C.HV_MIGRATION_PORT] == 8102


def test_old_runtime_pci_slots_read_as_hvinfo() -> None:
    """Runtimes from before Ganeti 2.16 recorded a bare "pci" slot."""
    data = json.loads(load("ganeti30-pc-1cpu.runtime"))
    for nic in data[1]:
        nic["pci"] = int(nic.pop("hvinfo")["addr"], 16)
    parsed = runtime.parse(json.dumps(data))
    assert parsed.nics[0].pci_slot == 0xD
    assert parsed.nics[0].hvinfo["driver"] == "virtio-net-pci"


@pytest.mark.parametrize("bad", ["[[\"kvm\", \"-smp\"], [], {}]",
                                 "[[\"kvm\", \"-whatever\", \"x\"], [], {}]",
                                 "[[\"kvm\"], [5], {}]", "[[\"kvm\"], [], {}, [[{}, 1]]]"])
def test_malformed_runtime_refused(bad: str) -> None:
    with pytest.raises(HypervisorError, match="hv_kvm runtime"):
        runtime.parse(bad)


# -- the device model ------------------------------------------------------------------

def _devices(root: etree._Element) -> set[tuple]:
    """What the guest sees of a domain: machine, memory, vCPUs and topology, and each
    device's kind, model and address (host-side backends and names left out)."""
    facts = {("machine", root.find("os/type").get("machine")),
             ("memory", root.findtext("memory")), ("vcpu", root.findtext("vcpu")),
             ("acpi", root.find("features/acpi") is not None)}
    topology = root.find("cpu/topology")
    facts.add(("topology", tuple(sorted(topology.attrib.items())) if topology is not None
               else (("cores", "1"), ("dies", "1"), ("sockets", "1"), ("threads", "1"))))
    for dev in root.find("devices"):
        if dev.tag in ("emulator", "console", "graphics"):
            continue
        model_elem = dev.find("model")
        address = dev.find("address")
        facts.add((dev.tag, dev.get("device") or dev.get("type") if dev.tag in
                   ("disk", "controller", "input") else None,
                   dev.get("model") or (model_elem.get("type") if model_elem is not None
                                        else None),
                   dev.get("bus") or (dev.find("target").get("bus")
                                      if dev.find("target") is not None else None),
                   tuple(sorted(address.attrib.items())) if address is not None else None))
    return facts


def test_matches_the_experiments_restored_xml() -> None:
    """The same source (1 vCPU, 128 MiB, virtio disk at 0xc and NIC at 0xd, no VNC,
    -machine pc) gives the device model the experiment restored into."""
    ours = build(load("ganeti30-pc-1cpu.runtime"))
    reference = etree.parse(str(FIXTURES / "experiment-inst1-live.xml")).getroot()
    mem = reference.find("memory")
    mem.text = "128"
    assert _devices(ours) == _devices(reference)


def test_golden_xml() -> None:
    """Deterministic, schema-valid, and our metadata, aliases and slots in it."""
    root = build(load("ganeti30-vnc-2cpu.runtime"),
                 model.NodeFacts(machine_aliases=PC, serial_log="/var/log/hvl/x.serial"))
    text = to_string(root)
    assert text == (FIXTURES / "ganeti30-vnc-2cpu.xml").read_text()
    etree.RelaxNG(etree.parse(SCHEMA)).assertValid(root)
    meta = metadata.parse(metadata.find(root))
    assert meta.instance_uuid == UUID and meta.hypervisor == C.HT_KVM
    assert meta.devices == [("disk", "11111111-2222-3333-4444-555555555555",
                             "ua-disk-11111111-2222-3333"),
                            ("nic", "44444444-5555-6666-7777-888888888888",
                             "ua-nic-44444444-5555-6666")]
    assert meta.hvparams[C.HV_VNC_BIND_ADDRESS] == "127.0.0.1"
    assert root.find("cpu/topology").attrib == {"sockets": "1", "dies": "1", "cores": "2",
                                                "threads": "1"}
    graphics = root.find("devices/graphics")
    assert (graphics.get("port"), graphics.find("listen").get("address")) == \
        ("11002", "127.0.0.1")


@pytest.mark.parametrize("smp,machine,expected", [
    ("2", "pc-i440fx-7.2", (2, 1, 2, 1)),          # 6.2 on: cores
    ("2", "pc-i440fx-6.1", (2, 2, 1, 1)),          # before: sockets
    ("4,cores=2", "pc-i440fx-7.2", (4, 2, 2, 1)),
    ("4,threads=2", "pc-i440fx-7.2", (4, 1, 2, 2)),
    ("8,sockets=2,threads=2", "pc-i440fx-7.2", (8, 2, 2, 2)),
    ("4,sockets=2", "pc-1.1", (4, 2, 2, 1)),
])
def test_smp_as_qemu_computes_it(smp: str, machine: str, expected: tuple) -> None:
    assert model._smp(smp, machine) == expected


def test_balloon_takes_slot_2_without_vga() -> None:
    """QEMU's first free slot: with -vga none the balloon gets the video card's slot."""
    info = changed(load("ganeti30-pc-1cpu.runtime"), {C.HV_VGA: "none"},
                   argv=lambda argv: argv + ["-vga", "none"])
    root = build(info)
    assert root.find("devices/memballoon/address").get("slot") == "0x02"
    assert root.find("devices/video/model").get("type") == "none"


def test_cache_aio_discard_and_vhost_follow_the_runtime() -> None:
    info = changed(load("ganeti30-vnc-2cpu.runtime"),
                   {C.HV_DISK_CACHE: "writethrough", C.HV_KVM_DISK_AIO: "native",
                    C.HV_DISK_DISCARD: "unmap", C.HV_VHOST_NET: True,
                    C.HV_VIRTIO_NET_QUEUES: 4})
    root = build(info)
    driver = root.find("devices/disk/driver")
    assert (driver.get("io"), driver.get("cache"), driver.get("discard")) == \
        ("native", "none", "unmap")  # native AIO: hv_kvm forces cache=none
    nic_driver = root.find("devices/interface/driver")
    assert (nic_driver.get("name"), nic_driver.get("queues")) == ("vhost", "4")


def test_queues_without_vhost_give_one_queue_pair() -> None:
    """hv_kvm makes a multiqueue NIC only with vhost_net (the identity check found
    libvirt's two queue pairs against hv_kvm's one)."""
    info = changed(load("ganeti30-vnc-2cpu.runtime"),
                   {C.HV_VHOST_NET: False, C.HV_VIRTIO_NET_QUEUES: 2})
    nic_driver = build(info).find("devices/interface/driver")
    assert (nic_driver.get("name"), nic_driver.get("queues")) == ("qemu", None)


def test_localtime_no_acpi_no_reboot_paused() -> None:
    info = changed(load("ganeti30-pc-1cpu.runtime"),
                   argv=lambda argv: argv + ["-rtc", "base=localtime", "-no-acpi",
                                             "-no-reboot", "-S"])
    root = build(info)
    assert root.find("clock").get("offset") == "localtime"
    assert root.find("features/acpi") is None
    assert root.findtext("on_reboot") == "destroy"
    assert not model.was_running(runtime.parse(info))



def _machine_with(argv: list[str], extra: str) -> list[str]:
    index = argv.index("-machine") + 1
    return [*argv[:index], f"{argv[index]},{extra}", *argv[index + 1:]]


@pytest.mark.parametrize("setting,acpi", [("acpi=off", False), ("acpi=on", True)])
def test_acpi_as_a_machine_property(setting: str, acpi: bool) -> None:
    """Ganeti 3.1 writes acpi=false as -machine ...,acpi=off where QEMU (>= 9, Debian
    13's) has no -no-acpi."""
    info = changed(load("ganeti30-pc-1cpu.runtime"),
                   argv=lambda argv: _machine_with(argv, setting))
    assert (build(info).find("features/acpi") is not None) is acpi

def _without_kernel(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-kernel", "-initrd", "-append"):
            skip = True
        else:
            kept.append(arg)
    return kept


@pytest.mark.parametrize("boot,first", [("n", "network"), ("c", "hd"), ("d", "cdrom"),
                                        ("order=n", "network"), ("order=c", "hd"),
                                        ("order=d", "cdrom")])  # Ganeti 3.0's, 3.1's
def test_a_failed_boot_goes_on_to_the_disk_as_under_hv_kvm(boot: str, first: str) -> None:
    """hv_kvm's -boot is not strict; libvirt's is: the disk is named second."""
    info = changed(load("ganeti30-pc-1cpu.runtime"),
                   argv=lambda argv: _without_kernel(argv) + ["-boot", boot])
    boots = [b.get("dev") for b in build(info).iterfind("os/boot")]
    assert boots == list(dict.fromkeys([first, "hd"]))


# -- refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("param,value", [
    (C.HV_KVM_EXTRA, "-device foo"),
    (C.HV_MEM_PATH, "/hugepages"),
    (C.HV_KVM_SPICE_BIND, "0.0.0.0"),
    (C.HV_SOUNDHW, "ac97"),
    (C.HV_USE_GUEST_AGENT, True),
    (C.HV_CPU_TYPE, "host"),
    (C.HV_USB_DEVICES, "disk:x"),
    (C.HV_CDROM_IMAGE_PATH, "/iso"),
    (C.HV_KVM_FLOPPY_IMAGE_PATH, "/img"),
    (C.HV_KVM_USE_CHROOT, True),
    (C.HV_VNC_TLS, True),
    (C.HV_DISK_TYPE, "scsi-hd"),
    (C.HV_NIC_TYPE, "ne2k_isa"),
    (C.HV_VNET_HDR, False),
    (C.HV_VGA, "cirrus"),
])
def test_refused_hvparams_are_named(param: str, value) -> None:
    info = changed(load("ganeti30-vnc-2cpu.runtime"), {param: value})
    with pytest.raises(HypervisorError, match=rf"Cannot take over .*{param}"):
        build(info)


@pytest.mark.parametrize("caps", ["postcopy-ram", "x-postcopy-ram", "multifd", "compress",
                                  "xbzrle:return-path"])
def test_migration_capabilities_needing_a_return_path_refused(caps: str) -> None:
    info = load("ganeti30-vnc-2cpu.runtime")
    with pytest.raises(HypervisorError, match="migration_caps"):
        build(info, **{C.HV_KVM_MIGRATION_CAPS: caps})


def test_one_way_migration_capabilities_accepted() -> None:
    build(load("ganeti30-vnc-2cpu.runtime"), **{C.HV_KVM_MIGRATION_CAPS: "xbzrle:auto-converge"})


def test_security_model_pool_refused_user_needs_a_label() -> None:
    info = load("ganeti30-vnc-2cpu.runtime")
    with pytest.raises(HypervisorError, match="security_model"):
        build(info, **{C.HV_SECURITY_MODEL: C.HT_SM_POOL})
    with pytest.raises(HypervisorError, match="security_model"):
        build(info, **{C.HV_SECURITY_MODEL: C.HT_SM_USER, C.HV_SECURITY_DOMAIN: "qemu"})
    root = build(info, model.NodeFacts(machine_aliases=PC, security_label="+64055:+64055"),
                 **{C.HV_SECURITY_MODEL: C.HT_SM_USER, C.HV_SECURITY_DOMAIN: "qemu"})
    assert root.findtext("seclabel/label") == "+64055:+64055"


@pytest.mark.parametrize("argv,match", [
    (lambda a: a + ["-cpu", "host"], "-cpu"),
    (lambda a: a + ["-device", "virtio-serial,id=qga0"], "-device"),
    (lambda a: a + ["-vga", "qxl"], "-vga"),
    (lambda a: a + ["-chardev", "socket,id=x"], "-chardev"),
    (lambda a: a + ["-mystery"], "unknown QEMU option"),
    (lambda a: [str(x).replace("pc-i440fx-7.2", "pc-q35-7.2") for x in a], "i440fx"),
    (lambda a: [str(x).replace("8f0e6f0a-6b0e", "00000000-6b0e") for x in a], "-uuid"),
    (lambda a: [x for x in a if x != "-usb"], "-usb"),
])
def test_refused_command_lines(argv, match: str) -> None:
    info = changed(load("ganeti30-vnc-2cpu.runtime"), argv=argv)
    with pytest.raises(HypervisorError, match=match):
        build(info)


def test_pci_slot_collision_refused() -> None:
    data = json.loads(load("ganeti30-vnc-2cpu.runtime"))
    data[1][0]["hvinfo"]["addr"] = "0x3"  # where QEMU put the balloon
    with pytest.raises(HypervisorError, match="collides"):
        build(json.dumps(data))


def _ide(info: str, disks: int) -> str:
    """The runtime with ``disks`` disks as hv_kvm records disk_type ide: each hvinfo
    names the driver 'ide' and keeps the PCI slot Ganeti reserved for it."""
    data = json.loads(info)
    data[2][C.HV_DISK_TYPE] = C.HT_DISK_IDE
    first = data[3][0]
    data[3] = []
    for index in range(disks):
        disk = json.loads(json.dumps(first))
        disk[0]["uuid"] = f"{index}1111111-2222-3333-4444-555555555555"
        disk[0]["hvinfo"] = {"driver": "ide", "id": f"disk-{index}", "bus": "pci.0",
                             "addr": hex(0x10 + index)}
        disk[1] = f"/tmp/hvl-ho-gen/disk{index}"
        data[3].append(disk)
    return json.dumps(data)


def _drives(root: etree._Element) -> dict[str, tuple[str, str, str]]:
    """target -> (device, bus, unit) of the IDE drives."""
    return {disk.find("target").get("dev"): (disk.get("device"), disk.find("address").get("bus"),
                                             disk.find("address").get("unit"))
            for disk in root.iterfind("devices/disk") if disk.find("target").get("bus") == "ide"}


@pytest.mark.parametrize("ganeti,disks,expected", [
    # 3.0's "-drive if=ide": units in order, QEMU's empty CD-ROM at hdc unless a disk took it
    ((3, 0), 2, {"hda": ("disk", "0", "0"), "hdb": ("disk", "0", "1"),
                 "hdc": ("cdrom", "1", "0")}),
    ((3, 0), 3, {"hda": ("disk", "0", "0"), "hdb": ("disk", "0", "1"),
                 "hdc": ("disk", "1", "0")}),
    # 3.1's "-device ide-hd": the last bus first, and no default CD-ROM
    ((3, 1), 1, {"hdc": ("disk", "1", "0")}),
    ((3, 1), 4, {"hdc": ("disk", "1", "0"), "hdd": ("disk", "1", "1"),
                 "hda": ("disk", "0", "0"), "hdb": ("disk", "0", "1")}),
])
def test_ide_disks_take_the_units_the_nodes_ganeti_gave_them(ganeti, disks: int,
                                                            expected: dict) -> None:
    root = build(_ide(load("ganeti30-vnc-2cpu.runtime"), disks),
                 model.NodeFacts(machine_aliases=PC, ganeti=ganeti))
    assert _drives(root) == expected
    order = [disk.find("alias").get("name") for disk in root.iterfind("devices/disk[@device='disk']")]
    assert order == [f"ua-disk-{index}1111111-2222-3333" for index in range(disks)]
    # the slots Ganeti reserved for them stay empty, as in hv_kvm's QEMU
    slots = {elem.get("slot") for elem in root.iterfind("devices/*/address[@type='pci']")}
    assert not slots & {hex(0x10 + index) for index in range(disks)}
    etree.RelaxNG(file=SCHEMA).assertValid(root)


def test_a_fifth_ide_disk_is_refused() -> None:
    with pytest.raises(HypervisorError, match="disk_type 'ide' with 5 disks"):
        build(_ide(load("ganeti30-vnc-2cpu.runtime"), 5))


def test_a_disk_driver_other_than_disk_types_is_refused() -> None:
    data = json.loads(_ide(load("ganeti30-vnc-2cpu.runtime"), 1))
    data[3][0][0]["hvinfo"]["driver"] = "virtio-blk-pci"
    with pytest.raises(HypervisorError, match="disk 0: driver 'virtio-blk-pci'"):
        build(json.dumps(data))


def test_accept_instance_refuses_before_anything_moves(test_uri: str) -> None:
    """AcceptInstance recognises hv_kvm's info and refuses, naming the hvparam, before
    a relay starts (libvirt's test driver: nothing could restore there anyway)."""
    info = changed(load("ganeti30-vnc-2cpu.runtime"), {C.HV_KVM_EXTRA: "-S"})
    inst = Instance(name="inst1.example.com", uuid=UUID, hvparams=json.loads(info)[2])
    with pytest.raises(HypervisorError, match="kvm_extra"):
        KVMHypervisor(uri=test_uri).AcceptInstance(inst, info, "127.0.0.1")


# -- the save-image header -----------------------------------------------------------

def test_save_header_layout() -> None:
    """The bytes libvirt's virQEMUSaveHeader has (tests/test_real_handover.py compares
    them with a save image libvirt wrote)."""
    blob = saveimage.build("<domain/>", was_running=True)
    assert saveimage.HEADER.size == saveimage.HEADER_SIZE == 92
    assert blob[:16] == b"LibvirtQemudSave"
    version, data_len, running, compressed, cookie = struct.unpack_from("=5I", blob, 16)
    assert (version, running, compressed, cookie) == (2, 1, 0, 0)
    assert len(blob) == 92 + data_len and len(blob) % 4096 == 0
    assert blob[92:101] == b"<domain/>" and blob[101] == 0
    assert blob[36:92] == bytes(56)
    parsed = saveimage.parse(blob)
    assert (parsed.xml, parsed.was_running, parsed.stream_offset) == ("<domain/>", True,
                                                                      len(blob))
    assert not saveimage.parse(saveimage.build("<domain/>", was_running=False)).was_running


@pytest.mark.parametrize("version,ok", [(9000000, True), (11003000, True), (4000000, True),
                                        (3009000, False), (12000000, False)])
def test_save_header_libvirt_versions(version: int, ok: bool) -> None:
    if ok:
        saveimage.check_version(version)
    else:
        with pytest.raises(HypervisorError, match="save-image header"):
            saveimage.check_version(version)


def test_save_header_parse_refuses_garbage() -> None:
    with pytest.raises(HypervisorError):
        saveimage.parse(b"short")
    with pytest.raises(HypervisorError, match="magic"):
        saveimage.parse(b"X" * 200)
    blob = bytearray(saveimage.build("<domain/>"))
    with pytest.raises(HypervisorError, match="data length"):
        saveimage.parse(bytes(blob[:200]))


def test_libvirt_11_reads_the_header_twice() -> None:
    """libvirt 11's restore reads header and XML in a pass of its own, then again: the
    relay writes them once per read (checked on 9.0 and 11.3)."""
    assert saveimage.header_reads(9_000_000) == 1
    assert saveimage.header_reads(11_000_000) == 1
    assert saveimage.header_reads(11_003_000) == 2
