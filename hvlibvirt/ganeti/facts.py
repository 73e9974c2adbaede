"""Which Ganeti hvlibvirt follows: its version, hvparam names, defaults, value types and
valid values.

Inside Ganeti (``ganeti`` importable, as in noded, its children and the job processes)
it is the running Ganeti's own ``ganeti.constants``. That costs no import:
``hvlibvirt.errors`` has imported ``ganeti.errors`` by then, which imports
``ganeti.constants`` (docs/costs.md), and noded's children inherit it
from their parent. Standalone it is ``STANDALONE_VERSION`` as hvlibvirt's tables
describe it (each row holds Ganeti 3.0's facts, and in ``since`` what later versions
changed). ``hvlibvirt ganeti check`` follows the version of the cluster it
reads (``of_cluster``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from typing import Any, Final

from hvlibvirt import constants as C
from hvlibvirt.errors import INSIDE_GANETI, HypervisorError
from hvlibvirt.params import BASE_VERSION, KNOWN_VERSIONS, Check, HvParam, Version

#: the Ganeti version hvlibvirt follows outside Ganeti
STANDALONE_VERSION: Final[Version] = (3, 0)
SHARE_ROOT: Final = "/usr/share/ganeti"


# Plain classes, not dataclasses or NamedTuples: every fresh process imports this
# module, and creating those classes costs more than the module's other work.
class Ganeti:
    """The Ganeti whose hvparams are followed. ``constants`` is its constants module
    (or a namespace with the same names); None means hvlibvirt's own tables."""

    __slots__ = ("version", "source", "constants")

    def __init__(self, version: Version, source: str, constants: Any = None) -> None:
        self.version, self.source, self.constants = version, source, constants

    def describe(self) -> str:
        return f"Ganeti {self.version[0]}.{self.version[1]} ({self.source})"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


#: one hypervisor's hvparams as a Ganeti has them: (name -> check, name -> default,
#: name -> value type)
HvParams = tuple[dict[str, Check], dict[str, Any], dict[str, str]]


def from_tables(version: Version) -> Ganeti:
    """Ganeti ``version`` as hvlibvirt's tables describe it."""
    if version not in KNOWN_VERSIONS:
        raise HypervisorError(f"hvlibvirt knows Ganeti {_versions()} only, not "
                              f"{version[0]}.{version[1]}")
    return Ganeti(version, "hvlibvirt's tables")


def from_constants(gconst: Any, source: str | None = None) -> Ganeti:
    """The Ganeti whose ``ganeti.constants`` is ``gconst``."""
    version = (int(gconst.VERSION_MAJOR), int(gconst.VERSION_MINOR))
    where = source or os.path.dirname(os.path.dirname(getattr(gconst, "__file__", "") or "?"))
    return Ganeti(version, f"{getattr(gconst, 'RELEASE_VERSION', '?')} in {where}", gconst)


@functools.cache
def running() -> Ganeti:
    """The Ganeti this process runs in, else the standalone version's tables."""
    if INSIDE_GANETI:
        from ganeti import constants as gconst  # already imported by ganeti.errors
        return from_constants(gconst)
    return from_tables(STANDALONE_VERSION)


# What a child interpreter prints about an installed Ganeti (check runs outside Ganeti:
# importing it here would make our errors Ganeti's halfway through the process).
_DUMP = r"""
import json
from ganeti import constants as c
hvs = ("kvm", "xen-pvm", "xen-hvm")
out = {name: sorted(value) for name, value in vars(c).items()
       if name.startswith(("HT_", "KNOWN_")) and isinstance(value, (frozenset, set, list,
                                                                     tuple))}
out.update(VERSION_MAJOR=c.VERSION_MAJOR, VERSION_MINOR=c.VERSION_MINOR,
           RELEASE_VERSION=c.RELEASE_VERSION,
           HVC_DEFAULTS={hv: c.HVC_DEFAULTS[hv] for hv in hvs if hv in c.HVC_DEFAULTS},
           HVS_PARAMETER_TYPES=dict(c.HVS_PARAMETER_TYPES))
print(json.dumps(out, default=sorted))
"""


def from_share(share: str) -> Ganeti:
    """The Ganeti installed in ``share`` (``/usr/share/ganeti/<version>``), read by a
    child interpreter."""
    import json
    import subprocess
    from types import SimpleNamespace

    try:
        done = subprocess.run([sys.executable, "-c", _DUMP], capture_output=True, text=True,
                              check=False, timeout=60, cwd=share,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                   "PYTHONPATH": share})
        if done.returncode != 0:
            raise ValueError((done.stderr.strip().splitlines() or ["no output"])[-1])
        facts = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        raise HypervisorError(f"Cannot read Ganeti's constants in {share}: {err}") from None
    return from_constants(SimpleNamespace(**facts), share)


def of_cluster(config_version: int, share_root: str = SHARE_ROOT) -> Ganeti:
    """The Ganeti of a cluster whose configuration has ``config_version`` (Ganeti's
    major * 1000000 + minor * 10000 + revision): the installed one of that version
    where there is one, else hvlibvirt's tables."""
    if not isinstance(config_version, int) or isinstance(config_version, bool) \
            or config_version < 1000000:
        raise HypervisorError(f"Ganeti's configuration has no valid version: "
                              f"{config_version!r}")
    version = (config_version // 1000000, config_version // 10000 % 100)
    share = os.path.join(share_root, f"{version[0]}.{version[1]}")
    if os.path.isfile(os.path.join(share, "ganeti", "constants.py")):
        return from_share(share)
    return from_tables(version)


def resolve(ganeti: Ganeti, hv_name: str, table: Mapping[str, HvParam]) -> HvParams:
    """Hypervisor ``hv_name``'s hvparams as ``ganeti`` has them: the rows it knows, with
    its defaults, value types and valid values. A name Ganeti has and the table lacks is
    left out: ``CheckParameterSyntax`` then refuses it by name."""
    version, gconst = ganeti.version, ganeti.constants
    if gconst is None:
        names = [name for name, row in table.items() if row.present_in(version)]
        defaults = {name: table[name].default_in(version) for name in names}
        all_types: Mapping[str, str] = {name: table[name].value_type for name in names}
    else:
        theirs = gconst.HVC_DEFAULTS.get(hv_name, {})
        names = [name for name in table if name in theirs]
        defaults = {name: theirs[name] for name in names}
        all_types = gconst.HVS_PARAMETER_TYPES
    parameters = {}
    for name in names:
        row = table[name]
        parameters[name] = row.check
        if row.valid:
            values = (row.values_in(version) if gconst is None else
                      tuple(sorted(getattr(gconst, row.valid), key=str)))
            if version != BASE_VERSION or gconst is not None:
                parameters[name] = row.with_values(values)
    types = {name: all_types.get(name, C.VTYPE_STRING) for name in names}
    return parameters, defaults, types


def follow(cls: Any, ganeti: Ganeti) -> None:
    """Make hypervisor class ``cls`` follow ``ganeti``: its GANETI, and its TABLE
    resolved into PARAMETERS, DEFAULTS and TYPES."""
    cls.GANETI = ganeti
    cls.PARAMETERS, cls.DEFAULTS, cls.TYPES = resolve(ganeti, cls.HV_NAME, cls.TABLE)


# (class, Ganeti version, source) -> that class following that Ganeti
_FOLLOWING: dict[tuple[type, Version, str], type] = {}


def following(cls: type, ganeti: Ganeti) -> type:
    """A subclass of hypervisor class ``cls`` following ``ganeti`` (made once)."""
    key = (cls, ganeti.version, ganeti.source)
    if key not in _FOLLOWING:
        _FOLLOWING[key] = type(cls.__name__, (cls,), {"__module__": cls.__module__,
                                                      "__qualname__": cls.__qualname__},
                               ganeti=ganeti)
    return _FOLLOWING[key]


def _versions() -> str:
    return ", ".join(f"{major}.{minor}" for major, minor in KNOWN_VERSIONS)
