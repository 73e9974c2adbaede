"""What KVM needs to know about this node to start a domain: which domain type and
emulator libvirt offers, graphics listen addresses, password files, users, hugepages.

Everything here reads the node (libvirt capabilities, interfaces, files, passwd); the
domain XML builder stays pure by taking the results as ``StartupOptions``.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import libvirt
from lxml import etree

from hvlibvirt import connection, constants as C, params as P, trusted
from hvlibvirt.domain_xml import GuestTarget, Listen, identity, parser
from hvlibvirt.errors import HypervisorError
from hvlibvirt.param_values import ip_version_of

log = logging.getLogger(__name__)
_VNC_PASSWORD_CHARS = 8


def offered_domain_types(capabilities_xml: str) -> dict[str, list[str]]:
    """hvm guest arch -> domain types libvirt offers for it (from getCapabilities)."""
    caps = parser.parse_tree(capabilities_xml, "capabilities")
    arches: dict[str, list[str]] = {}
    for guest in caps.iterfind("guest"):
        if guest.findtext("os_type") == "hvm":
            arch = guest.find("arch")
            arches[arch.get("name")] = [d.get("type") for d in arch.iterfind("domain")]
    return arches


def check_machine(capabilities_xml: str, target: GuestTarget) -> None:
    """Refuse a ``machine_version`` the host's emulator for the target's arch does not
    offer (QEMU drops old machine types: 10.0 has no pc-i440fx-2.3), naming the
    parameter before libvirt refuses the definition in its own words. Capabilities
    list the default emulator's machines only: another ``kvm_path`` is not judged, nor
    is a driver that lists none (libvirt's test driver)."""
    if not target.machine:
        return
    caps = parser.parse_tree(capabilities_xml, "capabilities")
    for guest in caps.iterfind("guest"):
        arch = guest.find("arch")
        if guest.findtext("os_type") != "hvm" or arch is None \
                or arch.get("name") != target.arch:
            continue
        emulator = arch.findtext("emulator") or ""
        offered = {m.text for m in arch.iter("machine")} | {
            m.get("canonical") for m in arch.iter("machine") if m.get("canonical")}
        if not offered or os.path.realpath(emulator) != os.path.realpath(target.emulator or ""):
            return
        if target.machine not in offered:
            raise HypervisorError(
                f"Parameter 'machine_version' is {target.machine!r}, a machine type "
                f"{emulator} does not offer (it offers {', '.join(sorted(offered))})")
        return


def choose_target(hvparams: Mapping[str, Any], arches: Mapping[str, Sequence[str]],
                  uri: str = "libvirt") -> GuestTarget:
    """Domain type, arch, machine and emulator for these hvparams on this host.

    kvm_flag 'enabled' needs KVM, 'disabled' means TCG (type='qemu'), empty takes KVM
    when the host offers it, else TCG. A driver that offers neither (libvirt's test
    driver) gets its own domain type.
    """
    if not arches:
        raise HypervisorError(f"{uri} offers no hvm guests")
    arch = "x86_64" if "x86_64" in arches else sorted(arches)[0]
    offered = list(arches[arch])
    flag = hvparams[C.HV_KVM_FLAG]
    wanted = {C.HT_KVM_ENABLED: ["kvm"], C.HT_KVM_DISABLED: ["qemu"]}.get(flag, ["kvm", "qemu"])
    for domain_type in wanted:
        if domain_type in offered:
            return GuestTarget(domain_type=domain_type, arch=arch,
                               machine=hvparams[C.HV_KVM_MACHINE_VERSION] or None,
                               emulator=hvparams[C.HV_KVM_PATH])
    if not flag and offered and not {"kvm", "qemu"} & set(offered):
        return GuestTarget(domain_type=offered[0], arch=arch)
    raise HypervisorError(f"Parameter 'kvm_flag' is {flag!r} but {uri} offers only domain "
                          f"types {offered} for {arch}")


def is_hugetlbfs(path: str, mounts: str = "/proc/self/mounts") -> bool:
    """Whether ``path`` is a hugetlbfs mount point."""
    with open(mounts, encoding="utf-8", errors="replace") as table:
        return any(fields[1:3] == [path, "hugetlbfs"]
                   for fields in (line.split() for line in table))


def is_interface(name: str) -> bool:
    """Whether this node has a network interface called ``name``."""
    return any(ifname == name for _index, ifname in socket.if_nameindex())


def live_graphics(uri: str, name: str) -> dict[str, tuple[str | None, int]]:
    """kind -> (listen address, port) of the running domain, if this node has it."""
    try:
        dom = connection.call(uri, lambda conn: conn.lookupByName(name))
        root = parser.parse_tree(dom.XMLDesc(0))
    except (HypervisorError, libvirt.libvirtError):
        return {}
    return parser.graphics(root)


def _interface_address(name: str, family: int) -> str | None:
    import psutil  # only here: a fresh process that does not need it should not load it

    for addr in psutil.net_if_addrs().get(name, []):
        if addr.family == family:
            return addr.address.split("%")[0]
    return None


def resolve_bind(value: str, param: str, ip_version: int = 0) -> str:
    """An IP as is; an interface name -> its address (IPv4 first unless asked for 6)."""
    if ip_version_of(value):
        return value
    families = {4: [socket.AF_INET], 6: [socket.AF_INET6]}.get(
        ip_version, [socket.AF_INET, socket.AF_INET6])
    for family in families:
        address = _interface_address(value, family)
        if address:
            return address
    raise HypervisorError(f"Parameter '{param}' ({value!r}) is neither an IP address nor an "
                          "interface with a usable address on this node")


def vnc_listen(value: str, instance_name: str) -> Listen:
    if P.is_norm_abs_path(value):
        return Listen(socket=f"{value}/{instance_name}.vnc")
    return Listen(address=resolve_bind(value, C.HV_VNC_BIND_ADDRESS, 4))


_PASSWORD_FILE_MAX = 4096  # characters


def read_password(hvparams: Mapping[str, Any], param: str, allow_empty: bool = False
                  ) -> str | None:
    """The single line of a password file; its content never appears in errors or logs.
    With ``allow_empty``, an empty file means no password (None)."""
    path = hvparams[param]
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            # Bounded: a password is one short line, and the path may name anything.
            lines = f.read(_PASSWORD_FILE_MAX + 1).splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise HypervisorError(f"Parameter '{param}': cannot read {path}: "
                              f"{getattr(err, 'strerror', None) or type(err).__name__}") from None
    if allow_empty and not any(lines):
        return None
    if len(lines) != 1 or not lines[0] or len(lines[0]) > _PASSWORD_FILE_MAX:
        raise HypervisorError(f"Parameter '{param}': {path} must hold exactly one non-empty "
                              "line (the password)")
    if identity.has_control_characters(lines[0]):
        raise HypervisorError(f"Parameter '{param}': the password in {path} holds a NUL or "
                              "control character")
    return lines[0]


def vnc_password(hvparams: Mapping[str, Any], allow_empty: bool = False) -> str | None:
    """VNC's protocol uses 8 characters of a password; QEMU (under Ganeti) silently
    ignored the rest, libvirt refuses longer ones, so keep what VNC uses. Ganeti's Xen
    writes an empty file as an empty vncpasswd (``allow_empty``: no password)."""
    password = read_password(hvparams, C.HV_VNC_PASSWORD_FILE, allow_empty)
    if password is not None and len(password) > _VNC_PASSWORD_CHARS:
        log.warning("%s holds more than %d characters; VNC uses the first %d",
                    hvparams[C.HV_VNC_PASSWORD_FILE], _VNC_PASSWORD_CHARS,
                    _VNC_PASSWORD_CHARS)
        password = password[:_VNC_PASSWORD_CHARS]
    return password


def dac_label(user: str) -> str:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise HypervisorError(f"Parameter 'security_domain': unknown user {user!r}") from None
    return f"+{entry.pw_uid}:+{entry.pw_gid}"


def check_log_dir(path: str) -> str:
    """``path``, if it can name a serial log directory (the directory itself is checked
    when an instance starts: it may be made later)."""
    if not P.is_norm_abs_path(path):
        raise HypervisorError(f"Invalid serial log directory {path!r}: an absolute path is "
                              "expected")
    return path


def serial_log_file(log_dir: str, name: str) -> str:
    """Instance ``name``'s serial log in ``log_dir``, which must be a trusted directory:
    virtlogd writes the file as root. A missing one is made (mode 0700), as hvlibvirt's
    other directories are: the directories above it are checked first."""
    why = trusted.why_untrusted(log_dir, create=True)
    if why:
        raise HypervisorError(f"Failed to start instance {name}: serial log directory "
                              f"{log_dir} is not safe for root's writes: {why}")
    return os.path.join(log_dir, f"{name}.serial")


def disk_buses(conn: libvirt.virConnect, uri: str, root: etree._Element
               ) -> frozenset[str] | None:
    """Disk buses libvirt's domain capabilities offer for the running domain ``root``
    (cached per process, emulator, machine and type); None when the driver cannot say:
    no domain capabilities, or ones without a disk element (libvirt 11's test driver
    answers with an empty device list, which says nothing about disks)."""
    running = parser.machine(root)
    key = (uri, running.emulator, running.arch, running.machine, running.domain_type)
    if key not in _DOMCAPS_DISK_BUSES:
        try:
            caps = parser.parse_tree(conn.getDomainCapabilities(*key[1:], 0),
                                     "domain capabilities")
        except libvirt.libvirtError:
            return None
        disk = caps.find("devices/disk")
        _DOMCAPS_DISK_BUSES[key] = None if disk is None else frozenset(
            disk.xpath("enum[@name='bus']/value/text()"))
    return _DOMCAPS_DISK_BUSES[key]


_DOMCAPS_DISK_BUSES: dict[tuple[Any, ...], frozenset[str] | None] = {}


# libvirt 9.0 (Debian 12) refuses <vlan> on Linux bridge ports when a domain starts;
# support came with the 11.x series, so older daemons get a clear error at build time.
_LINUX_BRIDGE_VLAN_LIBVIRT = 11_001_000


def linux_bridge_vlans(conn: libvirt.virConnect) -> bool:
    """Whether the libvirtd behind ``conn`` puts a VLAN on a Linux bridge port."""
    with connection.libvirt_errors("read the libvirt version"):
        return conn.getLibVersion() >= _LINUX_BRIDGE_VLAN_LIBVIRT
