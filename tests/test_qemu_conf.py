"""hvparams that are host-wide settings in libvirt: honoured when the node's qemu.conf
does what they ask (VNC TLS, use_chroot's confinement), refused on the node otherwise;
vnet_hdr=false where libvirt does the same (emulated NICs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlibvirt import constants as C, qemu_conf
from hvlibvirt import tables
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from test_hvparams_table import instance, render, without_metadata

pytestmark = pytest.mark.tier1


@pytest.fixture
def node_hvparams(tmp_path: Path) -> dict:
    """KVM hvparams whose files exist (ValidateParameters checks them on the node)."""
    for name in ("kvm", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"\0")
    return dict(tables.HVC_DEFAULTS[C.HT_KVM], kvm_path=str(tmp_path / "kvm"),
                kernel_path=str(tmp_path / "vmlinuz"), initrd_path=str(tmp_path / "initrd.img"))


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This node's qemu.conf, named by the configuration file's qemu_conf key."""
    path = tmp_path / "qemu.conf"
    node_conf = tmp_path / "hvlibvirt.conf"
    node_conf.write_text(f"[kvm]\nqemu_conf = {path}\n")
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(node_conf))
    return path


def test_libvirts_defaults_when_nothing_is_set(conf: Path) -> None:
    assert qemu_conf.read(str(conf)) == qemu_conf.DEFAULTS      # the file may be missing
    conf.write_text("# everything commented\n#vnc_tls = 1\n")
    assert qemu_conf.read(str(conf))["namespaces"] == ["mount"]


def test_the_syntax_libvirt_uses(conf: Path) -> None:
    conf.write_text('vnc_tls = 1   # on\nvnc_tls_x509_cert_dir = "/etc/pki/a#b"\n'
                    'namespaces = [\n  "mount",   # the only one\n]\nuser = "root"\n'
                    'cgroup_controllers = [ ]\n')
    values = qemu_conf.read(str(conf))
    assert values["vnc_tls"] == 1 and values["vnc_tls_x509_cert_dir"] == "/etc/pki/a#b"
    assert values["namespaces"] == ["mount"] and values["cgroup_controllers"] == []
    assert values["user"] == "root"


VNC = {C.HV_VNC_BIND_ADDRESS: "0.0.0.0", C.HV_VNC_TLS: True}
PKI = {C.HV_VNC_X509: "{pki}"}


@pytest.mark.parametrize("text, hvparams, problem", [
    ("", VNC, "does not set vnc_tls = 1"),
    ("vnc_tls = 1\n", VNC, None),
    ('vnc_tls = 1\ndefault_tls_x509_cert_dir = "{pki}"\n', {**VNC, **PKI}, None),
    ('vnc_tls = 1\nvnc_tls_x509_cert_dir = "{pki}"\n', {**VNC, **PKI}, None),
    ('vnc_tls = 1\ndefault_tls_x509_cert_dir = "{other}"\n', {**VNC, **PKI},
     "libvirt reads VNC certificates from {other}"),
    ('vnc_tls = 1\nvnc_tls_x509_cert_dir = "{pki}"\nvnc_tls_x509_verify = 1\n',
     {**VNC, **PKI, C.HV_VNC_X509_VERIFY: True}, None),
    ("vnc_tls = 1\ndefault_tls_x509_verify = 1\n", VNC, "vnc_tls_x509_verify = 1"),
    ('vnc_tls = 1\nvnc_tls_x509_cert_dir = "{pki}"\n',
     {**VNC, **PKI, C.HV_VNC_X509_VERIFY: True}, "vnc_tls_x509_verify = 0"),
    ("", {C.HV_VNC_TLS: True}, None),           # no VNC console: nothing to secure
    ("", {C.HV_KVM_USE_CHROOT: True}, None),    # libvirt's default mount namespace
    ('namespaces = [ "mount" ]\n', {C.HV_KVM_USE_CHROOT: True}, None),
    ("namespaces = [ ]\n", {C.HV_KVM_USE_CHROOT: True}, "use_chroot"),
])
def test_honoured_when_the_node_does_it(conf: Path, text: str, hvparams: dict,
                                        problem: str | None, node_hvparams: dict) -> None:
    dirs = {"pki": conf.parent / "pki", "other": conf.parent / "other"}
    for path in dirs.values():
        path.mkdir()
    fill = {k: str(v) for k, v in dirs.items()}
    conf.write_text(text.format(**fill))
    hvp = {**node_hvparams, **{k: v.format(**fill) if isinstance(v, str) else v
                          for k, v in hvparams.items()}}
    KVMHypervisor.CheckParameterSyntax(hvp)      # accepted master-side
    if problem is None:
        KVMHypervisor.ValidateParameters(hvp)
        return
    with pytest.raises(HypervisorError, match=problem.format(**fill)):
        KVMHypervisor.ValidateParameters(hvp)   # refused on the node, before a start


def test_an_unreadable_qemu_conf_is_a_hypervisor_error(conf: Path, node_hvparams: dict) -> None:
    conf.mkdir()
    with pytest.raises(HypervisorError, match="Cannot read libvirt's QEMU configuration"):
        KVMHypervisor.ValidateParameters({**node_hvparams, **VNC})


def test_vnet_hdr_off_is_what_libvirt_does_for_emulated_nics() -> None:
    on, block = instance({C.HV_NIC_TYPE: "e1000"})
    off, _ = instance({C.HV_NIC_TYPE: "e1000", C.HV_VNET_HDR: False})
    KVMHypervisor.CheckParameterSyntax(off.hvparams)
    assert without_metadata(render(on, block)) == without_metadata(render(off, block))
    virtio, _ = instance({C.HV_VNET_HDR: False})
    with pytest.raises(HypervisorError, match="'vnet_hdr' value False is not supported"):
        KVMHypervisor.CheckParameterSyntax(virtio.hvparams)
