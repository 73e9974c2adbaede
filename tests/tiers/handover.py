"""The handover tests' lab (tests/lab/handover_run.py): hv_kvm's source on daemon A's
side, hvlibvirt's libvirtd B as the target, Ganeti 3.0's modules fetched once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import handover_run, unavailable
from lab.ganeti_modules import ModulesUnavailable, ganeti_share
from lab.guest import default_cache_dir


@pytest.fixture
def handover_lab(libvirt_daemon_pair: Any, lab_network: Any, guest_image: Any,
                 tmp_path: Path) -> Iterator[dict]:
    """Everything one handover needs; the source QEMU, relays and the domain on B are
    gone afterwards."""
    daemon_a, daemon_b = libvirt_daemon_pair
    try:
        share = ganeti_share("3.0", default_cache_dir())
    except ModulesUnavailable as err:
        unavailable(f"cannot fetch Ganeti 3.0's modules: {err}")
    state = handover_run.new_state(share, tmp_path, guest_image, lab_network, daemon_a,
                                   daemon_b)
    yield state
    handover_run.clean(state)
