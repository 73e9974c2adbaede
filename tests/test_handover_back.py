"""Tier 1: the way back from hvlibvirt to Ganeti's KVM (hvlibvirt.handover.back), pure:
the kept runtime and its device fingerprint, and QEMU's stream driven through a fake
monitor passthrough."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt.domain_xml import metadata
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover import back, model, runtime
from hvlibvirt.objects import new_migration_status

pytestmark = pytest.mark.tier1

FIXTURES = Path(__file__).parent / "fixtures" / "handover"
UUID = "8f0e6f0a-6b0e-4a57-9e0c-1b2c3d4e5f60"
INFO = (FIXTURES / "ganeti30-vnc-2cpu.runtime").read_text().strip()


def handed_over(info: str = INFO) -> etree._Element:
    """The domain the handover builds from ``info``, with the runtime kept."""
    data = json.loads(info)
    inst = SimpleNamespace(name=data[0][data[0].index("-name") + 1], uuid=UUID,
                           hvparams=data[2])
    root = model.build(runtime.parse(info), inst,
                       model.NodeFacts(machine_aliases={"pc": "pc-i440fx-7.2"}))
    _keep(root, info)
    return root


def _keep(root: etree._Element, info: str) -> None:
    elem = metadata.find(root)
    meta = metadata.parse(elem)
    meta.hv_kvm_runtime, meta.hv_kvm_devices = info, back.devices(root)
    elem.getparent().replace(elem, metadata.build(meta))


def test_metadata_keeps_runtime_and_migration_route() -> None:
    meta = metadata.InstanceMetadata(instance_uuid=UUID, hypervisor=C.HT_KVM,
                                     migration_target="10.0.0.2",
                                     migration_via=metadata.HV_KVM_STREAM,
                                     hv_kvm_runtime=INFO, hv_kvm_devices="abc")
    again = metadata.from_libvirt(etree.fromstring(metadata.to_libvirt(meta)))
    assert again == meta
    plain = metadata.InstanceMetadata(instance_uuid=UUID, hypervisor=C.HT_KVM)
    assert metadata.parse(metadata.build(plain)) == plain
    assert "hv-kvm-runtime" not in metadata.to_libvirt(plain)


def test_kept_runtime_offered_verbatim() -> None:
    assert back.kept_runtime(handed_over()) == INFO


def test_live_xml_details_keep_the_fingerprint() -> None:
    """What libvirt adds to a running domain's disks and NICs is not a change."""
    root = handed_over()
    before = back.devices(root)
    disk = root.find("devices/disk/alias[@name]/..")
    disk.find("source").set("index", "2")
    nic = root.find("devices/interface")
    etree.SubElement(nic, "target", dev="vnet7")
    nic.find("address").set("slot", nic.find("address").get("slot").upper()
                            .replace("0X", "0x"))
    assert back.devices(root) == before


@pytest.mark.parametrize("change", ["hot-added disk", "removed NIC", "other bridge",
                                    "other MAC", "other slot"])
def test_changed_devices_withdraw_the_runtime(change: str) -> None:
    root = handed_over()
    devs = root.find("devices")
    nic = devs.find("interface")
    if change == "hot-added disk":
        disk = copy.deepcopy(devs.find("disk/alias[@name]/.."))
        disk.find("alias").set("name", "ua-disk-99999999-2222-3333")
        disk.find("address").set("slot", "0x11")
        devs.append(disk)
    elif change == "removed NIC":
        devs.remove(nic)
    elif change == "other bridge":
        nic.find("source").set("bridge", "br-other")
    elif change == "other MAC":
        nic.find("mac").set("address", "aa:00:00:00:00:99")
    else:
        nic.find("address").set("slot", "0x1e")
    assert back.kept_runtime(root) is None


def test_domains_started_by_hvlibvirt_have_no_runtime() -> None:
    root = handed_over()
    elem = metadata.find(root)
    meta = metadata.parse(elem)
    meta.hv_kvm_runtime = meta.hv_kvm_devices = None
    elem.getparent().replace(elem, metadata.build(meta))
    assert back.kept_runtime(root) is None
    assert back.kept_runtime(etree.fromstring("<domain type='kvm'><name>x</name></domain>")
                             ) is None


class FakeQemu:
    """QEMU's monitor as libvirt's passthrough reaches it: QMP replies by command."""

    def __init__(self, migrate_status: str = "active") -> None:
        self.commands: list[dict] = []
        self.caps = {"xbzrle": False, "auto-converge": False, "events": True,
                     "postcopy-ram": False, "pause-before-switchover": True}
        self.migrate_status = migrate_status

    def __call__(self, dom, text: str, flags: int) -> str:
        cmd = json.loads(text)
        self.commands.append(cmd)
        name = cmd["execute"]
        if name == "query-migrate-capabilities":
            ret = [{"capability": c, "state": s} for c, s in self.caps.items()]
        elif name == "query-migrate":
            ret = {"status": self.migrate_status,
                   "ram": {"transferred": 50, "total": 200}}
        elif name == "migrate_cancel":
            self.migrate_status = "cancelled"
            ret = {}
        elif name == "bogus":
            return json.dumps({"error": {"class": "GenericError", "desc": "no such"}})
        else:
            ret = {}
        return json.dumps({"return": ret, "id": "libvirt-1"})

    def names(self) -> list[str]:
        return [c["execute"] for c in self.commands]


class FakeDom:
    def __init__(self, state: int = libvirt.VIR_DOMAIN_RUNNING) -> None:
        self.calls: list[str] = []
        self._state = state

    def name(self) -> str:
        return "inst1.example.com"

    def state(self) -> list[int]:
        return [self._state, 0]

    def suspend(self) -> None:
        self.calls.append("suspend")

    def resume(self) -> None:
        self.calls.append("resume")

    def destroy(self) -> None:
        self.calls.append("destroy")

    def isPersistent(self) -> bool:  # noqa: N802
        return True

    def undefine(self) -> None:
        self.calls.append("undefine")


@pytest.fixture
def qemu(monkeypatch):
    fake = FakeQemu()
    monkeypatch.setattr(back.libvirt_qemu, "qemuMonitorCommand", fake)
    marks: list = []
    monkeypatch.setattr(back.instance_metadata, "set_migration_target",
                        lambda dom, target, via=None: marks.append((target, via)))
    monkeypatch.setattr(back.ownership, "forget", lambda uri, dom: marks.append("forget"))
    fake.marks = marks
    return fake


HVP = {C.HV_MIGRATION_PORT: 8102, C.HV_MIGRATION_BANDWIDTH: 32,
       C.HV_MIGRATION_DOWNTIME: 30, C.HV_KVM_MIGRATION_CAPS: "xbzrle"}


def test_migrate_sends_qemus_stream_as_hv_kvm_does(qemu) -> None:
    dom = FakeDom()
    back.migrate(dom, HVP, "192.0.2.7", True)
    assert qemu.names() == ["migrate-set-parameters", "query-migrate-capabilities",
                            "migrate-set-capabilities", "migrate"]
    assert qemu.commands[0]["arguments"] == {"max-bandwidth": 32 * 1024 * 1024,
                                             "downtime-limit": 30}
    # the wanted one on, what shapes the stream otherwise off, libvirt's events left
    assert qemu.commands[2]["arguments"]["capabilities"] == [
        {"capability": "xbzrle", "state": True},
        {"capability": "pause-before-switchover", "state": False}]
    assert qemu.commands[3]["arguments"] == {"uri": "tcp:192.0.2.7:8102"}
    assert qemu.marks == [("192.0.2.7", back.VIA)]
    assert dom.calls == []


def test_migrate_non_live_pauses_first_and_brackets_ipv6(qemu) -> None:
    dom = FakeDom()
    back.migrate(dom, {**HVP, C.HV_KVM_MIGRATION_CAPS: ""}, "2001:db8::7", False)
    assert dom.calls == ["suspend"]
    assert qemu.commands[-1]["arguments"] == {"uri": "tcp:[2001:db8::7]:8102"}


@pytest.mark.parametrize("hvparams,match", [
    ({**HVP, C.HV_KVM_MIGRATION_CAPS: "xbzrle:postcopy-ram"}, "postcopy-ram"),
    ({k: v for k, v in HVP.items() if k != C.HV_MIGRATION_PORT}, "migration_port"),
    ({**HVP, C.HV_MIGRATION_BANDWIDTH: "fast"}, "migration_bandwidth"),
])
def test_migrate_refuses_before_any_data_moves(qemu, hvparams, match: str) -> None:
    with pytest.raises(HypervisorError, match=match):
        back.migrate(FakeDom(), hvparams, "192.0.2.7", True)
    assert "migrate" not in qemu.names() and qemu.marks == []


def test_qmp_errors_name_the_command(qemu) -> None:
    with pytest.raises(HypervisorError, match="QEMU's bogus failed .*no such"):
        back.qmp(FakeDom(), "bogus")


@pytest.mark.parametrize("qemu_status,ganeti", [
    ("setup", C.HV_MIGRATION_ACTIVE), ("active", C.HV_MIGRATION_ACTIVE),
    ("device", C.HV_MIGRATION_ACTIVE), ("completed", C.HV_MIGRATION_COMPLETED),
    ("failed", C.HV_MIGRATION_FAILED), ("cancelled", C.HV_MIGRATION_CANCELLED),
    ("none", C.HV_MIGRATION_FAILED)])
def test_status_from_query_migrate(qemu, qemu_status: str, ganeti: str) -> None:
    qemu.migrate_status = qemu_status
    status = back.status(FakeDom())
    assert status.status == ganeti
    assert (status.transferred_ram, status.total_ram) == (50, 200)


def test_finalize_success_removes_the_domain(qemu) -> None:
    qemu.migrate_status = "completed"
    dom = FakeDom(libvirt.VIR_DOMAIN_PAUSED)
    back.finalize_source("qemu:///system", dom, True)
    assert dom.calls == ["destroy", "undefine"] and qemu.marks == ["forget"]


def test_finalize_success_refused_unless_qemu_completed(qemu) -> None:
    dom = FakeDom()
    with pytest.raises(HypervisorError, match="'active'"):
        back.finalize_source("qemu:///system", dom, True)
    assert dom.calls == []


def test_finalize_failure_cancels_and_resumes(qemu) -> None:
    dom = FakeDom(libvirt.VIR_DOMAIN_PAUSED)
    back.finalize_source("qemu:///system", dom, False)
    assert "migrate_cancel" in qemu.names()
    assert dom.calls == ["resume"] and qemu.marks == [(None, None)]


def test_finalize_failure_after_completion_resumes_like_hv_kvm(qemu) -> None:
    """Ganeti has stopped the target's QEMU before it finalizes the source: the paused
    source holds the only copy of the guest."""
    qemu.migrate_status = "completed"
    dom = FakeDom(libvirt.VIR_DOMAIN_PAUSED)
    back.finalize_source("qemu:///system", dom, False)
    assert "migrate_cancel" not in qemu.names() and dom.calls == ["resume"]


# -- KvmMigrator: which way a migration goes -----------------------------------------

class FakeDomainXML(FakeDom):
    def __init__(self, root: etree._Element, via: str | None = None) -> None:
        super().__init__()
        self.root, self.via = root, via

    def isActive(self) -> bool:  # noqa: N802
        return True

    def XMLDesc(self, flags: int) -> str:  # noqa: N802
        return etree.tostring(self.root, encoding="unicode")


class FakeHost:
    uri = "qemu:///system"

    def __init__(self, dom) -> None:
        self.dom = dom

    def owned(self, name: str):
        return self.dom

    lookup = owned


def migrator(dom, monkeypatch) -> Any:
    from hvlibvirt.migrator import KvmMigrator
    monkeypatch.setattr("hvlibvirt.migrator.instance_metadata.read",
                        lambda d: SimpleNamespace(migration_via=d.via))
    return KvmMigrator(FakeHost(dom), lambda: "qemu+ssh://{target}/system", lambda: 4096)


INST = SimpleNamespace(name="inst1.example.com", hvparams=HVP)


def _hotplugged(root: etree._Element) -> etree._Element:
    root.find("devices/interface/mac").set("address", "aa:00:00:00:00:99")
    return root


def test_migration_info_is_the_runtime_only_while_it_holds(monkeypatch) -> None:
    assert migrator(FakeDomainXML(handed_over()), monkeypatch).info(INST) == INFO
    info = migrator(FakeDomainXML(_hotplugged(handed_over())), monkeypatch).info(INST)
    assert info.startswith("<domain")


def test_migrate_goes_the_way_info_pointed(monkeypatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(back, "migrate", lambda dom, hvp, target, live: sent.append("qemu"))
    monkeypatch.setattr("hvlibvirt.migrator.Migrator.migrate",
                        lambda self, inst, target, live: sent.append("libvirt"))
    migrator(FakeDomainXML(handed_over()), monkeypatch).migrate(INST, "192.0.2.7", True)
    migrator(FakeDomainXML(_hotplugged(handed_over())), monkeypatch).migrate(
        INST, "192.0.2.7", True)
    assert sent == ["qemu", "libvirt"]
    with pytest.raises(HypervisorError, match="Invalid migration target"):
        migrator(FakeDomainXML(handed_over()), monkeypatch).migrate(INST, "-x y", True)


def test_status_and_finalize_follow_qemus_stream(monkeypatch, qemu) -> None:
    # No libvirt job and the guest still here: what libvirt says of the way back.
    failed = new_migration_status(status=C.HV_MIGRATION_FAILED)
    monkeypatch.setattr("hvlibvirt.migrator.migration.read_status",
                        lambda dom: (failed, {}, libvirt.VIR_DOMAIN_RUNNING))
    ended: list = []
    monkeypatch.setattr("hvlibvirt.migrator.Migrator.finalize_source",
                        lambda self, inst, success: ended.append(("libvirt", success)))
    streaming = migrator(FakeDomainXML(handed_over(), via=back.VIA), monkeypatch)
    assert streaming.status(INST).status == C.HV_MIGRATION_ACTIVE  # QEMU's, not libvirt's
    streaming.finalize_source(INST, False)
    assert "migrate_cancel" in qemu.names() and ended == []
    plain = migrator(FakeDomainXML(handed_over()), monkeypatch)
    assert plain.status(INST) is failed
    plain.finalize_source(INST, True)
    assert ended == [("libvirt", True)]
