"""BaseHypervisor's helpers, instance states, consoles, construction and URI choice.

None of these needs a libvirt daemon. LinuxPowercycle is only ever exercised against a
temporary file and harmless commands: an autouse fixture points SYSRQ_TRIGGER and
REBOOT_COMMAND away from the real ones before any test in this module runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest

import hvlibvirt
import hvlibvirt.node
from hvlibvirt import connection, constants as C
from hvlibvirt import tables
from hvlibvirt.base import BaseHypervisor, HvInstanceState
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance, InstanceConsole
from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor

pytestmark = pytest.mark.tier1

FIXTURES = Path(__file__).parent / "fixtures"
MEMINFO = FIXTURES / "proc_meminfo_32g.txt"
CPUINFO = FIXTURES / "proc_cpuinfo_4cpu_2sockets.txt"
REPO = Path(__file__).resolve().parent.parent

NODE_INFO_KEYS = {"memory_total", "memory_free", "memory_dom0", "cpu_total", "cpu_dom0",
                  "cpu_nodes", "cpu_sockets"}


@pytest.fixture(autouse=True)
def never_powercycle_this_machine(monkeypatch, tmp_path):
    """No test here may reach the real /proc/sysrq-trigger or run reboot."""
    monkeypatch.setattr(hvlibvirt.node, "SYSRQ_TRIGGER",
                        str(tmp_path / "no-such-dir" / "sysrq-trigger"))
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("false",))


# -- _FormatVerifyResults, GetAncillaryFiles -------------------------------------------------


@pytest.mark.parametrize("msgs, expected", [
    ([], None),
    (["a"], "a"),
    (["a", "b"], "a; b"),
    (["x is broken", "y is missing", "z"], "x is broken; y is missing; z"),
])
def test_format_verify_results(msgs, expected):
    assert BaseHypervisor._FormatVerifyResults(msgs) == expected
    assert KVMHypervisor._FormatVerifyResults(msgs) == expected


def test_ancillary_files_default_empty():
    assert BaseHypervisor.GetAncillaryFiles() == ([], [])


def test_ancillary_files_lists():
    class WithFiles(BaseHypervisor):
        ANCILLARY_FILES = ["/etc/a.conf", "/etc/b.conf"]
        ANCILLARY_FILES_OPT = ["/etc/b.conf"]

    files, optional = WithFiles.GetAncillaryFiles()
    assert files == ["/etc/a.conf", "/etc/b.conf"]
    assert optional == ["/etc/b.conf"]
    files.append("/etc/c.conf")            # the caller gets copies, not the class's lists
    assert WithFiles.ANCILLARY_FILES == ["/etc/a.conf", "/etc/b.conf"]


def test_ancillary_files_optional_must_be_subset():
    class Broken(BaseHypervisor):
        ANCILLARY_FILES = ["/etc/a.conf"]
        ANCILLARY_FILES_OPT = ["/etc/other.conf"]

    with pytest.raises(HypervisorError, match="subset"):
        Broken.GetAncillaryFiles()


# -- GetLinuxNodeInfo --------------------------------------------------------------------------


def test_linux_node_info_from_this_machine():
    info = BaseHypervisor.GetLinuxNodeInfo()
    assert set(info) == NODE_INFO_KEYS
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in info.values())
    assert info["memory_total"] > 0
    assert 0 <= info["memory_free"] <= info["memory_total"]
    assert 0 < info["memory_dom0"] <= info["memory_total"]
    assert info["cpu_total"] == os.cpu_count()
    assert info["cpu_dom0"] == info["cpu_total"]
    assert info["cpu_nodes"] >= 1
    assert info["cpu_sockets"] >= 1


def test_linux_node_info_memory_total_matches_proc_meminfo():
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_total_kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    assert BaseHypervisor.GetLinuxNodeInfo()["memory_total"] == mem_total_kib // 1024


def test_linux_node_info_is_ganetis(ganeti):
    """The same figures as Ganeti 3.0's own hv_base.GetLinuxNodeInfo, but for the CPU
    topology, which Ganeti does not read (it reports 1 socket and 1 node)."""
    from ganeti.hypervisor import hv_base

    ours = BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO), cpuinfo=str(CPUINFO))
    theirs = hv_base.BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO),
                                                     cpuinfo=str(CPUINFO))
    topology = {"cpu_sockets", "cpu_nodes"}
    assert {k: v for k, v in ours.items() if k not in topology} == \
        {k: v for k, v in theirs.items() if k not in topology}


def test_linux_node_info_from_fixture_files():
    info = BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO), cpuinfo=str(CPUINFO))
    assert set(info) == NODE_INFO_KEYS
    assert info["memory_total"] == 31505     # 32262000 kB // 1024
    assert info["memory_free"] == 19500      # MemFree 1000 + Buffers 500 + Cached 18000 MiB
    assert info["memory_dom0"] == 9000       # Active 9216000 kB // 1024
    assert info["cpu_total"] == 4            # four "processor" lines
    assert info["cpu_dom0"] == 4
    assert info["cpu_sockets"] == 2          # physical id 0 and 1
    assert info["cpu_nodes"] >= 1


def test_linux_node_info_meminfo_only():
    info = BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO))
    assert (info["memory_total"], info["memory_free"]) == (31505, 19500)
    assert info["cpu_total"] == os.cpu_count()


def test_linux_node_info_cpuinfo_without_physical_id(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n")
    info = BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO), cpuinfo=str(cpuinfo))
    assert info["cpu_total"] == 2
    assert info["cpu_sockets"] == 1


def test_linux_node_info_without_active_is_hypervisor_error(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32262000 kB\nMemFree:         1024000 kB\n"
                       "Buffers:          512000 kB\nCached:         18432000 kB\n")
    with pytest.raises(HypervisorError, match="Active"):
        BaseHypervisor.GetLinuxNodeInfo(meminfo=str(meminfo), cpuinfo=str(CPUINFO))


@pytest.mark.parametrize("which", ["meminfo", "cpuinfo"])
def test_linux_node_info_missing_file_is_hypervisor_error(tmp_path, which):
    kwargs = {"meminfo": str(MEMINFO), "cpuinfo": str(CPUINFO), which: str(tmp_path / "absent")}
    with pytest.raises(HypervisorError):
        BaseHypervisor.GetLinuxNodeInfo(**kwargs)


def test_linux_node_info_cpuinfo_without_processors_is_hypervisor_error(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: nothing here\n")
    with pytest.raises(HypervisorError):
        BaseHypervisor.GetLinuxNodeInfo(meminfo=str(MEMINFO), cpuinfo=str(cpuinfo))


# -- _InstanceStartupMemory ----------------------------------------------------------------------


class FixedFreeMemory(BaseHypervisor):
    """A hypervisor whose node reports a chosen memory_free (no libvirt needed)."""

    def __init__(self, free: int) -> None:
        super().__init__(uri="test:///default")
        self.free = free
        self.asked_with = []

    def GetNodeInfo(self, hvparams=None):  # noqa: N802
        self.asked_with.append(hvparams)
        return {"memory_free": self.free, "memory_total": 65536}


def test_kvm_startup_memory_is_the_linux_free_memory(frozen_meminfo) -> None:
    """What Ganeti's KVM reports as memory_free, without asking libvirt for its version."""
    free = KVMHypervisor.GetLinuxNodeInfo()["memory_free"]
    inst = Instance(name="inst1.example.com", beparams={"minmem": 1, "maxmem": free + 1000},
                    hvparams={})
    hv = KVMHypervisor(uri="test:///nonexistent/node.xml")  # would fail if it connected
    assert hv._InstanceStartupMemory(inst) == free


@pytest.mark.parametrize("free, expected", [
    (0, 512),        # nothing free: still minmem
    (100, 512),      # below minmem: minmem
    (512, 512),
    (1000, 1000),    # between: what is free
    (2048, 2048),
    (99999, 2048),   # plenty: maxmem
])
def test_instance_startup_memory(free, expected):
    hv = FixedFreeMemory(free)
    inst = Instance(name="inst1.example.com", beparams={"minmem": 512, "maxmem": 2048},
                    hvparams={"acpi": True})
    assert hv._InstanceStartupMemory(inst) == expected
    assert hv.asked_with == [{"acpi": True}]   # asks with the instance's hvparams


def test_instance_startup_memory_reads_attributes_only():
    # Ganeti's own objects work too: any object with beparams and hvparams attributes.
    inst = SimpleNamespace(name="x", beparams={"minmem": 128, "maxmem": 256}, hvparams={})
    assert FixedFreeMemory(200)._InstanceStartupMemory(inst) == 200


# -- LinuxPowercycle (never the real thing) -------------------------------------------------------


def test_powercycle_guard_is_active():
    assert hvlibvirt.node.SYSRQ_TRIGGER != "/proc/sysrq-trigger"
    assert hvlibvirt.node.REBOOT_COMMAND == ("false",)


def test_linux_powercycle_writes_b_to_sysrq(monkeypatch, tmp_path):
    trigger = tmp_path / "sysrq-trigger"
    marker = tmp_path / "reboot-ran"
    monkeypatch.setattr(hvlibvirt.node, "SYSRQ_TRIGGER", str(trigger))
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("touch", str(marker)))
    BaseHypervisor.LinuxPowercycle()
    assert trigger.read_text() == "b"
    assert not marker.exists()           # sysrq worked: no reboot command


@pytest.mark.parametrize("cls", [KVMHypervisor, XenPvmHypervisor, XenHvmHypervisor])
def test_powercycle_node_uses_sysrq(monkeypatch, tmp_path, cls):
    trigger = tmp_path / "sysrq-trigger"
    monkeypatch.setattr(hvlibvirt.node, "SYSRQ_TRIGGER", str(trigger))
    cls.PowercycleNode()
    assert trigger.read_text() == "b"


def test_linux_powercycle_falls_back_to_reboot_command(monkeypatch, tmp_path):
    marker = tmp_path / "reboot-ran"
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("touch", str(marker)))
    BaseHypervisor.LinuxPowercycle()      # SYSRQ_TRIGGER is in a missing directory
    assert marker.exists()


def test_linux_powercycle_sysrq_is_a_directory(monkeypatch, tmp_path):
    marker = tmp_path / "reboot-ran"
    monkeypatch.setattr(hvlibvirt.node, "SYSRQ_TRIGGER", str(tmp_path))
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("touch", str(marker)))
    BaseHypervisor.LinuxPowercycle()
    assert marker.exists()


def test_linux_powercycle_reboot_command_succeeds(monkeypatch):
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("true",))
    BaseHypervisor.LinuxPowercycle()      # must not raise


def test_linux_powercycle_reboot_command_fails(monkeypatch):
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", ("false",))
    with pytest.raises(HypervisorError):
        BaseHypervisor.LinuxPowercycle()


def test_linux_powercycle_failure_carries_stderr(monkeypatch):
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND",
                        ("sh", "-c", "echo reboot-refused >&2; exit 3"))
    with pytest.raises(HypervisorError, match="reboot-refused"):
        BaseHypervisor.LinuxPowercycle()


def test_linux_powercycle_missing_reboot_binary_is_hypervisor_error(monkeypatch, tmp_path):
    # A node without the reboot binary must still get a HypervisorError, not an OSError.
    monkeypatch.setattr(hvlibvirt.node, "REBOOT_COMMAND", (str(tmp_path / "no-reboot"),))
    with pytest.raises(HypervisorError):
        BaseHypervisor.LinuxPowercycle()


# -- HvInstanceState --------------------------------------------------------------------------------


def test_instance_state_values():
    assert HvInstanceState.RUNNING == C.HV_STATE_RUNNING == 0
    assert HvInstanceState.SHUTDOWN == C.HV_STATE_SHUTDOWN == 1


@pytest.mark.parametrize("state, running, shutdown", [
    (HvInstanceState.RUNNING, True, False),
    (HvInstanceState.SHUTDOWN, False, True),
    (7, False, False),
])
def test_instance_state_predicates(state, running, shutdown):
    assert HvInstanceState.IsRunning(state) is running
    assert HvInstanceState.IsShutdown(state) is shutdown


# -- InstanceConsole.Validate -----------------------------------------------------------------------

VALID_CONSOLES = {
    "ssh": dict(kind="ssh", host="node1", port=22, user="root",
                command=["/usr/bin/virsh", "console", "inst1"]),
    "ssh-no-port": dict(kind="ssh", host="node1", user="root", command=["true"]),
    "vnc": dict(kind="vnc", host="node1", port=5901, display=1),
    "spice": dict(kind="spice", host="node1", port=11000),
    "msg": dict(kind="msg", message="No serial shell for instance inst1"),
}


@pytest.mark.parametrize("fields", VALID_CONSOLES.values(), ids=VALID_CONSOLES)
def test_console_validate_ok(fields):
    assert InstanceConsole(instance="inst1", **fields).Validate() is True


INVALID_CONSOLES = {
    "ssh without host": (dict(VALID_CONSOLES["ssh"], host=None), "host"),
    "ssh without user": (dict(VALID_CONSOLES["ssh"], user=None), "user"),
    "ssh without command": (dict(VALID_CONSOLES["ssh"], command=None), "command"),
    "vnc without host": (dict(VALID_CONSOLES["vnc"], host=None), "host"),
    "vnc without port": (dict(VALID_CONSOLES["vnc"], port=None), "port"),
    "vnc without display": (dict(VALID_CONSOLES["vnc"], display=None), "display"),
    "spice without host": (dict(VALID_CONSOLES["spice"], host=None), "host"),
    "spice without port": (dict(VALID_CONSOLES["spice"], port=None), "port"),
    "msg without message": (dict(kind="msg"), "message"),
    "unknown kind": (dict(kind="rdp", host="node1", port=3389), "rdp"),
    # Ganeti asserts truthiness: an empty value is as missing as None
    "msg with empty message": (dict(kind="msg", message=""), "message"),
    "ssh with empty host": (dict(VALID_CONSOLES["ssh"], host=""), "host"),
    "ssh with empty command": (dict(VALID_CONSOLES["ssh"], command=[]), "command"),
}


@pytest.mark.parametrize("fields, named", INVALID_CONSOLES.values(), ids=INVALID_CONSOLES)
def test_console_validate_fails(fields, named):
    with pytest.raises(HypervisorError, match=named):
        InstanceConsole(instance="inst1", **fields).Validate()


@pytest.mark.parametrize("instance", ["", None])
def test_console_validate_needs_instance(instance):
    with pytest.raises(HypervisorError, match="instance"):
        InstanceConsole(instance=instance, **VALID_CONSOLES["msg"]).Validate()


# -- construction never connects; URI resolution -----------------------------------------------------

HV_CLASSES = [KVMHypervisor, XenPvmHypervisor, XenHvmHypervisor]


@pytest.fixture
def refuse_connections(monkeypatch):
    """Make every libvirt open raise; return the list of attempted URIs."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"libvirt connection attempted: {args}")

    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, refuse)
    return attempts


@pytest.mark.parametrize("cls", HV_CLASSES)
def test_construction_opens_no_connection(cls, refuse_connections, monkeypatch):
    monkeypatch.delenv(cls.URI_ENV, raising=False)
    unique = f"test:///default?hvlibvirt-no-connect-{uuid.uuid4().hex}"
    for hv in (cls(), cls(uri=unique)):
        assert isinstance(hv.uri, str) and hv.uri      # resolving the URI does not connect
        cls.CheckParameterSyntax(tables.HVC_DEFAULTS[cls.HV_NAME])
        hv.CheckParameterSyntax(tables.HVC_DEFAULTS[cls.HV_NAME])
    assert refuse_connections == []
    assert unique not in connection._connections  # noqa: SLF001


def test_refuse_connections_fixture_really_refuses(refuse_connections):
    # proves the fixture patches the very functions hvlibvirt.connection calls
    for name in ("open", "openReadOnly", "openAuth"):
        with pytest.raises(AssertionError, match="connection attempted"):
            getattr(connection.libvirt, name)("test:///default")
    assert len(refuse_connections) == 3


_FRESH_IMPORT = r"""
import sys, threading
import libvirt
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise RuntimeError("connection attempted")
libvirt.open = libvirt.openReadOnly = libvirt.openAuth = refuse
threads_before = {t.name for t in threading.enumerate()}
import hvlibvirt.kvm
from hvlibvirt import connection, constants
hv = hvlibvirt.kvm.KVMHypervisor()
uri = hv.uri
from hvlibvirt import tables
hv.CheckParameterSyntax(tables.HVC_DEFAULTS["kvm"])
new_threads = {t.name for t in threading.enumerate()} - threads_before
print("attempts", attempts)
print("cached", uri in connection._connections)
print("new_threads", sorted(new_threads))
"""


def _run_fresh(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVLIBVIRT_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=str(REPO), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fresh_import_of_kvm_opens_no_connection():
    out = _run_fresh(_FRESH_IMPORT).splitlines()
    assert out == ["attempts []", "cached False", "new_threads []"]


def test_fresh_import_of_package_does_not_load_libvirt():
    out = _run_fresh("import sys, hvlibvirt\nprint('libvirt' in sys.modules)")
    assert out.strip() == "False"


def test_no_event_loop_thread_from_construction(refuse_connections):
    before = {t.ident for t in threading.enumerate()}
    for cls in HV_CLASSES:
        cls()
    after = {t.ident for t in threading.enumerate()}
    assert after - before == set()


@pytest.mark.parametrize("cls, env, default", [
    (KVMHypervisor, "HVLIBVIRT_KVM_URI", "qemu:///system"),
    (XenPvmHypervisor, "HVLIBVIRT_XEN_URI", "xen:///system"),
    (XenHvmHypervisor, "HVLIBVIRT_XEN_URI", "xen:///system"),
])
def test_uri_resolution_order(cls, env, default, monkeypatch, tmp_path):
    for var in ("HVLIBVIRT_KVM_URI", "HVLIBVIRT_XEN_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(tmp_path / "absent.conf"))
    assert cls.URI_ENV == env
    assert cls().uri == default                                   # 4. the default
    conf = tmp_path / "hvlibvirt.conf"
    conf.write_text(f"[{cls.HV_NAME}]\nuri = test:///from-config\n")
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(conf))
    assert cls().uri == "test:///from-config"                     # 3. the file
    monkeypatch.setenv(env, "test:///from-env")
    assert cls().uri == "test:///from-env"                        # 2. the environment
    assert cls(uri="test:///from-keyword").uri == "test:///from-keyword"  # 1. the keyword
    assert cls(uri=None).uri == "test:///from-env"


def test_uri_is_resolved_once_per_object(monkeypatch, tmp_path):
    """Ganeti builds an object per RPC; one call reads the environment and the file once."""
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(tmp_path / "absent.conf"))
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "test:///first")
    hv = KVMHypervisor()
    assert hv.uri == "test:///first"
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "test:///second")
    assert hv.uri == "test:///first"
    assert KVMHypervisor().uri == "test:///second"


def test_serve_readies_what_forked_children_share(monkeypatch, tmp_path):
    """noded's parent silences libvirt's stderr printer once, copies the environment and
    finds the ownership mark directory; its children inherit all three."""
    from hvlibvirt import config, connection, ownership
    from hvlibvirt.ganeti import serve

    monkeypatch.setattr(config, "_environ", config._environ)  # serve() pins a copy
    monkeypatch.setattr(connection, "_silenced", False)
    calls = []
    monkeypatch.setattr(connection.libvirt, "registerErrorHandler",
                        lambda handler, ctx: calls.append(handler))
    monkeypatch.setattr(ownership, "_mark_dirs", {})
    monkeypatch.setattr(ownership, "mark_root", lambda: str(tmp_path / "owned"))
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "qemu+unix:///system?socket=/x")
    hv_map: dict[str, type] = {}
    serve(hv_map, iter(["kvm"]))
    assert hv_map == {"kvm": KVMHypervisor}
    assert calls == [connection._ignore_libvirt_error] and connection._silenced
    # Where the children look for ownership marks, found once.
    marks = ownership._mark_dirs["qemu+unix:///system?socket=/x"]
    assert marks is not None and os.path.isdir(marks)
    # The environment as it was: noded's children inherit it unchanged.
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "test:///after-serve")
    assert KVMHypervisor().uri != "test:///after-serve"


def test_uri_env_of_the_other_hypervisor_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("HVLIBVIRT_CONFIG", str(tmp_path / "absent.conf"))
    monkeypatch.setenv("HVLIBVIRT_XEN_URI", "xen:///elsewhere")
    monkeypatch.delenv("HVLIBVIRT_KVM_URI", raising=False)
    assert KVMHypervisor().uri == "qemu:///system"
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", "qemu:///session")
    monkeypatch.delenv("HVLIBVIRT_XEN_URI")
    assert XenPvmHypervisor().uri == "xen:///system"
    assert XenHvmHypervisor().uri == "xen:///system"


@pytest.mark.parametrize("cls", HV_CLASSES)
@pytest.mark.parametrize("bad", ["", "   ", 5])
def test_invalid_uri_keyword(cls, bad):
    with pytest.raises(HypervisorError):
        cls(uri=bad)


# -- get_hypervisor_class -----------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [
    ("kvm", KVMHypervisor),
    ("xen-pvm", XenPvmHypervisor),
    ("xen-hvm", XenHvmHypervisor),
])
def test_get_hypervisor_class(name, cls):
    got = hvlibvirt.get_hypervisor_class(name)
    assert got is cls
    assert issubclass(got, BaseHypervisor)
    assert got.HV_NAME == name


@pytest.mark.parametrize("name", ["lxc", "KVM", "xen", "fake", ""])
def test_get_hypervisor_class_unknown(name):
    with pytest.raises(HypervisorError, match=repr(name)):
        hvlibvirt.get_hypervisor_class(name)


def test_hypervisor_names_are_ganetis():
    assert (C.HT_KVM, C.HT_XEN_PVM, C.HT_XEN_HVM) == ("kvm", "xen-pvm", "xen-hvm")
    assert C.HYPER_TYPES == {"kvm", "xen-pvm", "xen-hvm"}


class _EndedMeanwhile:
    """A domain a restarted libvirtd ends between isActive() and destroy() (libvirt 11
    reconnects to the QEMU of an interrupted start, then finds it gone)."""

    def __init__(self) -> None:
        self.active, self.undefined = True, False

    def UUIDString(self) -> str:  # noqa: N802 - libvirt's names
        return "5e1f0000-0000-4000-8000-000000000001"

    def name(self) -> str:
        return "ended"

    def isActive(self) -> bool:  # noqa: N802
        return self.active

    def destroy(self) -> None:
        self.active = False
        message = "Requested operation is not valid: domain is not running"
        err = libvirt.libvirtError(message)
        err.err = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, message,
                   libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
        raise err

    def undefine(self) -> None:
        self.undefined = True


def test_a_failed_start_is_undefined_when_the_domain_ended_meanwhile() -> None:
    dom = _EndedMeanwhile()
    KVMHypervisor(uri="test:///default")._undo_start(dom, dom.name())
    assert dom.undefined
