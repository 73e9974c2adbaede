"""The ``hvlibvirt`` command given hostile or unexpected arguments (issue 23): never a
traceback, every error one line on stderr, and the exit status its --help documents
(0 done, 1 refused or failed, 2 bad command line, 3 Ganeti's own hypervisors, 4 a bug,
130 interrupted).

Most cases run in-process (cli.main with argv); a few run the venv's entry point, for
what only a real process shows (argparse's exits, a closed stdout). Nothing here starts
a libvirt daemon or changes this node's Ganeti: libvirt is the test driver or a socket
that does not exist, and ``ganeti enable|disable`` run against a stand-in node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hostile
from hvlibvirt import cli, constants as C
from hvlibvirt.errors import HypervisorError

pytestmark = pytest.mark.tier2

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
ENTRY_POINT = str(Path(sys.executable).with_name("hvlibvirt"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if status not in (0, cli.EXIT_NOT_SERVED):
        assert len(err.splitlines()) == 1, err
        assert err.startswith("hvlibvirt: error: ")
    return status, out, err


CASES: list[tuple[list[str], int, str]] = [
    # check-params: values parsed by the hvparam's type
    (["check-params", "kvm", "cpu_mask=0-3"], 0, ""),
    (["check-params", "kvm", "vnc_bind_address=0.0.0.0"], 0, ""),
    (["check-params", "kvm", "acpi=false", "migration_port=8102", "kernel_path=",
      "root_path="], 0, ""),
    (["check-params", "kvm", "kernel_args=a=b c"], 0, ""),
    (["check-params", "kvm", "usb_mouse=[1]"], 1, "usb_mouse"),
    (["check-params", "kvm", "cpu_mask=0-1000000000000"], 1, "cpu_mask"),
    (["check-params", "xen-pvm", "cpu_mask=0-1000000000000"], 1, "cpu_mask"),
    (["check-params", "kvm", "migration_port=70000"], 1, "migration_port"),
    (["check-params", "kvm", "cdrom_image_path=http://h:99999/x.iso"], 1, "cdrom_image_path"),
    (["check-params", "kvm", "acpi=maybe"], 2, "acpi is a boolean"),
    (["check-params", "kvm", "migration_port=abc"], 2, "migration_port is an integer"),
    (["check-params", "kvm", "migration_port=1.5"], 2, "integer"),
    (["check-params", "kvm", "migration_port=" + "9" * 5000], 2, "integer"),
    (["check-params", "kvm", "nosuch=1"], 2, "no hvparam 'nosuch'"),
    (["check-params", "xen-pvm", "kvm_path=/usr/bin/kvm"], 2, "no hvparam"),
    (["check-params", "kvm", "cpu_mask"], 2, "KEY=VALUE"),
    (["check-params", "kvm", "=1"], 2, "no hvparam"),
    (["check-params", "bogus"], 2, "invalid choice"),
    (["check-params"], 2, "required"),
    # the other subcommands
    ([], 2, "required"),
    (["nosuch"], 2, "invalid choice"),
    (["list", "--nosuch"], 2, "unrecognized"),
    (["hvparams-doc", "extra"], 2, "unrecognized"),
    (["list", "--uri"], 2, "expected one argument"),
    (["list", "--hypervisor", "bogus"], 2, "invalid choice"),
    (["list", "--uri", "test:///default"], 0, ""),
    (["list", "--uri", UNREACHABLE], 1, "Failed to connect"),
    (["list", "--uri", ""], 1, ""),
    (["list", "--uri", "a\x00b"], 1, ""),
    (["list", "--uri", "x" * 10000], 1, ""),
    (["list", "--hypervisor", "xen-hvm", "--uri", UNREACHABLE], 1, "Failed to connect"),
    (["console"], 2, "required"),
    (["console", "--hypervisor", "bogus", "x"], 2, "invalid choice"),
    (["demo", "--uri", UNREACHABLE], 1, "Failed to connect"),
    (["demo", "extra"], 2, "unrecognized"),
    (["ganeti"], 2, "required"),
    (["ganeti", "bogus"], 2, "invalid choice"),
    (["ganeti", "enable", "--hypervisors", "bogus"], 2, "--hypervisors"),
    (["ganeti", "enable", "--hypervisors", ","], 2, "none given"),
    (["ganeti", "check", "--hypervisors", "kvm,nope"], 2, "'nope'"),
    (["ganeti", "check", "--config-data", "/nonexistent/config.data"], 1, "Cannot read"),
    (["migration-helper"], 2, "required"),
    (["migration-helper", "not json"], 2, "JSON object"),
    (["migration-helper", "[1]"], 2, "JSON object"),
    (["migration-helper", "{}"], 2, "'source' must be a JSON string"),
    (["migration-helper", '{"source": "a", "name": "b", "dest": "c", "flags": true, '
      '"params": {}}'], 2, "'flags' must be a JSON integer"),
    (["migration-helper", '{"source": "a", "name": "b", "dest": "c", "flags": 1, '
      '"params": []}'], 2, "'params' must be a JSON object"),
    (["-v"], 2, "required"),
]


@pytest.mark.parametrize("argv, status, says", CASES, ids=lambda v: repr(v)[:60])
def test_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], status: int,
                   says: str) -> None:
    got, _out, err = run(capsys, *argv)
    assert got == status, err
    assert says in err


@pytest.mark.parametrize("key", [C.HV_ACPI, C.HV_MIGRATION_PORT, C.HV_CDROM_IMAGE_PATH,
                                 C.HV_CPU_MASK, C.HV_ROOT_PATH])
@pytest.mark.parametrize("value", [v for v in hostile.fixed(hostile.Files("/a", "/b", "/c", "/d"))
                                   if isinstance(v, str) and "\x00" not in v]
                         + hostile.URLS, ids=lambda v: repr(v)[:30])
def test_check_params_with_hostile_values(capsys: pytest.CaptureFixture[str], key: str,
                                          value: str) -> None:
    status, _out, err = run(capsys, "check-params", "kvm", f"{key}={value}")
    assert status in (0, 1, 2)
    assert hostile.PASSWORD not in err


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _err = run(capsys, "--help")
    assert status == 0
    for line in ("0  done", "1  refused or failed", "2  bad command line",
                 "3  ganeti status", "4  unexpected error", "130  interrupted"):
        assert line in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _err = run(capsys, "--version")
    assert status == 0 and out.startswith("hvlibvirt ")


def test_check_params_says_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check-params", "xen-hvm", "acpi=no")[1] == "xen-hvm: parameters accepted\n"


# -- errors raised deep inside a subcommand -------------------------------------------------
class _Node:
    """A stand-in for this node's Ganeti installation: ``fail`` is what its calls raise."""

    fail: BaseException | None = None

    def __init__(self) -> None:
        if self.fail is not None:
            raise self.fail

    def status(self) -> Any:
        raise HypervisorError("dpkg-divert said:\nsomething on two lines")

    def enable(self, _names: Any, _force: bool) -> bool:
        raise HypervisorError("the module is someone else's; not touching it")

    def disable(self, _force: bool) -> bool:
        raise OSError(13, "Permission denied", "/usr/share/ganeti/default")


@pytest.mark.parametrize("action, status, says", [
    ("status", 1, "dpkg-divert said: something on two lines"),
    ("enable", 1, "not touching it"),
    ("disable", 1, "Permission denied"),
])
def test_ganeti_errors_are_one_line(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, action: str,
                                    status: int, says: str) -> None:
    import hvlibvirt.ganeti.node as node

    monkeypatch.setattr(node, "GanetiNode", _Node)
    got, _out, err = run(capsys, "ganeti", action)
    assert (got, says in err) == (status, True), err


@pytest.mark.parametrize("raised, status, says", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (RuntimeError("boom\nsecond line"), 4, "unexpected RuntimeError: boom second line"),
    (HypervisorError("Ganeti is not installed here"), 1, "not installed"),
])
def test_whatever_a_subcommand_raises_is_one_line(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  raised: BaseException, status: int,
                                                  says: str) -> None:
    import hvlibvirt.ganeti.node as node

    monkeypatch.setattr(_Node, "fail", raised)
    monkeypatch.setattr(node, "GanetiNode", _Node)
    got, _out, err = run(capsys, "ganeti", "status")
    assert got == status and says in err


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b"[1, 2]", b'"text"',
                                     b'{"cluster": {}, "instances": {}}'])
def test_ganeti_check_reads_what_it_is_given(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "config.data"
    config.write_bytes(content)
    status, _out, _err = run(capsys, "ganeti", "check", "--config-data", str(config))
    assert status in (0, 1)
    assert run(capsys, "ganeti", "check", "--config-data", str(tmp_path))[0] == 1


# -- the installed command, as a process ----------------------------------------------------
def command(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([ENTRY_POINT, *argv], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kwargs)
    assert "Traceback" not in done.stdout + done.stderr
    if done.returncode not in (0, cli.EXIT_NOT_SERVED):
        assert len(done.stderr.splitlines()) == 1, done.stderr
    return done


@pytest.mark.parametrize("argv, status", [
    (["check-params", "kvm", "cpu_mask=0-3"], 0),
    (["check-params", "kvm", "vnc_bind_address=0.0.0.0"], 0),
    (["check-params", "kvm", "cpu_mask=0-1000000000000"], 1),
    (["check-params", "kvm", "nosuch=1"], 2),
    (["nosuch"], 2),
    (["--version"], 0),
    (["list", "--uri", UNREACHABLE], 1),
    (["demo", "--uri", UNREACHABLE], 1),
    (["migration-helper", "{}"], 2),
    (["console", "--uri", "test:///default", "nosuch"], 1),  # console needs a real stdin
    (["console", "--uri", UNREACHABLE, "x"], 1),
    (["console", "--uri", "test:///default", "--hypervisor", "xen-pvm", "nosuch"], 1),
], ids=lambda v: repr(v)[:50])
def test_the_entry_point(argv: list[str], status: int) -> None:
    assert command(*argv).returncode == status


def test_ganeti_status_reads_this_node(tmp_path: Path) -> None:
    """Read-only: whatever this machine has (no Ganeti, Ganeti's own, hvlibvirt)."""
    assert command("ganeti", "status").returncode in (0, 1, 3)


def test_a_broken_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "hvlibvirt.conf"
    config.write_bytes(b"\x00\xff[[[ not a config")
    env = dict(os.environ, HVLIBVIRT_CONFIG=str(config))
    env.pop("HVLIBVIRT_KVM_URI", None)
    assert command("list", env=env).returncode == 1


def test_a_reader_that_leaves_early() -> None:
    """``hvlibvirt hvparams-doc | head -1``: stdout closes under the command."""
    proc = subprocess.Popen([ENTRY_POINT, "hvparams-doc"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "Exception ignored" not in err
