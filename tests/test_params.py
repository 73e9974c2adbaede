"""hvlibvirt.params: the standard checkers and Ganeti's five-tuple framework.

Pure unit tests: no libvirt, no daemon. The node-side checks (``check_node``) really
look at the file system, so they run against files and directories under tmp_path.
"""

from __future__ import annotations

import pytest

from hvlibvirt import constants as C, params as P
from hvlibvirt import tables
from hvlibvirt.errors import HypervisorError

pytestmark = pytest.mark.tier1

# -- CPU masks ---------------------------------------------------------------------------


@pytest.mark.parametrize("mask, expected", [
    ("0-2,5", [0, 1, 2, 5]),           # Ganeti's own example
    ("", []),
    ("3", [3]),
    ("0", [0]),
    ("1-1", [1]),
    ("2,0", [2, 0]),                   # order kept, as Ganeti does
    ("0-1,4-6", [0, 1, 4, 5, 6]),
    ("10-12", [10, 11, 12]),
])
def test_parse_cpu_mask(mask, expected):
    assert P.parse_cpu_mask(mask) == expected


@pytest.mark.parametrize("mask", [
    "3-1",      # lower > upper
    "1-2-3",    # only one dash allowed
    "a",        # not a number
    "1,,2",     # empty element
    "0-",       # missing upper bound
    "-1",       # missing lower bound
    "1,",       # trailing comma
    "all",      # 'all' is a multi-mask keyword only
    "1:2",      # ':' separates multi-mask entries only
])
def test_parse_cpu_mask_rejects(mask):
    with pytest.raises(ValueError):
        P.parse_cpu_mask(mask)


@pytest.mark.parametrize("mask, expected", [
    ("0-2,4:all:1,3", [[0, 1, 2, 4], [-1], [1, 3]]),   # Ganeti's own example
    ("", []),
    ("all", [[-1]]),
    ("3", [[3]]),
    ("2,1,1,0", [[0, 1, 2]]),                          # deduplicated and sorted
    ("0:1:2:3", [[0], [1], [2], [3]]),
    ("1-3,2:all", [[1, 2, 3], [-1]]),
])
def test_parse_multi_cpu_mask(mask, expected):
    assert P.parse_multi_cpu_mask(mask) == expected


@pytest.mark.parametrize("mask", ["0-", "3-1", "all:x", "1-2-3", "a", "1,,2", "0:3-1", "x:all"])
def test_parse_multi_cpu_mask_rejects(mask):
    with pytest.raises(ValueError):
        P.parse_multi_cpu_mask(mask)


def test_parse_multi_cpu_mask_all_is_cpu_pinning_off():
    assert P.parse_multi_cpu_mask(C.CPU_PINNING_ALL) == [list(C.CPU_PINNING_OFF)]
    assert C.CPU_PINNING_OFF == (C.CPU_PINNING_ALL_VAL,) == (-1,)


# -- value predicates --------------------------------------------------------------------


@pytest.mark.parametrize("path, ok", [
    ("/", True),
    ("/usr/bin/kvm", True),
    ("/a/b", True),
    ("usr/bin/kvm", False),     # relative
    ("vmlinuz", False),
    ("", False),
    ("/a/../b", False),         # not normalized
    ("/a/./b", False),
    ("/a//b", False),
    ("/a/b/", False),
    ("./a", False),
    (None, False),
    (5, False),
])
def test_is_norm_abs_path(path, ok):
    assert P.is_norm_abs_path(path) is ok


@pytest.mark.parametrize("value, ok", [
    ("http://example.org/a.iso", True),
    ("https://example.org/a.iso", True),
    ("ftp://example.org/a.iso", True),
    ("ftps://example.org/a.iso", True),
    ("file:///srv/a.iso", False),
    ("/srv/a.iso", False),
    ("example.org/a.iso", False),
    ("http:/example.org", False),
    ("gopher://example.org", False),
    ("", False),
    (None, False),
])
def test_is_url(value, ok):
    assert P.is_url(value) is ok


@pytest.mark.parametrize("value, unspecified", [
    (None, True),
    ("", True),
    (0, False),
    (False, False),
    (" ", False),
    ("0", False),
    ([], False),
])
def test_is_unspecified(value, unspecified):
    assert P.is_unspecified(value) is unspecified


# -- the check tuples --------------------------------------------------------------------

ALL_TUPLES = {
    "REQ_FILE_CHECK": True, "OPT_FILE_CHECK": False,
    "REQ_FILE_OR_URL_CHECK": True, "OPT_FILE_OR_URL_CHECK": False,
    "REQ_DIR_CHECK": True, "OPT_DIR_CHECK": False,
    "REQ_NET_PORT_CHECK": True, "OPT_NET_PORT_CHECK": False,
    "REQ_VIRTIO_NET_QUEUES_CHECK": True, "OPT_VIRTIO_NET_QUEUES_CHECK": False,
    "REQ_CPU_MASK_CHECK": True, "OPT_CPU_MASK_CHECK": False,
    "REQ_MULTI_CPU_MASK_CHECK": True, "OPT_MULTI_CPU_MASK_CHECK": False,
    "REQ_NONNEGATIVE_INT_CHECK": True, "OPT_NONNEGATIVE_INT_CHECK": False,
    "NO_CHECK": False, "REQUIRED_CHECK": True, "MIGRATION_MODE_CHECK": True,
}


@pytest.mark.parametrize("name, required", sorted(ALL_TUPLES.items()))
def test_check_tuple_shape_and_required_flag(name, required):
    check = getattr(P, name)
    assert isinstance(check, tuple) and len(check) == 5
    assert check[0] is required
    # a syntax function always comes with its message, a node function with its own
    assert (check[1] is None) == (check[2] is None)
    assert (check[3] is None) == (check[4] is None)


def test_no_check_and_required_check_have_no_functions():
    assert P.NO_CHECK == (False, None, None, None, None)
    assert P.REQUIRED_CHECK == (True, None, None, None, None)


@pytest.mark.parametrize("kind", ["FILE", "DIR"])
@pytest.mark.parametrize("value, ok", [
    ("/etc/hosts", True), ("/nonexistent/is/fine/for/syntax", True),
    ("etc/hosts", False), ("/etc/../etc/hosts", False), ("/etc//hosts", False),
    ("http://example.org/x", False),
])
def test_file_and_dir_syntax(kind, value, ok):
    for prefix in ("REQ", "OPT"):
        check = getattr(P, f"{prefix}_{kind}_CHECK")
        assert bool(check[1](value)) is ok, (prefix, kind, value)


@pytest.mark.parametrize("value, ok", [
    ("/srv/a.iso", True), ("http://h/a.iso", True), ("https://h/a.iso", True),
    ("ftp://h/a.iso", True), ("ftps://h/a.iso", True),
    ("srv/a.iso", False), ("/srv/../a.iso", False), ("file:///srv/a.iso", False),
])
def test_file_or_url_syntax(value, ok):
    for check in (P.REQ_FILE_OR_URL_CHECK, P.OPT_FILE_OR_URL_CHECK):
        assert bool(check[1](value)) is ok


@pytest.mark.parametrize("port, ok", [
    (1, True), (22, True), (8102, True), (65534, True),
    (0, False), (-1, False), (65535, False), (70000, False),
])
def test_net_port_syntax(port, ok):
    for check in (P.REQ_NET_PORT_CHECK, P.OPT_NET_PORT_CHECK):
        assert bool(check[1](port)) is ok


@pytest.mark.parametrize("queues, ok", [
    (1, True), (8, True), (C.MAX_VIRTIO_NET_QUEUES, True),
    (0, False), (-1, False), (C.MAX_VIRTIO_NET_QUEUES + 1, False),
])
def test_virtio_net_queues_syntax(queues, ok):
    assert C.MAX_VIRTIO_NET_QUEUES == 32
    for check in (P.REQ_VIRTIO_NET_QUEUES_CHECK, P.OPT_VIRTIO_NET_QUEUES_CHECK):
        assert bool(check[1](queues)) is ok


@pytest.mark.parametrize("value, ok", [(0, True), (1, True), (10**9, True), (-1, False)])
def test_nonnegative_int_syntax(value, ok):
    for check in (P.REQ_NONNEGATIVE_INT_CHECK, P.OPT_NONNEGATIVE_INT_CHECK):
        assert bool(check[1](value)) is ok


@pytest.mark.parametrize("value, ok", [
    ("0-2,5", True), ("3", True),
    ("", False),            # parses, but to an empty list: not a usable mask
    ("0-", False), ("3-1", False), ("all", False), ("0:1", False), ("x", False),
])
def test_cpu_mask_syntax(value, ok):
    for check in (P.REQ_CPU_MASK_CHECK, P.OPT_CPU_MASK_CHECK):
        assert check[1](value) is ok
        assert check[3] is None


@pytest.mark.parametrize("value, ok", [
    ("all", True), ("0-2,4:all:1,3", True), ("", True), ("1", True), ("0:1:2", True),
    ("0-", False), ("3-1", False), ("all:x", False), ("1-2-3", False),
])
def test_multi_cpu_mask_syntax(value, ok):
    for check in (P.REQ_MULTI_CPU_MASK_CHECK, P.OPT_MULTI_CPU_MASK_CHECK):
        assert check[1](value) is ok
        assert check[3] is None


@pytest.mark.parametrize("value, ok", [("live", True), ("non-live", True),
                                       ("nonlive", False), ("LIVE", False), ("", False)])
def test_migration_mode_check(value, ok):
    assert bool(P.MIGRATION_MODE_CHECK[1](value)) is ok


def test_param_in_set():
    check = P.param_in_set(True, ("a", "b", "c"))
    required, fn, msg, node_fn, node_msg = check
    assert required is True
    assert fn("a") and fn("c")
    assert not fn("d") and not fn("") and not fn("A")
    assert msg == "The value must be one of: a, b, c"
    assert node_fn is None and node_msg is None
    assert P.param_in_set(False, ("x",))[0] is False


def test_param_in_set_with_ints():
    fn = P.param_in_set(False, (4, 6))[1]
    assert fn(4) and fn(6) and not fn(5)


@pytest.mark.parametrize("value, ok", [(0, True), (1, True), (31, True), (32, True),
                                       (-1, False), (33, False)])
def test_int_range_check_is_inclusive(value, ok):
    required, fn, msg, node_fn, _ = P.int_range_check(False, 0, 32, "PCI slots")
    assert required is False and node_fn is None
    assert bool(fn(value)) is ok
    assert "PCI slots" in msg and "0-32" in msg


def test_int_range_check_required_flag():
    assert P.int_range_check(True, 1, 2, "x")[0] is True


# -- check_syntax ------------------------------------------------------------------------
# Names must be real hvparams: the value type comes from tables.HVS_PARAMETER_TYPES.

SYNTAX_PARAMS = {
    "kvm_path": P.REQ_FILE_CHECK,
    "initrd_path": P.OPT_FILE_CHECK,
    "cdrom_image_path": P.OPT_FILE_OR_URL_CHECK,
    "mem_path": P.OPT_DIR_CHECK,
    "migration_port": P.REQ_NET_PORT_CHECK,
    "virtio_net_queues": P.OPT_VIRTIO_NET_QUEUES_CHECK,
    "cpu_cores": P.OPT_NONNEGATIVE_INT_CHECK,
    "cpu_mask": P.OPT_MULTI_CPU_MASK_CHECK,
    "migration_mode": P.MIGRATION_MODE_CHECK,
    "disk_cache": P.param_in_set(True, C.HT_VALID_CACHE_TYPES),
    "kvm_pci_reservations": P.int_range_check(False, 0, 32, "PCI slots"),
    "acpi": P.NO_CHECK,
    "root_path": P.NO_CHECK,
}

GOOD = {
    "kvm_path": "/usr/bin/kvm",
    "initrd_path": "",
    "cdrom_image_path": "http://example.org/a.iso",
    "mem_path": "/dev/hugepages",
    "migration_port": 8102,
    "virtio_net_queues": 1,
    "cpu_cores": 0,
    "cpu_mask": "all",
    "migration_mode": "live",
    "disk_cache": "none",
    "kvm_pci_reservations": 0,
    "acpi": False,
    "root_path": None,
}


def syntax_error(hvparams, parameters=SYNTAX_PARAMS) -> str:
    with pytest.raises(HypervisorError) as exc:
        P.check_syntax(parameters, hvparams, tables.HVS_PARAMETER_TYPES)
    return str(exc.value)


def test_check_syntax_accepts_good_values():
    P.check_syntax(SYNTAX_PARAMS, GOOD, tables.HVS_PARAMETER_TYPES)  # must not raise


def test_check_syntax_accepts_zero_and_false_where_allowed():
    # 0 and False are specified values: they are type-checked and syntax-checked, and pass.
    P.check_syntax(SYNTAX_PARAMS, {**GOOD, "cpu_cores": 0, "kvm_pci_reservations": 0,
                                   "acpi": False}, tables.HVS_PARAMETER_TYPES)


def test_check_syntax_unknown_key():
    msg = syntax_error({**GOOD, "bogus_param": 1})
    assert "'bogus_param'" in msg and "not supported" in msg


@pytest.mark.parametrize("missing", sorted(SYNTAX_PARAMS))
def test_check_syntax_missing_key(missing):
    hvp = dict(GOOD)
    del hvp[missing]
    msg = syntax_error(hvp)
    assert f"'{missing}'" in msg and "missing" in msg


@pytest.mark.parametrize("name", ["kvm_path", "migration_port", "migration_mode", "disk_cache"])
@pytest.mark.parametrize("empty", [None, ""])
def test_check_syntax_required_unspecified(name, empty):
    msg = syntax_error({**GOOD, name: empty})
    assert f"'{name}'" in msg and "required" in msg


@pytest.mark.parametrize("name", ["initrd_path", "cdrom_image_path", "mem_path", "cpu_mask"])
def test_check_syntax_optional_empty_string_is_skipped(name):
    P.check_syntax(SYNTAX_PARAMS, {**GOOD, name: ""}, tables.HVS_PARAMETER_TYPES)


# Ganeti's ForceDictType refuses None for strings and None or "" for integers before
# any hypervisor sees them; a careless caller's None gets the same answer here.
@pytest.mark.parametrize("name,empty,vtype", [
    ("initrd_path", None, "string"), ("cpu_mask", None, "string"),
    ("virtio_net_queues", None, "int"), ("virtio_net_queues", "", "int"),
    ("cpu_cores", "", "int"), ("kvm_pci_reservations", None, "int")])
def test_check_syntax_unset_value_of_the_wrong_type_is_refused(name, empty, vtype):
    msg = syntax_error({**GOOD, name: empty})
    assert f"'{name}' must be of type {vtype}" in msg


def test_check_syntax_does_not_run_the_check_on_unspecified_optional_values():
    calls = []

    def spy(value):
        calls.append(value)
        return False

    parameters = {"kernel_args": (False, spy, "spied", None, None)}
    P.check_syntax(parameters, {"kernel_args": ""}, tables.HVS_PARAMETER_TYPES)
    assert calls == []
    with pytest.raises(HypervisorError, match="spied"):
        P.check_syntax(parameters, {"kernel_args": "x"}, tables.HVS_PARAMETER_TYPES)
    assert calls == ["x"]


@pytest.mark.parametrize("name, value", [
    ("acpi", "yes"),                 # bool as string
    ("acpi", 1),                     # bool as int
    ("migration_port", "8102"),      # int as string
    ("migration_port", True),        # bool is not an int
    ("migration_port", 8102.0),      # float is not an int
    ("cpu_cores", False),
    ("kvm_path", 5),                 # string as int
    ("kvm_path", b"/usr/bin/kvm"),   # bytes are not a string
    ("root_path", 7),                # maybe-string: None or str only
])
def test_check_syntax_wrong_type(name, value):
    msg = syntax_error({**GOOD, name: value})
    assert f"'{name}'" in msg and "type" in msg


@pytest.mark.parametrize("name, value", [
    ("kvm_path", "usr/bin/kvm"),
    ("kvm_path", "/usr/bin/../bin/kvm"),
    ("kvm_path", "/usr//bin/kvm"),
    ("initrd_path", "initrd.img"),
    ("cdrom_image_path", "file:///a.iso"),
    ("mem_path", "hugepages"),
    ("migration_port", 0),
    ("migration_port", 65535),
    ("migration_port", 70000),
    ("virtio_net_queues", 0),        # 0 is specified, so it is checked (and fails)
    ("virtio_net_queues", 33),
    ("cpu_cores", -1),
    ("cpu_mask", "0-"),
    ("cpu_mask", "3-1"),
    ("cpu_mask", "all:x"),
    ("migration_mode", "fast"),
    ("disk_cache", "floppy"),
    ("kvm_pci_reservations", 33),
    ("kvm_pci_reservations", -1),
])
def test_check_syntax_fails_syntax_check(name, value):
    msg = syntax_error({**GOOD, name: value})
    assert f"Parameter '{name}' fails syntax check" in msg
    assert repr(value) in msg


def test_check_syntax_message_carries_the_checker_message():
    msg = syntax_error({**GOOD, "disk_cache": "floppy"})
    assert "The value must be one of: default, none, writeback, writethrough" in msg


@pytest.mark.parametrize("hvparams", [None, [], "kvm_path=/usr/bin/kvm", 5])
def test_check_syntax_rejects_non_mappings(hvparams):
    with pytest.raises(HypervisorError):
        P.check_syntax(SYNTAX_PARAMS, hvparams, tables.HVS_PARAMETER_TYPES)


def test_check_syntax_empty_table_and_empty_params():
    P.check_syntax({}, {}, tables.HVS_PARAMETER_TYPES)
    with pytest.raises(HypervisorError, match="'acpi'"):
        P.check_syntax({}, {"acpi": True}, tables.HVS_PARAMETER_TYPES)


# -- check_node (really looks at the file system) ----------------------------------------

NODE_PARAMS = {
    "kvm_path": P.REQ_FILE_CHECK,
    "initrd_path": P.OPT_FILE_CHECK,
    "cdrom_image_path": P.OPT_FILE_OR_URL_CHECK,
    "mem_path": P.OPT_DIR_CHECK,
    "vnc_x509_path": P.REQ_DIR_CHECK,
    "migration_port": P.REQ_NET_PORT_CHECK,   # no node function: never fails on the node
    "acpi": P.NO_CHECK,
}


@pytest.fixture
def node_env(tmp_path):
    f = tmp_path / "kvm"
    f.write_text("#!/bin/sh\n")
    iso = tmp_path / "a.iso"
    iso.write_bytes(b"\0" * 16)
    d = tmp_path / "dir"
    d.mkdir()
    hvp = {
        "kvm_path": str(f),
        "initrd_path": "",
        "cdrom_image_path": str(iso),
        "mem_path": str(d),
        "vnc_x509_path": str(d),
        "migration_port": 8102,
        "acpi": True,
    }
    return tmp_path, hvp


def node_error(hvparams) -> str:
    with pytest.raises(HypervisorError) as exc:
        P.check_node(NODE_PARAMS, hvparams)
    return str(exc.value)


def test_check_node_passes_with_real_files(node_env):
    _, hvp = node_env
    P.check_node(NODE_PARAMS, hvp)


def test_check_node_file_or_url_accepts_url_without_network(node_env):
    _, hvp = node_env
    P.check_node(NODE_PARAMS, {**hvp, "cdrom_image_path": "https://example.invalid/a.iso"})


@pytest.mark.parametrize("name", ["kvm_path", "cdrom_image_path"])
def test_check_node_missing_file(node_env, name):
    tmp, hvp = node_env
    msg = node_error({**hvp, name: str(tmp / "absent")})
    assert f"Parameter '{name}' fails validation" in msg and "absent" in msg


@pytest.mark.parametrize("name", ["kvm_path", "initrd_path", "cdrom_image_path"])
def test_check_node_file_check_rejects_a_directory(node_env, name):
    tmp, hvp = node_env
    assert f"'{name}'" in node_error({**hvp, name: str(tmp / "dir")})


@pytest.mark.parametrize("name", ["mem_path", "vnc_x509_path"])
def test_check_node_dir_check(node_env, name):
    tmp, hvp = node_env
    assert f"'{name}'" in node_error({**hvp, name: str(tmp / "kvm")})      # a file
    assert f"'{name}'" in node_error({**hvp, name: str(tmp / "absent")})   # nothing


def test_check_node_skips_unspecified_optional(node_env):
    _, hvp = node_env
    P.check_node(NODE_PARAMS, {**hvp, "initrd_path": "", "mem_path": None,
                               "cdrom_image_path": ""})


@pytest.mark.parametrize("empty", ["", None])
def test_check_node_runs_required_checks_on_unspecified(node_env, empty):
    _, hvp = node_env
    assert "'vnc_x509_path'" in node_error({**hvp, "vnc_x509_path": empty})


def test_check_node_without_node_function_never_fails(node_env):
    _, hvp = node_env
    # The port's syntax is wrong, but the port has no node-side check.
    P.check_node(NODE_PARAMS, {**hvp, "migration_port": 0})


def test_check_node_missing_key_is_hypervisor_error(node_env):
    _, hvp = node_env
    del hvp["acpi"]
    assert "'acpi'" in node_error(hvp)
