"""Live migration through Ganeti by the way the control connection is made, side by side
in one run on tier 5's two-node cluster (tests/lab/cluster.py): Ganeti's own hv_kvm (its
QEMU started by AcceptInstance, QMP ``migrate`` to a TCP port, no connection to open),
hvlibvirt over libvirt's default ``qemu+ssh://{target}/system``, and hvlibvirt over
``qemu+tls://{target}/system`` (each node's libvirtd also listening for TLS, with a lab
CA's certificates: tests/lab/libvirt_tls.py). The data moves the same way in all three
(QEMU to QEMU over TCP, unencrypted).

One ``sharedfile`` instance migrates there and back ``--pairs`` times per mode and round;
the modes' order alternates from round to round, and the transport is switched by
rewriting /etc/hvlibvirt/hvlibvirt.conf on both nodes (each RPC's child reads it anew).
Prints medians (min-max) and the ratios against hv_kvm.

    .venv/bin/python bench/migration_transport.py [--rounds 3] [--pairs 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lab.cluster import SERIAL_LOG_DIR, Cluster, standalone_cluster  # noqa: E402
from lab.gnt_steps import NO_VHOST  # noqa: E402

log = logging.getLogger("bench.migration_transport")

INSTANCE = "mig1.gnt.test"
KERNEL_ARGS = "quiet panic=-1 hvlpoll=0"  # as bench/ganeti_cluster.py, for the same reason
URIS = {"hvlibvirt ssh": "qemu+ssh://{target}/system",
        "hvlibvirt tls": "qemu+tls://{target}/system"}
MODES = ("hv_kvm", *URIS)


def configure(cluster: Cluster, mode: str) -> None:
    """Ganeti's hv_kvm, or hvlibvirt with the mode's migration URI, on both nodes."""
    for node in cluster.nodes.values():
        cluster.hvlibvirt_ganeti(node, "disable" if mode == "hv_kvm" else "enable")
        if mode in URIS:
            node.write("/etc/hvlibvirt/hvlibvirt.conf",
                       f"[kvm]\nuri = qemu:///system\nmigration_uri = {URIS[mode]}\n"
                       f"serial_log_dir = {SERIAL_LOG_DIR}\n")


def migrations(cluster: Cluster, mode: str, pairs: int,
               times: dict[str, list[float]]) -> None:
    """Start the instance on gnta, migrate it there and back ``pairs`` times, stop it."""
    cluster.gnt("gnt-instance", "start", INSTANCE)
    prompt = lambda: cluster.console("gnta", INSTANCE, "true", "", timeout=180)  # noqa: E731
    prompt()
    for _ in range(pairs):
        for _direction in ("there", "back"):
            t0 = time.monotonic()
            cluster.gnt("gnt-instance", "migrate", "-f", INSTANCE)
            times[mode].append(time.monotonic() - t0)
            log.info("%-14s migrate %6.2f s", mode, times[mode][-1])
            prompt()  # the guest answers where it now runs
    cluster.gnt("gnt-instance", "shutdown", INSTANCE)


def report(times: dict[str, list[float]], rounds: int, pairs: int) -> str:
    kvm = statistics.median(times["hv_kvm"])
    lines = [f"live migration through Ganeti, {rounds} rounds x {2 * pairs} migrations per "
             "mode: median s (min-max), ratio to hv_kvm's median", "",
             "| mode | seconds | / hv_kvm |", "|---|---|---|"]
    for mode in MODES:
        values = times[mode]
        median = statistics.median(values)
        lines.append(f"| {mode} | {median:.2f} ({min(values):.2f}-{max(values):.2f}) | "
                     f"{median / kvm:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t_all = time.monotonic()
    times: dict[str, list[float]] = defaultdict(list)
    with standalone_cluster(libvirt_tls=True) as cluster:
        cluster.gnt("gnt-instance", "add", "-t", "sharedfile", "-o", "noop", "--disk",
                    "0:size=64M", "-B", "maxmem=128M,minmem=64M", "-H",
                    cluster.hvparams(kernel_args=KERNEL_ARGS, **NO_VHOST), "-n",
                    "gnta.gnt.test", "--no-name-check", "--no-ip-check", "--no-start",
                    INSTANCE)
        for index in range(args.rounds):
            for mode in MODES if index % 2 == 0 else tuple(reversed(MODES)):
                configure(cluster, mode)
                migrations(cluster, mode, args.pairs, times)
        configure(cluster, "hvlibvirt ssh")
        cluster.gnt("gnt-instance", "remove", "-f", INSTANCE)
    print(report(times, args.rounds, args.pairs))
    print(f"\nwhole run {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
