"""KVM through libvirt's QEMU driver.

The parameter table and KVM's cross-parameter rules are ``kvm_params`` and the node
facts the XML builder needs come from ``kvm_node``; here are KVM's node-side checks,
verification, hotplug, consoles and migration tuning.
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import libvirt
from lxml import etree

from hvlibvirt import (config, connection, constants as C, hotplug, instance_metadata,
                       kvm_node, params as P, qemu_conf)
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.domain_xml import (Listen, StartupOptions, build_domain, identity, inputs, nics,
                                  parser, pcie)
from hvlibvirt.domain_xml.identity import device_alias as alias_of
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.helper import helper_command
from hvlibvirt.hotplug.kvm import KvmDevices
from hvlibvirt.kvm_params import KVM_PARAMS, KVM_RULES
from hvlibvirt.migrator import KvmMigrator
from hvlibvirt.objects import InstanceConsole, new_instance_console

# Ganeti's build-time default user for ssh consoles.
SSH_CONSOLE_USER = "root"


log = logging.getLogger(__name__)


class KVMHypervisor(BaseHypervisor):
    """Ganeti's ``kvm`` hypervisor on libvirt's QEMU driver."""

    HV_NAME = C.HT_KVM
    URI_ENV = "HVLIBVIRT_KVM_URI"
    DEFAULT_URI = "qemu:///system"
    CAN_MIGRATE = True
    MIGRATOR = KvmMigrator

    TABLE = KVM_PARAMS

    @staticmethod
    def VersionsSafeForMigration(src: Any, target: Any) -> bool:  # noqa: N802
        """Like Ganeti's KVM: any QEMU versions may migrate (the machine type in the
        domain XML pins the guest ABI; libvirt refuses what the target cannot run)."""
        return True

    MIGRATION_URI_TEMPLATE = "qemu+ssh://{target}/system"

    def __init__(self, uri: str | None = None, migration_uri: str | None = None,
                 serial_log_dir: str | None = None) -> None:
        """``migration_uri`` (else env HVLIBVIRT_MIGRATION_URI, else the configuration
        file): the target's libvirt URI, with ``{target}`` for the address Ganeti passes.
        ``serial_log_dir`` (see the property)."""
        super().__init__(uri, migration_uri)
        if serial_log_dir is not None:
            kvm_node.check_log_dir(serial_log_dir)
        self._serial_log_dir = serial_log_dir

    @property
    def serial_log_dir(self) -> str | None:
        """Where to keep each instance's serial console output (``<dir>/<instance>.serial``,
        written by virtlogd): constructor keyword, else env HVLIBVIRT_SERIAL_LOG_DIR,
        else the configuration file, else nowhere."""
        log_dir = (self._serial_log_dir or config.getenv("HVLIBVIRT_SERIAL_LOG_DIR")
                   or config.value(self.HV_NAME, "serial_log_dir"))
        return kvm_node.check_log_dir(log_dir) if log_dir is not None else None

    # -- parameters --------------------------------------------------------------
    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Per-parameter checks, then KVM's cross-parameter rules (``kvm_params``)."""
        super().CheckParameterSyntax(hvparams)
        # What libvirt cannot honour first: a clearer message than a cross-rule about it.
        P.check_refusals(KVM_PARAMS, hvparams)
        P.check_rules(KVM_RULES, hvparams)

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
        if hvp.get(C.HV_MIGRATION_BANDWIDTH) == cls.DEFAULTS[
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
        if (machine or "") in ("", "pc", "q35"):
            warnings.append("machine_version is not pinned: a QEMU upgrade changes the "
                            "guest's machine type at its next start")
        elif machine in ("none", "microvm", "isapc", "x-remote"):
            warnings.append(f"machine_version {machine!r} is not a PC machine hvlibvirt "
                            "supports")
        return warnings

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
        if vnc and not (kvm_node.ip_version_of(vnc) or kvm_node.is_interface(vnc)
                        or P.is_norm_abs_path(vnc)):
            raise HypervisorError(f"Parameter 'vnc_bind_address' ({vnc!r}) is neither an IP "
                                  "address, a network interface of this node nor an "
                                  "absolute path")
        if spice and not (kvm_node.ip_version_of(spice) or kvm_node.is_interface(spice)):
            raise HypervisorError(f"Parameter 'spice_bind' ({spice!r}) is neither an IP "
                                  "address nor a network interface of this node")
        for problem in qemu_conf.problems(hvp):
            raise HypervisorError(problem)
        mem_path = hvp[C.HV_MEM_PATH]
        if mem_path and not kvm_node.is_hugetlbfs(mem_path):
            raise HypervisorError(f"Parameter 'mem_path' ({mem_path!r}) is not a hugetlbfs "
                                  "mount: libvirt backs guest memory with hugepages only")

    # -- verification --------------------------------------------------------------
    def _verify_problems(self, hvparams: Mapping[str, Any] | None) -> list[str]:
        """Daemon reachable; with hvparams: emulator present, and the domain type and
        machine they ask for offered by libvirt's domain capabilities."""
        problems = super()._verify_problems(hvparams)
        if problems or not hvparams:
            return problems
        hvparams = {**self.DEFAULTS, **hvparams}  # Ganeti's are filled; others may not be
        emulator = hvparams.get(C.HV_KVM_PATH)
        if not emulator or not os.path.isfile(emulator):
            problems.append(f"kvm_path {emulator!r} does not exist")
            return problems
        conn = self.host.conn()
        try:
            offered = kvm_node.offered_domain_types(conn.getCapabilities())
            target = kvm_node.choose_target(hvparams, offered, self.uri)
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

    def RestoreInstance(self, instance: Any, block_devices: Sequence[Any]) -> None:  # noqa: N802
        """Fix what can change on a running domain: NICs moved to another bridge, and
        the runtime hvparams recorded in our metadata. The rest needs a restart and is
        logged by VerifyInstance."""
        dom = self.host.owned(instance.name)
        if dom is None or not dom.isActive():
            return
        with connection.libvirt_errors("read the domain XML", instance.name):
            root = parser.parse_tree(dom.XMLDesc(0))
        for nic in instance.nics:
            elem = parser.nic(root, alias_of("nic", nic.uuid))
            source = elem.find("source") if elem is not None else None
            link = (nic.nicparams or {}).get(C.NIC_LINK)
            if source is None or not link or source.get("bridge") == link:
                continue
            source.set("bridge", identity.interface_name(link, f"link of NIC {nic.uuid}"))
            with connection.libvirt_errors("move a NIC to another bridge", instance.name):
                dom.updateDeviceFlags(etree.tostring(elem, encoding="unicode"),
                                      libvirt.VIR_DOMAIN_AFFECT_LIVE
                                      | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        instance_metadata.set_runtime_hvparams(dom, {
            name: instance.hvparams.get(name) for name, entry in KVM_PARAMS.items()
            if entry.runtime})

    # -- hotplug: the shared flow with KVM's rules and elements ----------------------
    #: seconds to wait for the guest to release a hot-removed device
    HOTPLUG_TIMEOUT: ClassVar[float] = hotplug.HOTPLUG_TIMEOUT

    def _hotplug(self) -> hotplug.Flow:
        devices = KvmDevices(self._linux_bridge_vlans,
                             lambda root: kvm_node.disk_buses(self.host.conn(), self.uri, root))
        return hotplug.Flow(devices, self.host, self.HOTPLUG_TIMEOUT)

    def VerifyHotplugSupport(self, instance: Any, action: str, dev_type: str) -> None:  # noqa: N802
        """Raise HotplugError if ``action`` on a ``dev_type`` cannot be done live."""
        self._hotplug().checked(instance, action, dev_type)

    def HotAddDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> None:
        """Attach a disk (``extra`` = (link_name, drive_uri)) or a NIC with an explicit
        address, confirmed in the live XML and recorded in the persistent definition."""
        self._hotplug().add(instance, dev_type, device, extra, seq)

    def HotDelDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> dict[str, str]:
        """Remove a disk or NIC, confirmed by DEVICE_REMOVED; returns where it was
        (alias and address, Ganeti's hvinfo)."""
        return self._hotplug().remove(instance, dev_type, device, extra, seq)

    def HotModDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> None:
        """Change a NIC: in place where the QEMU driver applies the change live (bridge,
        link state), else as Ganeti's KVM does (a new MAC or mode, or what libvirt
        cannot change live): a confirmed hot-remove and a hot-add of the changed NIC at
        the same PCI slot, the old NIC put back should the add fail."""
        self._hotplug().modify(instance, dev_type, device, extra, seq)

    def ResizeDisk(self, instance: Any, disk: Any, new_size: int) -> None:  # noqa: N802
        """Tell the running guest its disk is now ``new_size`` bytes (grow only)."""
        target = self._hotplug().target(instance, C.HOTPLUG_ACTION_MODIFY,
                                        C.HOTPLUG_TARGET_DISK)
        if isinstance(new_size, bool) or not isinstance(new_size, int) or new_size <= 0:
            raise HotplugError(f"Invalid new size {new_size!r} (bytes expected)")
        elem = parser.device(target.root, alias_of("disk", getattr(disk, "uuid", None)))
        if elem is None:
            raise HotplugError(f"Cannot find disk with UUID {disk.uuid} in instance "
                               f"{instance.name}")
        dev = elem.find("target").get("dev")
        with connection.libvirt_errors(f"resize disk {dev}", instance.name, HotplugError):
            target.dom.blockResize(dev, new_size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def _linux_bridge_vlans(self) -> bool:
        return kvm_node.linux_bridge_vlans(self.host.conn())

    def _free_memory(self, hvparams: Mapping[str, Any]) -> int:
        """What Ganeti's KVM reports free: this machine's (no libvirt round trip)."""
        return self.GetLinuxNodeInfo()["memory_free"]

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
        if hvparams.get(C.HV_SERIAL_CONSOLE):
            ndparams = (node_group.FillND(primary_node)
                        if hasattr(node_group, "FillND") else {}) or {}
            return new_instance_console(
                instance=name, kind=C.CONS_SSH, host=node_name, user=SSH_CONSOLE_USER,
                port=ndparams.get("ssh_port"),
                # No --uri: the command runs on the primary node, whose configuration
                # names its libvirt (this may be the master's job process).
                command=helper_command("console", "--hypervisor", cls.HV_NAME, name))
        live = kvm_node.live_graphics(cls.configured_uri(), name)
        for kind, param in ((C.CONS_VNC, C.HV_VNC_BIND_ADDRESS),
                            (C.CONS_SPICE, C.HV_KVM_SPICE_BIND)):
            bind = hvparams.get(param)
            if not bind:
                continue
            host, port = live.get(kind, (bind, getattr(instance, "network_port", None)))
            if host in ("0.0.0.0", "::", "") or P.is_norm_abs_path(host or ""):
                host = node_name
            if port and (kind == C.CONS_SPICE or port > C.VNC_BASE_PORT):
                return new_instance_console(instance=name, kind=kind, host=host, port=port,
                                       display=port - C.VNC_BASE_PORT
                                       if kind == C.CONS_VNC else None)
        return new_instance_console(instance=name, kind=C.CONS_MESSAGE,
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
            caps = self.host.conn().getCapabilities()
        vnc, spice = hvp[C.HV_VNC_BIND_ADDRESS], hvp[C.HV_KVM_SPICE_BIND]
        log_dir = self.serial_log_dir
        target = kvm_node.choose_target(hvp, kvm_node.offered_domain_types(caps), self.uri)
        kvm_node.check_machine(caps, target)
        return StartupOptions(
            target=target,
            startup_memory=startup_memory,
            vnc_listen=kvm_node.vnc_listen(vnc, instance.name) if vnc else None,
            spice_listen=Listen(address=kvm_node.resolve_bind(
                spice, C.HV_KVM_SPICE_BIND, hvp[C.HV_KVM_SPICE_IP_VERSION])) if spice else None,
            vnc_password=kvm_node.vnc_password(hvp) if vnc else None,
            spice_password=(kvm_node.read_password(hvp, C.HV_KVM_SPICE_PASSWORD_FILE)
                            if spice else None),
            security_label=kvm_node.dac_label(hvp[C.HV_SECURITY_DOMAIN])
            if hvp[C.HV_SECURITY_MODEL] == C.HT_SM_USER else None,
            # Asked only when it matters (one RPC less for every other start).
            linux_bridge_vlans=self._linux_bridge_vlans() if _bridged_vlans(instance) else True,
            serial_log=kvm_node.serial_log_file(log_dir, instance.name) if log_dir else None,
            pcie_hotplug_ports=config.integer(self.HV_NAME, pcie.HOTPLUG_PORTS_SETTING,
                                              pcie.DEFAULT_HOTPLUG_PORTS))


def _bridged_vlans(instance: Any) -> bool:
    """Whether a NIC of ``instance`` asks for a VLAN on a Linux bridge."""
    for index, nic in enumerate(inputs.nic_list(instance)):
        nicparams = inputs.nicparams(nic, f"NIC {index}")
        vlan = nics.vlan_of(nicparams, f"NIC {index}")  # refused if not a string: no RPC
        if nicparams.get(C.NIC_MODE) == C.NIC_MODE_BRIDGED and vlan:
            return True
    return False
