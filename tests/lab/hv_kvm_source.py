"""Ganeti's own KVM hypervisor (3.0, or 3.1 on Debian 13: the one GANETI_SHARE holds)
builds a source instance for the handover tests.

Run in a child interpreter with Ganeti's modules first on sys.path (one process cannot
import two Ganetis, and the tests' process must not import any)::

    python hv_kvm_source.py GANETI_SHARE WORKDIR SPEC_JSON [generate]
    python hv_kvm_source.py GANETI_SHARE WORKDIR SPEC_JSON migrate TARGET
    python hv_kvm_source.py GANETI_SHARE WORKDIR SPEC_JSON finalize SUCCESS

``migrate``: hv_kvm's MigrateInstance (live) to TARGET, then its GetMigrationStatus
polled as Ganeti's master does until the migration is over; prints the statuses.
``finalize``: hv_kvm's FinalizeMigrationSource (success: kill the source QEMU).

The way back (an instance returning to hv_kvm), run in the target's namespace::

    python hv_kvm_source.py GANETI_SHARE WORKDIR SPEC_JSON accept TARGET INFO_FILE
    python hv_kvm_source.py GANETI_SHARE WORKDIR SPEC_JSON finalize_dst SUCCESS INFO_FILE

``accept``: hv_kvm's AcceptInstance with the migration info in INFO_FILE (it starts the
incoming QEMU, daemonized, listening on TARGET:migration_port); a tap it opens joins
the NIC's bridge (``ip link``: Ganeti's kvm-ifup script is not installed here) and
QEMU's debug log goes to WORKDIR. ``finalize_dst``: hv_kvm's FinalizeMigrationDst.

SPEC: name, uuid, memory, vcpus, network_port, hvparams (overrides of Ganeti's
defaults), disks [{uuid, path}], nics [{uuid, mac, link, tap}]. Prints JSON:

* ``runtime``: what hv_kvm's MigrationInfo returns (its serialized runtime), made by
  hv_kvm's own ``_GenerateKVMRuntime`` exactly as StartInstance saves it;
* ``argv``: the command line hv_kvm's ``_ExecuteKVMRuntime`` runs for it, made by its
  own block-device code and its NIC rules, except that QEMU opens the tap itself
  (``ifname=``, vnet_hdr as Ganeti's OpenTap sets it) instead of inheriting Ganeti's
  fd, and runs in the foreground (no ``-daemonize``), under the test's control.

Nothing is written outside WORKDIR (hv_kvm's run directories are moved there).
"""

import json
import os
import sys

share, workdir, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, share)

from ganeti import constants, objects, serializer, utils  # noqa: E402
from ganeti.hypervisor import hv_kvm  # noqa: E402
from ganeti.utils import bitarrays  # noqa: E402

_get_free_slot = bitarrays.GetFreeSlot


def _free_slot(slots, slot=None, reserve=False):
    """Ganeti (3.0 and 3.1) indexes what ``bitarray.search`` returns, a list in Debian
    12's bitarray 2.x and an iterator in the 3.x the tests' venv has: hand it a list."""
    class Listed(type(slots)):
        def search(self, *args, **kwargs):
            return list(super().search(*args, **kwargs))
    listed = Listed(slots)
    found = _get_free_slot(listed, slot, reserve)
    slots[:] = listed
    return found


utils.GetFreeSlot = bitarrays.GetFreeSlot = _free_slot

root = os.path.join(workdir, "kvm")


class SourceKVM(hv_kvm.KVMHypervisor):
    _ROOT_DIR = root
    _PIDS_DIR = root + "/pid"
    _UIDS_DIR = root + "/uid"
    _CTRL_DIR = root + "/ctrl"
    _CONF_DIR = root + "/conf"
    _NICS_DIR = root + "/nic"
    _CHROOT_DIR = root + "/chroot"
    _CHROOT_QUARANTINE_DIR = root + "/chroot-quarantine"
    _DIRS = [_ROOT_DIR, _PIDS_DIR, _UIDS_DIR, _CTRL_DIR, _CONF_DIR, _NICS_DIR,
             _CHROOT_DIR, _CHROOT_QUARANTINE_DIR]


class TargetKVM(SourceKVM):
    """hv_kvm on the target of the way back: its own AcceptInstance, but the bridge
    joined without Ganeti's ifup script and QEMU's debug log in WORKDIR."""

    def _ConfigureNIC(self, instance, seq, nic, tap):
        import subprocess
        subprocess.run(["ip", "link", "set", tap, "master",
                        nic.nicparams[constants.NIC_LINK], "up"], check=True)

    def _ExecuteKVMRuntime(self, instance, kvm_runtime, kvmhelp, incoming=None):
        kvm_cmd = kvm_runtime[0]
        if "-D" in kvm_cmd:
            kvm_cmd[kvm_cmd.index("-D") + 1] = os.path.join(workdir, "qemu-back.log")
        return super()._ExecuteKVMRuntime(instance, kvm_runtime, kvmhelp, incoming)


hvparams = dict(constants.HVC_DEFAULTS[constants.HT_KVM])
hvparams.update(spec["hvparams"])
nics = [objects.NIC(uuid=n["uuid"], mac=n["mac"],
                    nicparams={constants.NIC_MODE: constants.NIC_MODE_BRIDGED,
                               constants.NIC_LINK: n["link"], constants.NIC_VLAN: ""})
        for n in spec["nics"]]
disks = [objects.Disk(uuid=d["uuid"], dev_type=constants.DT_FILE, mode=constants.DISK_RDWR,
                      size=d.get("size", 64), params={}, logical_id=("loop", d["path"]))
         for d in spec["disks"]]
instance = objects.Instance(
    name=spec["name"], uuid=spec["uuid"], hypervisor=constants.HT_KVM, hvparams=hvparams,
    beparams={constants.BE_MAXMEM: spec["memory"], constants.BE_MINMEM: spec["memory"],
              constants.BE_VCPUS: spec["vcpus"]},
    network_port=spec.get("network_port"), nics=nics, disks=[], os="lab")
block_devices = [(disk, d["path"], None) for disk, d in zip(disks, spec["disks"])]

hv = SourceKVM()
command = sys.argv[4] if len(sys.argv) > 4 else "generate"
if command == "migrate":
    import time
    hv.MigrateInstance("lab", instance, sys.argv[5], True)
    statuses = []
    while True:
        status = hv.GetMigrationStatus(instance)
        statuses.append([time.time(), status.status, status.transferred_ram,
                         status.total_ram])
        if status.status not in (constants.HV_MIGRATION_ACTIVE,
                                 constants.HV_KVM_MIGRATION_POSTCOPY_ACTIVE):
            break
        time.sleep(0.1)
    print(json.dumps(statuses))
    sys.exit(0)
if command == "finalize":
    hv.FinalizeMigrationSource(instance, sys.argv[5] == "true", True)
    sys.exit(0)
if command in ("accept", "finalize_dst"):
    with open(sys.argv[6]) as info_file:
        info = info_file.read()
    if command == "accept":
        TargetKVM().AcceptInstance(instance, info, sys.argv[5])
        print(json.dumps({"pidfile": hv._InstancePidFile(instance.name),
                          "serial": hv._InstanceSerial(instance.name),
                          "qmp": hv._InstanceQmpMonitor(instance.name)}))
    else:
        TargetKVM().FinalizeMigrationDst(instance, info, sys.argv[5] == "true")
    sys.exit(0)
kvm_path = hvparams[constants.HV_KVM_PATH]
kvmhelp = hv._GetKVMOutput(kvm_path, hv._KVMOPT_HELP)
kvm_cmd, kvm_nics, up_hvp, kvm_disks = hv._GenerateKVMRuntime(instance, block_devices,
                                                              False, kvmhelp)
runtime = serializer.Dump((kvm_cmd, [nic.ToDict() for nic in kvm_nics], up_hvp,
                           [(blk.ToDict(), link, uri) for blk, link, uri in kvm_disks]))
if isinstance(runtime, bytes):
    runtime = runtime.decode()

# _ExecuteKVMRuntime's additions, in its order
argv = [str(arg) for arg in kvm_cmd if arg != "-daemonize"]
devlist = hv._GetKVMOutput(kvm_path, hv._KVMOPT_DEVICELIST)
features, tap_extra, nic_extra = hv._GetNetworkDeviceFeatures(up_hvp, devlist, kvmhelp)
if not kvm_nics:
    argv += ["-net", "none"]
for nic, n in zip(kvm_nics, spec["nics"]):
    vnet_hdr = "on" if features["vnet_hdr"] else "off"
    argv += ["-netdev", f"type=tap,id={nic.hvinfo['id']},ifname={n['tap']},script=no,"
                        f"downscript=no,vnet_hdr={vnet_hdr}{tap_extra}",
             "-device", hv_kvm._GenerateDeviceHVInfoStr(nic.hvinfo)
             + f",netdev={nic.hvinfo['id']},mac={nic.mac}{nic_extra}"]
argv += ["-qmp", f"unix:{hv._InstanceQmpMonitor(instance.name)},server,nowait",
         "-qmp", f"unix:{hv._InstanceKvmdMonitor(instance.name)},server,nowait"]
argv += hv._GenerateKVMBlockDevicesOptions(up_hvp, kvm_disks, kvmhelp, devlist)
print(json.dumps({"runtime": runtime, "argv": argv,
                  "serial": hv._InstanceSerial(instance.name),
                  "qmp": hv._InstanceQmpMonitor(instance.name)}))
