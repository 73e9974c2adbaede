"""Small helpers to render domain XML for tests (not the golden cases)."""

from __future__ import annotations

import pwd
from typing import Any

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import Listen, StartupOptions, build_domain, to_string
from hvlibvirt.kvm_node import choose_target
from hvlibvirt.objects import NIC, Disk, Instance

INSTANCE_UUID = "6a2dc1f0-3d5e-4f38-9c1b-2f1e8d7c6b5a"


def disk(i: int = 0, **fields: Any) -> Disk:
    return Disk(uuid=f"{i:08x}-1111-2222-3333-444455556666", **fields)


def nic(i: int = 0, mode: str = C.NIC_MODE_BRIDGED, link: str = "br0", **fields: Any) -> NIC:
    fields.setdefault("mac", f"aa:00:00:00:00:{i:02x}")
    return NIC(uuid=f"{i:08x}-aaaa-bbbb-cccc-ddddeeeeffff",
               nicparams={C.NIC_MODE: mode, C.NIC_LINK: link}, **fields)


def instance(hv: dict[str, Any] | None = None, n_disks: int = 2, n_nics: int = 2,
             **fields: Any) -> tuple[Instance, list]:
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], **(hv or {}))
    disks = [disk(i, dev_type=C.DT_PLAIN) for i in range(n_disks)]
    fields.setdefault("nics", [nic(i) for i in range(n_nics)])
    fields.setdefault("beparams", {"maxmem": 256, "minmem": 128, "vcpus": 2})
    fields.setdefault("network_port", 5901)
    inst = Instance(name="inst1.example.com", uuid=INSTANCE_UUID, hvparams=hvparams,
                    disks_info=disks, **fields)
    return inst, [(d, f"/var/run/ganeti/instance-disks/{inst.name}:{i}", None)
                  for i, d in enumerate(disks)]


def options(hvparams: dict[str, Any]) -> StartupOptions:
    """What the node would resolve, for IP binds and fixed secrets/labels."""
    vnc, spice = hvparams[C.HV_VNC_BIND_ADDRESS], hvparams[C.HV_KVM_SPICE_BIND]
    return StartupOptions(
        target=choose_target(hvparams, {"x86_64": ["qemu", "kvm"]}), startup_memory=200,
        vnc_listen=(Listen(socket=f"{vnc}/inst1.example.com.vnc") if vnc.startswith("/")
                    else Listen(address=vnc)) if vnc else None,
        spice_listen=Listen(address=spice) if spice else None,
        vnc_password="vnc-secret" if hvparams[C.HV_VNC_PASSWORD_FILE] else None,
        spice_password="spice-secret" if hvparams[C.HV_KVM_SPICE_PASSWORD_FILE] else None,
        security_label=_label(hvparams[C.HV_SECURITY_DOMAIN])
        if hvparams[C.HV_SECURITY_MODEL] == C.HT_SM_USER else None)


def _label(user: str) -> str:
    entry = pwd.getpwnam(user) if user else None
    return f"+{entry.pw_uid}:+{entry.pw_gid}" if entry else "+0:+0"


def render(inst: Instance, block: list) -> str:
    return to_string(build_domain(inst, block, inst.hvparams, options(inst.hvparams)))


def without_metadata(xml: str) -> str:
    root = etree.fromstring(xml.encode())
    for meta in root.findall("metadata"):
        root.remove(meta)
    return etree.tostring(root, encoding="unicode")
