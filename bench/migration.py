"""Live migration wall time and downtime between the harness's two private daemons.

Run as root: .venv/bin/python bench/migration.py [rounds]

A 256 MiB TCG guest migrates back and forth: through hvlibvirt (MigrateInstance, then
GetMigrationStatus polled every 50 ms until completed, then both Finalize calls) and
through a plain `virsh migrate --live --p2p` of the same guest, alternating, in the
same run. Wall time is from the call to the guest running on the other side; downtime
is what the destination's completed job reports. Prints medians; asserts nothing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hvlibvirt import connection, constants as C  # noqa: E402
from hvlibvirt.kvm import KVMHypervisor  # noqa: E402

PORT = 8120


def downtime_ms(conn: libvirt.virConnect, name: str) -> float:
    stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return float(stats.get("downtime", float("nan")))


def main(rounds: int) -> None:
    from lab.daemon import standalone_lab
    from lab.guest import build_guest, default_cache_dir
    from lab.instances import READY, start

    image = build_guest(default_cache_dir())
    with standalone_lab("migbench", daemons=2) as (work, (da, db), net):
        sides = {
            "a": (KVMHypervisor(uri=da.uri, migration_uri=db.uri, serial_log_dir=str(work)),
                  net.a.ip, da.uri),
            "b": (KVMHypervisor(uri=db.uri, migration_uri=da.uri, serial_log_dir=str(work)),
                  net.b.ip, db.uri),
        }
        run = start(sides["a"][0], "migbench", image, work, memory=256,
                    migration_bandwidth=0, migration_port=PORT)
        run.serial.wait(READY, 60)
        ours, ours_down, raw, raw_down, phase = [], [], [], [], []
        here = "a"
        for _ in range(rounds):
            there = "b" if here == "a" else "a"
            src, _src_ip, src_uri = sides[here]
            dst, dst_ip, dst_uri = sides[there]
            t0 = time.perf_counter()
            info = src.MigrationInfo(run.inst)
            dst.AcceptInstance(run.inst, info, dst_ip)
            t1 = time.perf_counter()
            src.MigrateInstance("bench", run.inst, dst_ip, True)
            while src.GetMigrationStatus(run.inst).status == C.HV_MIGRATION_ACTIVE:
                time.sleep(0.02)
            phase.append(time.perf_counter() - t1)
            dst.FinalizeMigrationDst(run.inst, info, True)
            src.FinalizeMigrationSource(run.inst, True, True)
            ours.append(time.perf_counter() - t0)
            ours_down.append(downtime_ms(connection.get(dst_uri), run.inst.name))
            here, there = there, here
            # The same guest back with plain virsh, same options.
            src_uri, dst_uri, dst_ip = sides[here][2], sides[there][2], sides[there][1]
            t0 = time.perf_counter()
            subprocess.run(["virsh", "-q", "-c", src_uri, "migrate", "--live", "--p2p",
                            "--unsafe", "--persistent", "--undefinesource", run.inst.name,
                            dst_uri, f"tcp://{dst_ip}:{PORT}"], check=True,
                           capture_output=True)
            raw.append(time.perf_counter() - t0)
            raw_down.append(downtime_ms(connection.get(dst_uri), run.inst.name))
            here = there
        med = statistics.median
        print(f"hvlibvirt migration (256 MiB guest): wall {med(ours) * 1000:.0f} ms for "
              f"Ganeti's whole sequence (MigrationInfo, AcceptInstance, MigrateInstance, "
              f"status polls, both Finalize), {med(phase) * 1000:.0f} ms from "
              f"MigrateInstance to completed; downtime {med(ours_down):.0f} ms "
              f"(medians of {rounds})", flush=True)
        print(f"virsh migrate --live --p2p:          wall {med(raw) * 1000:.0f} ms, "
              f"downtime {med(raw_down):.0f} ms", flush=True)
        print(f"hvlibvirt / virsh: {med(ours) / med(raw):.2f} for the whole sequence, "
              f"{med(phase) / med(raw):.2f} for the migration itself", flush=True)
        hv = sides[here][0]
        hv.StopInstance(run.inst, force=True)
        hv.CleanupInstance(run.inst.name)
        for d in (da, db):
            connection.drop(d.uri)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
