"""Property-based input tests (issue 12): one Ganeti field at a time set to a hostile value.

For kvm, xen-pvm and xen-hvm, every hvparam, every beparam and every Instance, Disk and
NIC field Ganeti passes goes through what Ganeti would call: CheckParameterSyntax,
ValidateParameters (only on what passed the syntax check), StartInstance on libvirt's
test driver, then BalloonInstanceMemory and MigrateInstance with hostile arguments.

Allowed outcomes: success, or a HypervisorError naming the field. After a refusal no
domain and no file is left; on success the XML libvirt stored has the structure the
same value gives with every markup-capable character replaced by a letter.
Hot-add and hot-modify with hostile devices run on a real guest in
tests/test_real_properties.py.
"""

from __future__ import annotations

import os
import sys
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt
import pytest
from hypothesis import event, given, settings
from lxml import etree

import hostile
import hvparam_examples
from hvlibvirt import connection, constants as C, migration, params as P, urls
from hvlibvirt import tables
from hvlibvirt.domain_xml import disks
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.kvm_params import KVM_PARAMS
from hvlibvirt.objects import NIC, Disk, Instance
from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor
from hvlibvirt.xen_params import XEN_HVM_PARAMS, XEN_PVM_PARAMS

pytestmark = pytest.mark.tier2

URI = "test:///default"
NAME = "prop-inst.example.com"
HYPERVISORS = {C.HT_KVM: (KVMHypervisor, KVM_PARAMS),
               C.HT_XEN_PVM: (XenPvmHypervisor, XEN_PVM_PARAMS),
               C.HT_XEN_HVM: (XenHvmHypervisor, XEN_HVM_PARAMS)}
DIRECTORY_PARAMS = {C.HV_MEM_PATH, C.HV_VNC_X509}
FILE_PARAMS = {C.HV_DEVICE_MODEL}
# Generated examples per field, on top of every fixed hostile value (hostile.fixed).
EXAMPLES = settings(hostile.SETTINGS, max_examples=int(os.environ.get("HVL_PROP_EXAMPLES", 25)))


def _uuid(what: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{what}.prop.test"))


@dataclass
class Env:
    root: Path            # node files the hvparams name live under here
    files: hostile.Files

    def realize(self, hvparams: dict[str, Any]) -> dict[str, Any]:
        """Point every absolute path a default or an example names at a file (or
        directory) of the same name under ``root``, so ValidateParameters passes."""
        for key, value in hvparams.items():
            if key == C.HV_KVM_PATH:
                hvparams[key] = sys.executable  # the test driver runs no emulator
            elif (isinstance(value, str) and value.startswith("/") and
                  (key.endswith(("_path", "_file")) or key in DIRECTORY_PARAMS | FILE_PARAMS)):
                local = self.root / value.lstrip("/")
                if key in DIRECTORY_PARAMS:
                    local.mkdir(parents=True, exist_ok=True)
                elif not local.exists():
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text("s3cret\n")
                hvparams[key] = str(local)
        return hvparams

    def context(self, hv_name: str, param: str | None = None) -> dict[str, Any]:
        """Ganeti-filled hvparams, plus the overrides under which ``param`` shapes the
        XML (its example), minus ``param`` itself."""
        hvparams = dict(tables.HVC_DEFAULTS[hv_name])
        example = hvparam_examples.BY_HYPERVISOR[hv_name].get(param or "")
        if example:
            hvparams.update({k: v for k, v in example.items() if k != param})
        return self.realize(hvparams)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("prop")
    yield Env(root, hostile.Files.make(root / "hostile"))
    _remove_domains()


def _remove_domains() -> None:
    conn = connection.get(URI)
    for dom in conn.listAllDomains():
        if dom.name() != "test":  # the driver's own
            if dom.isActive():
                dom.destroy()
            dom.undefine()


def make(hv_name: str, hvparams: dict[str, Any], nics: int = 1) -> tuple[Instance, list]:
    disk = Disk(uuid=_uuid("disk0"), dev_type=C.DT_PLAIN, size=64, logical_id=("xenvg", "d0"))
    nic_list = [NIC(uuid=_uuid(f"nic{i}"), mac=f"aa:00:00:12:34:{0x50 + i:02x}",
                    ip="192.0.2.50", nicparams={C.NIC_MODE: C.NIC_MODE_BRIDGED,
                                                C.NIC_LINK: "br0"})
                for i in range(nics)]
    inst = Instance(name=NAME, uuid=_uuid("instance"), hypervisor=hv_name, hvparams=hvparams,
                    disks_info=[disk], nics=nic_list, network_port=11500,
                    beparams={"maxmem": 256, "minmem": 128, "vcpus": 2})
    return inst, [(disk, "/dev/xenvg/d0", None)]


# -- outcomes ------------------------------------------------------------------------------
def _named(err: Exception, tokens: tuple[str, ...]) -> None:
    assert type(err).__module__.startswith(("hvlibvirt", "ganeti")), repr(err)
    msg = str(err)
    assert hostile.PASSWORD not in msg, f"a message quotes a URL's password: {msg!r}"
    assert any(t in msg for t in tokens), f"{msg!r} names none of {tokens}"


def _domains() -> set[str]:
    return {d.name() for d in connection.get(URI).listAllDomains()}


def _structure(xml: str) -> list[tuple[str, tuple[str, ...]]]:
    """Element paths and attribute names, in document order (no text, no values)."""
    root = etree.fromstring(xml.encode())
    tree = root.getroottree()
    return [(tree.getpath(e), tuple(sorted(e.attrib))) for e in root.iter()
            if isinstance(e.tag, str)]


def attempt(hv_name: str, inst: Instance, block: Any, tokens: tuple[str, ...],
            env: Env) -> list | None:
    """Ganeti's sequence on ``inst``: the stored XML's structure on success, None when
    refused (with every refusal checked)."""
    cls = HYPERVISORS[hv_name][0]
    hvparams = getattr(inst, "hvparams", None)
    try:
        cls.CheckParameterSyntax(hvparams)
        cls.ValidateParameters(hvparams)
    except HypervisorError as err:
        _named(err, tokens)
        event("refused by the parameter checks")
        return None
    before, files = _domains(), sorted(os.listdir(env.root))
    hv = cls(uri=URI)
    try:
        hv.StartInstance(inst, block, False)
    except HypervisorError as err:
        _named(err, tokens)
        assert _domains() == before, "a refused start left a domain"
        assert sorted(os.listdir(env.root)) == files
        event("refused by StartInstance")
        return None
    name = inst.name
    dom = connection.get(URI).lookupByName(name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    hv.StopInstance(inst, force=True)
    hv.CleanupInstance(name)
    assert name not in _domains()
    event("started")
    return _structure(xml)


def check(hv_name: str, build: Callable[[Any], tuple[Instance, Any]], value: Any,
          tokens: tuple[str, ...], env: Env) -> None:
    """One hostile value; on success, also its twin (same structure expected)."""
    inst, block = build(value)
    shape = attempt(hv_name, inst, block, tokens, env)
    if shape is None or not isinstance(value, str) or hostile.twin(value) == value:
        return
    twin_inst, twin_block = build(hostile.twin(value))
    twin_shape = attempt(hv_name, twin_inst, twin_block, tokens, env)
    if twin_shape is not None:
        assert shape == twin_shape, f"{value!r} changed the XML structure"


# -- hvparams ------------------------------------------------------------------------------
HV_CASES = [(hv, name) for hv in sorted(HYPERVISORS) for name in sorted(tables.HVC_DEFAULTS[hv])]


@pytest.mark.parametrize("hv_name, param", HV_CASES)
def test_hostile_hvparam(hv_name: str, param: str, env: Env) -> None:
    context = env.context(hv_name, param)

    def build(value: Any) -> tuple[Instance, list]:
        return make(hv_name, dict(context, **{param: value}))

    @EXAMPLES
    @hostile.each_fixed(env.files)
    @given(value=hostile.values(env.files))
    def run(value: Any) -> None:
        check(hv_name, build, value, (f"'{param}'", param), env)

    run()


# -- URLs (issue 23) -------------------------------------------------------------------------
URL_CHECKS = (P.REQ_FILE_OR_URL_CHECK, P.OPT_FILE_OR_URL_CHECK)
URL_CASES = [(hv, name) for hv, (_cls, table) in sorted(HYPERVISORS.items())
             for name, entry in sorted(table.items()) if entry.check in URL_CHECKS]


def test_the_url_hvparams_are_the_kvm_cdroms() -> None:
    assert set(URL_CASES) == {(C.HT_KVM, C.HV_CDROM_IMAGE_PATH),
                              (C.HT_KVM, C.HV_KVM_CDROM2_IMAGE_PATH)}


def _accepted_url(value: str, elem: etree._Element) -> None:
    """What the builder made of an accepted URL agrees with urllib's reading of it."""
    parts = urlsplit(value)  # the accepted ones never make urllib raise
    assert parts.scheme in urls.IMAGE_SCHEMES and "@" not in value
    source = elem.find("source")
    host = source.find("host")
    assert source.get("protocol") == parts.scheme
    assert host.get("name") == parts.hostname
    assert host.get("port") == str(parts.port or urls.IMAGE_SCHEMES[parts.scheme])
    assert 1 <= int(host.get("port")) <= 65535
    assert source.get("name").startswith(("/", "?")) and parts.path in source.get("name")


@pytest.mark.parametrize("hv_name, param", URL_CASES)
def test_hostile_url_hvparam(hv_name: str, param: str, env: Env) -> None:
    """What CheckParameterSyntax accepts the builder expresses and libvirt stores; what
    it refuses, it refuses naming the parameter and never quoting a password."""
    cls = HYPERVISORS[hv_name][0]
    context = env.context(hv_name, param)

    @EXAMPLES
    @hostile.each_url()
    @given(value=hostile.urls())
    def run(value: str) -> None:
        hvparams = dict(context, **{param: value})
        try:
            cls.CheckParameterSyntax(hvparams)
        except HypervisorError as err:
            _named(err, (f"'{param}'",))
            event("refused by CheckParameterSyntax")
            return
        _accepted_url(value, disks.cdrom(1, value, C.HT_DISK_IDE, "hda"))
        assert attempt(hv_name, *make(hv_name, hvparams), (param,), env) is not None

    run()


def test_hostile_gluster_drive_uri(env: Env) -> None:
    """A userspace disk's gluster URI: built or refused naming drive_uri, never another
    exception, never quoting a password."""
    context = env.context(C.HT_KVM)

    @EXAMPLES
    @hostile.each_url("gluster")
    @given(value=hostile.urls(("gluster",)))
    def run(value: str) -> None:
        inst, block = make(C.HT_KVM, dict(context))
        block[0][0].params = {C.LDP_ACCESS: C.DISK_USERSPACE}
        block[0] = (block[0][0], None, value)
        attempt(C.HT_KVM, inst, block, ("drive_uri",), env)

    run()


# -- beparams and the objects' fields --------------------------------------------------------
BEPARAMS = ["maxmem", "minmem", "vcpus", "spindle_use", "always_failover", "auto_balance"]


def _set_beparam(key: str) -> Callable[[Instance, list, Any], Any]:
    def apply(inst: Instance, block: list, value: Any) -> None:
        inst.beparams[key] = value
    return apply


def _set_attr(what: Callable[[Instance, list], Any], attr: str
              ) -> Callable[[Instance, list, Any], Any]:
    def apply(inst: Instance, block: list, value: Any) -> None:
        setattr(what(inst, block), attr, value)
    return apply


def _set_nicparam(key: str) -> Callable[[Instance, list, Any], Any]:
    def apply(inst: Instance, block: list, value: Any) -> None:
        inst.nics[0].nicparams[key] = value
    return apply


def _set_block(position: int) -> Callable[[Instance, list, Any], Any]:
    def apply(inst: Instance, block: list, value: Any) -> None:
        entry = list(block[0])
        entry[position] = value
        block[0] = tuple(entry)
    return apply


def _replace_block_entry(inst: Instance, block: list, value: Any) -> None:
    block[0] = value


def _instance(inst: Instance, block: list) -> Instance:
    return inst


def _disk(inst: Instance, block: list) -> Disk:
    return block[0][0]


def _nic(inst: Instance, block: list) -> NIC:
    return inst.nics[0]


# field -> (how to set it, words one of which the error must contain)
FIELDS: dict[str, tuple[Callable[[Instance, list, Any], Any], tuple[str, ...]]] = {
    **{f"beparams.{k}": (_set_beparam(k), (k, "beparams")) for k in BEPARAMS},
    "instance.name": (_set_attr(_instance, "name"), ("name",)),
    "instance.uuid": (_set_attr(_instance, "uuid"), ("uuid",)),
    "instance.network_port": (_set_attr(_instance, "network_port"), ("network_port", "port")),
    "instance.beparams": (_set_attr(_instance, "beparams"), ("beparams",)),
    "instance.hvparams": (_set_attr(_instance, "hvparams"), ("hvparams", "Parameter")),
    "instance.nics": (_set_attr(_instance, "nics"), ("nics", "NIC", "nic uuid")),
    "disk.uuid": (_set_attr(_disk, "uuid"), ("uuid",)),
    "disk.dev_type": (_set_attr(_disk, "dev_type"), ("dev_type",)),
    "disk.mode": (_set_attr(_disk, "mode"), ("mode",)),
    "disk.size": (_set_attr(_disk, "size"), ("size",)),
    "disk.logical_id": (_set_attr(_disk, "logical_id"), ("logical_id", "file driver")),
    "disk.params": (_set_attr(_disk, "params"), ("params",)),
    "block_devices[0].link_name": (_set_block(1), ("link_name",)),
    "block_devices[0].drive_uri": (_set_block(2), ("drive_uri",)),
    "block_devices[0]": (_replace_block_entry, ("block_devices", "disk")),
    "nic.mac": (_set_attr(_nic, "mac"), ("mac",)),
    "nic.ip": (_set_attr(_nic, "ip"), ("ip",)),
    "nic.uuid": (_set_attr(_nic, "uuid"), ("uuid",)),
    "nic.nicparams": (_set_attr(_nic, "nicparams"), ("nicparams", "of NIC 0")),
    "nic.nicparams.mode": (_set_nicparam(C.NIC_MODE), ("mode",)),
    "nic.nicparams.link": (_set_nicparam(C.NIC_LINK), ("link",)),
    "nic.nicparams.vlan": (_set_nicparam(C.NIC_VLAN), ("vlan",)),
}
# Fields whose meaning needs a context: the port only matters with a graphical console,
# a disk's drive_uri only for a userspace disk (a KVM rbd/gluster one).
FIELD_CONTEXT = {
    (C.HT_KVM, "instance.network_port"): {C.HV_VNC_BIND_ADDRESS: "192.0.2.10"},
}
OBJECT_CASES = [(hv, f) for hv in sorted(HYPERVISORS) for f in FIELDS]


@pytest.mark.parametrize("hv_name, field", OBJECT_CASES)
def test_hostile_object_field(hv_name: str, field: str, env: Env) -> None:
    context = env.context(hv_name)
    context.update(FIELD_CONTEXT.get((hv_name, field), {}))
    apply, tokens = FIELDS[field]

    def build(value: Any) -> tuple[Instance, list]:
        inst, block = make(hv_name, dict(context))
        if field == "block_devices[0].drive_uri":
            block[0][0].params = {C.LDP_ACCESS: C.DISK_USERSPACE}
        apply(inst, block, value)
        return inst, block

    @EXAMPLES
    @hostile.each_fixed(env.files)
    @given(value=hostile.values(env.files))
    def run(value: Any) -> None:
        check(hv_name, build, value, tokens, env)

    run()


@pytest.mark.parametrize("hv_name", sorted(HYPERVISORS))
def test_hostile_block_devices_list(hv_name: str, env: Env) -> None:
    context = env.context(hv_name)

    @EXAMPLES
    @hostile.each_fixed(env.files)
    @given(value=hostile.values(env.files))
    def run(value: Any) -> None:
        inst, _ = make(hv_name, dict(context))
        inst.disks_info = []
        attempt(hv_name, inst, value, ("block_devices",), env)

    run()


# -- calls on a running instance -----------------------------------------------------------
@pytest.fixture
def running(env: Env) -> Iterator[dict[str, tuple[Any, Instance]]]:
    started = {}
    for hv_name, (cls, _table) in sorted(HYPERVISORS.items()):
        inst, block = make(hv_name, env.context(hv_name))
        inst.name, inst.uuid = f"prop-{hv_name}.example.com", _uuid(hv_name)
        hv = cls(uri=URI)
        hv.StartInstance(inst, block, False)
        started[hv_name] = (hv, inst)
    yield started
    for hv, inst in started.values():
        hv.StopInstance(inst, force=True)
        hv.CleanupInstance(inst.name)


def test_hostile_balloon_sizes(running: dict[str, tuple[Any, Instance]], env: Env) -> None:
    @EXAMPLES
    @hostile.each_fixed(env.files, "mem")
    @given(mem=hostile.values(env.files))
    def run(mem: Any) -> None:
        for hv, inst in running.values():
            try:
                hv.BalloonInstanceMemory(inst, mem)
            except HypervisorError as err:
                _named(err, ("memory",))
                continue
            assert isinstance(mem, int) and 0 < mem
            dom = connection.get(URI).lookupByName(inst.name)
            assert dom.info()[2] == min(mem, 256) * 1024

    run()


def test_hostile_migration_arguments(running: dict[str, tuple[Any, Instance]], env: Env,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[Any, ...]] = []
    # Up to the detached helper: what it would be handed is recorded, not run.
    monkeypatch.setattr(migration, "start", lambda *args: started.append(args))

    @EXAMPLES
    @given(target=hostile.values(env.files), live=hostile.values(env.files),
           which=st_fields())
    def run(target: Any, live: Any, which: str) -> None:
        for hv, inst in running.values():
            args = {"target": target, "live": True}
            if which == "live":
                args = {"target": "192.0.2.20", "live": live}
            before = len(started)
            try:
                hv.MigrateInstance("cluster.example.com", inst, **args)
            except HypervisorError as err:
                _named(err, (which, "migrat"))
                assert len(started) == before
                continue
            assert len(started) == before + 1
            assert hv.GetInstanceInfo(inst.name) is not None

    run()


def st_fields() -> Any:
    from hypothesis import strategies as st
    return st.sampled_from(["target", "live"])
