"""CheckParameterSyntax / ValidateParameters of KVMHypervisor, XenPvmHypervisor and
XenHvmHypervisor: Ganeti's defaults pass; every malformed value raises HypervisorError
naming the parameter; KVM's cross-parameter rules reject and accept as Ganeti's do.

No libvirt connection is needed: all of these are classmethods on plain dicts.
"""

from __future__ import annotations

import copy

import pytest

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.xen import XenHvmHypervisor, XenHypervisor, XenPvmHypervisor

pytestmark = pytest.mark.tier1

CLASSES = {
    C.HT_KVM: KVMHypervisor,
    C.HT_XEN_PVM: XenPvmHypervisor,
    C.HT_XEN_HVM: XenHvmHypervisor,
}
ALL = pytest.mark.parametrize("hv", sorted(CLASSES))


def defaults(hv: str, **overrides) -> dict:
    hvp = copy.deepcopy(tables.HVC_DEFAULTS[hv])
    for key, value in overrides.items():
        assert key in hvp, f"test bug: {key} is not a {hv} parameter"
        hvp[key] = value
    return hvp


def kvm(**overrides) -> dict:
    return defaults(C.HT_KVM, **overrides)


def rejects(cls, hvparams, *names: str) -> str:
    """Assert CheckParameterSyntax raises HypervisorError naming every one of ``names``."""
    with pytest.raises(HypervisorError) as exc:
        cls.CheckParameterSyntax(hvparams)
    msg = str(exc.value)
    for name in names:
        assert f"'{name}'" in msg, f"{name!r} not named in: {msg}"
    return msg


# -- the tables --------------------------------------------------------------------------


@pytest.mark.parametrize("hv, count", [(C.HT_KVM, 65), (C.HT_XEN_PVM, 18), (C.HT_XEN_HVM, 25)])
def test_parameter_counts(hv, count):
    assert len(tables.HVC_DEFAULTS[hv]) == count
    assert len(CLASSES[hv].PARAMETERS) == count


@ALL
def test_parameters_keys_equal_defaults_keys(hv):
    assert set(CLASSES[hv].PARAMETERS) == set(tables.HVC_DEFAULTS[hv])


@ALL
def test_every_parameter_has_a_value_type(hv):
    assert set(tables.HVC_DEFAULTS[hv]) <= set(tables.HVS_PARAMETER_TYPES)


@pytest.mark.parametrize("hv, required", [
    (C.HT_KVM, {"boot_order", "disk_cache", "disk_type", "kvm_path", "migration_bandwidth",
                "migration_downtime", "migration_mode", "migration_port", "nic_type",
                "reboot_behavior", "scsi_controller_type", "security_model"}),
    (C.HT_XEN_PVM, {"kernel_path", "migration_mode", "migration_port", "reboot_behavior",
                    "xen_cmd"}),
    (C.HT_XEN_HVM, {"boot_order", "device_model", "disk_type", "kernel_path", "migration_mode",
                    "migration_port", "nic_type", "reboot_behavior", "vnc_password_file",
                    "xen_cmd"}),
])
def test_required_parameters_are_ganetis(hv, required):
    table = CLASSES[hv].PARAMETERS
    assert {name for name, check in table.items() if check[0]} == required


# -- Ganeti's defaults pass ----------------------------------------------------------------


@ALL
def test_defaults_pass(hv):
    CLASSES[hv].CheckParameterSyntax(defaults(hv))


@ALL
def test_check_does_not_modify_its_input(hv):
    hvp = defaults(hv)
    CLASSES[hv].CheckParameterSyntax(hvp)
    assert hvp == tables.HVC_DEFAULTS[hv]


def test_kvm_defaults_pass_through_the_base_class_too():
    # the base's PARAMETERS is empty: a full KVM dict is all unknown keys there
    rejects(BaseHypervisor, kvm(), "acpi")
    BaseHypervisor.CheckParameterSyntax({})


# -- unknown and missing keys ----------------------------------------------------------------


@pytest.mark.parametrize("hv, key", [
    (C.HT_KVM, "bogus_param"),
    (C.HT_KVM, "xen_cmd"),           # a Xen parameter is unknown to KVM
    (C.HT_KVM, "pae"),
    (C.HT_XEN_PVM, "kvm_path"),
    (C.HT_XEN_PVM, "boot_order"),    # an HVM parameter is unknown to PVM
    (C.HT_XEN_HVM, "use_bootloader"),
    (C.HT_XEN_HVM, "bogus_param"),
])
def test_unknown_key(hv, key):
    hvp = defaults(hv)
    hvp[key] = "x"
    msg = rejects(CLASSES[hv], hvp, key)
    assert "not supported" in msg


@pytest.mark.parametrize("hv, key", [(hv, key) for hv in sorted(CLASSES)
                                     for key in sorted(tables.HVC_DEFAULTS[hv])])
def test_missing_key(hv, key):
    hvp = defaults(hv)
    del hvp[key]
    msg = rejects(CLASSES[hv], hvp, key)
    assert "missing" in msg


@pytest.mark.parametrize("hv, key", [
    (C.HT_KVM, "kvm_path"), (C.HT_KVM, "boot_order"), (C.HT_KVM, "nic_type"),
    (C.HT_KVM, "disk_type"), (C.HT_KVM, "disk_cache"), (C.HT_KVM, "security_model"),
    (C.HT_KVM, "migration_mode"), (C.HT_KVM, "migration_port"),
    (C.HT_KVM, "reboot_behavior"), (C.HT_KVM, "scsi_controller_type"),
    (C.HT_XEN_PVM, "kernel_path"), (C.HT_XEN_PVM, "xen_cmd"),
    (C.HT_XEN_HVM, "boot_order"), (C.HT_XEN_HVM, "device_model"),
    (C.HT_XEN_HVM, "vnc_password_file"), (C.HT_XEN_HVM, "kernel_path"),
])
@pytest.mark.parametrize("empty", ["", None])
def test_required_key_unspecified(hv, key, empty):
    msg = rejects(CLASSES[hv], defaults(hv, **{key: empty}), key)
    assert "required" in msg


@pytest.mark.parametrize("hv, key", [
    (C.HT_KVM, "initrd_path"), (C.HT_KVM, "cdrom_image_path"), (C.HT_KVM, "cpu_mask"),
    (C.HT_KVM, "kvm_flag"), (C.HT_KVM, "usb_mouse"), (C.HT_KVM, "disk_aio"),
    (C.HT_XEN_PVM, "bootloader_path"), (C.HT_XEN_HVM, "vnc_bind_address"),
    (C.HT_XEN_HVM, "vif_type"),
])
def test_optional_key_empty_passes(hv, key):
    CLASSES[hv].CheckParameterSyntax(defaults(hv, **{key: ""}))


# An unset integer never reaches a Ganeti hypervisor (ForceDictType refuses it first).
@pytest.mark.parametrize("hv, key", [
    (C.HT_KVM, "kvm_pci_reservations"), (C.HT_KVM, "virtio_net_queues"),
    (C.HT_XEN_PVM, "cpu_weight"), (C.HT_XEN_HVM, "cpu_weight"),
])
@pytest.mark.parametrize("empty", ["", None])
def test_optional_integer_unset_is_refused(hv, key, empty):
    assert "must be of type int" in rejects(CLASSES[hv], defaults(hv, **{key: empty}), key)


# -- wrong types ---------------------------------------------------------------------------


@pytest.mark.parametrize("hv, key, value", [
    (C.HT_KVM, "acpi", "yes"),                  # bool given as a string
    (C.HT_KVM, "serial_console", 1),            # bool given as an int
    (C.HT_KVM, "migration_port", "8102"),       # int given as a string
    (C.HT_KVM, "migration_port", True),         # int given as a bool
    (C.HT_KVM, "migration_bandwidth", 32.0),    # int given as a float
    (C.HT_KVM, "serial_speed", "38400"),
    (C.HT_KVM, "kvm_pci_reservations", False),
    (C.HT_KVM, "kvm_path", 1),                  # string given as an int
    (C.HT_KVM, "kernel_args", ["ro"]),
    (C.HT_XEN_PVM, "use_bootloader", "yes"),
    (C.HT_XEN_PVM, "cpu_weight", "256"),
    (C.HT_XEN_PVM, "cpu_cap", True),
    (C.HT_XEN_HVM, "pae", "true"),
    (C.HT_XEN_HVM, "migration_port", "8002"),
    (C.HT_XEN_HVM, "cpu_weight", True),
])
def test_wrong_type(hv, key, value):
    msg = rejects(CLASSES[hv], defaults(hv, **{key: value}), key)
    assert "type" in msg


# -- per-parameter syntax ----------------------------------------------------------------------


@ALL
@pytest.mark.parametrize("mask", ["0-", "3-1", "all:x", "1-2-3", "a"])
def test_bad_cpu_mask(hv, mask):
    rejects(CLASSES[hv], defaults(hv, cpu_mask=mask), "cpu_mask")


@ALL
@pytest.mark.parametrize("mask", ["0", "0-3", "0-2,4:all:1,3", "all"])
def test_good_cpu_mask(hv, mask):
    CLASSES[hv].CheckParameterSyntax(defaults(hv, cpu_mask=mask))


@ALL
@pytest.mark.parametrize("port", [0, -1, 65535, 70000])
def test_out_of_range_port(hv, port):
    rejects(CLASSES[hv], defaults(hv, migration_port=port), "migration_port")


@ALL
@pytest.mark.parametrize("port", [1, 65534])
def test_port_bounds_accepted(hv, port):
    CLASSES[hv].CheckParameterSyntax(defaults(hv, migration_port=port))


@pytest.mark.parametrize("hv, key, value", [
    (C.HT_KVM, "kvm_path", "usr/bin/kvm"),
    (C.HT_KVM, "kernel_path", "vmlinuz"),
    (C.HT_KVM, "initrd_path", "initrd.img"),
    (C.HT_KVM, "vnc_x509_path", "pki"),
    (C.HT_KVM, "vnc_password_file", "vnc.pw"),
    (C.HT_KVM, "floppy_image_path", "a.img"),
    (C.HT_KVM, "cdrom_image_path", "a.iso"),
    (C.HT_KVM, "cdrom2_image_path", "a.iso"),
    (C.HT_KVM, "mem_path", "hugepages"),
    (C.HT_XEN_PVM, "kernel_path", "vmlinuz"),
    (C.HT_XEN_PVM, "bootloader_path", "pygrub"),
    (C.HT_XEN_PVM, "vif_script", "vif-bridge"),
    (C.HT_XEN_HVM, "kernel_path", "hvmloader"),
    (C.HT_XEN_HVM, "device_model", "qemu-dm"),
    (C.HT_XEN_HVM, "vnc_password_file", "vnc.pw"),
    (C.HT_XEN_HVM, "cdrom_image_path", "a.iso"),
])
def test_relative_path(hv, key, value):
    rejects(CLASSES[hv], defaults(hv, **{key: value}), key)


@pytest.mark.parametrize("hv, key", [
    (C.HT_KVM, "kvm_path"), (C.HT_KVM, "kernel_path"), (C.HT_KVM, "initrd_path"),
    (C.HT_XEN_PVM, "kernel_path"), (C.HT_XEN_HVM, "device_model"),
])
@pytest.mark.parametrize("path", ["/usr/bin/../bin/x", "/usr//bin/x", "/usr/./bin/x", "/usr/bin/"])
def test_non_normalized_path(hv, key, path):
    rejects(CLASSES[hv], defaults(hv, **{key: path}), key)


@pytest.mark.parametrize("key", ["cdrom_image_path", "cdrom2_image_path"])
@pytest.mark.parametrize("value", ["http://h/a.iso", "https://h/a.iso", "ftp://h/a.iso",
                                   "/srv/a.iso"])
def test_kvm_cdrom_accepts_file_or_url(key, value):
    KVMHypervisor.CheckParameterSyntax(kvm(**{key: value}))


def test_xen_hvm_cdrom_is_file_only():
    rejects(XenHvmHypervisor, defaults(C.HT_XEN_HVM, cdrom_image_path="http://h/a.iso"),
            "cdrom_image_path")


@pytest.mark.parametrize("key, value", [
    ("disk_type", "floppy"),
    ("nic_type", "virtio"),
    ("boot_order", "usb"),
    ("disk_cache", "unsafe"),
    ("disk_aio", "posix"),
    ("disk_discard", "trim"),
    ("cdrom_disk_type", "floppy"),
    ("scsi_controller_type", "pvscsi"),
    ("security_model", "selinux"),
    ("kvm_flag", "on"),
    ("usb_mouse", "touchpad"),
    ("reboot_behavior", "halt"),
    ("migration_mode", "offline"),
    ("spice_image_compression", "zstd"),
])
def test_kvm_value_outside_set(key, value):
    msg = rejects(KVMHypervisor, kvm(**{key: value}), key)
    assert repr(value) in msg


def test_kvm_set_error_lists_the_choices():
    msg = rejects(KVMHypervisor, kvm(disk_type="floppy"), "disk_type")
    assert "paravirtual" in msg and "ide" in msg


@pytest.mark.parametrize("key, value", [
    ("disk_type", "scsi-hd"), ("disk_type", "ide"), ("nic_type", "e1000"),
    ("kvm_flag", "enabled"), ("kvm_flag", "disabled"),
    ("usb_mouse", "tablet"), ("reboot_behavior", "exit"), ("migration_mode", "non-live"),
    ("scsi_controller_type", "virtio-scsi-pci"), ("disk_discard", "unmap"),
])
def test_kvm_value_inside_set(key, value):
    KVMHypervisor.CheckParameterSyntax(kvm(**{key: value}))


@pytest.mark.parametrize("value", [33, -1, 100])
def test_kvm_pci_reservations_out_of_range(value):
    rejects(KVMHypervisor, kvm(kvm_pci_reservations=value), "kvm_pci_reservations")


@pytest.mark.parametrize("value", [0, 12, 32])
def test_kvm_pci_reservations_in_range(value):
    KVMHypervisor.CheckParameterSyntax(kvm(kvm_pci_reservations=value))


@pytest.mark.parametrize("key, value", [
    ("virtio_net_queues", 0), ("virtio_net_queues", 33),
    ("cpu_cores", -1), ("cpu_threads", -1), ("cpu_sockets", -1),
    ("migration_bandwidth", -1), ("migration_downtime", -1),
    ("spice_ip_version", 5),
])
def test_kvm_int_out_of_range(key, value):
    rejects(KVMHypervisor, kvm(**{key: value}), key)


@pytest.mark.parametrize("key, value", [
    ("virtio_net_queues", 1), ("virtio_net_queues", 32),
    ("cpu_cores", 0), ("cpu_cores", 4), ("migration_bandwidth", 0), ("migration_downtime", 0),
])
def test_kvm_int_in_range(key, value):
    KVMHypervisor.CheckParameterSyntax(kvm(**{key: value}))


# -- KVM cross-parameter rules: each rule rejects, and its valid counterparts pass ----------

KVM_CROSS_REJECT = {
    "cdrom boot without iso": (dict(boot_order="cdrom", cdrom_image_path=""),
                               ("boot_order", "cdrom_image_path")),
    "kernel without root": (dict(kernel_path="/boot/vmlinuz", root_path=""), ("root_path",)),
    "kernel with None root": (dict(kernel_path="/boot/vmlinuz", root_path=None),
                              ("root_path",)),
    "user model without domain": (dict(security_model="user", security_domain=""),
                                  ("security_domain",)),
    "none model with domain": (dict(security_model="none", security_domain="nobody"),
                               ("security_domain",)),
    # 'pool' itself is refused (no uid pool), which is reported first.
    "pool model with domain": (dict(security_model="pool", security_domain="nobody"),
                               ("security_model",)),
    "serial speed invalid": (dict(serial_console=True, serial_speed=12345),
                             ("serial_speed",)),
    "serial speed zero": (dict(serial_console=True, serial_speed=0), ("serial_speed",)),
    # Ganeti's cross rule: client verification needs the certificate directory.
    "x509 verify without path": (dict(vnc_x509_verify=True, vnc_x509_path=""),
                                 ("vnc_x509_verify",)),
    "spice ipv4 bind with v6": (dict(spice_bind="127.0.0.1", spice_ip_version=6),
                                ("spice_bind", "spice_ip_version")),
    "spice ipv6 bind with v4": (dict(spice_bind="::", spice_ip_version=4),
                                ("spice_bind", "spice_ip_version")),
    "native aio with writeback": (dict(disk_aio="native", disk_cache="writeback"),
                                  ("disk_cache",)),
    "native aio with default cache": (dict(disk_aio="native", disk_cache="default"),
                                      ("disk_cache",)),
}


@pytest.mark.parametrize("overrides, names", KVM_CROSS_REJECT.values(), ids=KVM_CROSS_REJECT)
def test_kvm_cross_rule_rejects(overrides, names):
    rejects(KVMHypervisor, kvm(**overrides), *names)


KVM_CROSS_ACCEPT = {
    "cdrom boot with iso": dict(boot_order="cdrom", cdrom_image_path="/srv/a.iso"),
    "cdrom boot with url": dict(boot_order="cdrom", cdrom_image_path="https://h/a.iso"),
    "disk boot without iso": dict(boot_order="disk", cdrom_image_path=""),
    "network boot": dict(boot_order="network"),
    "kernel with root": dict(kernel_path="/boot/vmlinuz", root_path="/dev/vda1"),
    "no kernel without root": dict(kernel_path="", root_path=""),
    "no kernel with None root": dict(kernel_path="", root_path=None),
    "user model with domain": dict(security_model="user", security_domain="nobody"),
    "none model without domain": dict(security_model="none", security_domain=""),
    "serial speed valid": dict(serial_console=True, serial_speed=115200),
    "serial speed lowest": dict(serial_console=True, serial_speed=75),
    "serial speed highest": dict(serial_console=True, serial_speed=460800),
    "no serial, any speed": dict(serial_console=False, serial_speed=12345),
    "spice ipv4 with v4": dict(spice_bind="127.0.0.1", spice_ip_version=4),
    "spice ipv6 with v6": dict(spice_bind="::", spice_ip_version=6),
    "spice ipv4 unspecified version": dict(spice_bind="0.0.0.0", spice_ip_version=0),
    "spice interface with v6": dict(spice_bind="eth0", spice_ip_version=6),
    "spice all options with bind": dict(
        spice_bind="127.0.0.1", spice_ip_version=4, spice_password_file="/etc/spice.pw",
        spice_image_compression="lz", spice_jpeg_wan_compression="auto",
        spice_zlib_glz_wan_compression="never", spice_streaming_video="off",
        spice_use_tls=True),
    "spice exempt options without bind": dict(
        spice_bind="", spice_tls_ciphers="HIGH:-DES:-3DES:-EXPORT:-DH", spice_use_vdagent=False,
        spice_playback_compression=False),
    "native aio with no cache": dict(disk_aio="native", disk_cache="none"),
    "threads aio with writeback": dict(disk_aio="threads", disk_cache="writeback"),
}  # io_uring (Ganeti 3.1 on): tests/test_ganeti_versions.py


@pytest.mark.parametrize("overrides", KVM_CROSS_ACCEPT.values(), ids=KVM_CROSS_ACCEPT)
def test_kvm_cross_rule_accepts(overrides):
    KVMHypervisor.CheckParameterSyntax(kvm(**overrides))


# Combinations Ganeti's cross rules accept but libvirt cannot honour: refused, naming the
# parameter and saying why (not silently ignored).
KVM_LIBVIRT_REFUSED = {
    "pool model without domain": (dict(security_model="pool", security_domain=""),
                                  "security_model"),
    "spice ciphers other than the default": (dict(spice_tls_ciphers="HIGH"),
                                             "spice_tls_ciphers"),
}


@pytest.mark.parametrize("overrides, name", KVM_LIBVIRT_REFUSED.values(),
                         ids=KVM_LIBVIRT_REFUSED)
def test_kvm_values_libvirt_cannot_honour_are_refused(overrides, name):
    with pytest.raises(HypervisorError, match=rf"Parameter '{name}' value .* is not supported: "):
        KVMHypervisor.CheckParameterSyntax(kvm(**overrides))


@pytest.mark.parametrize("key, value", [
    ("spice_ip_version", 4),
    ("spice_ip_version", 6),
    ("spice_password_file", "/etc/spice.pw"),
    ("spice_image_compression", "lz"),
    ("spice_jpeg_wan_compression", "auto"),
    ("spice_zlib_glz_wan_compression", "never"),
    ("spice_streaming_video", "off"),
    ("spice_use_tls", True),
])
def test_kvm_spice_option_without_spice_bind(key, value):
    rejects(KVMHypervisor, kvm(spice_bind="", **{key: value}), key, "spice_bind")
    bind = "::" if (key, value) == ("spice_ip_version", 6) else "127.0.0.1"
    KVMHypervisor.CheckParameterSyntax(kvm(spice_bind=bind, **{key: value}))


# -- Xen -----------------------------------------------------------------------------------


def pvm(**overrides) -> dict:
    return defaults(C.HT_XEN_PVM, **overrides)


def hvm(**overrides) -> dict:
    return defaults(C.HT_XEN_HVM, **overrides)


@pytest.mark.parametrize("order", ["cdx", "x", "c d", "CD", "cd1", "disk"])
def test_hvm_boot_order_bad_letters(order):
    rejects(XenHvmHypervisor, hvm(boot_order=order), "boot_order")


@pytest.mark.parametrize("order", ["a", "c", "d", "n", "cd", "dc", "acdn", "ndca", "cc"])
def test_hvm_boot_order_good_letters(order):
    XenHvmHypervisor.CheckParameterSyntax(hvm(boot_order=order))


def test_hvm_boot_order_empty_is_required():
    msg = rejects(XenHvmHypervisor, hvm(boot_order=""), "boot_order")
    assert "required" in msg


@pytest.mark.parametrize("addr", ["::", "::1", "localhost", "eth0", "1.2.3", "256.0.0.1",
                                  "/var/run/vnc"])
def test_hvm_vnc_bind_address_must_be_ipv4(addr):
    rejects(XenHvmHypervisor, hvm(vnc_bind_address=addr), "vnc_bind_address")


@pytest.mark.parametrize("addr", ["0.0.0.0", "127.0.0.1", "192.0.2.10", ""])
def test_hvm_vnc_bind_address_ipv4_or_empty(addr):
    XenHvmHypervisor.CheckParameterSyntax(hvm(vnc_bind_address=addr))


# Ganeti takes 1 too; libvirt's <shares> does not (a refusal, see xen_params).
@pytest.mark.parametrize("hv, weight, ok", [
    (C.HT_XEN_PVM, 0, False), (C.HT_XEN_PVM, 1, False), (C.HT_XEN_PVM, 2, True),
    (C.HT_XEN_PVM, 65535, True), (C.HT_XEN_PVM, 65536, False), (C.HT_XEN_PVM, -1, False),
    (C.HT_XEN_HVM, 0, False), (C.HT_XEN_HVM, 1, False), (C.HT_XEN_HVM, 2, True),
    (C.HT_XEN_HVM, 65534, True), (C.HT_XEN_HVM, 65535, False), (C.HT_XEN_HVM, -1, False),
])
def test_xen_cpu_weight_bounds(hv, weight, ok):
    hvp = defaults(hv, cpu_weight=weight)
    if ok:
        CLASSES[hv].CheckParameterSyntax(hvp)
    else:
        rejects(CLASSES[hv], hvp, "cpu_weight")


def test_pvm_cpu_cap_nonnegative():
    rejects(XenPvmHypervisor, pvm(cpu_cap=-1), "cpu_cap")
    XenPvmHypervisor.CheckParameterSyntax(pvm(cpu_cap=100))


def test_pvm_bootloader_rule():
    rejects(XenPvmHypervisor, pvm(use_bootloader=True, bootloader_path=""),
            "bootloader_path", "use_bootloader")
    XenPvmHypervisor.CheckParameterSyntax(pvm(use_bootloader=True,
                                              bootloader_path="/usr/bin/pygrub"))
    XenPvmHypervisor.CheckParameterSyntax(pvm(use_bootloader=False, bootloader_path=""))


@pytest.mark.parametrize("hv", [C.HT_XEN_PVM, C.HT_XEN_HVM])
@pytest.mark.parametrize("cmd, ok", [("xm", True), ("xl", True), ("xe", False),
                                     ("virsh", False), ("XL", False)])
def test_xen_cmd(hv, cmd, ok):
    hvp = defaults(hv, xen_cmd=cmd)
    if ok:
        CLASSES[hv].CheckParameterSyntax(hvp)
    else:
        rejects(CLASSES[hv], hvp, "xen_cmd")


@pytest.mark.parametrize("key, value", [
    ("disk_type", "scsi"), ("nic_type", "virtio"), ("vif_type", "tap"),
    ("migration_mode", "fast"), ("reboot_behavior", "halt"),
])
def test_hvm_value_outside_set(key, value):
    rejects(XenHvmHypervisor, hvm(**{key: value}), key)


def test_hvm_migration_mode_default_is_non_live():
    assert tables.HVC_DEFAULTS[C.HT_XEN_HVM]["migration_mode"] == "non-live"
    XenHvmHypervisor.CheckParameterSyntax(hvm(migration_mode="live"))


# -- ValidateParameters (node side, looks at the system) ------------------------------------


@pytest.fixture
def kvm_node(tmp_path):
    """KVM hvparams whose files really exist under tmp_path."""
    kvm_bin = tmp_path / "kvm"
    kvm_bin.write_text("#!/bin/sh\n")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0")
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"\0")
    return kvm(kvm_path=str(kvm_bin), kernel_path=str(kernel), initrd_path=str(initrd))


def node_rejects(cls, hvparams, *names: str) -> str:
    with pytest.raises(HypervisorError) as exc:
        cls.ValidateParameters(hvparams)
    msg = str(exc.value)
    for name in names:
        assert f"'{name}'" in msg, f"{name!r} not named in: {msg}"
    return msg


def test_kvm_validate_passes_with_real_files(kvm_node):
    KVMHypervisor.CheckParameterSyntax(kvm_node)
    KVMHypervisor.ValidateParameters(kvm_node)


def test_kvm_validate_with_optional_files(kvm_node, tmp_path):
    (tmp_path / "floppy.img").write_bytes(b"\0")
    (tmp_path / "pki").mkdir()
    KVMHypervisor.ValidateParameters({
        **kvm_node, "floppy_image_path": str(tmp_path / "floppy.img"),
        "cdrom_image_path": "http://example.invalid/a.iso", "vnc_x509_path": str(tmp_path / "pki")})
    # mem_path must also be a hugetlbfs mount: see test_kvm_node_facts.py


@pytest.mark.parametrize("key", ["kvm_path", "kernel_path", "initrd_path",
                                 "vnc_password_file", "floppy_image_path", "cdrom_image_path",
                                 "spice_password_file"])
def test_kvm_validate_missing_file(kvm_node, tmp_path, key):
    msg = node_rejects(KVMHypervisor, {**kvm_node, key: str(tmp_path / "absent")}, key)
    assert "absent" in msg


@pytest.mark.parametrize("key", ["vnc_x509_path", "mem_path"])
def test_kvm_validate_missing_dir(kvm_node, tmp_path, key):
    node_rejects(KVMHypervisor, {**kvm_node, key: str(tmp_path / "absent")}, key)
    node_rejects(KVMHypervisor, {**kvm_node, key: str(tmp_path / "kvm")}, key)  # a file


def test_kvm_validate_default_kernel_missing_is_reported(kvm_node):
    # Ganeti's default kernel path does not exist on this machine.
    node_rejects(KVMHypervisor, {**kvm_node, "kernel_path": "/nonexistent/vmlinuz-3-kvmU"},
                 "kernel_path")


def test_kvm_validate_security_domain(kvm_node):
    KVMHypervisor.ValidateParameters({**kvm_node, "security_model": "user",
                                      "security_domain": "root"})
    msg = node_rejects(KVMHypervisor, {**kvm_node, "security_model": "user",
                                       "security_domain": "no-such-user-hvlibvirt"},
                       "security_domain")
    assert "no-such-user-hvlibvirt" in msg


@pytest.mark.parametrize("addr", ["lo", "127.0.0.1", "0.0.0.0", "::1", "/var/run/ganeti-vnc"])
def test_kvm_validate_vnc_bind_address_accepted(kvm_node, addr):
    KVMHypervisor.ValidateParameters({**kvm_node, "vnc_bind_address": addr})


@pytest.mark.parametrize("addr", ["no-such-iface0", "relative/path", "1.2.3",
                                  "/var/../run/vnc"])
def test_kvm_validate_vnc_bind_address_rejected(kvm_node, addr):
    node_rejects(KVMHypervisor, {**kvm_node, "vnc_bind_address": addr}, "vnc_bind_address")


def test_kvm_validate_vnc_and_spice_both_set(kvm_node):
    node_rejects(KVMHypervisor, {**kvm_node, "vnc_bind_address": "127.0.0.1",
                                 "spice_bind": "127.0.0.1"},
                 "vnc_bind_address", "spice_bind")


@pytest.mark.parametrize("bind, ok", [("127.0.0.1", True), ("lo", True), ("::1", True),
                                      ("no-such-iface0", False), ("/var/run/spice", False)])
def test_kvm_validate_spice_bind(kvm_node, bind, ok):
    hvp = {**kvm_node, "spice_bind": bind}
    if ok:
        KVMHypervisor.ValidateParameters(hvp)
    else:
        node_rejects(KVMHypervisor, hvp, "spice_bind")


def test_pvm_validate(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0")
    XenPvmHypervisor.ValidateParameters(pvm(kernel_path=str(kernel)))
    node_rejects(XenPvmHypervisor, pvm(kernel_path=str(tmp_path / "absent")), "kernel_path")
    node_rejects(XenPvmHypervisor, pvm(kernel_path=str(kernel),
                                       bootloader_path=str(tmp_path / "absent")),
                 "bootloader_path")


# -- VersionsSafeForMigration ---------------------------------------------------------------


@pytest.mark.parametrize("src, dst, ok", [
    ((9, 0, 0), (9, 0, 0), True),
    ([9, 0, 0], (9, 0, 0), True),   # RPC delivers lists; a list equals the same tuple
    ((9, 0, 0), (9, 0, 1), False),
    ((9, 0, 0), (9, 1, 0), False),
    ((9, 1), (9, 0), False),
    ((), (), True),
])
def test_base_versions_safe_for_migration(src, dst, ok):
    assert BaseHypervisor.VersionsSafeForMigration(src, dst) is ok


@pytest.mark.parametrize("src, dst, ok", [
    ((4, 1), (4, 1), True),
    ((4, 1), (4, 2), True),          # one minor newer
    ([4, 1], (4, 2), True),
    ((4, 1, 3), (4, 2, 0), True),
    ((4, 2), (4, 1), False),         # older
    ((4, 1), (4, 3), False),         # two minors newer
    ((4, 1), (5, 1), False),         # other major
    ((4, 1), (5, 2), False),
    ((4,), (4,), True),              # equal, however short
    ((4,), (4, 1), False),           # too short to compare minors
    ((4, 1), (4,), False),
])
def test_xen_versions_safe_for_migration(src, dst, ok):
    assert XenHypervisor.VersionsSafeForMigration(src, dst) is ok
    assert XenPvmHypervisor.VersionsSafeForMigration(src, dst) is ok
    assert XenHvmHypervisor.VersionsSafeForMigration(src, dst) is ok


@pytest.mark.parametrize("src, dst", [((9, 0, 0), (9, 0, 0)), ((8, 2, 1), (9, 0, 0)),
                                      ((9, 0, 0), (8, 2, 1))])
def test_kvm_versions_safe_for_migration_is_always_true(src, dst):
    # Ganeti's KVM always answers True (reference: ganeti-kvm.md 1.4, 5.1, 7.1): with
    # machine_version pinned, migration between QEMU versions works in most cases, and
    # False would abort every migration between nodes on different QEMU versions.
    assert KVMHypervisor.VersionsSafeForMigration(src, dst) is True
