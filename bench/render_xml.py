"""Domain XML render speed for a 4-disk, 2-NIC KVM instance.

Run: .venv/bin/python bench/render_xml.py [seconds]

Prints renders per second (build_domain + to_string) and the mean time per render (every
render builds the tree anew, as noded's fresh child per RPC does); the floors any lxml
render of the same document has (the same elements made by bare lxml calls, a copy of
the finished tree, serialisation alone); and for comparison the cost of
parsing the result and validating it against libvirt's RelaxNG schema
(/usr/share/libvirt/schemas/domain.rng). Prints figures, asserts nothing.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable

from lxml import etree

from hvlibvirt import constants as C
from hvlibvirt import tables
from hvlibvirt.domain_xml import GuestTarget, Listen, StartupOptions, build_domain, to_string
from hvlibvirt.objects import NIC, Disk, Instance

SCHEMA = "/usr/share/libvirt/schemas/domain.rng"


def instance() -> tuple[Instance, list, dict, StartupOptions]:
    hvparams = dict(tables.HVC_DEFAULTS[C.HT_KVM], kernel_path="", vnc_bind_address="192.0.2.10",
                    cpu_mask="0-3", use_guest_agent=True)
    templates = (C.DT_PLAIN, C.DT_DRBD8, C.DT_FILE, C.DT_RBD)
    disks = [Disk(uuid=f"{i:08x}-1111-4222-8333-444455556666", dev_type=t, size=10240,
                  iv_name=f"disk/{i}", params={}) for i, t in enumerate(templates)]
    nics = [NIC(uuid="aaaaaaa0-bbbb-4ccc-8ddd-eeeeffff0000", mac="aa:00:00:00:00:01",
                nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED, C.NIC_LINK: "br0", C.NIC_VLAN: ".100"}),
            NIC(uuid="aaaaaaa1-bbbb-4ccc-8ddd-eeeeffff0001", mac="aa:00:00:00:00:02",
                nicparams={C.NIC_MODE: C.NIC_MODE_OVS, C.NIC_LINK: "ovsbr0",
                           C.NIC_VLAN: ":10:20"})]
    inst = Instance(name="bench1.example.com", uuid="6a2dc1f0-3d5e-4f38-9c1b-2f1e8d7c6b5a",
                    hvparams=hvparams, beparams={"maxmem": 4096, "minmem": 2048, "vcpus": 4},
                    disks_info=disks, disks=[d.uuid for d in disks], nics=nics,
                    network_port=5901)
    block = [(d, f"/var/run/ganeti/instance-disks/{inst.name}:{i}", None)
             for i, d in enumerate(disks)]
    options = StartupOptions(target=GuestTarget(domain_type="kvm", emulator="/usr/bin/kvm"),
                             startup_memory=4096, vnc_listen=Listen(address="192.0.2.10"),
                             vnc_password="secret")
    return inst, block, hvparams, options


def measure(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """(calls, elapsed seconds) of calling fn repeatedly for about ``seconds``."""
    fn()  # warm up
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        calls += 50
        now = time.perf_counter()
        if now >= deadline:
            return calls, now - start


def replay(template: etree._Element) -> Callable[[], str]:
    """A function that makes the same document with bare lxml calls and no logic at all:
    one SubElement per element with its attributes and text, then to_string. What any
    lxml builder of this document must at least spend."""
    steps = []  # (parent index, tag, attributes, text, nsmap)
    index = {}
    for elem in template.iter():
        if not isinstance(elem.tag, str):
            continue
        parent = elem.getparent()
        text = elem.text  # the builders add no whitespace: None, "" or content
        steps.append((index.get(parent), elem.tag, dict(elem.attrib), text,
                      elem.nsmap if parent is None or elem.nsmap != parent.nsmap else None))
        index[elem] = len(steps) - 1

    def build() -> str:
        made: list[etree._Element] = []
        for parent, tag, attrib, text, nsmap in steps:
            elem = (etree.Element(tag, attrib, nsmap=nsmap) if parent is None
                    else etree.SubElement(made[parent], tag, attrib, nsmap=nsmap))
            if text is not None:
                elem.text = text
            made.append(elem)
        return to_string(made[0])
    return build


def floor(template: etree._Element, seconds: float) -> None:
    """Print the bare-lxml floor of this document next to the render's figure."""
    xml = to_string(template)
    elements = sum(1 for e in template.iter() if isinstance(e.tag, str))
    attributes = sum(len(e.attrib) for e in template.iter() if isinstance(e.tag, str))
    build = replay(template)
    assert build() == xml, "the replay must make the same document"
    calls, elapsed = measure(build, seconds)
    print(f"floor: the same {elements} elements / {attributes} attributes made by bare lxml "
          f"calls + to_string: {calls / elapsed:8.0f}/s, mean {elapsed / calls * 1e6:8.1f} us")
    copy_calls, copy_elapsed = measure(lambda: to_string(copy.deepcopy(template)), seconds / 2)
    print(f"       a copy of the finished tree + to_string (no building at all): "
          f"{copy_calls / copy_elapsed:8.0f}/s, mean {copy_elapsed / copy_calls * 1e6:8.1f} us")
    serialise_calls, serialise_elapsed = measure(lambda: to_string(template), seconds / 3)
    print(f"       to_string alone: {serialise_calls / serialise_elapsed:8.0f}/s, mean "
          f"{serialise_elapsed / serialise_calls * 1e6:8.1f} us")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    inst, block, hvparams, options = instance()

    def render() -> str:
        return to_string(build_domain(inst, block, hvparams, options))

    xml = render()
    print(f"instance: 4 disks, 2 NICs, VNC; document {len(xml)} bytes, "
          f"{xml.count(chr(10))} lines")

    calls, elapsed = measure(render, seconds)
    print(f"render (build_domain + to_string): {calls / elapsed:10.0f} renders/s, "
          f"mean {elapsed / calls * 1e6:8.1f} us/render ({calls} renders in {elapsed:.2f} s)")

    floor(build_domain(inst, block, hvparams, options), seconds)

    t0 = time.perf_counter()
    relaxng = etree.RelaxNG(etree.parse(SCHEMA))
    print(f"RelaxNG schema load (once):         {(time.perf_counter() - t0) * 1e3:8.1f} ms")
    doc = etree.fromstring(xml.encode())
    valid = relaxng.validate(doc)
    parse_calls, parse_elapsed = measure(lambda: etree.fromstring(xml.encode()), seconds / 3)
    print(f"parse (etree.fromstring):           {parse_elapsed / parse_calls * 1e6:8.1f} "
          f"us/document")
    val_calls, val_elapsed = measure(lambda: relaxng.validate(doc), seconds / 3)
    per_validation = val_elapsed / val_calls
    print(f"RelaxNG validation:                 {per_validation * 1e6:8.1f} us/document "
          f"({1 / per_validation:.0f}/s; document valid: {valid})")
    print(f"validation / render cost ratio:     {per_validation / (elapsed / calls):8.1f}x")


if __name__ == "__main__":
    main()
