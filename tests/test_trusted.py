"""Directories root writes into on a guest's behalf: one check (``hvlibvirt.trusted``)
for the serial log directory, the lock directory and the ownership marks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlibvirt import config, connection, locks
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.trusted import why_untrusted
from test_testdriver_lifecycle import make_instance

pytestmark = pytest.mark.tier2

URI = "test:///default"


@pytest.fixture
def safe(tmp_path: Path) -> Path:
    """A directory that passes, below pytest's own (private) directories."""
    made = tmp_path / "safe"
    made.mkdir(mode=0o700)
    return made


def test_a_private_directory_of_this_user_passes(safe: Path) -> None:
    assert why_untrusted(str(safe)) is None


def test_a_symbolic_link_is_refused_even_to_a_safe_directory(safe: Path) -> None:
    link = safe.parent / "link"
    link.symlink_to(safe)
    assert why_untrusted(str(link)) == "it is a symbolic link"


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_a_directory_its_group_or_others_may_write_is_refused(safe: Path, mode: int) -> None:
    safe.chmod(mode)
    assert why_untrusted(str(safe)) == (f"its group or others may write to it (mode "
                                        f"{mode:04o})")


def test_a_directory_of_another_user_is_refused(safe: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    os.chown(safe, 12345, -1)
    assert why_untrusted(str(safe)) == (f"it belongs to uid 12345, not to uid 0 who "
                                        "writes there")


def test_a_directory_below_one_others_may_write_is_refused(safe: Path) -> None:
    inner = safe / "inner"
    inner.mkdir(mode=0o700)
    safe.chmod(0o777)       # anyone could rename "inner" and put a link in its place
    assert why_untrusted(str(inner)) == (f"{safe} above it may be written by its group or "
                                         "others (mode 0777)")
    safe.chmod(0o1777)      # sticky, as /tmp: nobody else may rename what is root's
    assert why_untrusted(str(inner)) is None


def test_a_link_above_is_followed_and_both_ways_checked(safe: Path) -> None:
    """/var/run -> /run: a link on the way, in a safe directory, is fine; the directories
    it leads through are checked too."""
    target = safe / "target"
    (target / "logs").mkdir(parents=True, mode=0o700)
    link = safe / "via"
    link.symlink_to(target)
    assert why_untrusted(str(link / "logs")) is None
    target.chmod(0o777)
    assert why_untrusted(str(link / "logs")) == (f"{target} above it may be written by its "
                                                 "group or others (mode 0777)")


def test_a_missing_directory_is_made_private_below_safe_ones_only(safe: Path) -> None:
    missing = safe / "a" / "b"
    assert why_untrusted(str(missing)) == "it does not exist"
    assert not missing.exists()
    assert why_untrusted(str(missing), create=True) is None
    assert missing.stat().st_mode & 0o777 == 0o700
    unsafe = safe / "open"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    assert why_untrusted(str(unsafe / "logs"), create=True).startswith(
        f"{unsafe} above it may be written")
    assert not (unsafe / "logs").exists()
    assert why_untrusted("relative/dir") == "it is not an absolute path"


# ------------------------------------------------------------------ who uses the check

@pytest.fixture
def cleanup_domains() -> Iterator[None]:
    yield
    conn = connection.get(URI)
    for dom in conn.listAllDomains():
        if dom.name().startswith("tdl-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def test_start_is_refused_before_anything_is_defined_with_an_unsafe_serial_log_dir(
        safe: Path, cleanup_domains: None) -> None:
    logs = safe / "logs"
    logs.mkdir(mode=0o700)
    link = safe / "logs-link"
    link.symlink_to(logs)
    inst, block = make_instance("tdl-serial-link")
    with pytest.raises(HypervisorError) as refused:
        KVMHypervisor(uri=URI, serial_log_dir=str(link)).StartInstance(inst, block, False)
    assert str(refused.value) == (f"Failed to start instance tdl-serial-link: serial log "
                                  f"directory {link} is not safe for root's writes: it is a "
                                  "symbolic link")
    assert "tdl-serial-link" not in [d.name() for d in connection.get(URI).listAllDomains()]


def test_start_makes_a_missing_serial_log_dir_private(safe: Path,
                                                      cleanup_domains: None) -> None:
    logs = safe / "logs"
    inst, block = make_instance("tdl-serial-new")
    hv = KVMHypervisor(uri=URI, serial_log_dir=str(logs))
    hv.StartInstance(inst, block, False)
    assert logs.stat().st_mode & 0o777 == 0o700
    assert f"{logs}/tdl-serial-new.serial" in hv.domain_xml("tdl-serial-new")


def test_a_lock_directory_that_is_a_link_is_refused(safe: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    link = safe / "locks"
    link.symlink_to(safe)
    monkeypatch.setenv(config.RUN_DIR_ENV, str(safe))
    with pytest.raises(HypervisorError, match=f"cannot use the lock directory {link}: it "
                       "is a symbolic link"):
        with locks.hold(URI, "tdl-locked", "meta"):
            pass
