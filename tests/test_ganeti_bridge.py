"""Inside Ganeti we are Ganeti: our errors are Ganeti's classes and the objects we
return are Ganeti's; outside Ganeti the same names stand alone.

"Inside" runs in a fresh interpreter with Ganeti 3.0's own modules (from the
ganeti-3.0 package) importable, as in Ganeti's node daemon and job processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hvlibvirt
from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.errors import INSIDE_GANETI, HotplugError, HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import (Instance, InstanceConsole, MigrationStatus, new_instance_console,
                               new_migration_status)

pytestmark = pytest.mark.tier1

REPO = Path(__file__).resolve().parent.parent

INSIDE = r"""
import json, sys
from ganeti import errors, objects          # what Ganeti has imported before us
import hvlibvirt.errors as ours
from hvlibvirt import constants as C, tables
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Instance, new_migration_status

out = {"inside": ours.INSIDE_GANETI}
try:
    raise ours.HotplugError("x")
except errors.HotplugError as err:           # backend.py's handlers
    out["hotplug_is_ganetis"] = isinstance(err, errors.HypervisorError)
try:
    KVMHypervisor.CheckParameterSyntax({})   # cluster verify's handler
except errors.GenericError as err:
    out["syntax_error_class"] = type(err).__mro__[1].__module__
status = new_migration_status(status="active", transferred_ram=5, total_ram=10)
out["status_class"] = type(status).__module__ + "." + type(status).__name__
out["status_dict"] = status.ToDict()        # what noded returns over RPC
inst = Instance(name="inst1.example.com",
                hvparams=dict(tables.HVC_DEFAULTS["kvm"], serial_console=True))
node = objects.Node(name="node1.example.com", ndparams={})
group = objects.NodeGroup(name="default", ndparams={"ssh_port": 22})
console = KVMHypervisor.GetInstanceConsole(inst, node, group, inst.hvparams, {})
out["console_class"] = type(console).__module__
wire = json.loads(json.dumps(console.ToDict()))
objects.InstanceConsole.FromDict(wire).Validate()   # what the client does
out["console_wire"] = wire
print(json.dumps(out))
"""


def _inside(ganeti) -> dict:
    _constants, objects = ganeti
    modules = Path(objects.__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVLIBVIRT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(modules), str(REPO)])
    done = subprocess.run([sys.executable, "-c", INSIDE], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_inside_ganeti_our_errors_and_objects_are_ganetis(ganeti) -> None:
    out = _inside(ganeti)
    assert out["inside"] is True
    assert out["hotplug_is_ganetis"] is True
    assert out["syntax_error_class"] == "ganeti.errors"
    assert out["status_class"] == "ganeti.objects.MigrationStatus"
    assert out["status_dict"] == {"status": "active", "transferred_ram": 5, "total_ram": 10}
    assert out["console_class"] == "ganeti.objects"
    wire = out["console_wire"]
    assert (wire["kind"], wire["host"], wire["user"], wire["port"]) == (
        C.CONS_SSH, "node1.example.com", "root", 22)
    assert wire["command"][-4:] == ["console", "--hypervisor", "kvm", "inst1.example.com"]


def test_outside_ganeti_they_stand_alone() -> None:
    assert not INSIDE_GANETI
    assert HypervisorError.__mro__[1] is Exception
    assert issubclass(HotplugError, HypervisorError)
    assert type(new_migration_status(status="completed")) is MigrationStatus
    assert type(new_instance_console(instance="i", kind=C.CONS_MESSAGE, message="m")) \
        is InstanceConsole


def test_our_objects_cross_an_rpc_like_ganetis() -> None:
    status = MigrationStatus(status=C.HV_MIGRATION_ACTIVE, transferred_ram=1, total_ram=4)
    assert status.ToDict() == {"status": "active", "transferred_ram": 1, "total_ram": 4}
    assert MigrationStatus.FromDict(json.loads(json.dumps(status.ToDict()))) == status
    assert status.Validate()
    with pytest.raises(HypervisorError, match="migration status"):
        MigrationStatus(status="sideways").Validate()
    inst = Instance(name="i1.example.com",
                    hvparams=dict(tables.HVC_DEFAULTS[C.HT_KVM], serial_console=True))
    node = type("Node", (), {"name": "node1.example.com"})()
    console = KVMHypervisor.GetInstanceConsole(inst, node, None, inst.hvparams, {})
    again = InstanceConsole.FromDict(json.loads(json.dumps(console.ToDict())))
    assert again == console and again.Validate()
    assert console.command == hvlibvirt.helper_command("console", "--hypervisor", "kvm",
                                                       "i1.example.com")
    for bad, match in (([], "expects a dict"), ({"instance": "i", "kind": "ssh", "colour": 1},
                                                "unknown fields")):
        with pytest.raises(HypervisorError, match=match):
            InstanceConsole.FromDict(bad)


def test_helper_command_runs_this_copy_whatever_the_path(tmp_path: Path) -> None:
    """The console command and the migration helper import the hvlibvirt they were built
    from (here a copy elsewhere), from any directory and with no PYTHONPATH."""
    copy = tmp_path / "elsewhere" / "hvlibvirt"
    shutil.copytree(Path(hvlibvirt.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HVLIBVIRT_CONFIG")}
    argv = hvlibvirt.helper_command("--version")
    assert argv[0] == sys.executable and Path(argv[1]).is_absolute()
    argv[1] = str(copy / "__main__.py")
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hvlibvirt {hvlibvirt.__version__} ({copy})"
