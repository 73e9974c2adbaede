"""Peer-to-peer migration that outlives the process that started it.

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
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import libvirt

from hvlibvirt import constants as C, helper_command
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
START_TIMEOUT = 60.0  # seconds for the helper to get the job going
_START_POLL = 0.05  # seconds between job checks while it starts


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
    """Run the migration in a detached helper and return once libvirt reports the job
    (or the helper already finished successfully).

    The helper's output comes back through a pipe that is read only if it exits while
    we wait; once we return, the outcome is libvirt's job statistics (no files).
    """
    spec = json.dumps({"source": source_uri, "name": name, "dest": dest_uri,
                       "flags": flags, "params": params})
    helper = subprocess.Popen(helper_command("migration-helper", spec),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if helper.poll() is not None:
                if helper.returncode == 0:
                    return  # it was quick: already done
                message = helper.stdout.read().decode(errors="replace").strip()
                raise HypervisorError(f"Migration of {name} to {dest_uri} failed: "
                                      f"{message or f'exit code {helper.returncode}'}")
            try:
                if dom.jobStats(0).get("type") in _ACTIVE_JOBS:
                    return
            except libvirt.libvirtError:
                pass  # the job may be between phases
            time.sleep(_START_POLL)
        raise HypervisorError(f"Migration of {name} to {dest_uri} did not start within "
                              f"{START_TIMEOUT:.0f}s")
    finally:
        helper.stdout.close()


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
    try:
        try:
            stats = dom.jobStats(0) if dom.isActive() else {}
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
            stats = {}  # it stopped between the two calls: the migration just ended
        if stats.get("type") in _ACTIVE_JOBS:
            state, reason = dom.state()
            postcopy = (state == libvirt.VIR_DOMAIN_PAUSED
                        and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY)
            return new_migration_status(
                status=C.HV_KVM_MIGRATION_POSTCOPY_ACTIVE if postcopy
                else C.HV_MIGRATION_ACTIVE,
                transferred_ram=stats.get("memory_processed"),
                total_ram=stats.get("memory_total"))
        done = _completed_stats(dom)
        state, reason = dom.state()
    except libvirt.libvirtError as err:
        raise HypervisorError(f"Failed to read the migration job of {dom.name()}: "
                              f"{err}") from err
    migrated = state == libvirt.VIR_DOMAIN_SHUTOFF and \
        reason == libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED
    verdict = _END_STATUS.get(done.get("type"))
    if migrated:
        verdict = C.HV_MIGRATION_COMPLETED  # the guest left: whatever the stats say
    elif verdict == C.HV_MIGRATION_COMPLETED or verdict is None:
        # The job ended but the guest is still here: the migration did not happen.
        verdict = C.HV_MIGRATION_FAILED
    if verdict != C.HV_MIGRATION_COMPLETED and done.get(libvirt.VIR_DOMAIN_JOB_ERRMSG):
        # The helper's own report went nowhere once MigrateInstance returned.
        log.warning("Migration of %s: %s", dom.name(), done[libvirt.VIR_DOMAIN_JOB_ERRMSG])
    return new_migration_status(status=verdict, transferred_ram=done.get("memory_processed"),
                                total_ram=done.get("memory_total"))


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
