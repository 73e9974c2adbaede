"""Xen PVM and HVM through libvirt's libxl driver.

The parameter tables are ``xen_params``; the domain XML comes from
``domain_xml.xen_builder``. Here is what differs from KVM: a soft stop or reboot goes
through Xen's paravirtual control interface (libxl falls back to ACPI), a reboot shows
as a new domain ID, the CPU cap is a scheduler setting of the running domain, node
information counts Domain-0 and what Xen itself uses, migration takes the flags libxl
has, and hotplug covers what libxl can attach live (PV disks and vifs).

``xen_cmd`` (xm or xl) is accepted for compatibility with Ganeti's configuration and
otherwise ignored: libvirt's libxl driver replaces both toolstacks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import libvirt
from lxml import etree

from hvlibvirt import connection, constants as C, hotplug, kvm_node, params as P
from hvlibvirt.helper import helper_command
from hvlibvirt.migrator import XenMigrator
from hvlibvirt.base import BaseHypervisor
from hvlibvirt.domain_xml import Listen, StartupOptions, parser
from hvlibvirt.domain_xml.options import GuestTarget
from hvlibvirt.domain_xml.xen_builder import HVM_MACHINE, PV_MACHINE, build_xen_domain
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.hotplug.xen import XenDevices
from hvlibvirt.objects import InstanceConsole, new_instance_console
from hvlibvirt.xen_params import (XEN_HVM_PARAMS, XEN_HVM_RULES, XEN_PVM_PARAMS,
                                  XEN_PVM_RULES)

log = logging.getLogger(__name__)

SSH_CONSOLE_USER = "root"
DOM0_NAME = "Domain-0"
_ID_POLL = 0.05  # seconds between domain ID checks while a reboot is verified


class XenHypervisor(BaseHypervisor):
    """What Xen PVM and HVM share."""

    URI_ENV = "HVLIBVIRT_XEN_URI"
    DEFAULT_URI = "xen:///system"
    MIGRATION_URI_TEMPLATE = "xen+ssh://{target}/system"
    CAN_MIGRATE = True
    MIGRATOR = XenMigrator
    HVM: ClassVar[bool] = False
    RULES: ClassVar[tuple[P.Rule, ...]] = ()
    OS_TYPE: ClassVar[str] = "xen"  # libvirt's capabilities name PV guests' os type so

    @staticmethod
    def VersionsSafeForMigration(src: Sequence[int], target: Sequence[int]) -> bool:  # noqa: N802
        """Same version, or the same major with the minor unchanged or one newer."""
        src, target = tuple(src), tuple(target)
        if src == target:
            return True
        if len(src) < 2 or len(target) < 2:
            return False
        return src[0] == target[0] and target[1] - src[1] in (0, 1)

    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Per-parameter checks, then the values libxl cannot honour, then the
        cross-parameter rules (``xen_params``)."""
        super().CheckParameterSyntax(hvparams)
        P.check_refusals(cls.TABLE, hvparams)
        P.check_rules(cls.RULES, hvparams)

    # -- the domain ----------------------------------------------------------------
    def _build_domain(self, instance: Any, block_devices: Sequence[Any],
                      startup_memory: int) -> etree._Element:
        return build_xen_domain(instance, block_devices, instance.hvparams,
                                self._startup_options(instance, startup_memory), self.HVM)

    def _startup_options(self, instance: Any, startup_memory: int) -> StartupOptions:
        hvp = instance.hvparams
        vnc = hvp.get(C.HV_VNC_BIND_ADDRESS) if self.HVM else None
        return StartupOptions(
            target=self._target(),
            startup_memory=startup_memory,
            # Ganeti's xl config listens on 0.0.0.0 when no address is set.
            vnc_listen=Listen(address=vnc or "0.0.0.0") if self.HVM else None,
            vnc_password=kvm_node.vnc_password(hvp, allow_empty=True) if self.HVM else None)

    def _target(self) -> GuestTarget:
        """Domain type xen with the guest architecture libvirt offers for this kind of
        guest (x86_64 where offered)."""
        with connection.libvirt_errors("read the host capabilities"):
            caps = parser.parse_tree(self.host.conn().getCapabilities(), "capabilities")
        arches = caps.xpath("guest[os_type=$t]/arch/@name", t=self.OS_TYPE)
        if not arches:
            raise HypervisorError(f"libvirt at {self.uri} offers no {self.OS_TYPE} guests")
        arch = "x86_64" if "x86_64" in arches else sorted(arches)[0]
        return GuestTarget(domain_type="xen", arch=arch,
                           machine=HVM_MACHINE if self.HVM else PV_MACHINE)

    def _after_start(self, dom: libvirt.virDomain, instance: Any) -> None:
        self._apply_cap(dom, instance.hvparams)

    @staticmethod
    def _apply_cap(dom: libvirt.virDomain, hvparams: Mapping[str, Any]) -> None:
        """cpu_cap lives in Xen's scheduler only: set it on the running domain."""
        cap = hvparams.get(C.HV_CPU_CAP) or 0
        if not cap:
            return
        with connection.libvirt_errors("set the CPU cap", dom.name()):
            try:
                dom.setSchedulerParameters({"cap": cap})
            except LookupError:  # libvirt-python: the scheduler has no 'cap'
                raise HypervisorError(f"Cannot set cpu_cap on {dom.name()}: this libvirt "
                                      "driver's scheduler has no cap") from None

    # -- lifecycle -------------------------------------------------------------------
    @staticmethod
    def _can_soft_stop(hvparams: Mapping[str, Any]) -> bool:
        # libxl asks the guest through Xen's PV control interface, and falls back to
        # the ACPI power button for HVM guests without PV drivers (Ganeti: xl shutdown).
        return True

    @staticmethod
    def _shutdown(dom: libvirt.virDomain) -> None:
        dom.shutdown()  # libxl's default: paravirtual first, then ACPI

    #: seconds a rebooted guest may take to get its new domain ID before the fallback
    REBOOT_TIMEOUT: ClassVar[float] = 60.0

    def _reboot(self, dom: libvirt.virDomain, instance: Any) -> None:
        """Soft reboot through Xen's control interface, verified the way Ganeti does:
        libxl rebuilds a rebooted guest, so its domain ID changes. If that does not
        happen within ``REBOOT_TIMEOUT`` seconds, the instance is destroyed and started
        again from its definition (logged)."""
        if parser.parse_tree(dom.XMLDesc(0)).findtext("on_reboot") == "destroy":
            # reboot_behavior=exit: libxl would destroy the rebooted guest.
            self._restart(dom, instance)
            return
        name, old_id = dom.name(), dom.ID()
        dom.reboot(0)
        if self._wait_new_id(name, old_id, self.REBOOT_TIMEOUT):
            self._after_start(self.host.lookup(name) or dom, instance)
            return
        log.warning("Instance %s kept domain ID %d for %.0fs after the reboot request; "
                    "destroying and starting it again", name, old_id, self.REBOOT_TIMEOUT)
        self._restart(dom, instance)

    def _wait_new_id(self, name: str, old_id: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dom = self.host.lookup(name)
            try:
                if dom is not None and dom.isActive() and dom.ID() not in (old_id, -1):
                    return True
            except libvirt.libvirtError:
                pass  # between the destroy and the new domain
            time.sleep(_ID_POLL)
        return False

    # -- node ----------------------------------------------------------------------
    def GetNodeInfo(self, hvparams: Mapping[str, Any] | None = None) -> dict[str, Any]:  # noqa: N802
        """Ganeti's Xen node keys: memory as Xen sees it (total, free, Domain-0's, and
        ``memory_hv`` = what neither the domains nor the free pool hold), CPUs (sockets
        from cores and threads per socket), NUMA cells and the Xen version. Without an
        answer from libvirtd, dom0's Linux facts (Ganeti calls this unguarded)."""
        try:
            return self._xen_node_info()
        except HypervisorError as err:
            log.warning("Node information from dom0's Linux facts only: %s", err)
            return self.GetLinuxNodeInfo()

    def _xen_node_info(self) -> dict[str, Any]:
        conn = self.host.conn()
        with connection.libvirt_errors("read node information"):
            _model, mem_mib, cpus, _mhz, nodes, _sockets, cores, threads = conn.getInfo()
            free_mib = conn.getFreeMemory() // 1048576
            version = conn.getVersion()
            active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        dom0_mem = dom0_cpus = 0
        used = 0
        # One info() per domain: libxl has no bulk statistics call (getAllDomainStats).
        for dom in active:
            try:
                _state, _max, mem_kib, vcpus, _cpu = dom.info()
                dom0 = dom.ID() == 0 or dom.name() == DOM0_NAME
            except libvirt.libvirtError:
                continue  # it went away meanwhile
            used += mem_kib // 1024
            if dom0:
                dom0_mem, dom0_cpus = mem_kib // 1024, vcpus
        return {
            "memory_total": mem_mib,
            "memory_free": free_mib,
            "memory_dom0": dom0_mem,
            "memory_hv": max(mem_mib - free_mib - used, 0),
            "cpu_total": cpus,
            "cpu_dom0": dom0_cpus,
            "cpu_nodes": max(nodes, 1),
            # libxl reports one socket; derive them as Ganeti does from xl info.
            "cpu_sockets": max(cpus // max(cores * threads, 1), 1),
            C.HV_NODEINFO_KEY_VERSION: (version // 1000000, version // 1000 % 1000),
        }

    def _verify_problems(self, hvparams: Mapping[str, Any] | None) -> list[str]:
        """Daemon reachable and offering this kind of Xen guest; with hvparams, the
        HVM device model present and executable (libxl refuses to start otherwise)."""
        problems = super()._verify_problems(hvparams)
        if problems:
            return problems
        try:
            self._target()
        except (HypervisorError, libvirt.libvirtError) as err:
            problems.append(str(err))
        if self.HVM and hvparams:
            model = hvparams.get(C.HV_DEVICE_MODEL)
            if not model or not os.access(model, os.X_OK):
                problems.append(f"device_model {model!r} is not an executable file")
        return problems

    # -- consoles --------------------------------------------------------------------
    @classmethod
    def GetInstanceConsole(cls, instance: Any, primary_node: Any, node_group: Any,  # noqa: N802
                           hvparams: Mapping[str, Any], beparams: Mapping[str, Any]
                           ) -> InstanceConsole:
        """As Ganeti's Xen: an ssh console to the primary node, attached to the guest's
        console through libvirt (no xl), resuming a paused guest."""
        name = instance.name
        ndparams = (node_group.FillND(primary_node)
                    if hasattr(node_group, "FillND") else {}) or {}
        return new_instance_console(
            instance=name, kind=C.CONS_SSH, host=getattr(primary_node, "name", None),
            user=SSH_CONSOLE_USER, port=ndparams.get("ssh_port"),
            # No --uri: the primary node's configuration names its libvirt.
            command=helper_command("console", "--hypervisor", cls.HV_NAME, name))

    # -- migration -------------------------------------------------------------------
    def FinalizeMigrationDst(self, instance: Any, info: str, success: bool) -> None:  # noqa: N802
        """As the base, and the CPU cap (not part of the migrated domain) is set again."""
        super().FinalizeMigrationDst(instance, info, success)
        if success:
            self._apply_cap(self.host.lookup(instance.name), instance.hvparams)

    # -- hotplug: the shared flow with libxl's rules and elements --------------------
    #: seconds to wait for a hot-removed device to disappear from the live domain
    HOTPLUG_TIMEOUT: ClassVar[float] = hotplug.HOTPLUG_TIMEOUT

    def _hotplug(self) -> hotplug.Flow:
        return hotplug.Flow(XenDevices(self.HVM), self.host, self.HOTPLUG_TIMEOUT)

    def VerifyHotplugSupport(self, instance: Any, action: str, dev_type: str) -> None:  # noqa: N802
        """Raise HotplugError unless libxl can do ``action`` on a ``dev_type`` live:
        add or remove PV disks and vifs, replace vifs."""
        self._hotplug().checked(instance, action, dev_type)

    def HotAddDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> None:
        """Attach a PV disk (``extra`` = (link_name, drive_uri)) at the next free guest
        name, or a vif (always netfront: libxl cannot hot-plug emulated NICs), live and
        in the persistent definition, undone if any step fails."""
        self._hotplug().add(instance, dev_type, device, extra, seq)

    def HotDelDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> dict[str, str]:
        """Detach a PV disk or vif (libxl waits for the guest's frontend to let go) and
        drop it from the definition; returns its alias and guest name or MAC."""
        return self._hotplug().remove(instance, dev_type, device, extra, seq)

    def HotModDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> None:
        """Change a vif as Ganeti's KVM changes a NIC (libxl changes none in place): a
        confirmed hot-remove and a hot-add of the changed vif, the old one put back
        should the add fail."""
        self._hotplug().modify(instance, dev_type, device, extra, seq)

    def ResizeDisk(self, instance: Any, disk: Any, new_size: int) -> None:  # noqa: N802
        raise HotplugError("libxl cannot tell a running guest that its disk grew (libvirt's"
                           " libxl driver has no block resize); restart the instance")


class XenPvmHypervisor(XenHypervisor):
    """Ganeti's ``xen-pvm`` hypervisor (paravirtualized guests)."""

    HV_NAME = C.HT_XEN_PVM
    TABLE = XEN_PVM_PARAMS
    RULES = XEN_PVM_RULES


class XenHvmHypervisor(XenHypervisor):
    """Ganeti's ``xen-hvm`` hypervisor (fully virtualized guests)."""

    HV_NAME = C.HT_XEN_HVM
    TABLE = XEN_HVM_PARAMS
    RULES = XEN_HVM_RULES
    HVM = True
    OS_TYPE = "hvm"
    # Ganeti's master copies the cluster's VNC password file to every node.
    ANCILLARY_FILES: ClassVar[list[str]] = [C.VNC_PASSWORD_FILE]
    ANCILLARY_FILES_OPT: ClassVar[list[str]] = [C.VNC_PASSWORD_FILE]
