"""AcceptInstance on a node whose QEMU lacks the incoming guest's machine type (a guest
started on Debian 13's QEMU 10, pc-i440fx-10.0, offered to a Debian 12 node): the refusal
names machine_version and what to do. The real case is tests/test_real_upgrade.py."""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from hvlibvirt.migrator import KvmMigrator

pytestmark = pytest.mark.tier1

INCOMING = """<domain type='qemu'><name>web1</name><currentMemory unit='KiB'>131072
</currentMemory><os><type arch='x86_64' machine='pc-i440fx-10.0'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"""


class _Conn:
    def __init__(self, refusal: str) -> None:
        self.refusal = refusal

    def getDomainCapabilities(self, *_args) -> str:  # noqa: N802 - libvirt's name
        raise libvirt.libvirtError(self.refusal)


class _Host:
    uri = "qemu:///system"

    def __init__(self, refusal: str) -> None:
        self._conn = _Conn(refusal)

    def conn(self) -> _Conn:
        return self._conn

    def lookup(self, _name: str) -> None:
        return None


def problems(refusal: str) -> list[str]:
    migrator = KvmMigrator(_Host(refusal), lambda: "", lambda: 1024)
    return migrator.accept_problems("web1", etree.fromstring(INCOMING))


def test_a_machine_type_the_qemu_lacks_names_machine_version() -> None:
    found = problems("invalid argument: the machine 'pc-i440fx-10.0' is not supported by "
                     "emulator '/usr/bin/qemu-system-x86_64'")
    assert len(found) == 1, found
    assert "cannot run qemu guests of machine pc-i440fx-10.0" in found[0]
    assert "machine_version: pin a machine type every node's QEMU offers" in found[0]


def test_another_refusal_does_not_blame_the_machine_type() -> None:
    found = problems("internal error: Cannot find suitable emulator for x86_64")
    assert len(found) == 1 and "machine_version" not in found[0], found
