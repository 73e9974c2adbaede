"""The lab Ganeti cluster across the Debian 12 -> 13 upgrade (issue 21; its tests are
tests/test_ganeti_cluster_upgrade.py): one Ganeti 3.1 cluster, a node of each release,
both serving ``kvm`` from hvlibvirt's .deb.

* gnta (the master) is this host's Debian 12: QEMU 7.2, libvirt 9.0, Python 3.11, with
  Ganeti 3.1 from bookworm-backports installed into the node's own overlay, as an
  operator would (``apt-get install -t bookworm-backports ganeti``). The four packages
  are downloaded once into the test cache. Their postinst points /etc/ganeti/lib and
  /etc/ganeti/share at 3.1, since the node is in no cluster yet.
* gntb is the trixie root's Debian 13 (QEMU 10.0, libvirt 11.3, Python 3.13, Ganeti
  3.1): a tests/lab/cluster_node.py node whose overlays lie over the root's /etc, /usr,
  /var, /root and /srv instead of the host's (``ClusterNode.lower``). The root is only
  read: every write lands in the node's upper layers, which the leak check verifies.

A cluster's nodes are to run one Ganeti version, so both packages must carry the same
upstream version (``version_problem``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .cluster import Cluster, ClusterError, _link_or_copy
from .host_state import host_snapshot, snapshot_changes
from .cluster_node import ClusterNode
from .ganeti_modules import _private_apt

BACKPORTS = "bookworm-backports"
PACKAGES = ("ganeti", "ganeti-3.1", "ganeti-haskell-3.1", "ganeti-htools-3.1")
GANETI_SHARE = "/usr/share/ganeti/3.1"
# What the Debian 13 node runs from the root (its tools, the Ganeti it is to serve).
ROOT_NEEDS = ("usr/sbin/gnt-cluster", "usr/sbin/sshd", "usr/sbin/libvirtd", "usr/sbin/virtlogd",
              "usr/bin/socat", "usr/bin/qemu-system-x86_64", "usr/bin/virsh", "usr/sbin/policy-rc.d",
              f"{GANETI_SHARE.lstrip('/')}/ganeti/hypervisor/__init__.py")
# Paths in the root that node gntb would change if its overlays leaked (its dpkg
# database, the divert of Ganeti's hypervisor map, Ganeti's and ssh's state).
ROOT_WATCHED = ("/etc/ganeti", "/etc/hvlibvirt", "/etc/ssh", "/etc/hosts", "/etc/passwd", "/etc/group",
                "/etc/libvirt", "/var/lib/ganeti", "/var/log/ganeti", "/var/lib/libvirt", "/root/.ssh",
                "/var/lib/dpkg/status", "/var/lib/dpkg/diversions", f"{GANETI_SHARE}/ganeti/hypervisor",
                "/usr/lib/python3/dist-packages/hvlibvirt", "/usr/bin/hvlibvirt", "/var/log/hvlibvirt")
# Debian's convention: maintainer scripts must not start Ganeti's daemons in the node.
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def root_problems(root: Path) -> list[str]:
    """Why ``root`` cannot be the Debian 13 node ([] if it can)."""
    missing = [p for p in ROOT_NEEDS if not (root / p).exists()]
    if missing:
        return [f"the trixie root {root} lacks {', '.join(missing)} (bash scripts/test.sh --tier 7 "
                "makes it, with Ganeti 3.1)"]
    return []


def backports_debs(cache: Path) -> list[Path]:
    """Ganeti 3.1's packages from bookworm-backports (``PACKAGES``), downloaded once into
    ``cache``; ClusterError when they cannot be fetched."""
    where = cache / f"ganeti-3.1-{BACKPORTS}"
    debs = _debs(where)
    if debs:
        return debs
    # Fetched beside and renamed into place: a half-done download is never taken for the cache.
    partial = where.with_name(where.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        env = _private_apt("3.1", cache)
        subprocess.run(["apt-get", "download", *(f"{p}/{BACKPORTS}" for p in PACKAGES)], cwd=partial,
                       env=env, check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise ClusterError(f"cannot download {', '.join(PACKAGES)} from {BACKPORTS}: {err} "
                           f"{detail.decode(errors='replace')[-500:]}") from None
    shutil.rmtree(where, ignore_errors=True)
    partial.rename(where)
    debs = _debs(where)
    if not debs:
        raise ClusterError(f"{where} lacks one of {', '.join(PACKAGES)} after the download")
    return debs


def _debs(where: Path) -> list[Path] | None:
    """One .deb of each package in ``where``, or None."""
    found = [sorted(where.glob(f"{package}_*.deb")) for package in PACKAGES]
    return [debs[-1] for debs in found] if all(found) else None


def upstream_version(version: str) -> str:
    """A Debian version without its revision: '3.1.0~rc2-3~bpo12+1' -> '3.1.0~rc2'."""
    return version.rsplit("-", 1)[0]


def version_problem(root: Path, debs: list[Path]) -> str | None:
    """Why the two nodes' Ganeti differ (None when both are the same upstream version)."""
    deb = next(d for d in debs if d.name.startswith("ganeti-3.1_"))
    backports = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                               check=True, timeout=30).stdout.strip()
    trixie = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}",
                             "ganeti-3.1"], capture_output=True, text=True, check=False, timeout=30)
    if trixie.returncode != 0 or not trixie.stdout.strip():
        return f"ganeti-3.1 is not installed in the trixie root {root}"
    if upstream_version(backports) != upstream_version(trixie.stdout.strip()):
        return (f"Ganeti {backports} ({BACKPORTS}) and {trixie.stdout.strip()} (trixie) are "
                "different Ganeti versions, not one cluster's")
    return None


class UpgradeCluster(Cluster):
    """``Cluster`` with gntb on the trixie root and Ganeti 3.1 installed on gnta first."""

    def __init__(self, workdir: Path, *, root: Path, backports: list[Path], **kwargs: object) -> None:
        super().__init__(workdir, **kwargs)  # type: ignore[arg-type]
        self.root = Path(root).resolve()
        self.backports = backports
        self.nodes["gntb"].lower = self.root
        self._root_baseline: dict[str, tuple[int, int, int] | None] = {}

    def _root_paths(self) -> tuple[str, ...]:
        return tuple(f"{self.root}{path}" for path in ROOT_WATCHED)

    def up(self) -> None:
        self._root_baseline = host_snapshot(self._root_paths())
        super().up()

    def _prepare(self, node: ClusterNode) -> None:
        super()._prepare(node)
        node.seed("/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)

    def install_hvlibvirt(self, node: ClusterNode) -> None:
        if node.lower == Path("/"):  # Debian 12: Ganeti 3.1 first, which hvlibvirt then serves
            self.install_ganeti31(node)
        super().install_hvlibvirt(node)

    def install_ganeti31(self, node: ClusterNode) -> None:
        """bookworm-backports' Ganeti 3.1 in ``node`` (apt-get over the cached .debs: it
        checks their dependencies, which this host has)."""
        inside = [f"/tmp/{deb.name}" for deb in self.backports]
        for deb, path in zip(self.backports, inside):
            _link_or_copy(deb, node.host_path(path))
        node.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *inside], timeout=600)
        for link in ("lib", "share"):
            target = node.run(["readlink", f"/etc/ganeti/{link}"]).stdout.strip()
            if target != f"/usr/{link}/ganeti/3.1":
                raise ClusterError(f"{node.name}: /etc/ganeti/{link} leads to {target!r} after "
                                   "installing Ganeti 3.1")

    def leftovers(self) -> list[str]:
        return super().leftovers() + snapshot_changes(
            self._root_baseline, host_snapshot(self._root_paths()), "trixie root file")
