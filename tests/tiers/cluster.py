"""Tier 5: a two-node Ganeti cluster (tests/lab/cluster.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from lab import unavailable
from lab.guest import GuestImage

if TYPE_CHECKING:
    from lab.cluster import Cluster

log = logging.getLogger("hvlibvirt.tests.lab")


@pytest.fixture(scope="session")
def ganeti_cluster(real_tier: None, guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Cluster:
    """A two-node Ganeti 3.0 cluster whose ``kvm`` is served by hvlibvirt, installed from
    the project's .deb (tests/lab/cluster.py; built with scripts/build-deb.sh when dist/
    has none newer than the sources, or $HVLIBVIRT_DEB).

    Skips outside CI when the machine cannot host it (fails with CI=true or
    HVLIBVIRT_REQUIRE_REAL=1). The finalizer tears it down and errors if anything is
    left behind.
    """
    from lab.cluster import ClusterError, cluster_prerequisites, ensure_deb

    problems = cluster_prerequisites()
    if problems:
        unavailable("Ganeti cluster tier unavailable: " + "; ".join(problems))
    try:
        deb = ensure_deb()
    except ClusterError as err:
        unavailable(f"Ganeti cluster tier unavailable: {err}")
    from lab.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("ganeti"), guest=guest_image, deb=deb)
    request.addfinalizer(cluster.teardown)  # before up(): a half-built cluster is torn down too
    cluster.up()
    log.info("Ganeti cluster up with %s: %s", deb.name, cluster.timings.phases)
    return cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a lab cluster reports what its nodes' libvirtd logged last
    (CI keeps only the output: a failed migration's cause is there, not in Ganeti's)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    from lab.cluster import Cluster

    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Cluster):
            text = "\n".join(f"{name}: {line}" for name, node in value.nodes.items()
                             for line in node.libvirtd_trouble())
            report.sections.append(("libvirtd errors and warnings on the nodes", text or "(none)"))
