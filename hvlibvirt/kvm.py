"""KVM through libvirt's QEMU driver.

The parameter table is ``kvm_params.KVM_PARAMS``; here are KVM's cross-parameter rules
(``CheckParameterSyntax``), its node-side checks (``ValidateParameters``), and the
node-specific facts the domain XML builder needs (``_startup_options``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pwd
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import libvirt
import psutil
from lxml import etree

from hvlibvirt import connection, constants as C, domains, params as P
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.domain_xml import GuestTarget, Listen, StartupOptions, build_domain, parse_domain
from hvlibvirt.domain_xml.identity import device_alias as alias_of
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm_params import KVM_PARAMS
from hvlibvirt.objects import InstanceConsole

# Ganeti's build-time default user for ssh consoles.
SSH_CONSOLE_USER = "root"

# SPICE options that only make sense with spice_bind set (Ganeti's rule).
_SPICE_ADDITIONAL_PARAMS = (
    C.HV_KVM_SPICE_IP_VERSION, C.HV_KVM_SPICE_PASSWORD_FILE,
    C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR, C.HV_KVM_SPICE_JPEG_IMG_COMPR,
    C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR, C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION,
    C.HV_KVM_SPICE_USE_TLS,
)


# libvirt 9.0 (Debian 12) refuses <vlan> on Linux bridge ports when a domain starts;
# support came with the 11.x series, so older daemons get a clear error at build time.
_LINUX_BRIDGE_VLAN_LIBVIRT = 11_001_000
_VNC_PASSWORD_CHARS = 8
log = logging.getLogger(__name__)


def _ip_version(value: str) -> int | None:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


class KVMHypervisor(BaseHypervisor):
    """Ganeti's ``kvm`` hypervisor on libvirt's QEMU driver."""

    HV_NAME = C.HT_KVM
    URI_ENV = "HVLIBVIRT_KVM_URI"
    DEFAULT_URI = "qemu:///system"
    CAN_MIGRATE = True

    PARAMETERS: ClassVar[dict[str, P.Check]] = P.checks_of(KVM_PARAMS)

    @staticmethod
    def VersionsSafeForMigration(src: Any, target: Any) -> bool:  # noqa: N802
        """Like Ganeti's KVM: any QEMU versions may migrate (the machine type in the
        domain XML pins the guest ABI; libvirt refuses what the target cannot run)."""
        return True

    # -- parameters --------------------------------------------------------------
    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Per-parameter checks, then KVM's cross-parameter rules."""
        super().CheckParameterSyntax(hvparams)
        hvp = hvparams
        # What libvirt cannot honour first: a clearer message than a cross-rule about it.
        P.check_refusals(KVM_PARAMS, hvp)
        if hvp[C.HV_BOOT_ORDER] == C.HT_BO_CDROM and not hvp[C.HV_CDROM_IMAGE_PATH]:
            raise HypervisorError("Parameter 'boot_order' is cdrom but 'cdrom_image_path' "
                                  "is not set: cannot boot from cdrom without an ISO path")
        if hvp[C.HV_KERNEL_PATH] and not hvp[C.HV_ROOT_PATH]:
            raise HypervisorError("Parameter 'root_path' must be set when 'kernel_path' is"
                                  " (the kernel needs a root partition)")
        model, domain = hvp[C.HV_SECURITY_MODEL], hvp[C.HV_SECURITY_DOMAIN]
        if model == C.HT_SM_USER and not domain:
            raise HypervisorError("Parameter 'security_domain' (the user to run the "
                                  "instance as) must be set when security_model is 'user'")
        if model in (C.HT_SM_NONE, C.HT_SM_POOL) and domain:
            raise HypervisorError(f"Parameter 'security_domain' must be empty when "
                                  f"security_model is {model!r}")
        if hvp[C.HV_SERIAL_CONSOLE] and hvp[C.HV_SERIAL_SPEED] not in C.VALID_SERIAL_SPEEDS:
            raise HypervisorError(
                f"Parameter 'serial_speed' is invalid ({hvp[C.HV_SERIAL_SPEED]!r}); must be one"
                f" of: {', '.join(map(str, C.VALID_SERIAL_SPEEDS))}")
        if hvp[C.HV_VNC_X509_VERIFY] and not hvp[C.HV_VNC_X509]:
            raise HypervisorError("Parameter 'vnc_x509_path' must be set when "
                                  "'vnc_x509_verify' is")
        cls._check_spice(hvp)
        if hvp[C.HV_CPU_TYPE] == "host" and hvp[C.HV_KVM_FLAG] == C.HT_KVM_DISABLED:
            raise HypervisorError("Parameter 'cpu_type' is 'host', which needs KVM, but "
                                  "'kvm_flag' is disabled")
        if hvp[C.HV_KVM_DISK_AIO] == "native" and hvp[C.HV_DISK_CACHE] != "none":
            raise HypervisorError("Parameter 'disk_cache' must be 'none' when 'disk_aio' is"
                                  " 'native'")

    @classmethod
    def AssessParameters(cls, hvparams: Mapping[str, Any]) -> list[str]:  # noqa: N802
        """Legal but risky or slow choices, as Ganeti's cluster verify reports them."""
        hvp, warnings = hvparams, []
        cpu_type = hvp.get(C.HV_CPU_TYPE, "")
        if not cpu_type or cpu_type.split(",")[0] in ("qemu32", "qemu64", "kvm32", "kvm64"):
            warnings.append("cpu_type is a generic model (qemu64 by default): guests miss "
                            "most CPU features")
        elif cpu_type == "host":
            warnings.append("cpu_type 'host' needs identical CPUs on every node for live "
                            "migration")
        if not hvp.get(C.HV_VHOST_NET):
            warnings.append("vhost_net is off: virtio NICs are served from QEMU's userspace")
        if hvp.get(C.HV_MIGRATION_BANDWIDTH) == C.HVC_DEFAULTS[C.HT_KVM][
                C.HV_MIGRATION_BANDWIDTH]:
            warnings.append("migration_bandwidth is the default 32 MiB/s, which is slow for "
                            "most networks")
        for param in (C.HV_DISK_TYPE, C.HV_NIC_TYPE):
            if hvp.get(param) != C.HT_DISK_PARAVIRTUAL:
                warnings.append(f"{param} {hvp.get(param)!r} is emulated and slower than "
                                "paravirtual")
        vnc, spice = hvp.get(C.HV_VNC_BIND_ADDRESS), hvp.get(C.HV_KVM_SPICE_BIND)
        if vnc and vnc not in ("127.0.0.1", "::1") and not P.is_norm_abs_path(vnc):
            warnings.append(f"VNC listens on {vnc}: unencrypted unless qemu.conf enables "
                            "vnc_tls")
        if spice and spice not in ("127.0.0.1", "::1") and not hvp.get(C.HV_KVM_SPICE_USE_TLS):
            warnings.append(f"SPICE listens on {spice} without spice_use_tls")
        machine = hvp.get(C.HV_KVM_MACHINE_VERSION, "")
        if not machine or machine == "pc":
            warnings.append("machine_version is not pinned: a QEMU upgrade changes the "
                            "guest's machine type at its next start")
        elif machine.startswith("q35") or machine.startswith("pc-q35"):
            warnings.append("q35 machines need PCIe root ports for hotplug, which hvlibvirt "
                            "does not add")
        elif machine in ("none", "microvm", "isapc", "x-remote"):
            warnings.append(f"machine_version {machine!r} is not a PC machine hvlibvirt "
                            "supports")
        return warnings

    @staticmethod
    def _check_spice(hvp: Mapping[str, Any]) -> None:
        bind, version = hvp[C.HV_KVM_SPICE_BIND], hvp[C.HV_KVM_SPICE_IP_VERSION]
        if not bind:
            for name in _SPICE_ADDITIONAL_PARAMS:
                if hvp[name]:
                    raise HypervisorError(f"Parameter '{name}' requires 'spice_bind' to be set")
            return
        found = _ip_version(bind)
        if version != C.IFACE_NO_IP_VERSION_SPECIFIED and found not in (None, version):
            raise HypervisorError(f"Parameter 'spice_bind' is an IPv{found} address "
                                  f"({bind}) but 'spice_ip_version' is {version}")

    @classmethod
    def ValidateParameters(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Node-side checks: files exist, users exist, bind addresses are usable here."""
        super().ValidateParameters(hvparams)
        hvp = hvparams
        if hvp[C.HV_SECURITY_MODEL] == C.HT_SM_USER:
            try:
                pwd.getpwnam(hvp[C.HV_SECURITY_DOMAIN])
            except KeyError:
                raise HypervisorError(f"Parameter 'security_domain': unknown user "
                                      f"{hvp[C.HV_SECURITY_DOMAIN]!r}") from None
        vnc, spice = hvp[C.HV_VNC_BIND_ADDRESS], hvp[C.HV_KVM_SPICE_BIND]
        if vnc and spice:
            raise HypervisorError("Parameters 'vnc_bind_address' and 'spice_bind' cannot "
                                  "both be set: an instance has either VNC or SPICE")
        interfaces = psutil.net_if_addrs()
        if vnc and not (_ip_version(vnc) or vnc in interfaces or P.is_norm_abs_path(vnc)):
            raise HypervisorError(f"Parameter 'vnc_bind_address' ({vnc!r}) is neither an IP "
                                  "address, a network interface of this node nor an "
                                  "absolute path")
        if spice and not (_ip_version(spice) or spice in interfaces):
            raise HypervisorError(f"Parameter 'spice_bind' ({spice!r}) is neither an IP "
                                  "address nor a network interface of this node")
        mem_path = hvp[C.HV_MEM_PATH]
        if mem_path and not _is_hugetlbfs(mem_path):
            raise HypervisorError(f"Parameter 'mem_path' ({mem_path!r}) is not a hugetlbfs "
                                  "mount: libvirt backs guest memory with hugepages only")

    # -- verification --------------------------------------------------------------
    def _verify_problems(self, hvparams: Mapping[str, Any] | None) -> list[str]:
        """Daemon reachable; with hvparams: emulator present, and the domain type and
        machine they ask for offered by libvirt's domain capabilities."""
        problems = super()._verify_problems(hvparams)
        if problems or not hvparams:
            return problems
        emulator = hvparams.get(C.HV_KVM_PATH)
        if not emulator or not os.path.isfile(emulator):
            problems.append(f"kvm_path {emulator!r} does not exist")
            return problems
        conn = self._conn()
        try:
            target = choose_target(hvparams, offered_domain_types(conn.getCapabilities()),
                                   self.uri)
        except (HypervisorError, libvirt.libvirtError) as err:
            return problems + [str(err)]
        if target.domain_type not in ("kvm", "qemu"):
            return problems  # not a QEMU driver (the test driver): nothing more to ask
        try:
            conn.getDomainCapabilities(emulator, target.arch, target.machine,
                                       target.domain_type, 0)
        except libvirt.libvirtError as err:
            problems.append(f"libvirt cannot run {target.domain_type} guests with "
                            f"{emulator} (machine {target.machine or 'default'}): "
                            f"{err.get_error_message()}")
        return problems

    def _drift(self, instance: Any) -> list[str]:
        """Differences between the running domain and the instance's configuration that
        a restart would change: memory, vCPUs, hvparams shaping the XML, NICs, disks."""
        dom = self._owned(instance.name)
        if dom is None or not dom.isActive():
            return []
        with connection.libvirt_errors("read the domain XML", instance.name):
            live = parse_domain(dom.XMLDesc(0))
            root = etree.fromstring(dom.XMLDesc(0).encode())
        drift = []
        beparams = instance.beparams
        if int(root.findtext("memory")) // 1024 != beparams.get("maxmem"):
            drift.append(f"maxmem is {root.findtext('memory')} KiB live, "
                         f"{beparams.get('maxmem')} MiB configured")
        if int(root.findtext("vcpu")) != beparams.get("vcpus"):
            drift.append(f"vcpus is {root.findtext('vcpu')} live, {beparams.get('vcpus')} "
                         "configured")
        in_force = live.meta.hvparams if live.meta else {}
        for name, entry in sorted(KVM_PARAMS.items()):
            if entry.xml and in_force.get(name) != instance.hvparams.get(name):
                drift.append(f"hvparam {name} is {in_force.get(name)!r} live, "
                             f"{instance.hvparams.get(name)!r} configured")
        want = {alias_of("disk", d.uuid) for d in instance.disks_info}
        want |= {alias_of("nic", n.uuid) for n in instance.nics}
        have = {a for a in live.devices if a.startswith(("ua-disk-", "ua-nic-"))}
        drift += [f"device {a} is configured but not attached" for a in sorted(want - have)]
        drift += [f"device {a} is attached but not configured" for a in sorted(have - want)]
        for nic in instance.nics:
            elem = root.find(f"devices/interface/alias[@name='{alias_of('nic', nic.uuid)}']/..")
            if elem is None:
                continue
            link = (nic.nicparams or {}).get(C.NIC_LINK) or None
            if elem.find("mac").get("address") != nic.mac.lower():
                drift.append(f"NIC {nic.uuid} has MAC {elem.find('mac').get('address')} "
                             f"live, {nic.mac} configured")
            source = elem.find("source")
            if source is not None and source.get("bridge") != link:
                drift.append(f"NIC {nic.uuid} is on bridge {source.get('bridge')} live, "
                             f"{link} configured")
        return drift

    def RestoreInstance(self, instance: Any, block_devices: Sequence[Any]) -> None:  # noqa: N802
        """Fix what can change on a running domain: NICs moved to another bridge, and
        the runtime hvparams recorded in our metadata. The rest needs a restart and is
        logged by VerifyInstance."""
        dom = self._owned(instance.name)
        if dom is None or not dom.isActive():
            return
        with connection.libvirt_errors("read the domain XML", instance.name):
            root = etree.fromstring(dom.XMLDesc(0).encode())
        for nic in instance.nics:
            elem = root.find(f"devices/interface/alias[@name='{alias_of('nic', nic.uuid)}']/..")
            source = elem.find("source") if elem is not None else None
            link = (nic.nicparams or {}).get(C.NIC_LINK)
            if source is None or not link or source.get("bridge") == link:
                continue
            source.set("bridge", link)
            with connection.libvirt_errors("move a NIC to another bridge", instance.name):
                dom.updateDeviceFlags(etree.tostring(elem, encoding="unicode"),
                                      libvirt.VIR_DOMAIN_AFFECT_LIVE
                                      | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        meta = domains.read_metadata(dom)
        if meta is not None:
            for name, entry in KVM_PARAMS.items():
                if entry.runtime:
                    meta.hvparams[name] = instance.hvparams.get(name)
            domains.write_metadata(dom, meta)

    # -- consoles --------------------------------------------------------------------
    @classmethod
    def GetInstanceConsole(cls, instance: Any, primary_node: Any, node_group: Any,  # noqa: N802
                           hvparams: Mapping[str, Any], beparams: Mapping[str, Any]
                           ) -> InstanceConsole:
        """Serial console over ssh (through libvirt), else VNC, else SPICE, else a message.

        VNC/SPICE report the instance's real listen address and port when this node's
        libvirt holds the running domain; a wildcard listen address is replaced by the
        primary node's name (which is what a client must connect to).
        """
        name, node_name = instance.name, getattr(primary_node, "name", None)
        uri = os.environ.get(cls.URI_ENV) or cls.DEFAULT_URI
        if hvparams.get(C.HV_SERIAL_CONSOLE):
            ndparams = (node_group.FillND(primary_node)
                        if hasattr(node_group, "FillND") else {}) or {}
            return InstanceConsole(
                instance=name, kind=C.CONS_SSH, host=node_name, user=SSH_CONSOLE_USER,
                port=ndparams.get("ssh_port"),
                command=[sys.executable, "-m", "hvlibvirt.cli", "console", "--uri", uri, name])
        live = _live_graphics(uri, name)
        for kind, param in ((C.CONS_VNC, C.HV_VNC_BIND_ADDRESS),
                            (C.CONS_SPICE, C.HV_KVM_SPICE_BIND)):
            bind = hvparams.get(param)
            if not bind:
                continue
            host, port = live.get(kind, (bind, getattr(instance, "network_port", None)))
            if host in ("0.0.0.0", "::", "") or P.is_norm_abs_path(host or ""):
                host = node_name
            if port and (kind == C.CONS_SPICE or port > C.VNC_BASE_PORT):
                return InstanceConsole(instance=name, kind=kind, host=host, port=port,
                                       display=port - C.VNC_BASE_PORT
                                       if kind == C.CONS_VNC else None)
        return InstanceConsole(instance=name, kind=C.CONS_MESSAGE,
                               message=f"No serial shell for instance {name}")

    # -- the domain ----------------------------------------------------------------
    def _build_domain(self, instance: Any, block_devices: Sequence[Any],
                      startup_memory: int) -> etree._Element:
        options = self._startup_options(instance, startup_memory)
        return build_domain(instance, block_devices, instance.hvparams, options)

    def _startup_options(self, instance: Any, startup_memory: int) -> StartupOptions:
        """Gather the node facts the builder needs: placement, listens, secrets, users."""
        hvp = instance.hvparams
        with connection.libvirt_errors("read the host capabilities"):
            caps = self._conn().getCapabilities()
            lib_version = self._conn().getLibVersion()
        vnc, spice = hvp[C.HV_VNC_BIND_ADDRESS], hvp[C.HV_KVM_SPICE_BIND]
        return StartupOptions(
            target=choose_target(hvp, offered_domain_types(caps), self.uri),
            startup_memory=startup_memory,
            vnc_listen=_vnc_listen(vnc, instance.name) if vnc else None,
            spice_listen=Listen(address=_resolve_bind(
                spice, C.HV_KVM_SPICE_BIND, hvp[C.HV_KVM_SPICE_IP_VERSION])) if spice else None,
            vnc_password=_vnc_password(hvp) if vnc else None,
            spice_password=_read_password(hvp, C.HV_KVM_SPICE_PASSWORD_FILE) if spice else None,
            security_label=_dac_label(hvp[C.HV_SECURITY_DOMAIN])
            if hvp[C.HV_SECURITY_MODEL] == C.HT_SM_USER else None,
            linux_bridge_vlans=lib_version >= _LINUX_BRIDGE_VLAN_LIBVIRT)


def offered_domain_types(capabilities_xml: str) -> dict[str, list[str]]:
    """hvm guest arch -> domain types libvirt offers for it (from getCapabilities)."""
    caps = etree.fromstring(capabilities_xml.encode())
    arches: dict[str, list[str]] = {}
    for guest in caps.iterfind("guest"):
        if guest.findtext("os_type") == "hvm":
            arch = guest.find("arch")
            arches[arch.get("name")] = [d.get("type") for d in arch.iterfind("domain")]
    return arches


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


def _is_hugetlbfs(path: str) -> bool:
    return any(part.mountpoint == path and part.fstype == "hugetlbfs"
               for part in psutil.disk_partitions(all=True))


def _live_graphics(uri: str, name: str) -> dict[str, tuple[str | None, int]]:
    """kind -> (listen address, port) of the running domain, if this node has it."""
    try:
        dom = connection.get(uri).lookupByName(name)
        root = etree.fromstring(dom.XMLDesc(0).encode())
    except (HypervisorError, libvirt.libvirtError):
        return {}
    found = {}
    for graphics in root.iterfind("devices/graphics"):
        port = int(graphics.get("port") or graphics.get("tlsPort") or 0)
        listen = graphics.find("listen")
        address = listen.get("address") if listen is not None else graphics.get("listen")
        if port > 0:
            found[graphics.get("type")] = (address, port)
    return found


def _interface_address(name: str, family: int) -> str | None:
    for addr in psutil.net_if_addrs().get(name, []):
        if addr.family == family:
            return addr.address.split("%")[0]
    return None


def _resolve_bind(value: str, param: str, ip_version: int = 0) -> str:
    """An IP as is; an interface name -> its address (IPv4 first unless asked for 6)."""
    if _ip_version(value):
        return value
    families = {4: [socket.AF_INET], 6: [socket.AF_INET6]}.get(
        ip_version, [socket.AF_INET, socket.AF_INET6])
    for family in families:
        address = _interface_address(value, family)
        if address:
            return address
    raise HypervisorError(f"Parameter '{param}' ({value!r}) is neither an IP address nor an "
                          "interface with a usable address on this node")


def _vnc_listen(value: str, instance_name: str) -> Listen:
    if P.is_norm_abs_path(value):
        return Listen(socket=f"{value}/{instance_name}.vnc")
    return Listen(address=_resolve_bind(value, C.HV_VNC_BIND_ADDRESS, 4))


def _read_password(hvparams: Mapping[str, Any], param: str) -> str | None:
    """The single line of a password file; its content never appears in errors or logs."""
    path = hvparams[param]
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise HypervisorError(f"Parameter '{param}': cannot read {path}: "
                              f"{getattr(err, 'strerror', None) or type(err).__name__}") from None
    if len(lines) != 1 or not lines[0]:
        raise HypervisorError(f"Parameter '{param}': {path} must hold exactly one non-empty "
                              "line (the password)")
    return lines[0]


def _vnc_password(hvparams: Mapping[str, Any]) -> str | None:
    """VNC's protocol uses 8 characters of a password; QEMU (under Ganeti) silently
    ignored the rest, libvirt refuses longer ones, so keep what VNC uses."""
    password = _read_password(hvparams, C.HV_VNC_PASSWORD_FILE)
    if password is not None and len(password) > _VNC_PASSWORD_CHARS:
        log.warning("%s holds more than %d characters; VNC uses the first %d",
                    hvparams[C.HV_VNC_PASSWORD_FILE], _VNC_PASSWORD_CHARS,
                    _VNC_PASSWORD_CHARS)
        password = password[:_VNC_PASSWORD_CHARS]
    return password


def _dac_label(user: str) -> str:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise HypervisorError(f"Parameter 'security_domain': unknown user {user!r}") from None
    return f"+{entry.pw_uid}:+{entry.pw_gid}"
