"""The migration job: peer-to-peer migration that outlives the process that started it
(its flags, its helper process, its status). Ganeti's calls are ``migrator``'s.

Ganeti drives a migration in steps: MigrateInstance returns while the migration runs,
the master polls GetMigrationStatus (possibly through another process), then finalizes
both sides. libvirt's ``migrateToURI3`` blocks until the end, so MigrateInstance starts
it in a detached helper process (``hvlibvirt migration-helper``) and returns once libvirt
reports the job. With PEER2PEER the source libvirtd drives the transfer itself, and the
status is read from libvirt's job statistics, never from this process's memory.

Ganeti polls at once after MigrateInstance, then every second: a migration that ends
just after a poll is seen a second later. So MigrateInstance follows the job for up to
FOLLOW seconds more and returns the moment it ends (Ganeti's first poll sees the end);
a longer one is left to the polls, whose progress Ganeti reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import libvirt

from hvlibvirt import constants as C
from hvlibvirt import helper as helpers
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm_params import MIGRATION_CAPS
from hvlibvirt.objects import MigrationStatus, new_migration_status

log = logging.getLogger(__name__)

# Ganeti's migration capability names (QEMU's) -> (libvirt flag, compression method).
CAPABILITY_FLAGS: dict[str, tuple[int, str | None]] = {
    cap: (getattr(libvirt, flag), method) for cap, (flag, method) in MIGRATION_CAPS.items()}
_ACTIVE_JOBS = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
_END_STATUS = {libvirt.VIR_DOMAIN_JOB_COMPLETED: C.HV_MIGRATION_COMPLETED,
               libvirt.VIR_DOMAIN_JOB_FAILED: C.HV_MIGRATION_FAILED,
               libvirt.VIR_DOMAIN_JOB_CANCELLED: C.HV_MIGRATION_CANCELLED}
START_TIMEOUT = 60.0  # seconds for the helper to get the job going
_START_POLL = 0.05  # seconds between job checks while it starts
# Seconds a running job may show no data moved before MigrateInstance returns anyway.
# libvirt reports the job from its first phase, before it has reached the target, so a
# migration the target refuses at once can show as running; returning then would leave
# its error to the node's log only. Data moving means the target has accepted; libxl
# reports no figures, hence the limit.
START_GRACE = 2.0
FOLLOW = 5.0  # seconds MigrateInstance waits for a started job to end (see above)
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
          dom: libvirt.virDomain, follow: float = 0.0) -> None:
    """Run the migration in a detached helper and return once libvirt's job moves data
    (or has run START_GRACE seconds without saying; or the helper already succeeded),
    so that a target's refusal is raised here, with libvirt's reason; then up to
    ``follow`` seconds more until the helper ends (raising if the migration failed).

    The helper's output comes back through a pipe that is read only if it exits while
    we wait; once we return, the outcome is libvirt's job statistics (no files). On
    every failure the helper is gone when this raises: killed (a job it may just have
    started is aborted) and reaped. One that runs on after the return is reaped by a
    thread the moment it ends, so a long-lived caller collects no zombies.
    """
    spec = {"source": source_uri, "name": name, "dest": dest_uri, "flags": flags,
            "params": params}
    helper = helpers.spawn(HELPER_COMMAND, spec, f"Migration of {name}: cannot start its "
                                                 "helper")
    try:
        _wait_started(helper, name, dest_uri, dom)
        if follow > 0 and helper.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                helper.wait(timeout=follow)
            if helper.returncode not in (None, 0):
                raise _failed(helper, name, dest_uri)
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
        helpers.reap_later(HELPER_COMMAND, helper)


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
            raise _failed(helper, name, dest_uri)
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


def _failed(helper: subprocess.Popen[bytes], name: str, dest_uri: str) -> HypervisorError:
    """The error of a helper that ended in failure: libvirt's reason, which it printed."""
    message = helper.stdout.read().decode(errors="replace").strip()
    return HypervisorError(f"Migration of {name} to {dest_uri} failed: "
                           f"{message or f'exit code {helper.returncode}'}")


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
    """Pids of this user's running migration helpers of ``name`` at ``source_uri``."""
    return helpers.helper_pids(HELPER_COMMAND, {"source": source_uri, "name": name})


def _kill(pid: int) -> None:
    """SIGKILL a helper and its process group (it leads one, see ``start``: an ssh to a
    remote source URI would be in it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


# The helper's spec: what ``start`` writes, field -> type.
_SPEC_FIELDS = {"source": str, "name": str, "dest": str, "flags": int, "params": dict}
_JSON_NAMES = {str: "string", int: "integer", dict: "object"}


def parse_spec(text: str) -> dict[str, Any]:
    """The helper's spec from its command line; ValueError naming what is wrong."""
    try:
        spec = json.loads(text)
    except ValueError:
        spec = None
    if not isinstance(spec, dict):
        raise ValueError("SPEC is not a JSON object")
    for field, kind in _SPEC_FIELDS.items():
        value = spec.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"SPEC field {field!r} must be a JSON {_JSON_NAMES[kind]}")
    return spec


def run_helper(spec: dict[str, Any]) -> int:
    """The detached helper (``hvlibvirt migration-helper SPEC``, ``parse_spec``): run the
    blocking peer-to-peer migration; on failure, say why on stdout (read by ``start``
    if it is still waiting) and exit 1."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # raised, not printed
    try:
        conn = libvirt.open(spec["source"])
        conn.lookupByName(spec["name"]).migrateToURI3(spec["dest"], spec["params"],
                                                      spec["flags"])
    except libvirt.libvirtError as err:
        with contextlib.suppress(OSError):  # nobody reads once start() has returned
            os.write(1, (err.get_error_message() or str(err)).encode() + b"\n")
        return 1
    return 0


def read_status(dom: libvirt.virDomain) -> tuple[MigrationStatus, dict[str, Any], int]:
    """The status, the running job's statistics ({} when none runs) and the domain's
    state, in two RPCs while the job runs or once the guest has left (jobStats and
    state, which carries the reason too); a third, the completed job's statistics, only
    when the job ended and the guest did not leave: it tells failed from cancelled and
    holds libvirt's error message, which nobody else reports.

    The two job reads cannot be one: a call answers either the running job or (flag
    COMPLETED) the last ended one. The job is read before the state: a job that ends
    between the two reads then shows as running (the next poll sees the end) or as
    left; the other order could find the guest not yet gone, then no job, and call a
    migration that succeeded failed."""
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
