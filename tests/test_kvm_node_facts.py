"""KVM's node-side pieces: startup options (listens, passwords, users, placement),
node-side validation and AssessParameters."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest
from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.kvm_node import (choose_target, dac_label, disk_buses, read_password,
                                resolve_bind, vnc_listen, vnc_password)

pytestmark = pytest.mark.tier1

DEFAULTS = tables.HVC_DEFAULTS[C.HT_KVM]


def hv(**overrides) -> dict:
    return dict(DEFAULTS, **overrides)


@pytest.mark.parametrize("flag,offered,expected", [
    ("", ["qemu", "kvm"], "kvm"), ("", ["qemu"], "qemu"), ("disabled", ["qemu", "kvm"], "qemu"),
    ("enabled", ["qemu", "kvm"], "kvm"), ("", ["test"], "test")])
def test_domain_type_follows_kvm_flag_and_the_host(flag, offered, expected) -> None:
    target = choose_target(hv(kvm_flag=flag, machine_version="pc-i440fx-7.2"),
                           {"x86_64": offered, "i686": ["qemu"]})
    assert target.domain_type == expected and target.arch == "x86_64"
    if expected != "test":
        assert target.emulator == DEFAULTS[C.HV_KVM_PATH]
        assert target.machine == "pc-i440fx-7.2"


@pytest.mark.parametrize("flag,offered", [("enabled", ["qemu"]), ("disabled", ["kvm"])])
def test_impossible_kvm_flag_is_refused(flag, offered) -> None:
    with pytest.raises(HypervisorError, match="kvm_flag"):
        choose_target(hv(kvm_flag=flag), {"x86_64": offered})


def test_password_file_single_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    assert read_password(hv(vnc_password_file=str(path)), C.HV_VNC_PASSWORD_FILE) == "s3cret"
    assert read_password(hv(), C.HV_VNC_PASSWORD_FILE) is None


@pytest.mark.parametrize("content", ["", "\n", "xyzzy-first\nplugh-second\n"])
def test_bad_password_files_never_leak_the_content(tmp_path: Path, content: str) -> None:
    path = tmp_path / "pw"
    path.write_text(content)
    with pytest.raises(HypervisorError, match="spice_password_file") as exc:
        read_password(hv(spice_password_file=str(path)), C.HV_KVM_SPICE_PASSWORD_FILE)
    assert "xyzzy" not in str(exc.value) and "plugh" not in str(exc.value)


def test_unreadable_password_file(tmp_path: Path) -> None:
    with pytest.raises(HypervisorError, match="vnc_password_file.*cannot read"):
        read_password(hv(vnc_password_file=str(tmp_path / "missing")), C.HV_VNC_PASSWORD_FILE)


def test_bind_addresses_resolve() -> None:
    assert resolve_bind("192.0.2.7", C.HV_KVM_SPICE_BIND) == "192.0.2.7"
    assert resolve_bind("lo", C.HV_KVM_SPICE_BIND, 4) == "127.0.0.1"
    assert resolve_bind("lo", C.HV_KVM_SPICE_BIND, 6) == "::1"
    with pytest.raises(HypervisorError, match="spice_bind"):
        resolve_bind("no-such-if0", C.HV_KVM_SPICE_BIND)
    assert vnc_listen("/run/vnc", "web1").socket == "/run/vnc/web1.vnc"
    assert vnc_listen("lo", "web1").address == "127.0.0.1"


def test_security_domain_resolves_to_a_dac_label() -> None:
    assert dac_label("root") == "+0:+0"
    with pytest.raises(HypervisorError, match="security_domain"):
        dac_label("no-such-user-hvl")


def test_mem_path_must_be_hugetlbfs(tmp_path: Path) -> None:
    params = hv(kvm_path="/bin/sh", kernel_path="", mem_path=str(tmp_path))
    with pytest.raises(HypervisorError, match="mem_path.*hugetlbfs"):
        KVMHypervisor.ValidateParameters(params)
    KVMHypervisor.ValidateParameters(dict(params, mem_path=""))


def test_assess_parameters_warns_like_ganeti() -> None:
    warnings = KVMHypervisor.AssessParameters(DEFAULTS)
    for fragment in ("cpu_type", "vhost_net", "migration_bandwidth", "machine_version"):
        assert any(fragment in w for w in warnings), fragment
    tuned = hv(cpu_type="Nehalem", vhost_net=True, migration_bandwidth=1000,
               machine_version="pc-i440fx-7.2")
    assert KVMHypervisor.AssessParameters(tuned) == []
    assert KVMHypervisor.AssessParameters(dict(tuned, machine_version="pc-q35-7.2")) == []
    assert any("not pinned" in w for w in KVMHypervisor.AssessParameters(
        dict(tuned, machine_version="q35")))
    assert any("SPICE listens" in w for w in KVMHypervisor.AssessParameters(
        dict(tuned, spice_bind="0.0.0.0")))


def test_long_vnc_passwords_keep_what_vnc_uses(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("0123456789abc\n")
    assert vnc_password(hv(vnc_password_file=str(path))) == "01234567"
    path.write_text("short\n")
    assert vnc_password(hv(vnc_password_file=str(path))) == "short"


def test_host_cpu_needs_kvm() -> None:
    with pytest.raises(HypervisorError, match="'cpu_type' is 'host'.*'kvm_flag'"):
        KVMHypervisor.CheckParameterSyntax(hv(cpu_type="host", kvm_flag="disabled"))
    KVMHypervisor.CheckParameterSyntax(hv(cpu_type="host", kvm_flag="enabled"))


class _Caps:
    """A connection answering getDomainCapabilities with ``answer`` (an exception is raised)."""

    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer

    def getDomainCapabilities(self, *_args) -> str:  # noqa: N802 - libvirt's name
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("devices,expected", [
    # QEMU's driver: the buses it offers
    ("<disk supported='yes'><enum name='bus'><value>virtio</value><value>scsi</value></enum>"
     "</disk>", frozenset({"virtio", "scsi"})),
    ("<disk supported='no'/>", frozenset()),  # no disks at all
    # libvirt 11's test driver: an empty device list says nothing about disks
    ("", None)], ids=["qemu", "no-disks", "test-driver"])
def test_disk_buses_from_domain_capabilities(devices: str, expected) -> None:
    # a machine of its own per case: the answers are cached per emulator and machine
    root = etree.fromstring(f"<domain type='test'><name>d</name><os><type arch='x86_64' "
                            f"machine='m-{len(devices)}'>hvm</type></os></domain>")
    caps = f"<domainCapabilities><devices>{devices}</devices></domainCapabilities>"
    assert disk_buses(_Caps(caps), "test:///caps", root) == expected


def test_disk_buses_unknown_when_the_driver_has_no_domain_capabilities() -> None:
    root = etree.fromstring("<domain type='test'><os><type arch='x86_64' machine='m-none'>hvm"
                            "</type></os></domain>")
    assert disk_buses(_Caps(libvirt.libvirtError("not supported")), "test:///none", root) is None
