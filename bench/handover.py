"""Live handover figures: hv_kvm -> hvlibvirt against hv_kvm -> hv_kvm, in one run.

Run as root: .venv/bin/python bench/handover.py [rounds] [sizes in MiB, e.g. 128,512]

For each guest size the rounds alternate two moves of a fresh QEMU that Ganeti 3.0's
own hv_kvm built and started (tests/lab/handover_run.py), between the harness's two
namespaces: the handover (hv_kvm's MigrateInstance into hvlibvirt's AcceptInstance,
libvirt restoring from the relayed stream, then both Finalize calls) and hv_kvm's own
migration (a second QEMU with ``-incoming``, as hv_kvm's AcceptInstance starts it).
Total is MigrateInstance to the status poll that reports the end (what Ganeti waits
for); downtime is the source QEMU's STOP to the target QEMU's RESUME, QEMU's own
timestamps on one host clock. A round counts only when the guest counts on, same boot,
on the other side. Prints medians and the ratios issue 22 sets targets for (total
<= 1.1x, downtime <= 2x hv_kvm's own); asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MOVES = ("handover", "hv_kvm")


def one_round(move: str, state: dict) -> dict:
    """Boot hv_kvm's guest, start its counter, move it; the figures."""
    from lab import handover_run as run
    from lab.serial import SerialLog

    made, _proc, serial = run.start_source(state)
    boot_id = run.start_ticker(serial)
    if move == "hv_kvm":
        return run.to_hv_kvm(state, made, serial)
    _inst, _info, figures = run.hand_over(state, made)
    console = SerialLog(state["log_dir"] / f"{state['spec']['name']}.serial")
    match = run.ticks_on(console, run.TICK.pattern, "after the handover")
    if match.group(2) != boot_id:
        raise AssertionError("the guest rebooted in the handover")
    run.ticks_on(console, rf"TICK {int(match.group(1)) + 25} {boot_id}", "after the handover")
    return figures


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(rounds: int, sizes: list[int]) -> None:
    from lab import handover_run as run
    from lab.daemon import standalone_lab
    from lab.ganeti_modules import ganeti_share
    from lab.guest import build_guest, default_cache_dir

    image = build_guest(default_cache_dir())
    share = ganeti_share("3.0", default_cache_dir())
    results: dict[tuple[int, str], list[dict]] = {}
    failures: list[str] = []
    with standalone_lab("hobench", daemons=2) as (work, (da, db), net):
        for size in sizes:
            for index in range(rounds):
                for move in (MOVES if index % 2 == 0 else MOVES[::-1]):
                    where = work / f"{size}-{index}-{move}"
                    where.mkdir()
                    state = run.new_state(share, where, image, net, da, db, memory=size)
                    t0 = time.monotonic()
                    try:
                        figures = one_round(move, state)
                        results.setdefault((size, move), []).append(figures)
                        print(f"{size} MiB {move:8} round {index + 1}: {figures} "
                              f"({time.monotonic() - t0:.0f}s with the boot)", flush=True)
                    except AssertionError as err:  # a TCG guest fault: counted, not hidden
                        failures.append(f"{size} MiB {move} round {index + 1}: "
                                        f"{str(err).splitlines()[0][:200]}")
                        print("FAILED", failures[-1], flush=True)
                    finally:
                        run.clean(state)

    print(f"\nmedians over {rounds} rounds per move and size (1 vCPU, TCG):")
    print(f"{'size':>8} {'move':>9} {'total s':>8} {'down ms':>8} {'polls':>6}")
    for size in sizes:
        medians = {}
        for move in MOVES:
            done = results.get((size, move), [])
            medians[move] = (_median([f["total_s"] for f in done]),
                             _median([f["downtime_ms"] for f in done
                                      if f["downtime_ms"] is not None]))
            print(f"{size:>6}Mi {move:>9} {medians[move][0]:8.2f} {medians[move][1]:8.1f} "
                  f"{_median([f['status_polls'] for f in done]):6.0f}  ({len(done)} ok)")
        (ours_total, ours_down), (theirs_total, theirs_down) = medians["handover"], \
            medians["hv_kvm"]
        print(f"{size:>6}Mi handover/hv_kvm: total {ours_total / theirs_total:.2f}x "
              f"(target <= 1.1x), downtime {ours_down / theirs_down:.2f}x (target <= 2x)")
    for failure in failures:
        print("failed round:", failure)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
         [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "128,512").split(",")])
