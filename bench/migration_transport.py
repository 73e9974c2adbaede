"""Live migration through Ganeti by the way the control connection is made, side by side
in one run on tier 5's two-node cluster (tests/lab/cluster.py): Ganeti's own hv_kvm (its
QEMU started by AcceptInstance, QMP ``migrate`` to a TCP port, no connection to open),
hvlibvirt over libvirt's default ``qemu+ssh://{target}/system``, and hvlibvirt over
``qemu+tls://{target}/system`` (each node's libvirtd also listening for TLS, with a lab
CA's certificates: tests/lab/libvirt_tls.py). The data moves the same way in all three
(QEMU to QEMU over TCP, unencrypted).

One ``sharedfile`` instance migrates there and back once per ``--bandwidths`` value
(the cluster's hvparam ``migration_bandwidth``, MiB/s), per mode and round; the modes' order alternates
from round to round, and the transport is switched by rewriting
/etc/hvlibvirt/hvlibvirt.conf on both nodes (each RPC's child reads it anew).

Why several bandwidths: Ganeti learns that hv_kvm's migration ended from
GetMigrationStatus, which it asks once a second, so hv_kvm's time is the transfer's
rounded up to the next poll; hvlibvirt's MigrateInstance follows libvirt's job to its
end. With one guest and one bandwidth every transfer ends at the same point of that
second, which favours one side by up to a second; transfers of other lengths spread it.
Prints, per mode, the median (min-max) per bandwidth and over all, and the ratios to
hv_kvm's: per bandwidth, and their mean.

    .venv/bin/python bench/migration_transport.py [--rounds 2] [--bandwidths 32,40,48,56]
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

from lab.cluster import HVLIBVIRT_CONF, Cluster, hvlibvirt_conf, standalone_cluster  # noqa: E402
from lab.gnt_steps import NO_VHOST, QUIET_GUEST  # noqa: E402

log = logging.getLogger("bench.migration_transport")

INSTANCE = "mig1.gnt.test"
URIS = {"hvlibvirt ssh": "qemu+ssh://{target}/system",
        "hvlibvirt tls": "qemu+tls://{target}/system"}
MODES = ("hv_kvm", *URIS)


def configure(cluster: Cluster, mode: str) -> None:
    """Ganeti's hv_kvm, or hvlibvirt with the mode's migration URI, on both nodes."""
    for node in cluster.nodes.values():
        cluster.hvlibvirt_ganeti(node, "disable" if mode == "hv_kvm" else "enable")
        if mode in URIS:
            node.write(HVLIBVIRT_CONF, hvlibvirt_conf(URIS[mode]))


Times = dict[tuple[str, int], list[float]]  # (mode, bandwidth) -> seconds


def migrations(cluster: Cluster, mode: str, bandwidths: list[int], times: Times) -> None:
    """Start the instance on gnta, migrate it there and back at each bandwidth, stop it."""
    cluster.gnt("gnt-instance", "start", INSTANCE)
    prompt = lambda: cluster.console("gnta", INSTANCE, "true", "", timeout=180)  # noqa: E731
    prompt()
    for bandwidth in bandwidths:
        # a cluster-wide hvparam in Ganeti (not one an instance may override)
        cluster.gnt("gnt-cluster", "modify", "-H", f"kvm:migration_bandwidth={bandwidth}")
        for _direction in ("there", "back"):
            t0 = time.monotonic()
            cluster.gnt("gnt-instance", "migrate", "-f", INSTANCE)
            times[mode, bandwidth].append(time.monotonic() - t0)
            log.info("%-14s %3d MiB/s migrate %6.2f s", mode, bandwidth,
                     times[mode, bandwidth][-1])
            prompt()  # the guest answers where it now runs
    cluster.gnt("gnt-instance", "shutdown", INSTANCE)


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(times: Times, rounds: int, bandwidths: list[int]) -> str:
    lines = [f"live migration through Ganeti, {rounds} rounds, 2 migrations per mode, round "
             "and bandwidth: median s (min-max); ratio to hv_kvm's median", "",
             "| mode | " + " | ".join(f"{b} MiB/s" for b in bandwidths)
             + " | all | mean of the ratios |", "|---" * (len(bandwidths) + 3) + "|"]
    for mode in MODES:
        ratios = [statistics.median(times[mode, b]) / statistics.median(times["hv_kvm", b])
                  for b in bandwidths]
        cells = [f"{_cell(times[mode, b])}, {r:.2f}" for b, r in zip(bandwidths, ratios)]
        every = [v for b in bandwidths for v in times[mode, b]]
        lines.append(f"| {mode} | " + " | ".join(cells)
                     + f" | {_cell(every)} | {statistics.mean(ratios):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bandwidths", default="32,40,48,56",
                        help="migration_bandwidth values (MiB/s), comma-separated")
    args = parser.parse_args()
    bandwidths = [int(b) for b in args.bandwidths.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t_all = time.monotonic()
    times: Times = defaultdict(list)
    with standalone_cluster(libvirt_tls=True) as cluster:
        cluster.gnt("gnt-instance", "add", "-t", "sharedfile", "-o", "noop", "--disk",
                    "0:size=64M", "-B", "maxmem=128M,minmem=64M", "-H",
                    cluster.hvparams(**QUIET_GUEST, **NO_VHOST), "-n",
                    "gnta.gnt.test", "--no-name-check", "--no-ip-check", "--no-start",
                    INSTANCE)
        for index in range(args.rounds):
            for mode in MODES if index % 2 == 0 else tuple(reversed(MODES)):
                configure(cluster, mode)
                migrations(cluster, mode, bandwidths, times)
        configure(cluster, "hvlibvirt ssh")
        cluster.gnt("gnt-instance", "remove", "-f", INSTANCE)
    print(report(times, args.rounds, bandwidths))
    print(f"\nwhole run {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
