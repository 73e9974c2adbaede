"""Tier 6's node side, run in dom0 by Debian's python3: hypervisor calls made the way
Ganeti's node daemon makes them, each in a child forked from a parent that has imported
Ganeti and hvlibvirt but holds no connection and no hypervisor object.

Protocol (one JSON document per line on stdin, one answer per line on stdout):

* request ``{"hv": "xen-pvm", "method": "StartInstance", "args": [...], "kwargs": {}}``;
  a Ganeti object travels as ``{"$obj": "Instance", "data": <ToDict()>}`` and is rebuilt
  with Ganeti's own ``FromDict``;
* answer ``{"result": ...}`` (objects by ``ToDict``, tuples as lists), or
  ``{"error": <class>, "mro": [<class names>], "message": ...}``, or
  ``{"crash": <signal or exit status>}`` when the child died;
* a request with ``"fail_at": N`` has the child count its libvirt calls with the fault
  tiers' tests/fault_injection.py (shipped beside this script) and fail call N (0: none);
  its answer adds ``"calls"`` (the calls counted, in order) and, for an error,
  ``"injected"`` (whether the injected failure is among its causes);
* request ``{"view": <domain name>}``: what xl and libvirt have of it, for the tests'
  checks (a virsh per read costs most of a second under TCG): ``{"xl_id", "blocks"
  (xl block-list's rows), "state" (libvirt's), "live", "config" (its XML)}``, each
  None where there is no such domain; with ``"reported": <hv>``, first what that
  hypervisor class reports of it, as the next call would: ``"listed"`` and ``"info"``,
  the answers (as above) of ListInstances and GetInstanceInfo.

The library logs to stderr.
"""

import json
import logging
import os
import subprocess
import sys
import traceback

sys.path[:0] = ["/opt/hvlibvirt", "/usr/share/ganeti/3.0"]

from ganeti import objects  # noqa: E402

from hvlibvirt.xen import XenHvmHypervisor, XenPvmHypervisor  # noqa: E402

HYPERVISORS = {"xen-pvm": XenPvmHypervisor, "xen-hvm": XenHvmHypervisor}
OBJECTS = {"Instance": objects.Instance, "Disk": objects.Disk, "NIC": objects.NIC,
           "Node": objects.Node, "NodeGroup": objects.NodeGroup}


def decode(value):
    if isinstance(value, dict):
        if "$obj" in value:
            return OBJECTS[value["$obj"]].FromDict(value["data"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def encode(value):
    if hasattr(value, "ToDict"):
        return {"$obj": type(value).__name__, "data": encode(value.ToDict())}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class _Patch:
    """fault_injection.instrument's monkeypatch in a child that exits after one call."""

    @staticmethod
    def setattr(target, name, value):
        setattr(target, name, value)


def answer(request):
    if "view" in request:
        name, reply = request["view"], {}
        if "reported" in request:
            hv = request["reported"]
            reply["listed"] = call({"hv": hv, "method": "ListInstances", "args": [None]})
            reply["info"] = call({"hv": hv, "method": "GetInstanceInfo", "args": [name, None]})
            for part in (reply["listed"], reply["info"]):
                part.pop("exception", None)
        reply.update(view(name))
        return reply
    faults = None
    if "fail_at" in request:
        import fault_injection

        faults = fault_injection.instrument(_Patch())
        faults.arm(request["fail_at"] or None)
    reply = call(request)
    if faults is not None:
        faults.disarm()
        reply["calls"] = faults.calls
        if "error" in reply:
            reply["injected"] = fault_injection.carries_injected(reply.pop("exception"))
    reply.pop("exception", None)
    return reply


def view(name):
    import libvirt

    reply = {"xl_id": None, "blocks": None, "state": None, "live": None, "config": None}
    xl = subprocess.run(["xl", "domid", name], capture_output=True, text=True)
    if xl.returncode == 0:
        reply["xl_id"] = int(xl.stdout)
        blocks = subprocess.run(["xl", "block-list", name], capture_output=True, text=True)
        reply["blocks"] = len(blocks.stdout.splitlines()[1:])
    conn = libvirt.open("xen:///system")
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        return reply
    reply["state"] = dom.state()[0]
    reply["config"] = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    if dom.isActive():
        reply["live"] = dom.XMLDesc(0)
    return reply


def call(request):
    try:
        hypervisor = HYPERVISORS[request["hv"]]()
        method = getattr(hypervisor, request["method"])
        result = method(*decode(request.get("args", [])), **decode(request.get("kwargs", {})))
        return {"result": encode(result)}
    except Exception as err:  # every failure travels back to the test
        return {"error": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__],
                "message": str(err), "traceback": traceback.format_exc(), "exception": err}


def serve():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="node %(levelname)s %(name)s: %(message)s")
    for line in sys.stdin:
        request = json.loads(line)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            with os.fdopen(wfd, "w") as out:
                out.write(json.dumps(answer(request)))
            os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as inp:
            text = inp.read()
        _, status = os.waitpid(pid, 0)
        reply = json.loads(text) if text else {"crash": status}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
