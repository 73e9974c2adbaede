"""Ganeti's migration calls, carried out for a hypervisor by its ``Migrator``.

Ganeti drives a migration in steps through the hypervisor object: MigrationInfo on the
source, AcceptInstance on the target, MigrateInstance on the source (it returns while
the migration runs: ``migration.start``), GetMigrationStatus polls, then
FinalizeMigrationSource and FinalizeMigrationDst. The hypervisor classes hand each call
to their migrator, which knows only the libvirt host (``host.Host``), the target URI
template and the node's free memory; a hypervisor's own rules are the hooks a subclass
overrides (``KvmMigrator``, ``XenMigrator``).
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import libvirt
from lxml import etree

from hvlibvirt import (connection, constants as C, domains, handover, instance_metadata, migration,
                       ownership)
from hvlibvirt.domain_xml import identity, parser
from hvlibvirt.errors import HypervisorError
from hvlibvirt.handover import back
from hvlibvirt.host import Host
from hvlibvirt.kvm_params import POSTCOPY_CAPS
from hvlibvirt.objects import MigrationStatus, new_migration_status

log = logging.getLogger(__name__)

_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*\Z")  # a host name or an IP address
SYS_CLASS_NET = "/sys/class/net"  # this machine's network interfaces, bridges included
# libxl's migration flags (libxl_migration.h); UNSAFE, bandwidth and the QEMU
# capabilities do not exist there.
_XEN_FLAGS = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST


def _name(instance: Any) -> str:
    return identity.instance_name(getattr(instance, "name", None))


class Migrator:
    """The migration calls on one libvirt host (see the module docstring)."""

    def __init__(self, host: Host, uri_template: Callable[[], str],
                 free_memory: Callable[[], int],
                 serial_log_dir: Callable[[], str | None] = lambda: None,
                 ganeti: tuple[int, int] = (3, 0)) -> None:
        self.host = host
        self._uri_template = uri_template
        self._free_memory = free_memory
        #: where the node keeps serial console logs (KVM), for domains it takes over
        self.serial_log_dir = serial_log_dir
        #: the Ganeti version the node runs, whose hv_kvm made the QEMUs it takes over
        self.ganeti = ganeti

    def target_uri(self, target: str) -> str:
        """The libvirt URI of the node Ganeti names by ``target``."""
        if not isinstance(target, str) or not _TARGET.match(target):
            raise HypervisorError(f"Invalid migration target {target!r}: expected a host "
                                  "name or an IP address")
        return self._uri_template().replace("{target}", target)

    # -- source: what the target checks, and the start ------------------------------
    def info(self, instance: Any) -> str:
        """The migratable domain XML (with our metadata) the target checks it against."""
        name = _name(instance)
        dom = self.host.owned(name)
        with connection.libvirt_errors("read the migratable XML", name):
            if dom is None or not dom.isActive():
                raise HypervisorError(f"Instance {name} is not running, cannot migrate")
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)

    def migrate(self, instance: Any, target: str, live: bool) -> None:
        """Start a peer-to-peer migration to ``target`` and return while it runs.

        The transfer is driven by the source libvirtd from a detached helper, so it
        continues if this process exits. Watch it with ``status``.
        """
        name = _name(instance)
        dest_uri = self.target_uri(target)
        dom = self.host.owned(name)
        with connection.libvirt_errors("check the state", name):
            if dom is None or not dom.isActive():
                raise HypervisorError(f"Instance {name} is not running, cannot migrate")
        flags, params = self.flags(instance.hvparams, target, bool(live))
        self.prepare(dom, instance.hvparams)
        instance_metadata.set_migration_target(dom, target)
        migration.start(self.host.uri, name, dest_uri, flags, params, dom,
                        self.follow(instance.hvparams))

    @staticmethod
    def flags(hvparams: Mapping[str, Any], target: str, live: bool
              ) -> tuple[int, dict[str, Any]]:
        """libvirt flags and typed parameters of the migration (KVM's by default)."""
        return migration.flags_and_params(hvparams, target, live)

    @staticmethod
    def follow(hvparams: Mapping[str, Any]) -> float:
        """Seconds MigrateInstance waits for the started migration to end
        (``migration.FOLLOW``)."""
        return migration.FOLLOW

    def prepare(self, dom: libvirt.virDomain, hvparams: Mapping[str, Any]) -> None:
        """Tuning that is not a migration parameter, and late refusals (hooks)."""

    # -- target: the pre-flight checks ----------------------------------------------
    def accept(self, instance: Any, info: str, target: str) -> None:
        """Pre-flight checks on the target node; libvirt starts the incoming side itself."""
        name = _name(instance)
        try:
            root = parser.parse_tree(info, "XML")
        except (HypervisorError, AttributeError, ValueError) as err:
            raise HypervisorError(f"Invalid migration info for {name}: {err}") from None
        problems = self.accept_problems(name, root)
        if problems:
            raise HypervisorError(f"Cannot accept instance {name}: " + "; ".join(problems))

    def accept_problems(self, name: str, root: etree._Element) -> list[str]:
        """Why this node cannot take the incoming domain ``root`` (hypervisors add)."""
        conn = self.host.conn()
        problems = []
        existing = self.host.lookup(name)
        if existing is not None and existing.isActive():
            problems.append("a domain of that name already runs here")
        for bridge in parser.bridges(root):
            problem = self.bridge_problem(conn, bridge)
            if problem:
                problems.append(problem)
        for path in root.xpath("devices/disk/source/@file | devices/disk/source/@dev"):
            if not os.path.exists(path):
                problems.append(f"disk {path} does not exist here")
        needed = int(root.findtext("currentMemory") or 0) // 1024
        free = self._free_memory()
        if needed > free:
            problems.append(f"it needs {needed} MiB but {free} MiB are free")
        return problems

    def bridge_problem(self, conn: libvirt.virConnect, bridge: str) -> str | None:
        """Why ``bridge`` cannot take the incoming instance's NIC here, or None.

        libvirt's interface driver answers where it is installed (Debian 13 packages it
        apart: libvirt-daemon-driver-interface); without it a local libvirt's bridges
        are this machine's, read from sysfs, and a remote one cannot be checked."""
        try:
            identity.interface_name(bridge, "bridge in the migration info")
        except HypervisorError as err:
            return str(err)
        try:
            conn.interfaceLookupByName(bridge)
            return None
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
                return f"bridge {bridge} does not exist here"
            cause = err.get_error_message()
        uri = self.host.uri
        if urllib.parse.urlsplit(uri).netloc:
            return (f"cannot check that bridge {bridge} exists at {uri}: {cause} "
                    "(install libvirt-daemon-driver-interface there)")
        if not os.path.isdir(os.path.join(SYS_CLASS_NET, bridge)):
            return f"bridge {bridge} does not exist here"
        return None

    # -- source: the polls ------------------------------------------------------------
    def status(self, instance: Any) -> MigrationStatus:
        """Status of the migration, read from libvirt's job on this (the source) node.

        Ganeti polls this every second, a fresh process each time: the lookup, the job's
        statistics and the state are the RPCs of a poll. Ownership is not asked: Ganeti
        polls only after MigrateInstance, which refuses a domain that is not ours, and
        the source definition stays until the source is finalized, so the name cannot
        change hands meanwhile. Our metadata is read only where the answer depends on
        it (the guest left and libvirt no longer says why, below); a domain without it
        then gets "failed", as one that does not exist."""
        name = _name(instance)
        dom = self.host.lookup(name)
        if dom is None:
            return new_migration_status(status=C.HV_MIGRATION_FAILED)
        result, stats, state = migration.read_status(dom)
        if result.status == C.HV_MIGRATION_ACTIVE:
            self.while_migrating(dom, instance, stats, result)
        elif result.status == C.HV_MIGRATION_FAILED:
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                if self._left_for_target(dom, name):
                    result.status = C.HV_MIGRATION_COMPLETED
            else:
                result = self.without_libvirt_job(dom, result)
        return result

    def without_libvirt_job(self, dom: libvirt.virDomain,
                            result: MigrationStatus) -> MigrationStatus:
        """A poll that found no libvirt job and the guest still here: a hook for a
        migration libvirt does not run (KVM's way back to hv_kvm); ``result`` as is."""
        return result

    def while_migrating(self, dom: libvirt.virDomain, instance: Any, stats: dict[str, Any],
                        result: MigrationStatus) -> None:
        """A poll that found the job running (pre-copy), with its statistics: a hook
        that steers the migration (KVM's post-copy switch)."""

    def _left_for_target(self, dom: libvirt.virDomain, name: str) -> bool:
        """Whether the guest, shut off here (the caller read the state), runs on the
        target our metadata names: a libvirtd restarted since the migration ended keeps
        neither the job's statistics nor why the domain is off, and "failed" would make
        Ganeti abort a migration that happened (its guest then runs where Ganeti does not
        expect it)."""
        with connection.libvirt_errors("check the migration's outcome", name):
            meta = instance_metadata.read(dom)
        return meta is not None and self._runs_on(meta.migration_target, name)

    def _runs_on(self, target: str | None, name: str) -> bool:
        """Whether ``name`` runs on ``target`` (False when that cannot be reached)."""
        if not target:
            return False
        try:
            return bool(connection.get(self.target_uri(target)).lookupByName(name).isActive())
        except (HypervisorError, libvirt.libvirtError):
            return False

    # -- both: the end ----------------------------------------------------------------
    def finalize_source(self, instance: Any, success: bool) -> None:
        """Success: drop the source definition. Failure: make sure the instance runs
        here (abort the job, resume a paused guest); if it in fact runs on the target,
        say so instead of pretending. A failure first ends every migration helper of the
        instance (it could otherwise still start the migration Ganeti gave up on)."""
        name = _name(instance)
        if not success:
            migration.stop_helpers(self.host.uri, name)
        dom = self.host.owned(name)
        if dom is None:
            return
        with connection.libvirt_errors("finalize the migration", name):
            if success:
                if dom.isActive():
                    raise HypervisorError(f"Migration of {name} was reported successful but "
                                          "the instance still runs on the source")
                ownership.forget(self.host.uri, dom)
                dom.undefine()
                return
            _abort_job(dom)
            meta = instance_metadata.read(dom)
            target = meta.migration_target if meta else None
            if not dom.isActive():
                where = self._runs_on(target, name)
                raise HypervisorError(
                    f"Instance {name} does not run on the source after the failed migration"
                    + (f"; it runs on {target}" if where else "; nor on the target"))
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            if meta is not None and meta.migration_target:
                instance_metadata.set_migration_target(dom, None)

    def finalize_target(self, instance: Any, success: bool,
                        info: str = "") -> libvirt.virDomain | None:
        """Success: the instance must run here (returned). Failure: remove what the
        migration left here, but never a guest that runs here (it may be the only copy).
        ``info`` is what the source's MigrationInfo gave."""
        name = _name(instance)
        dom = self.host.lookup(name)
        with connection.libvirt_errors("finalize the incoming migration", name):
            if success:
                if dom is None or not dom.isActive():
                    raise HypervisorError(f"Instance {name} does not run here after its "
                                          "migration")
                instance_metadata.set_migration_target(dom, None)
                return dom
            if dom is None:
                return None
            settled = _settled_state(dom)
            if settled is None:
                return None  # libvirt already removed the failed incoming domain
            state, reason = settled
            incoming = state == libvirt.VIR_DOMAIN_PAUSED and reason in (
                libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
                libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
            if domains.is_active_state(state) and not incoming:
                raise HypervisorError(f"Instance {name} runs here although its migration "
                                      "was reported failed; refusing to destroy it (libvirt "
                                      f"state {state}, reason {reason})")
            ownership.forget(self.host.uri, dom)
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
            return None


class KvmMigrator(Migrator):
    """QEMU's: the downtime limit, Ganeti's post-copy switch, the target's machine type
    and CPU model checked against its domain capabilities, the live handover of a
    QEMU that Ganeti's own KVM started (its migration info is hv_kvm's runtime), and
    the way back for a domain that came in so (``handover.back``)."""

    def info(self, instance: Any) -> str:
        """hv_kvm's runtime for a domain that came in by the handover and that hv_kvm
        can still reproduce (``handover.back``), else the domain XML."""
        xml = super().info(instance)
        kept = back.kept_runtime(parser.parse_tree(xml))
        return xml if kept is None else kept

    def migrate(self, instance: Any, target: str, live: bool) -> None:
        """To wherever MigrationInfo pointed: a domain whose answer was hv_kvm's runtime
        sends QEMU's stream to the target's migration port, as hv_kvm does."""
        name = _name(instance)
        dom = self.host.owned(name)
        with connection.libvirt_errors("check the state", name):
            kept = dom is not None and dom.isActive() and back.kept_runtime(
                back.migratable_root(dom)) is not None
        if not kept:
            super().migrate(instance, target, live)
            return
        self.target_uri(target)  # refuses what is no host name or address
        back.migrate(dom, instance.hvparams, target, bool(live))

    def without_libvirt_job(self, dom: libvirt.virDomain,
                            result: MigrationStatus) -> MigrationStatus:
        """QEMU's own stream (the way back) has no libvirt job: QEMU reports it."""
        with connection.libvirt_errors("check the migration", dom.name()):
            meta = instance_metadata.read(dom)
        return back.status(dom) if meta is not None and meta.migration_via == back.VIA else result

    def finalize_source(self, instance: Any, success: bool) -> None:
        dom = self._streaming(_name(instance))
        if dom is None:
            super().finalize_source(instance, success)
        else:
            back.finalize_source(self.host.uri, dom, success)

    def _streaming(self, name: str) -> libvirt.virDomain | None:
        """The running domain ``name`` if MigrateInstance sent its QEMU's own stream
        (libvirt has no job for it), else None."""
        dom = self.host.owned(name)
        with connection.libvirt_errors("check the migration", name):
            if dom is None or not dom.isActive():
                return None
            meta = instance_metadata.read(dom)
        return dom if meta is not None and meta.migration_via == back.VIA else None

    def accept(self, instance: Any, info: str, target: str) -> None:
        if handover.looks_like_hv_kvm(info):
            handover.accept(self, instance, info, target)
        else:
            super().accept(instance, info, target)

    def finalize_target(self, instance: Any, success: bool,
                        info: str = "") -> libvirt.virDomain | None:
        if handover.looks_like_hv_kvm(info):
            handover.finalize_dst(self, instance, success, info)
        return super().finalize_target(instance, success, info)

    def prepare(self, dom: libvirt.virDomain, hvparams: Mapping[str, Any]) -> None:
        with connection.libvirt_errors("set the migration downtime", dom.name()):
            dom.migrateSetMaxDowntime(hvparams[C.HV_MIGRATION_DOWNTIME], 0)

    @staticmethod
    def follow(hvparams: Mapping[str, Any]) -> float:
        """Not with post-copy: the polls switch to it (``while_migrating``)."""
        caps = migration.capabilities(hvparams.get(C.HV_KVM_MIGRATION_CAPS, ""))
        return 0.0 if POSTCOPY_CAPS & set(caps) else migration.FOLLOW

    def while_migrating(self, dom: libvirt.virDomain, instance: Any, stats: dict[str, Any],
                        result: MigrationStatus) -> None:
        """Ganeti's post-copy switch: with ``postcopy-ram`` in migration_caps, switch
        once memory has been copied twice (dirty-sync count 2, from the poll's own job
        statistics)."""
        caps = migration.capabilities(instance.hvparams.get(C.HV_KVM_MIGRATION_CAPS, ""))
        if not POSTCOPY_CAPS & set(caps) or stats.get("memory_iteration", 0) < 2:
            return
        with connection.libvirt_errors("switch the migration to post-copy", instance.name):
            dom.migrateStartPostCopy(0)
        result.postcopy_status = C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE

    def accept_problems(self, name: str, root: etree._Element) -> list[str]:
        """As the base, plus: the machine type and domain type are offered here."""
        problems = super().accept_problems(name, root)
        running = parser.machine(root)
        try:
            caps = parser.parse_tree(self.host.conn().getDomainCapabilities(
                running.emulator, running.arch, running.machine, running.domain_type, 0),
                "domain capabilities")
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                message = err.get_error_message() or str(err)
                problem = (f"this node cannot run {running.domain_type} guests of "
                           f"machine {running.machine}: {message}")
                if running.machine and running.machine in message:
                    # A running guest keeps the machine type it started with: after a
                    # QEMU upgrade (Debian 12 -> 13) the new default is not on old nodes.
                    problem += ("; machine_version: pin a machine type every node's QEMU "
                                "offers, then restart the instance")
                problems.append(problem)
            return problems
        model = root.findtext("cpu[@mode='custom']/model")
        if model and not caps.xpath("cpu/mode[@name='custom']/model[text()=$m and "
                                    "@usable!='no']", m=model):
            problems.append(f"CPU model {model} is not usable here")
        return problems


class XenMigrator(Migrator):
    """libxl's: its own flags, and no migration of passed-through PCI devices."""

    @staticmethod
    def flags(hvparams: Mapping[str, Any], target: str, live: bool
              ) -> tuple[int, dict[str, Any]]:
        """Peer-to-peer, persistent on the target, live if asked; the data goes to
        tcp://target:migration_port. No bandwidth or downtime: libxl has neither."""
        flags = _XEN_FLAGS | (libvirt.VIR_MIGRATE_LIVE if live else 0)
        return flags, {libvirt.VIR_MIGRATE_PARAM_URI:
                       f"tcp://{target}:{hvparams[C.HV_MIGRATION_PORT]}"}

    def prepare(self, dom: libvirt.virDomain, hvparams: Mapping[str, Any]) -> None:
        with connection.libvirt_errors("read the domain XML", dom.name()):
            root = parser.parse_tree(dom.XMLDesc(0))
        if root.find("devices/hostdev") is not None:
            raise HypervisorError(f"Instance {dom.name()} has PCI devices passed through "
                                  "(pci_pass), which libxl cannot migrate")


def _abort_job(dom: libvirt.virDomain, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while dom.isActive() and dom.jobStats(0).get("type") in (
            libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED):
        try:
            dom.abortJob()
        except libvirt.libvirtError as err:
            log.debug("abortJob on %s: %s", dom.name(), err)
        if time.monotonic() > deadline:
            raise HypervisorError(f"The migration job of {dom.name()} did not stop")
        time.sleep(0.1)


def _settled_state(dom: libvirt.virDomain, seconds: float = 30.0) -> tuple[int, int] | None:
    """The domain's state once it has left "shutting down", or None once libvirt has
    removed it. A target libvirtd restarted during an incoming migration kills the
    half-received QEMU itself; until QEMU exits the domain reads SHUTDOWN, which is not a
    guest running here."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        if state != libvirt.VIR_DOMAIN_SHUTDOWN or time.monotonic() > deadline:
            return state, reason
        time.sleep(0.1)
