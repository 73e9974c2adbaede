"""Names: device aliases, guest device names, and checks on strings we put in the XML.

lxml escapes whatever we give it, so hostile strings cannot change the XML structure;
these checks exist so that bad input fails early with an error naming the field
instead of reaching libvirt or QEMU.
"""

from __future__ import annotations

import re
from typing import Any

from hvlibvirt.errors import HypervisorError
from hvlibvirt.urls import redact

_UUID = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4})-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}\Z")
# Ganeti instance names are host names.
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,253})\Z")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
# Control characters, and what XML cannot carry at all (surrogates, U+FFFE, U+FFFF).
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def device_alias(kind: str, dev_uuid: Any) -> str:
    """``ua-disk-932df160-7a22-4067`` for disk uuid ``932df160-7a22-4067-...``.

    Ganeti's kvm_devid (first three uuid groups, because QEMU ids are short) with the
    ``ua-`` prefix libvirt requires of user aliases.
    """
    match = _UUID.match(dev_uuid) if isinstance(dev_uuid, str) else None
    if match is None:
        raise HypervisorError(f"Invalid {kind} uuid {dev_uuid!r}: expected a UUID")
    return f"ua-{kind}-{match.group(1).lower()}"


def target_name(prefix: str, index: int) -> str:
    """Linux-style guest device names: vda..vdz, vdaa, ..."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def instance_name(value: Any) -> str:
    if not isinstance(value, str) or not _INSTANCE_NAME.match(value):
        raise HypervisorError(f"Invalid instance name {value!r}: expected a host name")
    return value


def instance_uuid(value: Any) -> str:
    if not isinstance(value, str) or not _UUID.match(value):
        raise HypervisorError(f"Invalid instance uuid {value!r}: expected a UUID")
    return value


def mac_address(value: Any, what: str) -> str:
    """A unicast MAC address (libvirt refuses multicast ones)."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise HypervisorError(f"Invalid {what}: {value!r} is not a MAC address")
    if int(value[:2], 16) & 1:
        raise HypervisorError(f"Invalid {what}: {value!r} is a multicast MAC address")
    return value.lower()


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds a control character or something XML cannot carry."""
    return _CONTROL.search(value) is not None


def plain_text(value: Any, what: str) -> str:
    """A string without control characters (paths, arguments, names of things)."""
    if not isinstance(value, str) or has_control_characters(value):
        raise HypervisorError(f"Invalid {what}: {redact(repr(value))} (a string without "
                              "control characters is expected)")
    return value


# A network interface name as Linux takes it (at most 15 bytes, not '.' or '..'),
# narrowed to the characters interface names use: libvirt passes bridge names to ip,
# tc and ovs-vsctl (a leading '-' would read as an option), and libvirt 11 answers an
# unusual one with "Cannot get interface MTU", naming no field.
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,14}\Z")


def interface_name(value: Any, what: str) -> str:
    """A network interface (bridge) name, or HypervisorError naming ``what``."""
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise HypervisorError(f"Invalid {what}: {value!r} is not a network interface name "
                              "(1-15 characters of A-Z a-z 0-9 _ . + @ -, not starting "
                              "with . + @ or -)")
    return value


def absolute_path(value: Any, what: str) -> str:
    path = plain_text(value, what)
    if not path.startswith("/"):
        raise HypervisorError(f"Invalid {what}: {redact(repr(value))} is not an absolute "
                              "path")
    return path
