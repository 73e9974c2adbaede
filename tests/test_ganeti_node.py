"""``hvlibvirt ganeti enable|disable|status`` on a copy of Ganeti's package tree.

dpkg-divert works on a private root (``--root``), so nothing here touches the host's
Ganeti or dpkg database; the tier-5 cluster tests do the real thing inside its nodes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlibvirt.errors import HypervisorError
from hvlibvirt import cli
from hvlibvirt.ganeti import node as node_module
from hvlibvirt.ganeti.node import PACKAGE, SERVABLE, GanetiNode
from hvlibvirt.kvm import KVMHypervisor

pytestmark = pytest.mark.tier2

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


@pytest.fixture(autouse=True)
def _test_driver_libvirt(monkeypatch: pytest.MonkeyPatch) -> None:
    """disable (and a narrowing enable) ask libvirt which instances run: the test
    driver, never this machine's libvirtd."""
    for env in ("HVLIBVIRT_KVM_URI", "HVLIBVIRT_XEN_URI"):
        monkeypatch.setenv(env, "test:///default")


def _node(root: Path, **kwargs) -> GanetiNode:
    """The private root's Ganeti; this interpreter (which imports this checkout's
    hvlibvirt) stands for Ganeti's."""
    return GanetiNode(root=str(root), share=SHARE, python=sys.executable, **kwargs)


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

    assert node.enable(["kvm"]).changed is True
    assert f"diversion of {MODULE} to {MODULE}.distrib by {PACKAGE}" in _diversions(root)
    assert _digest(root / (MODULE + ".distrib").lstrip("/")) == original
    assert node.status().served == ("kvm",)
    served = _map_in_fresh_ganeti(root)
    assert served["kvm"] == "hvlibvirt.kvm.KVMHypervisor"
    assert served["xen-pvm"] == "ganeti.hypervisor.hv_xen.XenPvmHypervisor"
    assert served["fake"] == "ganeti.hypervisor.hv_fake.FakeHypervisor"

    assert node.enable(["kvm"]).changed is False                    # idempotent
    assert node.disable().changed is True
    assert _digest(root / MODULE.lstrip("/")) == original   # byte for byte
    assert not (root / (MODULE + ".distrib").lstrip("/")).exists()
    assert _diversions(root) == ""
    assert node.disable().changed is False
    assert _map_in_fresh_ganeti(root)["kvm"] == "ganeti.hypervisor.hv_kvm.KVMHypervisor"


def test_enable_more_hypervisors_then_fewer(root: Path) -> None:
    node = _node(root)
    assert node.enable(["kvm", "xen-pvm", "xen-hvm"]).changed is True
    served = _map_in_fresh_ganeti(root)
    assert (served["kvm"], served["xen-pvm"], served["xen-hvm"]) == (
        "hvlibvirt.kvm.KVMHypervisor", "hvlibvirt.xen.XenPvmHypervisor",
        "hvlibvirt.xen.XenHvmHypervisor")
    assert node.enable(["xen-pvm"]).changed is True
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


# ------------------------------------------------------------------------ refusals

def _fake_qemu(name: str, argv0: str = "qemu-system-x86_64") -> subprocess.Popen:
    """A process that looks like the QEMU hv_kvm starts for ``name`` (argv[0], -name)."""
    return subprocess.Popen([argv0, "-c", "import time; time.sleep(60)", "-name", name],
                            executable=sys.executable)


def _pid_file(root: Path, name: str, pid: int) -> None:
    pid_dir = root / "var/run/ganeti/kvm-hypervisor/pid"
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / name).write_text(f"{pid}\n")


def test_enable_refuses_while_ganetis_kvm_instances_run(root: Path) -> None:
    node = _node(root)
    qemu, other = _fake_qemu("inst1.example.com"), _fake_qemu("inst9.example.com")
    try:
        _pid_file(root, "inst1.example.com", qemu.pid)
        _pid_file(root, "gone.example.com", 2 ** 22 + 1)                  # dead
        _pid_file(root, "reused.example.com", os.getpid())                # not a QEMU
        _pid_file(root, "renamed.example.com", other.pid)                 # another -name
        with pytest.raises(HypervisorError) as refused:
            node.enable(["kvm"])
        message = str(refused.value)
        assert message.startswith("Refusing to enable: instances run on this node: "
                                  "inst1.example.com (Ganeti's kvm).")
        assert "'hvlibvirt ganeti enable --force'" in message and "\n" not in message
        assert _diversions(root) == ""
        assert node.enable(["xen-pvm"]).changed                # kvm stays Ganeti's
        assert node.enable(["xen-pvm", "kvm"], force=True).changed
        assert node.status().served == ("xen-pvm", "kvm")
    finally:
        for proc in (qemu, other):
            proc.kill()
            proc.wait()


@pytest.fixture
def running_instance() -> Iterator[str]:
    """An hvlibvirt instance running on libvirt's test driver (this process's)."""
    from test_testdriver_lifecycle import make_instance

    hv = KVMHypervisor(uri="test:///default")
    inst, block = make_instance("tdl-switch.example.com")
    hv.StartInstance(inst, block, False)
    yield inst.name
    hv.StopInstance(inst, force=True)
    hv.CleanupInstance(inst.name)


def test_disable_refuses_while_hvlibvirt_instances_run(root: Path,
                                                       running_instance: str) -> None:
    node = _node(root)
    node.enable(["kvm"])
    for action, override in ((node.disable, "disable"),
                             (lambda: node.enable(["xen-pvm"]), "enable")):
        command = override + (" --hypervisors xen-pvm" if override == "enable" else "")
        with pytest.raises(HypervisorError) as refused:
            action()
        assert str(refused.value).startswith(
            f"Refusing to {override}: instances run on this node: "
            f"{running_instance} (kvm).")
        assert f"'hvlibvirt ganeti {command} --force'" in str(refused.value)
        assert node.status().served == ("kvm",)
    assert node.enable(["kvm", "xen-pvm"]).changed           # hides nothing
    assert node.disable(force=True).changed
    assert _diversions(root) == ""


def test_disable_refuses_when_libvirt_cannot_say(root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node(root)
    node.enable(["kvm"])
    monkeypatch.setenv("HVLIBVIRT_KVM_URI", f"qemu+unix:///system?socket={root}/no-socket")
    with pytest.raises(HypervisorError, match=r"^Refusing to disable: cannot ask libvirt "
                       r"which instances run \(kvm: Failed to connect"):
        node.disable()
    assert node.disable(force=True).changed


PRERM = REPO / "debian" / "python3-hvlibvirt.prerm"


@pytest.mark.parametrize("args, env, diverted, calls, rc", [
    (["remove"], {}, True, ["ganeti disable"], 0),
    (["remove"], {"HVLIBVIRT_FORCE_DISABLE": "1"}, True, ["ganeti disable --force"], 0),
    (["remove"], {"REFUSE": "1"}, True, ["ganeti disable"], 1),
    (["remove"], {}, False, [], 0),
    (["upgrade", "0.2.0"], {"REFUSE": "1"}, True, [], 0),
    (["failed-upgrade", "0.2.0"], {"REFUSE": "1"}, True, [], 0),
])
def test_prerm_disables_on_removal_only(tmp_path: Path, args: list[str], env: dict,
                                        diverted: bool, calls: list[str], rc: int) -> None:
    """The package's prerm: removal runs disable (its refusal fails the removal with
    disable's one line); an upgrade keeps hvlibvirt serving."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    diversion = f"diversion of {MODULE} to {MODULE}.distrib by {PACKAGE}"
    (bin_dir / "dpkg-divert").write_text(f"#!/bin/sh\necho '{diversion if diverted else ''}'\n")
    (bin_dir / "hvlibvirt").write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n'
        'if [ -n "$REFUSE" ] && [ "$3" != --force ]; then\n'
        '    echo "error: Refusing to disable: instances run on this node" >&2; exit 1\n'
        'fi\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    done = subprocess.run(["sh", str(PRERM), *args], capture_output=True, text=True,
                          env=dict(env, PATH=f"{bin_dir}:/usr/bin:/bin"), timeout=60,
                          check=False)
    logged = tmp_path / "calls"
    assert (done.returncode, logged.read_text().splitlines() if logged.exists() else []) == (
        rc, calls), done.stderr
    if rc:
        assert done.stderr.splitlines() == [
            "error: Refusing to disable: instances run on this node"]


# ------------------------------------------------------------ a failure at every step

class _Faults:
    """Fails the ``fail_at``-th step the switch takes: each call of an os function of
    hvlibvirt.ganeti.node that changes files, and each process it runs (dpkg-divert,
    the import check, daemon-util)."""

    CHANGING = ("link", "replace", "unlink", "open", "write", "fsync", "fchmod")

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.steps, self.failed = fail_at, 0, ""

    def _fails(self, what: str) -> bool:
        self.steps += 1
        if self.steps == self.fail_at:
            self.failed = what
        return self.steps == self.fail_at

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        faults = self

        class FaultyOs:
            def __getattr__(self, name: str):
                real = getattr(os, name)
                if name not in _Faults.CHANGING:
                    return real

                def call(*args, **kwargs):
                    if faults._fails(f"os.{name}{args}"):
                        raise OSError(errno.EIO, "injected failure")
                    return real(*args, **kwargs)
                return call

        class FaultySubprocess:
            def __getattr__(self, name: str):
                return getattr(subprocess, name)

            @staticmethod
            def run(argv, *args, **kwargs):
                if faults._fails(" ".join(argv)):
                    return subprocess.CompletedProcess(argv, 1, "", "injected failure\n")
                return subprocess.run(argv, *args, **kwargs)

        monkeypatch.setattr(node_module, "os", FaultyOs())
        monkeypatch.setattr(node_module, "subprocess", FaultySubprocess())


def _state(root: Path, original: str) -> tuple[str, ...]:
    """What serves Ganeti here, checked to be one whole state: () for Ganeti's own
    (its file live, no diversion, nothing beside), else the names hvlibvirt serves
    (diverted, Ganeti's file intact beside); the map imports in a fresh Ganeti."""
    live, distrib = root / MODULE.lstrip("/"), root / (MODULE + ".distrib").lstrip("/")
    assert not Path(f"{live}.hvlibvirt-new").exists()
    served = _map_in_fresh_ganeti(root)
    if _diversions(root) == "":
        assert not distrib.exists() and _digest(live) == original
        assert all(c.startswith("ganeti.") for c in served.values()), served
        return ()
    names = _node(root).status().served
    assert names and _digest(distrib) == original
    assert [n for n in ("kvm", "xen-pvm", "xen-hvm")
            if served[n].startswith("hvlibvirt.")] == sorted(names, key=SERVABLE.index)
    return names


@pytest.mark.parametrize("before, argv, after", [
    ((), ["enable"], ("kvm",)),
    (("kvm",), ["disable"], ()),
    (("kvm",), ["enable", "--hypervisors", "kvm,xen-hvm"], ("kvm", "xen-hvm")),
])
def test_a_failure_at_any_step_leaves_one_whole_map_and_one_error_line(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], before: tuple[str, ...], argv: list[str],
        after: tuple[str, ...]) -> None:
    """``hvlibvirt ganeti ...`` with its n-th step failing, for every n: the command
    prints one error line naming the failure, and Ganeti's map is the old one or, when
    only noded's start failed, the new one."""
    original = _digest(root / MODULE.lstrip("/"))
    daemon_util = tmp_path / "daemon-util"
    daemon_util.write_text("#!/bin/sh\nexit 0\n")   # noded runs; stop and start succeed
    daemon_util.chmod(0o755)
    monkeypatch.setattr(node_module, "GanetiNode", functools.partial(
        GanetiNode, root=str(root), share=SHARE, python=sys.executable,
        daemon_util=str(daemon_util)))
    if before:
        _node(root).enable(before)
    capsys.readouterr()
    fail_at = 0
    while True:
        fail_at += 1
        faults = _Faults(fail_at)
        with monkeypatch.context() as patch:
            faults.install(patch)
            rc = cli.main(["ganeti", *argv])
        out, err = capsys.readouterr()
        state = _state(root, original)
        if not faults.failed:
            assert (rc, state) == (0, after) and out.endswith("; ganeti-noded restarted\n")
            break
        if faults.failed.endswith("check ganeti-noded"):      # "noded does not run"
            assert (rc, state, err) == (0, after, ""), faults.failed
        else:
            lines = err.splitlines()
            assert rc == 1 and len(lines) == 1 and lines[0].startswith("hvlibvirt: error: "), err
            assert "injected failure" in lines[0], (faults.failed, lines[0])
            started = faults.failed.endswith("start ganeti-noded")
            assert state == (after if started else before), (faults.failed, lines[0])
        # back to where the command starts
        if state != before:
            node = _node(root)
            node.disable() if not before else node.enable(before)
    assert fail_at > 8
