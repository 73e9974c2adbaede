"""The Debian 12 -> 13 upgrade sequence through Ganeti 3.1, hvlibvirt and hv_kvm side by side.

Run as root: .venv/bin/python bench/upgrade_cluster.py

The mixed-release cluster of tests/test_ganeti_cluster_upgrade.py (gnta: this host's
Debian 12 with Ganeti 3.1 from bookworm-backports; gntb: the trixie root's Debian 13),
once with hvlibvirt serving ``kvm`` on both nodes and once with Ganeti 3.1's own hv_kvm,
goes through the operator's sequence: an instance started on 12, migrated live to 13,
a disk and a NIC hot-added there, migrated back, failed over to 13 (a restart), migrated
to 12, failed over to 12. Each step's outcome (ok, or failed with the error line
Ganeti printed), whether the guest kept its boot, and its wall time are printed in one
table; nothing is asserted (the test module asserts hvlibvirt's side). Needs the trixie
root of tier 7 (bash scripts/trixie-root.sh create).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab.cluster_node import ClusterError  # noqa: E402 (after the path above)
from lab.gnt_steps import NO_VHOST, QUIET_GUEST, guest  # noqa: E402

NAME = "upgb1"
A, B = "gnta.gnt.test", "gntb.gnt.test"


def boot_id(cluster, timeout: float = 120.0) -> str | None:
    """The guest's boot id from its console, None when it does not answer."""
    try:
        return guest(cluster, NAME, timeout=timeout).boot_id
    except ClusterError:
        return None


def error_line(out: str) -> str:
    """The line of Ganeti's output that says why (its last 'Failure'/'Error' line)."""
    lines = [line.strip() for line in out.splitlines()
             if re.search(r"[Ff]ailure|[Ee]rror|[Cc]ould not", line)]
    return (lines[-1] if lines else out.strip().splitlines()[-1] if out.strip() else "")[:300]


def sequence(cluster) -> list[tuple[str, str, str, float]]:
    """The operator's steps; per step: what, outcome, boot (same/new/-), seconds."""
    fqdn = cluster.fqdn(NAME)
    steps = [
        ("start on 12", ["gnt-instance", "add", "-t", "sharedfile", "-o", "noop", "--disk",
                         "0:size=64M", "-B", "memory=128M",
                         "-H", cluster.hvparams(**{**QUIET_GUEST, **NO_VHOST}), "-n", A,
                         "--no-name-check", "--no-ip-check", fqdn]),
        ("migrate 12 -> 13", ["gnt-instance", "migrate", "-f", "-n", B, fqdn]),
        ("hot-add disk on 13", ["gnt-instance", "modify", "--disk", "add:size=16M", fqdn]),
        ("hot-add NIC on 13", ["gnt-instance", "modify", "--net", "add", fqdn]),
        ("migrate 13 -> 12", ["gnt-instance", "migrate", "-f", "-n", A, fqdn]),
        ("failover 12 -> 13", ["gnt-instance", "failover", "-f", "--shutdown-timeout=30",
                               "-n", B, fqdn]),
        ("migrate 13 -> 12", ["gnt-instance", "migrate", "-f", "-n", A, fqdn]),
        ("failover 13 -> 12", ["gnt-instance", "failover", "-f", "--shutdown-timeout=30",
                               "-n", A, fqdn]),
    ]
    rows = []
    booted = None
    for what, argv in steps:
        t0 = time.monotonic()
        done = cluster.gnt(*argv, check=False, timeout=600)
        seconds = time.monotonic() - t0
        now = boot_id(cluster)
        boot = "-" if booted is None or now is None else "same" if now == booted else "new"
        outcome = "ok" if done.returncode == 0 else "FAILED: " + error_line(done.stdout + done.stderr)
        if now is None:
            outcome += " (the guest does not answer)"
        rows.append((what, outcome, boot, seconds))
        print(f"  {what:20} {seconds:6.1f}s boot {boot:4} {outcome}", flush=True)
        booted = now or booted
    cluster.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", fqdn, check=False)
    return rows


def make(work: Path, hvlibvirt: bool, **kwargs):
    """The mixed-release cluster; with hv_kvm, Ganeti 3.1 goes onto gnta just before
    ``gnt-cluster init`` (with hvlibvirt, its install step puts it there first)."""
    from lab.upgrade_cluster import UpgradeCluster

    class WithHvKvm(UpgradeCluster):
        def _init(self) -> None:
            self.install_ganeti31(self.nodes["gnta"])
            super()._init()

    return (UpgradeCluster if hvlibvirt else WithHvKvm)(work, hvlibvirt=hvlibvirt, **kwargs)


def main() -> None:
    from lab.cluster import ensure_deb
    from lab.guest import build_guest, default_cache_dir
    from lab.upgrade import trixie_root
    from lab.upgrade_cluster import backports_debs, root_problems, version_problem

    root = trixie_root()
    backports = backports_debs(default_cache_dir())
    problem = "; ".join(root_problems(root)) or version_problem(root, backports)
    if problem:
        sys.exit(f"the mixed-release cluster cannot be made here: {problem}")
    guest, deb = build_guest(default_cache_dir()), ensure_deb()
    table = {}
    for label, hvlibvirt in (("hvlibvirt", True), ("hv_kvm", False)):
        print(f"{label}:", flush=True)
        work = Path(tempfile.mkdtemp(prefix="hvlg-upb-"))
        cluster = make(work, hvlibvirt, root=root, backports=backports, guest=guest,
                       deb=deb if hvlibvirt else None)
        try:
            cluster.up()
            table[label] = sequence(cluster)
        finally:
            cluster.teardown()
            subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    print("\nstep                  hvlibvirt                      hv_kvm")
    for ours, theirs in zip(table["hvlibvirt"], table["hv_kvm"]):
        def cell(row) -> str:
            return f"{'ok' if row[1] == 'ok' else 'FAILED'} {row[3]:5.1f}s boot {row[2]}"
        print(f"{ours[0]:20}  {cell(ours):30} {cell(theirs)}")
    for label, rows in table.items():
        for what, outcome, _, _ in rows:
            if outcome != "ok":
                print(f"{label} {what}: {outcome}")


if __name__ == "__main__":
    main()
