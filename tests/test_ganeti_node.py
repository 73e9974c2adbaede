"""``hvlibvirt ganeti enable|disable|status`` on a copy of Ganeti's package tree.

dpkg-divert works on a private root (``--root``), so nothing here touches the host's
Ganeti or dpkg database; the tier-5 cluster tests do the real thing inside its nodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvlibvirt.errors import HypervisorError
from hvlibvirt.ganeti.node import PACKAGE, GanetiNode
from lab import unavailable

SHARE = "/usr/share/ganeti/3.0"
MODULE = f"{SHARE}/ganeti/hypervisor/__init__.py"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tmp_path: Path, ganeti) -> Path:
    """A root holding Ganeti 3.0's own Python package and an empty dpkg database."""
    _constants, objects = ganeti
    real = Path(objects.__file__).resolve().parent
    shutil.copytree(real, tmp_path / SHARE.lstrip("/") / "ganeti",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    return tmp_path


def _node(root: Path) -> GanetiNode:
    return GanetiNode(root=str(root), share=SHARE)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _map_in_fresh_ganeti(root: Path) -> dict[str, str]:
    """What Ganeti's own GetHypervisorClass returns, imported the way Ganeti does."""
    probe = ("from ganeti import hypervisor as h\n"
             "for n in ('kvm', 'xen-pvm', 'xen-hvm', 'fake'):\n"
             "    c = h.GetHypervisorClass(n)\n"
             "    print(n, c.__module__ + '.' + c.__name__)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / SHARE.lstrip("/")),
                                                        str(REPO)]))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines())


def _diversions(root: Path) -> str:
    return subprocess.run(["dpkg-divert", "--root", str(root), "--list"], capture_output=True,
                          text=True, check=True).stdout


def test_enable_serves_kvm_and_disable_gives_ganeti_its_file_back(root: Path) -> None:
    node = _node(root)
    original = _digest(root / MODULE.lstrip("/"))
    assert node.status().served == () and "Ganeti's own" in node.status().describe()
    assert _map_in_fresh_ganeti(root)["kvm"] == "ganeti.hypervisor.hv_kvm.KVMHypervisor"

    assert node.enable(["kvm"]) is True
    assert f"diversion of {MODULE} to {MODULE}.distrib by {PACKAGE}" in _diversions(root)
    assert _digest(root / (MODULE + ".distrib").lstrip("/")) == original
    assert node.status().served == ("kvm",)
    served = _map_in_fresh_ganeti(root)
    assert served["kvm"] == "hvlibvirt.kvm.KVMHypervisor"
    assert served["xen-pvm"] == "ganeti.hypervisor.hv_xen.XenPvmHypervisor"
    assert served["fake"] == "ganeti.hypervisor.hv_fake.FakeHypervisor"

    assert node.enable(["kvm"]) is False                    # idempotent
    assert node.disable() is True
    assert _digest(root / MODULE.lstrip("/")) == original   # byte for byte
    assert not (root / (MODULE + ".distrib").lstrip("/")).exists()
    assert _diversions(root) == ""
    assert node.disable() is False
    assert _map_in_fresh_ganeti(root)["kvm"] == "ganeti.hypervisor.hv_kvm.KVMHypervisor"


def test_enable_more_hypervisors_then_fewer(root: Path) -> None:
    node = _node(root)
    assert node.enable(["kvm", "xen-pvm", "xen-hvm"]) is True
    served = _map_in_fresh_ganeti(root)
    assert (served["kvm"], served["xen-pvm"], served["xen-hvm"]) == (
        "hvlibvirt.kvm.KVMHypervisor", "hvlibvirt.xen.XenPvmHypervisor",
        "hvlibvirt.xen.XenHvmHypervisor")
    assert node.enable(["xen-pvm"]) is True
    assert node.status().served == ("xen-pvm",)
    assert _map_in_fresh_ganeti(root)["kvm"] == "ganeti.hypervisor.hv_kvm.KVMHypervisor"
    assert _diversions(root).count("diversion of") == 1


def test_a_reinstalled_ganeti_stays_diverted(root: Path) -> None:
    """``apt-get install --reinstall ganeti-3.0`` writes Ganeti's file to the diverted
    name: ours stays in force, and disable then restores what the package shipped."""
    node = _node(root)
    node.enable(["kvm"])
    diverted = root / (MODULE + ".distrib").lstrip("/")
    shipped = diverted.read_text() + "\n# as shipped by a newer ganeti-3.0\n"
    diverted.write_text(shipped)
    assert node.status().served == ("kvm",)
    assert _map_in_fresh_ganeti(root)["kvm"] == "hvlibvirt.kvm.KVMHypervisor"
    node.disable()
    assert (root / MODULE.lstrip("/")).read_text() == shipped


@pytest.mark.parametrize("names, match", [([], "nothing"), (["lxc"], "lxc"),
                                          (["kvm", "fake"], "fake")])
def test_enable_refuses_what_hvlibvirt_does_not_serve(root: Path, names: list[str],
                                                      match: str) -> None:
    with pytest.raises(HypervisorError, match=match):
        _node(root).enable(names)
    assert _diversions(root) == ""


def test_someone_elses_diversion_is_left_alone(root: Path) -> None:
    subprocess.run(["dpkg-divert", "--root", str(root), "--package", "site-tweaks",
                    "--divert", MODULE + ".local", "--add", MODULE], check=True,
                   capture_output=True)
    node = _node(root)
    for action in (lambda: node.enable(["kvm"]), node.disable):
        with pytest.raises(HypervisorError, match="diverted by site-tweaks"):
            action()
    assert "site-tweaks" in _diversions(root)


def test_disable_refuses_a_file_hvlibvirt_did_not_write(root: Path) -> None:
    node = _node(root)
    node.enable(["kvm"])
    (root / MODULE.lstrip("/")).write_text("# edited by hand\n")
    with pytest.raises(HypervisorError, match="not the file hvlibvirt wrote"):
        node.disable()
    assert PACKAGE in _diversions(root)


def test_status_of_this_machine_changes_nothing() -> None:
    """On the host (where Ganeti's package is installed for the cluster tier) status is
    read-only: exit 3 and a sentence while hvlibvirt does not serve Ganeti here."""
    if not Path("/usr/share/ganeti/default").exists():
        unavailable("Ganeti is not installed on this machine (scripts/setup.sh installs it)")
    before = _diversions(Path("/"))
    done = subprocess.run([sys.executable, "-m", "hvlibvirt", "ganeti", "status"],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    # the installed Ganeti's version directory (3.0 on Debian 12, 3.1 on Debian 13)
    module = Path("/usr/share/ganeti/default").resolve() / "ganeti/hypervisor/__init__.py"
    assert (done.returncode, done.stdout.strip()) == (
        3, f"Ganeti's own hypervisors are active ({module})"), done.stderr
    assert _diversions(Path("/")) == before


def test_check_lists_what_hvlibvirt_would_refuse(tmp_path: Path) -> None:
    """``hvlibvirt ganeti check`` fills hvparams as Ganeti does (cluster, OS, instance)."""
    config_data = {
        "version": 3000000,
        "cluster": {"hvparams": {"kvm": {"kernel_path": "", "disk_type": "paravirtual"}},
                    "os_hvp": {"debootstrap": {"kvm": {"nic_type": "ne2k_isa"}}}},
        "instances": {
            "u1": {"name": "fine.example.com", "hypervisor": "kvm", "os": "noop",
                   "hvparams": {}},
            "u2": {"name": "mtd.example.com", "hypervisor": "kvm", "os": "noop",
                   "hvparams": {"disk_type": "mtd"}},
            "u3": {"name": "isa.example.com", "hypervisor": "kvm",
                   "os": "debootstrap+buster", "hvparams": {}},
            "u4": {"name": "xen.example.com", "hypervisor": "xen-pvm", "os": "noop",
                   "hvparams": {"disk_type": "mtd"}},
        },
    }
    path = tmp_path / "config.data"
    path.write_text(json.dumps(config_data))
    done = subprocess.run([sys.executable, "-m", "hvlibvirt", "ganeti", "check",
                           "--config-data", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[0].startswith("isa.example.com: Parameter 'nic_type' value 'ne2k_isa'")
    assert lines[1].startswith("mtd.example.com: Parameter 'disk_type' value 'mtd'")
    assert lines[2] == f"2 hvparam problem(s) for hvlibvirt in {path}"
    del config_data["instances"]["u2"], config_data["cluster"]["os_hvp"]
    path.write_text(json.dumps(config_data))
    done = subprocess.run([sys.executable, "-m", "hvlibvirt", "ganeti", "check",
                           "--config-data", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (
        0, f"0 hvparam problem(s) for hvlibvirt in {path}")
    path.write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "hvlibvirt", "ganeti", "check",
                           "--config-data", str(path)], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)
    assert done.returncode == 1 and "Cannot read Ganeti's configuration" in done.stderr
