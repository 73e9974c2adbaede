"""BaseHypervisor: Ganeti's hypervisor interface, backed by libvirt.

Method names, signatures and return shapes are Ganeti's (``hv_base.BaseHypervisor``),
so Ganeti's node daemon can call us as it calls its own hypervisors. The machinery
shared by KVM and Xen lives here; ``kvm.py`` and ``xen.py`` add their parameter tables
and the few things that differ.

Objects: instances, disks and NICs are read by attribute name only, so Ganeti's own
objects and ``hvlibvirt.objects`` both work. Hypervisor objects hold no connection:
Ganeti builds one per RPC, and ``hvlibvirt.connection`` caches per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import libvirt
from lxml import etree

from hvlibvirt import (config, connection, constants, domains, drift, instance_metadata,
                       interface, node, ownership, params)
from hvlibvirt.domain_xml import identity, inputs, nics, redacted, to_string
from hvlibvirt.domain_xml.parser import parse_tree
from hvlibvirt.errors import HotplugError, HypervisorError
from hvlibvirt.ganeti import facts
from hvlibvirt.host import Host
from hvlibvirt.migrator import Migrator
from hvlibvirt.objects import InstanceConsole, MigrationStatus

log = logging.getLogger(__name__)

_STATE_POLL = 0.05  # seconds between domain state polls while waiting
InstanceInfo = domains.InstanceInfo


class HvInstanceState:
    """Instance states as Ganeti's ``hv_base.HvInstanceState`` defines them."""

    RUNNING = constants.HV_STATE_RUNNING
    SHUTDOWN = constants.HV_STATE_SHUTDOWN

    @staticmethod
    def IsRunning(state: int) -> bool:  # noqa: N802
        return state == HvInstanceState.RUNNING

    @staticmethod
    def IsShutdown(state: int) -> bool:  # noqa: N802
        return state == HvInstanceState.SHUTDOWN


def _still_active(dom: libvirt.virDomain) -> bool:
    """Whether ``dom`` still runs; False when libvirt cannot say (it is going)."""
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def _went_away(err: libvirt.libvirtError | HypervisorError, dom: libvirt.virDomain) -> bool:
    """Whether a failed read of ``dom`` was the domain going away (gone, or going: libxl
    fails its info of a domain it is destroying), not libvirt failing."""
    cause = err if isinstance(err, libvirt.libvirtError) else err.__cause__
    if isinstance(cause, libvirt.libvirtError) and \
            cause.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return True
    return not _still_active(dom)


_require_name = identity.instance_name  # a Ganeti instance name, or HypervisorError


class BaseHypervisor:
    """Ganeti's abstract hypervisor interface with the shared libvirt machinery; the
    libvirt host is a ``Host``, and migration is the ``MIGRATOR``'s."""

    #: the parameter table (XML mapping, refusals, per-version changes), and the Ganeti
    #: followed: PARAMETERS (name -> five-tuple, see ``params``), DEFAULTS and TYPES
    #: are the table as that Ganeti has it
    TABLE: ClassVar[dict[str, params.HvParam]] = {}
    GANETI: ClassVar[facts.Ganeti] = facts.running()
    PARAMETERS: ClassVar[dict[str, params.Check]] = {}
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    TYPES: ClassVar[dict[str, str]] = {}
    ANCILLARY_FILES: ClassVar[list[str]] = []
    ANCILLARY_FILES_OPT: ClassVar[list[str]] = []
    CAN_MIGRATE: ClassVar[bool] = False
    MIGRATOR: ClassVar[type[Migrator]] = Migrator
    #: the target's libvirt URI; ``{target}`` is the address Ganeti passes
    MIGRATION_URI_TEMPLATE: ClassVar[str] = ""

    #: Ganeti hypervisor name, env variable naming the URI, and libvirt's default URI
    HV_NAME: ClassVar[str] = ""
    URI_ENV: ClassVar[str] = ""
    DEFAULT_URI: ClassVar[str] = ""

    def __init_subclass__(cls, ganeti: facts.Ganeti | None = None, **kwargs: Any) -> None:
        """Each interface method turns libvirt's errors into ours (``interface``); a
        class with its own table follows a Ganeti's hvparams (``facts``)."""
        super().__init_subclass__(**kwargs)
        interface.guard(cls)
        if ganeti is not None or cls.TABLE is not getattr(cls.__mro__[1], "TABLE", None):
            facts.follow(cls, ganeti or cls.GANETI)

    @classmethod
    def following(cls, ganeti: facts.Ganeti) -> type:
        """This class with the hvparams and node arithmetic of ``ganeti`` instead of the
        running one's (to judge another cluster's instances)."""
        return facts.following(cls, ganeti)

    def __init__(self, uri: str | None = None, migration_uri: str | None = None) -> None:
        # Never connect here: Ganeti constructs a hypervisor object for every call, and
        # without arguments (the common case is not even looped over).
        if uri is not None or migration_uri is not None:
            for what, value in (("libvirt URI", uri), ("migration URI template", migration_uri)):
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise HypervisorError(f"Invalid {what}: {value!r}")
        self._uri = uri
        self._migration_uri = migration_uri
        self._host: Host | None = None
        self._migrator: Migrator | None = None

    # -- connection --------------------------------------------------------------
    @property
    def uri(self) -> str:
        """The libvirt URI: constructor keyword, else the environment, else the node's
        configuration file, else libvirt's default. Resolved once per object: Ganeti
        builds one per RPC, and a call asks for it several times (each lookup reads the
        environment and stats the file)."""
        if self._uri is None:
            self._uri = self.configured_uri()
        return self._uri

    @classmethod
    def configured_uri(cls) -> str:
        """The URI without a constructor keyword (what classmethods and the helpers use):
        the environment, else the configuration file, else libvirt's default."""
        return (config.getenv(cls.URI_ENV) or config.value(cls.HV_NAME, "uri")
                or cls.DEFAULT_URI)

    @property
    def host(self) -> Host:
        """The libvirt host at ``uri`` (made on first use; it connects when asked)."""
        if self._host is None:
            self._host = Host(self.uri)
        return self._host

    def domain_xml(self, instance_name: str) -> str:
        """The live domain XML of one of our instances (for operators and tools)."""
        name = _require_name(instance_name)
        dom = self.host.owned(name)
        if dom is None:
            raise HypervisorError(f"Instance {name} is not known to libvirt at {self.uri}")
        with connection.libvirt_errors("read the domain XML", name):
            return dom.XMLDesc(0)

    # -- parameters --------------------------------------------------------------
    @classmethod
    def CheckParameterSyntax(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Master-side checks: unknown/missing keys, types, per-parameter syntax.

        Subclasses extend this (cross-parameter rules) and call it first.
        """
        params.check_syntax(cls.PARAMETERS, hvparams, cls.TYPES)

    @classmethod
    def ValidateParameters(cls, hvparams: Mapping[str, Any]) -> None:  # noqa: N802
        """Node-side checks (files exist, and so on)."""
        params.check_node(cls.PARAMETERS, hvparams)

    @classmethod
    def AssessParameters(cls, hvparams: Mapping[str, Any]) -> list[str]:  # noqa: N802
        """Warnings about legal but suboptimal values; never raises for a warning."""
        return []

    @classmethod
    def _IsParamValueUnspecified(cls, value: Any) -> bool:  # noqa: N802
        return params.is_unspecified(value)

    # -- small class-level helpers -------------------------------------------------
    @classmethod
    def GetAncillaryFiles(cls) -> tuple[list[str], list[str]]:  # noqa: N802
        """(all files, optional files) the master copies to every node."""
        if not set(cls.ANCILLARY_FILES_OPT) <= set(cls.ANCILLARY_FILES):
            raise HypervisorError(f"{cls.__name__}: optional ancillary files must be a "
                                  "subset of the ancillary files")
        return list(cls.ANCILLARY_FILES), list(cls.ANCILLARY_FILES_OPT)

    @staticmethod
    def VersionsSafeForMigration(src: Sequence[int], target: Sequence[int]) -> bool:  # noqa: N802
        """Whether migrating between these ``hv_version`` values should work."""
        return tuple(src) == tuple(target)

    @staticmethod
    def _FormatVerifyResults(msgs: Sequence[str]) -> str | None:  # noqa: N802
        """None for no problems, else the problems joined with '; '."""
        return "; ".join(msgs) if msgs else None

    @classmethod
    def GetLinuxNodeInfo(cls, meminfo: str | None = None, cpuinfo: str | None = None  # noqa: N802
                         ) -> dict[str, int]:
        """This machine's memory (MiB) and CPUs as the followed Ganeti reports them
        (its memory arithmetic: see ``node``)."""
        return node.linux_node_info(meminfo, cpuinfo, cls.GANETI.version)

    @classmethod
    def LinuxPowercycle(cls) -> None:  # noqa: N802
        """Hard-reset this node: sysrq 'b', or ``reboot -n -f`` if sysrq is unavailable."""
        node.powercycle()

    @classmethod
    def PowercycleNode(cls, hvparams: Mapping[str, Any] | None = None) -> None:  # noqa: N802
        """Hard powercycle of the node (subclasses choose how)."""
        cls.LinuxPowercycle()

    def _InstanceStartupMemory(self, instance: Any) -> int:  # noqa: N802
        """Start with as much as fits: between minmem and maxmem, capped by free memory."""
        maxmem, minmem = inputs.beparam(instance, "maxmem"), inputs.beparam(instance, "minmem")
        return max(minmem, min(maxmem, self._free_memory(instance.hvparams)))

    def _free_memory(self, hvparams: Mapping[str, Any]) -> int:
        """Free memory (MiB) as this hypervisor's GetNodeInfo reports it."""
        return int(self.GetNodeInfo(hvparams=hvparams)["memory_free"])

    # -- what each hypervisor supplies ------------------------------------------------
    def _build_domain(self, instance: Any, block_devices: Sequence[Any],
                      startup_memory: int) -> etree._Element:
        """The domain XML tree for ``instance`` (each hypervisor has its builder)."""
        raise HypervisorError(f"{self.HV_NAME}: building domains is not implemented")

    # -- lifecycle ----------------------------------------------------------------
    #: seconds CleanupInstance waits for a shut-off domain that is still being destroyed
    DESTROY_SETTLE: ClassVar[float] = 30.0

    def StartInstance(self, instance: Any, block_devices: Sequence[Any],  # noqa: N802
                      startup_paused: bool) -> None:
        """Define and start the domain for ``instance`` (paused if asked)."""
        name = _require_name(getattr(instance, "name", None))
        self.CheckParameterSyntax(instance.hvparams)
        self.ValidateParameters(instance.hvparams)
        existing = self.host.lookup(name)
        if existing is not None:
            if not ownership.is_ours(self.uri, existing):
                raise HypervisorError(f"Failed to start instance {name}: a domain of that "
                                      "name exists that hvlibvirt did not create")
            with connection.libvirt_errors("check the state", name):
                if existing.isActive():
                    raise HypervisorError(f"Failed to start instance {name}: already running")
        root = self._build_domain(instance, block_devices,
                                  self._InstanceStartupMemory(instance))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Domain XML for %s:\n%s", name, to_string(redacted(root)))
        conn = self.host.conn()
        # Defining replaces what a stopped instance left (a user shutdown not yet
        # cleaned up), including the stop marker in its metadata.
        with connection.libvirt_errors("define", name):
            dom = conn.defineXML(to_string(root))
        flags = libvirt.VIR_DOMAIN_START_PAUSED if startup_paused else 0
        try:
            dom.createWithFlags(flags)
        except libvirt.libvirtError as err:
            # Leave nothing behind: a definition that never ran is not an instance.
            self._undo_start(dom, name)
            message = err.get_error_message()
            raise HypervisorError(f"Failed to start instance {name}: {message}"
                                  f"{nics.blamed_link(root, message)}") from err
        try:
            self._after_start(dom, instance)
            ownership.remember(self.uri, dom)
        except (HypervisorError, libvirt.libvirtError):  # the guard converts the latter
            self._undo_start(dom, name)
            raise

    def _undo_start(self, dom: libvirt.virDomain, name: str) -> None:
        """Destroy and undefine what a failed start created. If libvirtd died under the
        start, its connection is dead: then through a new one (a restarted daemon may
        even have kept QEMU running), and if libvirtd is still away, the definition
        stays (the next start replaces it, CleanupInstance removes it)."""
        ownership.forget(self.uri, dom)
        for attempt in range(2):
            try:
                if attempt:
                    connection.drop_dead()
                    dom = self.host.conn().lookupByName(name)
                if dom.isActive():  # a restarted libvirtd may end it meanwhile (_destroy)
                    self._destroy(dom)
                dom.undefine()
                return
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                reason = err.get_error_message()
            except HypervisorError as err:  # no new connection either
                reason = str(err)
                break
        log.warning("Could not remove %s after a failed start: %s", name, reason)

    def _after_start(self, dom: libvirt.virDomain, instance: Any) -> None:
        """Settings libvirt applies to a running domain only (subclasses add theirs);
        a HypervisorError here undoes the start."""

    def StopInstance(self, instance: Any, force: bool = False, retry: bool = False,  # noqa: N802
                     name: str | None = None, timeout: int | None = None) -> None:
        """Stop the instance: destroy if ``force``, else an ACPI power-button press.

        ``name`` with ``instance=None`` stops by name only. A soft stop is (re)sent on
        every call, including ``retry`` calls, and returns once the guest is off or
        after ``SOFT_STOP_GRACE`` seconds (``timeout`` shortens that), whichever comes
        first: Ganeti's InstanceShutdown calls again every 5 s until its own timeout,
        so a guest that missed a press (still booting) gets the next one on Ganeti's
        schedule, and only then the forced fallback. A stopped or unknown instance is
        not an error. Every call marks the stop, a stopped instance's too: Ganeti starts
        an instance its guest shut down (SHUTDOWN with user_shutdown) by stopping it
        first, and waits until it no longer reports SHUTDOWN.
        """
        if force and timeout is not None:
            raise HypervisorError("A forced stop cannot have a timeout")
        name = _require_name(name if name is not None else getattr(instance, "name", None))
        dom = self.host.owned(name)
        if dom is None:
            return
        with connection.libvirt_errors("check the state", name):
            instance_metadata.mark_stop(dom)
            if not dom.isActive():
                return
        hvparams = getattr(instance, "hvparams", None) or {}
        if force or not self._can_soft_stop(hvparams):
            with connection.libvirt_errors("destroy", name):
                self._destroy(dom)
            return
        with connection.libvirt_errors("shut down", name):
            self._shutdown(dom)
        grace = self.SOFT_STOP_GRACE if timeout is None else min(float(timeout),
                                                                 self.SOFT_STOP_GRACE)
        self._wait_inactive(dom, grace)

    #: seconds a soft StopInstance waits for the guest before returning (see there)
    SOFT_STOP_GRACE: ClassVar[float] = 2.0

    @staticmethod
    def _can_soft_stop(hvparams: Mapping[str, Any]) -> bool:
        """Whether a soft stop can reach the guest (KVM: only through ACPI)."""
        return bool(hvparams.get(constants.HV_ACPI, True))

    @staticmethod
    def _destroy(dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # already off
                raise

    @staticmethod
    def _shutdown(dom: libvirt.virDomain) -> None:
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as err:
            # Drivers without a power button (libvirt's test driver) take the default.
            if err.get_error_code() not in (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                                            libvirt.VIR_ERR_INVALID_ARG,
                                            libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.shutdown()

    @staticmethod
    def _wait_inactive(dom: libvirt.virDomain, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not dom.isActive():
                    return True
            except libvirt.libvirtError:
                return True  # gone entirely
            if time.monotonic() >= deadline:
                return False
            time.sleep(_STATE_POLL)

    def _being_destroyed(self, dom: libvirt.virDomain) -> bool:
        """True once a domain already shut off (its guest powered off) is also inactive.
        libxl's driver marks the domain shut off at the guest's power-off, then destroys
        it, seconds later on a loaded node; Ganeti may clean up in between."""
        if dom.state()[0] != libvirt.VIR_DOMAIN_SHUTOFF:
            return False
        return self._wait_inactive(dom, self.DESTROY_SETTLE)

    def CleanupInstance(self, instance_name: str) -> None:  # noqa: N802
        """Remove every trace of a stopped instance (its libvirt definition)."""
        name = _require_name(instance_name)
        dom = self.host.owned(name)
        if dom is None:
            return
        with connection.libvirt_errors("clean up", name):
            if dom.isActive() and not self._being_destroyed(dom):
                raise HypervisorError(f"Cannot cleanup a live instance: {name}")
            ownership.forget(self.uri, dom)
            dom.undefine()

    def RebootInstance(self, instance: Any) -> None:  # noqa: N802
        """Reboot the running instance the way Ganeti's own hypervisor for it does
        (``_reboot``); afterwards it runs, whatever its reboot_behavior (that governs the
        guest's own reboots), as after Ganeti's KVM reboot."""
        name = _require_name(getattr(instance, "name", None))
        dom = self.host.owned(name)
        with connection.libvirt_errors("reboot", name):
            if dom is None or not dom.isActive():
                raise HypervisorError(f"Failed to reboot instance {name}: not running")
            self._reboot(dom, instance)

    def _reboot(self, dom: libvirt.virDomain, instance: Any) -> None:
        """KVM's reboot, as Ganeti's KVM reboots: at once and without asking the guest,
        QEMU stopped and started again from the definition (hot-plugged devices
        included). A reset of the running QEMU was slower to a booted guest, and less
        reliable (docs/ganeti.md)."""
        self._restart(dom, instance)

    def _restart(self, dom: libvirt.virDomain, instance: Any) -> None:
        """Destroy the running domain and start it again from its definition."""
        self._destroy(dom)
        dom.create()
        self._after_start(dom, instance)

    # -- listing and info ------------------------------------------------------------
    def ListInstances(self, hvparams: Mapping[str, Any] | None = None) -> list[str]:  # noqa: N802
        """Names of the running instances (domains this library created)."""
        with connection.libvirt_errors("list domains"):
            running = connection.call(self.uri, lambda conn: conn.listAllDomains(
                domains.LIST_RUNNING))
            return sorted(d.name() for d in running if ownership.is_ours(self.uri, d))

    def GetInstanceInfo(self, instance_name: str,  # noqa: N802
                        hvparams: Mapping[str, Any] | None = None) -> InstanceInfo | None:
        """``(name, id, memory MiB, vcpus, state, cpu seconds)``, or None if the instance
        is not running (nor shut down by its guest with user_shutdown on)."""
        dom = self.host.owned(_require_name(instance_name))
        if dom is None:
            return None
        try:
            return domains.instance_info(dom)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN or not _still_active(dom):
                # Gone, or going: libxl fails its info of a domain it is destroying
                # ("libxl_domain_info failed"): not running.
                return None
            raise HypervisorError(f"Failed to get info of instance {instance_name}: "
                                  f"{err}") from err

    def GetAllInstancesInfo(self, hvparams: Mapping[str, Any] | None = None  # noqa: N802
                            ) -> list[InstanceInfo]:
        """The info tuple of every running (or user-shut-down) instance."""
        with connection.libvirt_errors("list domains"):
            every = connection.call(self.uri, lambda conn: conn.listAllDomains(0))
        result = []
        for dom in every:
            try:
                info = domains.own_instance_info(self.uri, dom)
            except (libvirt.libvirtError, HypervisorError) as err:
                # Only a domain that went away meanwhile is left out: leaving out one
                # that runs because libvirt failed a read would report it down to
                # Ganeti (which then starts it again); failing says "unknown".
                if not _went_away(err, dom):
                    raise
                log.debug("Skipping %s: %s", dom.name(), err)
                continue
            if info is not None:
                result.append(info)
        return result

    def GetNodeInfo(self, hvparams: Mapping[str, Any] | None = None) -> dict[str, Any]:  # noqa: N802
        """Ganeti's node keys: this machine's memory (MiB) and CPUs, computed as Ganeti
        does (``GetLinuxNodeInfo``), and ``hv_version`` from libvirt. Without an answer
        from libvirtd, the Linux facts alone: Ganeti's node_info and node_verify RPCs
        call this unguarded, and a raise would lose the whole node's answer."""
        info: dict[str, Any] = self.GetLinuxNodeInfo()
        try:
            with connection.libvirt_errors("read the hypervisor version"):
                version = connection.call(self.uri, lambda conn: conn.getVersion())
        except HypervisorError as err:
            log.warning("Node information without hv_version: %s", err)
            return info
        info[constants.HV_NODEINFO_KEY_VERSION] = (version // 1000000, version // 1000 % 1000,
                                                   version % 1000)
        return info

    def Verify(self, hvparams: Mapping[str, Any] | None = None) -> str | None:  # noqa: N802
        """Problems with this node's hypervisor, or None."""
        return self._FormatVerifyResults(self._verify_problems(hvparams))

    def _verify_problems(self, hvparams: Mapping[str, Any] | None) -> list[str]:
        """[] when libvirtd answers, else the one reason why not (the configuration file
        included); subclasses add their checks only when it answers."""
        try:
            uri = self.uri
            connection.call(uri, lambda conn: conn.getVersion())
        except HypervisorError as err:  # names the URI, or the configuration file
            return [f"libvirt is not usable: {err}"]
        except libvirt.libvirtError as err:
            return [f"libvirt at {uri} is not usable: {err.get_error_message()}"]
        return []

    def VerifyInstance(self, instance: Any) -> bool:  # noqa: N802
        """True if the running instance matches what its configuration would build."""
        found = self._drift(instance)
        for item in found:
            log.warning("Instance %s differs from its configuration: %s",
                        getattr(instance, "name", "?"), item)
        return not found

    def _drift(self, instance: Any) -> list[str]:
        dom = self.host.owned(instance.name)
        if dom is None or not dom.isActive():
            return []
        with connection.libvirt_errors("read the domain XML", instance.name):
            xml = dom.XMLDesc(0)
        return drift.differences(parse_tree(xml), instance, self.TABLE)

    def RestoreInstance(self, instance: Any, block_devices: Sequence[Any]) -> None:  # noqa: N802
        """Fix up a running instance whose VerifyInstance failed (base: nothing to do)."""

    def BalloonInstanceMemory(self, instance: Any, mem: int) -> None:  # noqa: N802
        """Set the running instance's memory to ``mem`` MiB."""
        name = _require_name(getattr(instance, "name", None))
        if isinstance(mem, bool) or not isinstance(mem, int) or not \
                0 < mem <= inputs.MAX_MEMORY_MIB:
            raise HypervisorError(f"Invalid memory size for {name}: {mem!r} (MiB expected)")
        dom = self.host.owned(name)
        if dom is None:
            raise HypervisorError(f"Cannot balloon instance {name}: not running")
        with connection.libvirt_errors("set the memory", name):
            dom.setMemoryFlags(mem * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    @classmethod
    def GetInstanceConsole(cls, instance: Any, primary_node: Any, node_group: Any,  # noqa: N802
                           hvparams: Mapping[str, Any], beparams: Mapping[str, Any]
                           ) -> InstanceConsole:
        raise HypervisorError(f"{cls.HV_NAME}: consoles are not implemented yet")

    # -- hotplug (Ganeti's base refuses all of it) ---------------------------------------
    def HotplugSupported(self, instance: Any) -> None:  # noqa: N802
        """Raise HotplugError unless the instance runs (what hotplug needs first)."""
        name = _require_name(getattr(instance, "name", None))
        dom = self.host.owned(name)
        with connection.libvirt_errors("check the state", name, HotplugError):
            if dom is None or not dom.isActive():
                raise HotplugError(f"Instance {name} is probably down")

    def VerifyHotplugSupport(self, instance: Any, action: str, dev_type: str) -> None:  # noqa: N802
        raise HotplugError("Hotplug is not supported.")

    def HotAddDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> Any:
        raise HotplugError("Hotplug is not supported by this hypervisor")

    def HotDelDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> Any:
        raise HotplugError("Hotplug is not supported by this hypervisor")

    def HotModDevice(self, instance: Any, dev_type: str, device: Any, extra: Any,  # noqa: N802
                     seq: int) -> Any:
        raise HotplugError("Hotplug is not supported by this hypervisor")

    def ResizeDisk(self, instance: Any, disk: Any, new_size: int) -> Any:  # noqa: N802
        raise HotplugError("Disk resize is not supported by this hypervisor")

    @property
    def serial_log_dir(self) -> str | None:
        """Where each instance's serial console output is kept (KVM has the setting)."""
        return None

    # -- migration: the migrator's ----------------------------------------------------
    @property
    def migration_uri_template(self) -> str:
        """Constructor keyword, else HVLIBVIRT_MIGRATION_URI, else the configuration
        file's ``migration_uri``, else the class default."""
        return (self._migration_uri or config.getenv("HVLIBVIRT_MIGRATION_URI")
                or config.value(self.HV_NAME, "migration_uri") or self.MIGRATION_URI_TEMPLATE)

    @property
    def migrator(self) -> Migrator:
        if self._migrator is None:
            self._migrator = self.MIGRATOR(self.host, lambda: self.migration_uri_template,
                                           lambda: self.GetNodeInfo()["memory_free"],
                                           lambda: self.serial_log_dir, self.GANETI.version)
        return self._migrator

    def MigrationInfo(self, instance: Any) -> str:  # noqa: N802
        return self.migrator.info(instance)

    def AcceptInstance(self, instance: Any, info: str, target: str) -> None:  # noqa: N802
        self.migrator.accept(instance, info, target)

    def MigrateInstance(self, cluster_name: str, instance: Any, target: str,  # noqa: N802
                        live: bool) -> None:
        self.migrator.migrate(instance, target, live)

    def GetMigrationStatus(self, instance: Any) -> MigrationStatus:  # noqa: N802
        return self.migrator.status(instance)

    def FinalizeMigrationSource(self, instance: Any, success: bool, live: bool) -> None:  # noqa: N802
        self.migrator.finalize_source(instance, success)

    def FinalizeMigrationDst(self, instance: Any, info: str, success: bool) -> None:  # noqa: N802
        self.migrator.finalize_target(instance, success, info)
