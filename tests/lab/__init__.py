"""Real-libvirt test harness ("the lab") for hvlibvirt's real tier.

What it provides (the pytest fixtures wrapping it live in tests/tiers/):

* ``guest``: ``build_guest(cache_dir) -> GuestImage`` - a Debian cloud kernel (apt-get
  download, never installed) plus a busybox initramfs whose /init reports block
  devices, NICs, memory and disk sizes on the serial console (``HVL-DEV``), announces
  ``HVL-READY`` and powers off on the ACPI power button (``HVL-ACPI-POWEROFF``).
  Cached in $HVLIBVIRT_TEST_CACHE or /var/cache/hvlibvirt-tests.
* ``netns``: ``LabNetwork`` (two network namespaces, a veth pair 10.77.0.1 <-> .2,
  bridge hvlbr0 in each).
* ``daemon``: ``LibvirtDaemon`` (a privileged libvirtd + virtlogd without systemd in
  private mount/UTS namespaces, under a child subreaper), with a teardown that
  verifies nothing is left behind (``find_leftovers``).
* ``mountpoints``: ``HostMountpoints`` (host mount-point directories shared by
  concurrent sessions, removed by the last one) and ``host_mountpoints``.
* ``procs``: /proc helpers (processes in a netns or referencing a path, kill and wait).
* ``errors``: ``LabError`` and ``LabLeakError``.
* ``serial``: ``SerialLog`` - read the console log and wait for patterns / device states.
* ``domain``: ``guest_domain_xml`` - minimal direct-kernel-boot domain XML (TCG).
* ``subreaper``: the PR_SET_CHILD_SUBREAPER launcher the daemons run under.
* ``noded``: hypervisor calls each in its own child forked from a clean parent, as
  Ganeti's node daemon makes them (the concurrency tests).
* ``cluster``, ``cluster_node``, ``cluster_holder``: tier 5, a two-node Ganeti 3.0
  cluster (nodes in namespaces with overlayfs over /etc, /usr, /var, /root and /srv,
  sshd and libvirtd each, hvlibvirt installed from its .deb), ``standalone_cluster``
  for benchmarks; ``host_state``: what its leak check compares on the host, and the
  machine-wide lock that keeps one cluster lab at a time.
* ``upgrade``, ``trixie_node``, ``hv_call``: the upgrade tier, a node on this Debian 12
  host and one in the trixie root (Debian 13), each hypervisor call a process of its own
  run by that node's Python and hvlibvirt; ``upgrade_cluster``: the same two releases as
  the nodes of one Ganeti 3.1 cluster (gntb's overlays over the trixie root's files).
* ``gnt_steps``: the operator's gnt-* steps the cluster tiers share.
* ``handover_run``, ``hv_kvm_source``: a live handover from Ganeti's hv_kvm as the
  handover tests and bench/handover.py run it; ``identity``: the probe that compares
  what two guests read of their machines.

The guest must run on ``type='qemu'`` (TCG) on the development machine: its /dev/kvm
is kvm_pvm, which cannot run an unmodified Linux guest kernel.
"""

import os
from typing import NoReturn

import pytest


def real_tier_required() -> bool:
    """True when an unusable real tier must fail the run instead of skipping (CI)."""
    return (os.environ.get("CI", "").lower() == "true"
            or os.environ.get("HVLIBVIRT_REQUIRE_REAL") == "1")


def unavailable(reason: str) -> NoReturn:
    """Skip because this machine cannot run what ``reason`` says; fail instead in CI."""
    if real_tier_required():
        pytest.fail(f"{reason} (required because CI=true or HVLIBVIRT_REQUIRE_REAL=1)",
                    pytrace=False)
    pytest.skip(reason)
