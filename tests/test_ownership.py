"""hvlibvirt.ownership: our domains told by their metadata, remembered per process and,
for a fresh process per Ganeti RPC, by a mark file on the node."""

from __future__ import annotations

import os
from pathlib import Path

import libvirt
import pytest

from hvlibvirt import ownership
from hvlibvirt.errors import HypervisorError

pytestmark = pytest.mark.tier1

URI = "qemu+unix:///system?socket=/run/x/libvirt-sock"
UUID = "6a3b1c2d-0000-4000-8000-00000000abcd"


class FakeDomain:
    """What is_ours uses of a virDomain; counts metadata reads (the RPC)."""

    def __init__(self, uuid: str = UUID, error: int | None = None) -> None:
        self.uuid, self.error, self.reads = uuid, error, 0

    def UUIDString(self) -> str:  # noqa: N802
        return self.uuid

    def name(self) -> str:
        return "inst1.example.com"

    def metadata(self, *_args: object) -> str:
        self.reads += 1
        if self.error is not None:
            err = libvirt.libvirtError("fake")
            err.err = (self.error, 0, "fake", 0, "", None, None, 0, 0)
            raise err
        return "<instance/>"


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A node's mark root in tmp_path, and a process that has remembered nothing."""
    root = tmp_path / "owned"
    monkeypatch.setattr(ownership, "mark_root", lambda: str(root))
    monkeypatch.setattr(ownership, "_known", {})
    monkeypatch.setattr(ownership, "_mark_dirs", {})
    return root


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership, "_known", {})
    monkeypatch.setattr(ownership, "_mark_dirs", {})


def test_a_fresh_process_finds_the_mark_instead_of_asking(marks: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain()
    assert ownership.is_ours(URI, dom) and dom.reads == 1
    mark = marks / ownership.uri_dir_name(URI) / UUID
    assert mark.is_file() and mark.stat().st_size == 0
    assert oct(mark.parent.stat().st_mode & 0o777) == "0o700"
    fresh_process(monkeypatch)
    assert ownership.is_ours(URI, dom) and dom.reads == 1
    # Another URI (another libvirtd) has marks of its own.
    assert ownership.is_ours("qemu:///system", dom) and dom.reads == 2


def test_a_foreign_domain_is_asked_every_process_and_never_marked(
        marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain(error=libvirt.VIR_ERR_NO_DOMAIN_METADATA)
    assert not ownership.is_ours(URI, dom)
    assert not ownership.is_ours(URI, dom) and dom.reads == 1  # remembered in the process
    fresh_process(monkeypatch)
    assert not ownership.is_ours(URI, dom) and dom.reads == 2
    assert not any(p.is_file() for p in marks.rglob("*"))


def test_forget_removes_the_mark(marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain()
    assert ownership.is_ours(URI, dom)
    fresh_process(monkeypatch)
    ownership.forget(URI, dom)
    assert not (marks / ownership.uri_dir_name(URI) / UUID).exists()
    dom.error = libvirt.VIR_ERR_NO_DOMAIN_METADATA  # redefined as somebody else's
    assert not ownership.is_ours(URI, dom) and dom.reads == 2


def test_what_hvlibvirt_defined_is_remembered_without_a_read(
        marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain()
    ownership.remember(URI, dom)
    fresh_process(monkeypatch)
    assert ownership.is_ours(URI, dom) and dom.reads == 0


def test_a_directory_others_may_write_is_not_trusted(marks: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    planted = marks / ownership.uri_dir_name(URI)
    planted.mkdir(parents=True)
    (planted / UUID).touch()
    os.chmod(planted, 0o777)
    dom = FakeDomain(error=libvirt.VIR_ERR_NO_DOMAIN_METADATA)
    assert not ownership.is_ours(URI, dom) and dom.reads == 1
    os.chmod(planted, 0o700)
    fresh_process(monkeypatch)
    assert ownership.is_ours(URI, dom) and dom.reads == 1  # trusted again: the mark counts


def test_the_test_driver_gets_no_marks(marks: Path) -> None:
    """libvirt's test driver keeps its domains per process: a mark would outlive them."""
    assert ownership.is_ours("test:///default", FakeDomain())
    assert not marks.exists()


def test_an_unwritable_mark_root_only_costs_the_rpc(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(ownership, "mark_root", lambda: str(blocker / "owned"))
    fresh_process(monkeypatch)
    dom = FakeDomain()
    assert ownership.is_ours(URI, dom) and dom.reads == 1
    fresh_process(monkeypatch)
    assert ownership.is_ours(URI, dom) and dom.reads == 2


def test_a_failed_read_is_a_hypervisor_error(marks: Path) -> None:
    with pytest.raises(HypervisorError, match="metadata of inst1.example.com"):
        ownership.is_ours(URI, FakeDomain(error=libvirt.VIR_ERR_INTERNAL_ERROR))


def test_the_marks_sit_in_the_runtime_directory_beside_the_locks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hvlibvirt import config, locks

    monkeypatch.delenv(config.RUN_DIR_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert (ownership.mark_root(), locks.lock_dir()) == ("/run/hvlibvirt/owned",
                                                         "/run/hvlibvirt/locks")


def test_an_embedded_driver_gets_no_marks() -> None:
    from hvlibvirt import connection

    assert connection.keeps_domains_in_process("test:///default")
    assert connection.keeps_domains_in_process("qemu:///embed?root=/var/tmp/emb")
    assert not connection.keeps_domains_in_process("qemu:///system")


def test_a_uri_directory_name_is_readable_and_exact() -> None:
    name = ownership.uri_dir_name("qemu+ssh://root@node1/system?keyfile=/a b")
    assert name.startswith("qemu_ssh___root_node1_system_keyfile__a_b.") and "/" not in name
    assert name != ownership.uri_dir_name("qemu+ssh://root@node1/system?keyfile=/a_b")
    assert "/" not in ownership.uri_dir_name("qemu:///syst\u00e9m")


def test_what_is_remembered_is_bounded(marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived caller meets ever new uuids: the oldest answers go first."""
    monkeypatch.setattr(ownership, "KNOWN_MAX", 8)
    doms = [FakeDomain(f"6a3b1c2d-0000-4000-8000-{n:012x}",
                       error=libvirt.VIR_ERR_NO_DOMAIN_METADATA) for n in range(20)]
    for dom in doms:
        assert not ownership.is_ours(URI, dom)
    assert len(ownership._known) == 8
    assert (URI, doms[-1].uuid) in ownership._known and (URI, doms[0].uuid) not in ownership._known
    assert not ownership.is_ours(URI, doms[0]) and doms[0].reads == 2  # asked again
