"""``hvlibvirt demo``: a KVM, a Xen PVM and a Xen HVM instance's lifecycle on one
libvirt URI (libvirt's embedded test driver by default), printing each step and the
domain XML, as Ganeti's node daemon would call the hypervisors."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from hvlibvirt import constants
from hvlibvirt import tables
from hvlibvirt.errors import HypervisorError
from hvlibvirt.hypervisors import get_hypervisor_class
from hvlibvirt.objects import NIC, Disk, Instance


def _say(step: str, detail: object = "") -> None:
    print(f"==> {step}" + (f": {detail}" if detail != "" else ""), flush=True)


def _demo_files(workdir: Path) -> dict[str, str]:
    """Files the hvparams name (the test driver never reads them; on a real node they
    are the instance's kernel, Xen's hvmloader and device model, the VNC password)."""
    files = {}
    for key, content in (("vmlinuz", ""), ("hvmloader", ""), ("vnc-cluster-password",
                                                              "demo-pw\n")):
        (workdir / key).write_text(content)
        files[key] = str(workdir / key)
    return files


def _demo_instance(hv_name: str, files: dict[str, str], number: int
                   ) -> tuple[Instance, list[tuple[Disk, str, None]]]:
    hvparams = dict(tables.HVC_DEFAULTS[hv_name])
    if hv_name == constants.HT_XEN_HVM:
        hvparams.update({constants.HV_KERNEL_PATH: files["hvmloader"],
                         constants.HV_DEVICE_MODEL: sys.executable,
                         constants.HV_VNC_PASSWORD_FILE: files["vnc-cluster-password"]})
    else:
        hvparams.update({constants.HV_KERNEL_PATH: files["vmlinuz"],
                         constants.HV_KERNEL_ARGS: "ro quiet"})
    disks = [Disk(uuid=f"932df160-7a22-4067-a566-7e0ca838613{number}", size=1024,
                  iv_name="disk/0")]
    nics = [NIC(uuid=f"003fc157-66a8-4e6d-8b7e-4a6d1ecdd4b{number}",
                mac=f"aa:00:00:35:d0:7{number}",
                nicparams={constants.NIC_MODE: constants.NIC_MODE_BRIDGED,
                           constants.NIC_LINK: "br0"})]
    instance = Instance(name=f"demo{number}.example.com",
                        uuid=f"6a2dc1f0-3d5e-4f38-9c1b-2f1e8d7c6b5{number}",
                        hypervisor=hv_name, hvparams=hvparams, network_port=11000 + number,
                        beparams={"maxmem": 512, "minmem": 256, "vcpus": 2},
                        disks=[d.uuid for d in disks], disks_info=disks, nics=nics)
    block_devices = [(d, f"/var/run/ganeti/instance-disks/{instance.name}:{i}", None)
                     for i, d in enumerate(disks)]
    return instance, block_devices


def run(uri: str) -> int:
    """Start, inspect, balloon, stop and clean up one instance of each hypervisor
    (KVM, Xen PVM, Xen HVM) on ``uri``."""
    with tempfile.TemporaryDirectory(prefix="hvlibvirt-demo-") as tmp:
        files = _demo_files(Path(tmp))
        for number, hv_name in enumerate((constants.HT_KVM, constants.HT_XEN_PVM,
                                          constants.HT_XEN_HVM), start=1):
            _demo_one(uri, hv_name, *_demo_instance(hv_name, files, number))
    return 0


def _demo_one(uri: str, hv_name: str, instance: Instance,
              block_devices: list[tuple[Disk, str, None]]) -> None:
    hv_class = get_hypervisor_class(hv_name)
    hv = hv_class(uri=uri)
    _say(f"[{hv_name}] hypervisor", f"{hv_class.__name__} on {hv.uri} (constructing it "
                                    "opened no connection)")
    hv_class.CheckParameterSyntax(instance.hvparams)
    _say("CheckParameterSyntax", f"{len(instance.hvparams)} {hv_name} hvparams accepted")
    try:
        hv_class.CheckParameterSyntax(dict(instance.hvparams, migration_port=70000))
    except HypervisorError as err:
        _say("CheckParameterSyntax refuses migration_port=70000", err)
    _say("GetNodeInfo", json.dumps(hv.GetNodeInfo()))
    hv.StartInstance(instance, block_devices, startup_paused=False)
    _say("StartInstance", instance.name)
    _say("domain XML as libvirt holds it")
    print(hv.domain_xml(instance.name), flush=True)
    _say("ListInstances", hv.ListInstances())
    _say("GetInstanceInfo (name, id, memory MiB, vcpus, state, cpu s)",
         hv.GetInstanceInfo(instance.name))
    hv.BalloonInstanceMemory(instance, 384)
    _say("BalloonInstanceMemory(384)", hv.GetInstanceInfo(instance.name))
    hv.StopInstance(instance, timeout=30)
    _say("StopInstance", f"running afterwards: {hv.GetInstanceInfo(instance.name)}")
    hv.CleanupInstance(instance.name)
    _say("CleanupInstance", f"instances left: {hv.ListInstances()}")
