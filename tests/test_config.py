"""The node's configuration file: keys, sections, precedence, errors, re-reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvlibvirt import config
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor

pytestmark = pytest.mark.tier1


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hvlibvirt.conf"
    monkeypatch.setenv(config.PATH_ENV, str(path))
    for var in ("HVLIBVIRT_KVM_URI", "HVLIBVIRT_XEN_URI", "HVLIBVIRT_MIGRATION_URI",
                "HVLIBVIRT_SERIAL_LOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_a_missing_file_is_an_empty_configuration(conf: Path) -> None:
    assert config.value("kvm", "uri") is None
    assert KVMHypervisor().uri == "qemu:///system"
    assert KVMHypervisor().migration_uri_template == "qemu+ssh://{target}/system"


def test_sections_per_hypervisor_and_defaults(conf: Path) -> None:
    conf.write_text("[DEFAULT]\nmigration_uri = qemu+tls://{target}/system\n\n"
                    "[kvm]\nuri = qemu+unix:///system?socket=/run/x/libvirt-sock\n"
                    "serial_log_dir = /var/log/hvlibvirt\n\n"
                    "[xen-hvm]\nuri = xen:///hvm\nmigration_uri = xen+ssh://{target}/system\n")
    kvm = KVMHypervisor()
    assert kvm.uri == "qemu+unix:///system?socket=/run/x/libvirt-sock"
    assert kvm.migration_uri_template == "qemu+tls://{target}/system"
    assert kvm.serial_log_dir == "/var/log/hvlibvirt"
    assert XenPvmHypervisor().uri == "xen:///system"            # no section: default
    assert XenPvmHypervisor().migration_uri_template == "qemu+tls://{target}/system"
    assert XenHvmHypervisor().uri == "xen:///hvm"
    assert XenHvmHypervisor().migration_uri_template == "xen+ssh://{target}/system"


def test_precedence_keyword_environment_file_default(conf: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    conf.write_text("[kvm]\nuri = test:///file\nmigration_uri = test:///file-{target}\n"
                    "serial_log_dir = /file\n")
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "test:///env")
    monkeypatch.setenv("HVLIBVIRT_MIGRATION_URI", "test:///env-{target}")
    monkeypatch.setenv("HVLIBVIRT_SERIAL_LOG_DIR", "/env")
    assert (KVMHypervisor().uri, KVMHypervisor().migration_uri_template,
            KVMHypervisor().serial_log_dir) == ("test:///env", "test:///env-{target}", "/env")
    hv = KVMHypervisor(uri="test:///kw", migration_uri="test:///kw-{target}",
                       serial_log_dir="/kw")
    assert (hv.uri, hv.migration_uri_template, hv.serial_log_dir) == (
        "test:///kw", "test:///kw-{target}", "/kw")
    assert KVMHypervisor.configured_uri() == "test:///env"   # classmethods: no keyword


def test_changes_are_seen_by_a_running_process(conf: Path) -> None:
    """noded's children are forked from a parent that may have read an older file."""
    conf.write_text("[kvm]\nuri = test:///one\n")
    assert KVMHypervisor().uri == "test:///one"
    conf.write_text("[kvm]\nuri = test:///second\n")
    os.utime(conf, ns=(1, 1))  # a different stamp even within the same clock tick
    assert KVMHypervisor().uri == "test:///second"


@pytest.mark.parametrize("text, match", [
    ("uri = test:///x\n", "no section headers"),
    ("[kvm]\nuri = a\n[kvm]\nuri = b\n", "already exists"),
    ("[lxc]\nuri = lxc:///\n", r"unknown section \[lxc\]"),
    ("[kvm]\nurl = qemu:///system\n", "unknown key 'url' in \\[kvm\\]"),
    ("[DEFAULT]\nsocket = /x\n", "unknown key 'socket' in \\[DEFAULT\\]"),
    ("[kvm]\nuri =\n", "non-empty"),
    (b"[kvm]\nuri = \xff\n", "Cannot read"),
])
def test_a_broken_file_is_a_hypervisor_error_naming_it(conf: Path, text: str | bytes,
                                                       match: str) -> None:
    conf.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(HypervisorError, match=match) as err:
        KVMHypervisor().uri
    assert str(conf) in str(err.value)


def test_a_broken_file_does_not_break_construction_node_info_or_verify(
        conf: Path, frozen_meminfo: Path) -> None:
    """Ganeti constructs a hypervisor for every RPC and calls GetNodeInfo unguarded."""
    conf.write_text("[kvm]\nurl = typo\n")
    hv = KVMHypervisor()
    info = hv.GetNodeInfo()
    assert info == KVMHypervisor.GetLinuxNodeInfo()           # no hv_version, no raise
    problem = hv.Verify()
    assert problem.startswith("libvirt is not usable") and "unknown key 'url'" in problem


def test_serial_log_dir_must_be_absolute(conf: Path) -> None:
    conf.write_text("[kvm]\nserial_log_dir = relative/dir\n")
    with pytest.raises(HypervisorError, match="serial log directory"):
        KVMHypervisor().serial_log_dir
    with pytest.raises(HypervisorError, match="serial log directory"):
        KVMHypervisor(serial_log_dir="also/relative")


def test_every_key_is_documented() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "ganeti.md").read_text()
    for key in config.KEYS:
        assert f"`{key}`" in readme, key
