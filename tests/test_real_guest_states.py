"""Tier 3: every state a guest or a signal leaves a domain in, followed by what Ganeti
does next (its start, stop, reboot and watcher), as it would with its own KVM.

- the guest powers itself off, or QEMU gets SIGTERM: with user_shutdown the instance
  is SHUTDOWN (Ganeti's USER_down), else not running (ERROR_down);
- QEMU gets SIGKILL: not running (libvirt says crashed; ERROR_down).

Afterwards a reboot is refused as for any stopped instance; Ganeti's start (after its
shutdown loop for a USER_down instance, as `gnt-instance start` and the watcher do)
boots the guest again, and Ganeti's own stop works on it as ever.

A guest whose kernel panics keeps running as far as QEMU knows (no panic device, as
with Ganeti's KVM), and a QEMU paused after its shutdown event is destroyed by
libvirt at once: neither is a state of its own here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from hvlibvirt.base import HvInstanceState
from hvlibvirt.errors import HypervisorError
from lab.daemon import LibvirtDaemon
from lab.instances import BOOT, READY, Running, Shutdown, ganeti_shutdown

pytestmark = [pytest.mark.tier3, pytest.mark.real]

HOW = ("poweroff", "sigterm", "sigkill")


def _leave(run: Running, how: str, daemon: LibvirtDaemon) -> None:
    """Put the running guest into the state ``how`` names."""
    if how == "poweroff":
        run.console.send("poweroff -f\n")
        return
    pidfile = daemon.workdir / "run" / "qemu" / f"{run.inst.name}.pid"
    os.kill(int(pidfile.read_text().strip()),
            signal.SIGTERM if how == "sigterm" else signal.SIGKILL)


@pytest.mark.parametrize("user_shutdown", [True, False])
@pytest.mark.parametrize("how", HOW)
def test_ganeti_follows_the_guest(boot: Callable[..., Running], libvirt_daemon: LibvirtDaemon,
                                  how: str, user_shutdown: bool) -> None:
    run = boot(f"gst-{how}-{str(user_shutdown).lower()}", attach=how == "poweroff",
               user_shutdown=user_shutdown)
    run.serial.wait(READY, BOOT)
    _leave(run, how, libvirt_daemon)
    run.wait_off(30)
    name = run.inst.name

    user_down = user_shutdown and how != "sigkill"
    info = run.hv.GetInstanceInfo(name)
    listed = [i for i in run.hv.GetAllInstancesInfo() if i[0] == name]
    if user_down:
        assert info == (name, -1, 0, 0, HvInstanceState.SHUTDOWN, 0.0)
        assert listed == [info]
    else:
        assert info is None and listed == []
    assert name not in run.hv.ListInstances()
    with pytest.raises(HypervisorError, match="not running"):
        run.hv.RebootInstance(run.inst)

    # Ganeti's start: a USER_down instance is shut down first, until it no longer
    # reports SHUTDOWN; one press, never the forced fallback.
    if user_down:
        assert ganeti_shutdown(run.hv, run.inst, 120) == Shutdown(presses=1, forced=False)
    assert run.hv.GetInstanceInfo(name) is None
    mark = run.serial.mark()
    run.hv.StartInstance(run.inst, run.block_devices, startup_paused=False)
    run.serial.wait(READY, BOOT, mark)
    assert run.hv.GetInstanceInfo(name)[4] == HvInstanceState.RUNNING

    # The stop marker of that shutdown is gone with the new start: Ganeti's own stop
    # is a soft one, and is not taken for the guest's.
    assert ganeti_shutdown(run.hv, run.inst, 60) == Shutdown(presses=1, forced=False)
    assert run.hv.GetInstanceInfo(name) is None
    run.hv.CleanupInstance(name)
