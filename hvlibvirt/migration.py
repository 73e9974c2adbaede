"""Peer-to-peer migration that outlives the process that started it, and Ganeti's
migration calls (``MigrationMethods``, part of BaseHypervisor).

Ganeti drives a migration in steps: MigrateInstance returns while the migration runs,
the master polls GetMigrationStatus (possibly through another process), then finalizes
both sides. libvirt's ``migrateToURI3`` blocks until the end, so MigrateInstance starts
it in a detached helper process (``hvlibvirt migration-helper``) and returns once libvirt
reports the job. With PEER2PEER the source libvirtd drives the transfer itself, and the
status is read from libvirt's job statistics, never from this process's memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import libvirt
from lxml import etree

from hvlibvirt import (config, connection, constants as C, domains, handover, helper_command,
                       ownership)
from hvlibvirt.domain_xml import identity
from hvlibvirt.errors import HypervisorError
from hvlibvirt.objects import MigrationStatus, new_migration_status

log = logging.getLogger(__name__)

# Ganeti's migration capability names (QEMU's) -> (libvirt flag, compression method).
CAPABILITY_FLAGS: dict[str, tuple[int, str | None]] = {
    "xbzrle": (libvirt.VIR_MIGRATE_COMPRESSED, "xbzrle"),
    "compress": (libvirt.VIR_MIGRATE_COMPRESSED, "mt"),
    "auto-converge": (libvirt.VIR_MIGRATE_AUTO_CONVERGE, None),
    "rdma-pin-all": (libvirt.VIR_MIGRATE_RDMA_PIN_ALL, None),
    "x-rdma-pin-all": (libvirt.VIR_MIGRATE_RDMA_PIN_ALL, None),
    "postcopy-ram": (libvirt.VIR_MIGRATE_POSTCOPY, None),
    "x-postcopy-ram": (libvirt.VIR_MIGRATE_POSTCOPY, None),
    "multifd": (libvirt.VIR_MIGRATE_PARALLEL, None),
    "x-multifd": (libvirt.VIR_MIGRATE_PARALLEL, None),
    "zero-copy-send": (libvirt.VIR_MIGRATE_ZEROCOPY, None),
}
_ACTIVE_JOBS = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
_END_STATUS = {libvirt.VIR_DOMAIN_JOB_COMPLETED: C.HV_MIGRATION_COMPLETED,
               libvirt.VIR_DOMAIN_JOB_FAILED: C.HV_MIGRATION_FAILED,
               libvirt.VIR_DOMAIN_JOB_CANCELLED: C.HV_MIGRATION_CANCELLED}
SYS_CLASS_NET = "/sys/class/net"  # this machine's network interfaces, bridges included
START_TIMEOUT = 60.0  # seconds for the helper to get the job going
_START_POLL = 0.05  # seconds between job checks while it starts
# Seconds a running job may show no data moved before MigrateInstance returns anyway.
# libvirt reports the job from its first phase, before it has reached the target: a
# migration the target refused at once (its socket missing) was seen running for one
# poll in CI (2026-12-02, a loaded host), and its error then reached only the node's log.
# Data moving means the target has accepted; libxl reports no figures, hence the limit.
START_GRACE = 2.0
HELPER_COMMAND = "migration-helper"  # the hvlibvirt subcommand; it names helpers in /proc
HELPER_STOP_TIMEOUT = 10.0  # seconds for killed helpers to be gone


def capabilities(value: str) -> list[str]:
    return [c for c in (value or "").split(":") if c]


def flags_and_params(hvparams: Mapping[str, Any], target: str, live: bool
                     ) -> tuple[int, dict[str, Any]]:
    """libvirt migration flags and typed parameters for these hvparams.

    UNSAFE: Ganeti provides the disks on both nodes (DRBD, shared or external storage),
    which libvirt cannot see and would otherwise refuse when the cache is not 'none'.
    The source definition stays until FinalizeMigrationSource (no UNDEFINE_SOURCE), so
    the outcome can be read on the source after the guest has left.
    """
    flags = (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
             | libvirt.VIR_MIGRATE_UNSAFE)
    if live:
        flags |= libvirt.VIR_MIGRATE_LIVE
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{target}:{hvparams[C.HV_MIGRATION_PORT]}",
    }
    bandwidth = hvparams.get(C.HV_MIGRATION_BANDWIDTH) or 0
    if bandwidth:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth
    methods = []
    for cap in capabilities(hvparams.get(C.HV_KVM_MIGRATION_CAPS, "")):
        try:
            flag, method = CAPABILITY_FLAGS[cap]
        except KeyError:
            raise HypervisorError(
                f"Parameter 'migration_caps': unknown capability {cap!r}") from None
        flags |= flag
        if method:
            methods.append(method)
    if methods:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = methods
    if flags & libvirt.VIR_MIGRATE_POSTCOPY and bandwidth:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = bandwidth
    return flags, params


def start(source_uri: str, name: str, dest_uri: str, flags: int, params: dict[str, Any],
          dom: libvirt.virDomain) -> None:
    """Run the migration in a detached helper and return once libvirt's job moves data
    (or has run START_GRACE seconds without saying; or the helper already succeeded),
    so that a target's refusal is raised here, with libvirt's reason.

    The helper's output comes back through a pipe that is read only if it exits while
    we wait; once we return, the outcome is libvirt's job statistics (no files). On
    every failure the helper is gone when this raises: killed (a job it may just have
    started is aborted) and reaped. One that runs on after the return is reaped by a
    thread the moment it ends, so a long-lived caller collects no zombies.
    """
    spec = json.dumps({"source": source_uri, "name": name, "dest": dest_uri,
                       "flags": flags, "params": params})
    try:
        helper = subprocess.Popen(helper_command(HELPER_COMMAND, spec),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as err:
        raise HypervisorError(f"Migration of {name}: cannot start its helper: {err}") from err
    try:
        _wait_started(helper, name, dest_uri, dom)
    except BaseException:
        if helper.poll() is None:
            _kill(helper.pid)
            helper.wait()
            with contextlib.suppress(libvirt.libvirtError):  # FinalizeMigrationSource retries
                if dom.jobStats(0).get("type") in _ACTIVE_JOBS:
                    dom.abortJob()
        raise
    finally:
        helper.stdout.close()
    if helper.returncode is None:
        threading.Thread(target=helper.wait, name=f"reap-migration-helper-{helper.pid}",
                         daemon=True).start()


def _wait_started(helper: subprocess.Popen[bytes], name: str, dest_uri: str,
                  dom: libvirt.virDomain) -> None:
    """Return once the job moves data (see ``start``); raise if the helper failed or
    nothing started within START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    running_since = None  # when libvirt first reported the job
    while (now := time.monotonic()) < deadline:
        if helper.poll() is not None:
            if helper.returncode == 0:
                return  # it was quick: already done
            message = helper.stdout.read().decode(errors="replace").strip()
            raise HypervisorError(f"Migration of {name} to {dest_uri} failed: "
                                  f"{message or f'exit code {helper.returncode}'}")
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError:
            stats = {}  # the job may be between phases
        if stats.get("type") in _ACTIVE_JOBS:
            if stats.get(libvirt.VIR_DOMAIN_JOB_MEMORY_PROCESSED) or \
                    stats.get(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED):
                return
            running_since = running_since if running_since is not None else now
            if now - running_since >= START_GRACE:
                return
        time.sleep(_START_POLL)
    raise HypervisorError(f"Migration of {name} to {dest_uri} did not start within "
                          f"{START_TIMEOUT:.0f}s")


def stop_helpers(source_uri: str, name: str, timeout: float = HELPER_STOP_TIMEOUT) -> None:
    """Kill every migration helper of ``name`` at ``source_uri`` (of this user, started by
    any process: Ganeti finalizes from another process than the one that migrated) and
    wait until none runs. Found by their command line, which carries the migration's
    spec (see ``helper_pids``)."""
    deadline = time.monotonic() + timeout
    while pids := helper_pids(source_uri, name):
        if time.monotonic() >= deadline:
            raise HypervisorError(f"The migration helper of {name} (pid "
                                  f"{', '.join(map(str, pids))}) did not end")
        for pid in pids:
            _kill(pid)
        time.sleep(_START_POLL)


def helper_pids(source_uri: str, name: str) -> list[int]:
    """Pids of this user's running migration helpers of ``name`` at ``source_uri``.

    The command line is the record: it names the instance and the URI exactly (the JSON
    spec), so a reused pid is never mistaken for a helper, nothing needs writing when a
    helper starts (no runtime files, no extra RPC on the migration's path), and a helper
    whose starter died is found too. Ended helpers (zombies) have no command line."""
    found, me, own = [], os.geteuid(), os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if entry.stat().st_uid != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            spec = json.loads(argv[argv.index(HELPER_COMMAND.encode()) + 1])
        except (OSError, ValueError, IndexError):
            continue
        if isinstance(spec, dict) and spec.get("source") == source_uri \
                and spec.get("name") == name:
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    """SIGKILL a helper and its process group (it leads one, see ``start``: an ssh to a
    remote source URI would be in it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def run_helper(spec_json: str) -> int:
    """The detached helper (``hvlibvirt migration-helper SPEC``): run the blocking
    peer-to-peer migration; on failure, say why on stdout (read by ``start`` if it is
    still waiting) and exit 1."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raised, not printed
    spec = json.loads(spec_json)
    try:
        conn = libvirt.open(spec["source"])
        conn.lookupByName(spec["name"]).migrateToURI3(spec["dest"], spec["params"],
                                                      spec["flags"])
    except libvirt.libvirtError as err:
        with contextlib.suppress(OSError):  # nobody reads once start() has returned
            os.write(1, (err.get_error_message() or str(err)).encode() + b"\n")
        return 1
    return 0


def status(dom: libvirt.virDomain) -> MigrationStatus:
    """Ganeti's MigrationStatus from libvirt's job statistics on the source."""
    return read_status(dom)[0]


def read_status(dom: libvirt.virDomain) -> tuple[MigrationStatus, dict[str, Any], int]:
    """The status, the running job's statistics ({} when none runs) and the domain's
    state, in two RPCs while the job runs or once the guest has left (jobStats and
    state, which carries the reason too); a third, the completed job's statistics, only
    when the job ended and the guest did not leave: it tells failed from cancelled and
    holds libvirt's error message, which nobody else reports."""
    try:
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
            stats = {}  # not running (any more): the migration has ended
        state, reason = dom.state()
        if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED:
            # The guest left: done, even while libvirt's job is still in its confirm
            # phase (after the guest has left) and whatever the statistics would say.
            return new_migration_status(status=C.HV_MIGRATION_COMPLETED,
                                        **_ram(stats)), stats, state
        if stats.get("type") in _ACTIVE_JOBS:
            postcopy = (state == libvirt.VIR_DOMAIN_PAUSED
                        and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY)
            return new_migration_status(
                status=C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE if postcopy
                else C.HV_MIGRATION_ACTIVE,
                **_ram(stats)), stats, state
        done = _completed_stats(dom)
    except libvirt.libvirtError as err:
        raise HypervisorError(f"Failed to read the migration job of {dom.name()}: "
                              f"{err}") from err
    verdict = _END_STATUS.get(done.get("type"))
    if verdict == C.HV_MIGRATION_COMPLETED or verdict is None:
        # The job ended but the guest did not leave: the migration did not happen.
        verdict = C.HV_MIGRATION_FAILED
    if done.get(libvirt.VIR_DOMAIN_JOB_ERRMSG):
        # The helper's own report went nowhere once MigrateInstance returned.
        log.warning("Migration of %s: %s", dom.name(), done[libvirt.VIR_DOMAIN_JOB_ERRMSG])
    return new_migration_status(status=verdict, **_ram(done)), stats, state


def _ram(stats: dict[str, Any]) -> dict[str, int | None]:
    """The RAM figures of a job, or none while libvirt does not know the total yet (at
    a job's start): Ganeti divides the transferred RAM by the total for its progress."""
    total = stats.get("memory_total")
    if not total:
        return {"transferred_ram": None, "total_ram": None}
    return {"transferred_ram": stats.get("memory_processed"), "total_ram": total}


def _completed_stats(dom: libvirt.virDomain) -> dict[str, Any]:
    """Statistics of the last completed job; empty where the driver keeps none (libxl
    reports only the running job)."""
    try:
        return dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                            | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    except libvirt.libvirtError as err:
        if err.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT,
                                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            return {}
        raise


_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*\Z")  # a host name or an IP address


def _set_target(meta: domains.InstanceMetadata, target: str | None) -> bool:
    """Record (or, with None, clear) where the instance migrates to; whether it changed."""
    changed, meta.migration_target = meta.migration_target != target, target
    return changed


class MigrationMethods:
    """Ganeti's migration calls, as BaseHypervisor has them (it inherits these; they use
    its ``_conn``, ``_lookup``, ``_owned``, ``uri`` and ``GetNodeInfo``)."""

    #: the target's libvirt URI; ``{target}`` is the address Ganeti passes
    MIGRATION_URI_TEMPLATE: ClassVar[str] = ""

    @property
    def migration_uri_template(self) -> str:
        """Constructor keyword, else HVLIBVIRT_MIGRATION_URI, else the configuration
        file's ``migration_uri``, else the class default."""
        return (self._migration_uri or config.getenv("HVLIBVIRT_MIGRATION_URI")
                or config.value(self.HV_NAME, "migration_uri") or self.MIGRATION_URI_TEMPLATE)

    def _target_uri(self, target: str) -> str:
        if not isinstance(target, str) or not _TARGET.match(target):
            raise HypervisorError(f"Invalid migration target {target!r}: expected a host "
                                  "name or an IP address")
        return self.migration_uri_template.replace("{target}", target)

    def MigrationInfo(self, instance: Any) -> str:  # noqa: N802
        """The migratable domain XML (with our metadata) the target checks it against."""
        name = identity.instance_name(getattr(instance, "name", None))
        dom = self._owned(name)
        with connection.libvirt_errors("read the migratable XML", name):
            if dom is None or not dom.isActive():
                raise HypervisorError(f"Instance {name} is not running, cannot migrate")
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)

    def AcceptInstance(self, instance: Any, info: str, target: str) -> None:  # noqa: N802
        """Pre-flight checks on the target node; libvirt starts the incoming side itself
        (from Ganeti's KVM hypervisor, whose info is its runtime: ``handover``)."""
        if handover.looks_like_hv_kvm(info):
            return handover.accept(self, instance, info, target)
        name = identity.instance_name(getattr(instance, "name", None))
        try:
            root = etree.fromstring(info.encode() if isinstance(info, str) else info)
        except (etree.XMLSyntaxError, AttributeError, ValueError) as err:
            raise HypervisorError(f"Invalid migration info for {name}: {err}") from None
        problems = self._accept_problems(name, root)
        if problems:
            raise HypervisorError(f"Cannot accept instance {name}: " + "; ".join(problems))

    def _accept_problems(self, name: str, root: etree._Element) -> list[str]:
        conn = self._conn()
        problems = []
        existing = self._lookup(name)
        if existing is not None and existing.isActive():
            problems.append("a domain of that name already runs here")
        for bridge in sorted(set(root.xpath("devices/interface[@type='bridge']/source/@bridge"))):
            problem = self._bridge_problem(conn, bridge)
            if problem:
                problems.append(problem)
        for path in root.xpath("devices/disk/source/@file | devices/disk/source/@dev"):
            if not os.path.exists(path):
                problems.append(f"disk {path} does not exist here")
        needed = int(root.findtext("currentMemory") or 0) // 1024
        free = self.GetNodeInfo()["memory_free"]
        if needed > free:
            problems.append(f"it needs {needed} MiB but {free} MiB are free")
        return problems

    def _bridge_problem(self, conn: libvirt.virConnect, bridge: str) -> str | None:
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
        if urllib.parse.urlsplit(self.uri).netloc:
            return (f"cannot check that bridge {bridge} exists at {self.uri}: {cause} "
                    "(install libvirt-daemon-driver-interface there)")
        if not os.path.isdir(os.path.join(SYS_CLASS_NET, bridge)):
            return f"bridge {bridge} does not exist here"
        return None

    def MigrateInstance(self, cluster_name: str, instance: Any, target: str,  # noqa: N802
                        live: bool) -> None:
        """Start a peer-to-peer migration to ``target`` and return while it runs.

        The transfer is driven by the source libvirtd from a detached helper, so it
        continues if this process exits. Watch it with GetMigrationStatus.
        """
        name = identity.instance_name(getattr(instance, "name", None))
        dest_uri = self._target_uri(target)
        dom = self._owned(name)
        with connection.libvirt_errors("check the state", name):
            if dom is None or not dom.isActive():
                raise HypervisorError(f"Instance {name} is not running, cannot migrate")
        flags, params = self._migration_flags(instance.hvparams, target, bool(live))
        self._prepare_migration(dom, instance.hvparams)
        domains.update_metadata(dom, lambda meta: _set_target(meta, target))
        start(self.uri, name, dest_uri, flags, params, dom)

    @staticmethod
    def _migration_flags(hvparams: Mapping[str, Any], target: str, live: bool
                         ) -> tuple[int, dict[str, Any]]:
        """libvirt flags and typed parameters of the migration (KVM's by default)."""
        return flags_and_params(hvparams, target, live)

    def _prepare_migration(self, dom: libvirt.virDomain, hvparams: Mapping[str, Any]) -> None:
        """Tuning that is not a migration parameter (subclasses add theirs)."""

    def GetMigrationStatus(self, instance: Any) -> MigrationStatus:  # noqa: N802
        """Status of the migration, read from libvirt's job on this (the source) node.

        Ganeti polls this every second, a fresh process each time: the lookup, the job's
        statistics and the state are the RPCs of a poll. Ownership is not asked: Ganeti
        polls only after MigrateInstance, which refuses a domain that is not ours, and
        the source definition stays until FinalizeMigrationSource, so the name cannot
        change hands meanwhile. Our metadata is read only where the answer depends on
        it (the guest left and libvirt no longer says why, below); a domain without it
        then gets "failed", as one that does not exist."""
        name = identity.instance_name(getattr(instance, "name", None))
        dom = self._lookup(name)
        if dom is None:
            return new_migration_status(status=C.HV_MIGRATION_FAILED)
        result, stats, state = read_status(dom)
        if result.status == C.HV_MIGRATION_FAILED and state == libvirt.VIR_DOMAIN_SHUTOFF \
                and self._left_for_target(dom, name):
            result.status = C.HV_MIGRATION_COMPLETED
        elif result.status == C.HV_MIGRATION_ACTIVE:
            self._while_migrating(dom, instance, stats, result)
        return result

    def _while_migrating(self, dom: libvirt.virDomain, instance: Any, stats: dict[str, Any],
                         result: MigrationStatus) -> None:
        """A poll that found the job running (pre-copy), with its statistics: subclasses
        steer the migration here (KVM's post-copy switch)."""

    def _left_for_target(self, dom: libvirt.virDomain, name: str) -> bool:
        """Whether the guest, shut off here (the caller read the state), runs on the
        target our metadata names: a libvirtd restarted since the migration ended keeps
        neither the job's statistics nor why the domain is off, and "failed" would make
        Ganeti abort a migration that happened (its guest then runs where Ganeti does not
        expect it)."""
        with connection.libvirt_errors("check the migration's outcome", name):
            meta = domains.read_metadata(dom)
        return meta is not None and self._runs_on(meta.migration_target, name)

    def FinalizeMigrationSource(self, instance: Any, success: bool, live: bool) -> None:  # noqa: N802
        """Success: drop the source definition. Failure: make sure the instance runs
        here (abort the job, resume a paused guest); if it in fact runs on the target,
        say so instead of pretending. A failure first ends every migration helper of the
        instance (it could otherwise still start the migration Ganeti gave up on)."""
        name = identity.instance_name(getattr(instance, "name", None))
        if not success:
            stop_helpers(self.uri, name)
        dom = self._owned(name)
        if dom is None:
            return
        with connection.libvirt_errors("finalize the migration", name):
            if success:
                if dom.isActive():
                    raise HypervisorError(f"Migration of {name} was reported successful but "
                                          "the instance still runs on the source")
                ownership.forget(self.uri, dom)
                dom.undefine()
                return
            self._abort_job(dom)
            meta = domains.read_metadata(dom)
            target = meta.migration_target if meta else None
            if not dom.isActive():
                where = self._runs_on(target, name)
                raise HypervisorError(
                    f"Instance {name} does not run on the source after the failed migration"
                    + (f"; it runs on {target}" if where else "; nor on the target"))
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            if meta is not None and meta.migration_target:
                domains.update_metadata(dom, lambda meta: _set_target(meta, None))

    @staticmethod
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

    def _runs_on(self, target: str | None, name: str) -> bool:
        """Whether ``name`` runs on ``target`` (False when that cannot be reached)."""
        if not target:
            return False
        try:
            return bool(connection.get(self._target_uri(target)).lookupByName(name).isActive())
        except (HypervisorError, libvirt.libvirtError):
            return False

    def FinalizeMigrationDst(self, instance: Any, info: str, success: bool) -> None:  # noqa: N802
        """Success: the instance must run here. Failure: remove what the migration left
        here, but never a guest that runs here (it may be the only copy)."""
        if handover.looks_like_hv_kvm(info):
            handover.finalize_dst(self, instance, success)
        name = identity.instance_name(getattr(instance, "name", None))
        dom = self._lookup(name)
        with connection.libvirt_errors("finalize the incoming migration", name):
            if success:
                if dom is None or not dom.isActive():
                    raise HypervisorError(f"Instance {name} does not run here after its "
                                          "migration")
                domains.update_metadata(dom, lambda meta: _set_target(meta, None))
                return
            if dom is None:
                return
            settled = _settled_state(dom)
            if settled is None:
                return  # libvirt already removed the failed incoming domain
            state, reason = settled
            incoming = state == libvirt.VIR_DOMAIN_PAUSED and reason in (
                libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
                libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
            if domains.is_active_state(state) and not incoming:
                raise HypervisorError(f"Instance {name} runs here although its migration "
                                      "was reported failed; refusing to destroy it (libvirt "
                                      f"state {state}, reason {reason})")
            ownership.forget(self.uri, dom)
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise


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
