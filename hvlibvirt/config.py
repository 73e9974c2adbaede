"""The node's configuration file, ``/etc/hvlibvirt/hvlibvirt.conf`` (INI).

Every process that needs a libvirt URI reads it the same way: Ganeti's node daemon
forks a child per RPC, the master's job processes compute console information, and the
console and migration helpers run outside Ganeti, so no setting may depend on one
daemon's environment. ``HVLIBVIRT_CONFIG`` names another file. The order of precedence
is: the constructor keyword, the environment, this file, libvirt's default.

One section per Ganeti hypervisor name; ``[DEFAULT]`` holds what they share::

    [kvm]
    uri = qemu:///system
    migration_uri = qemu+ssh://{target}/system
    serial_log_dir = /var/log/hvlibvirt
    qemu_conf = /etc/libvirt/qemu.conf
    pcie_hotplug_ports = 4

    [xen-pvm]
    uri = xen:///system

A missing file is an empty configuration. A file that cannot be parsed, or that names
a section or key we do not know, is a HypervisorError naming the file and the key.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError

DEFAULT_PATH = "/etc/hvlibvirt/hvlibvirt.conf"
PATH_ENV = "HVLIBVIRT_CONFIG"
RUN_DIR_ENV = "HVLIBVIRT_RUN_DIR"
ROOT_RUN_DIR = "/run/hvlibvirt"

#: key -> what it is (README and docs/ganeti.md list the same)
KEYS = {
    "uri": "the libvirt URI of this node's hypervisor",
    "migration_uri": "the migration target's libvirt URI; {target} is the address Ganeti "
                     "passes (the target node's secondary IP)",
    "serial_log_dir": "KVM only: keep each instance's serial console output in "
                      "<dir>/<instance>.serial",
    "qemu_conf": "KVM only: libvirt's QEMU driver configuration, read for the host-wide "
                 "settings some hvparams need (VNC TLS, QEMU's mount namespace)",
    "pcie_hotplug_ports": "KVM only: how many free PCIe root ports a q35 instance gets at "
                          "start, for hot-added disks and NICs (0-64, default 4)",
}
#: integer keys -> (lowest, highest) value
INTEGER_KEYS = {"pcie_hotplug_ports": (0, 64)}
SECTIONS = frozenset(constants.HYPER_TYPES)

# Where the HVLIBVIRT_* environment settings are read: os.environ, or from preload() on
# a plain copy of it (see there).
_environ: Mapping[str, str] = os.environ
_cache: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, str]]]] = {}


def getenv(name: str) -> str | None:
    """The environment variable ``name`` as hvlibvirt sees it (None if unset)."""
    return _environ.get(name)


def path() -> str:
    """The configuration file in force for this process."""
    return getenv(PATH_ENV) or DEFAULT_PATH


def value(hypervisor: str, key: str) -> str | None:
    """The setting ``key`` for ``hypervisor`` (a Ganeti name such as 'kvm'), or None."""
    return _read(path()).get(hypervisor, {}).get(key) or None


def integer(hypervisor: str, key: str, default: int) -> int:
    """The integer setting ``key`` (checked when the file is read), else ``default``."""
    text = value(hypervisor, key)
    return default if text is None else int(text)


def preload() -> None:
    """Read the file now, in a parent that will fork (Ganeti's node daemon, when its
    hypervisor map is imported): its children then find it parsed and only stat it.
    Problems are left for the first real lookup to report.

    The environment is copied too, and read from the copy from now on: a forked child
    inherits its parent's environment unchanged (Ganeti 3.0's modules read os.environ
    and never change it), and a plain dict answers sooner than os.environ, which
    encodes and decodes every lookup."""
    global _environ
    _environ = dict(os.environ)
    try:
        _read(path())
    except HypervisorError:
        pass


def _read(file: str) -> dict[str, dict[str, str]]:
    """The parsed file, re-read only when it changed (one stat per lookup): noded's
    children are forked from a parent that may have read an older version."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise HypervisorError(f"Cannot read {file}: {err.strerror}") from None
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    # No lock: one dict operation each, atomic under the GIL; two threads that race
    # both parse. (noded's fresh child pays for every line it runs for the first time.)
    cached = _cache.get(file)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    parsed = _parse(file)
    _cache[file] = (stamp, parsed)
    return parsed


def _parse(file: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(file, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as err:
        raise HypervisorError(f"Cannot read {file}: {err}") from None
    unknown = sorted(set(parser.sections()) - SECTIONS)
    if unknown:
        raise HypervisorError(f"{file}: unknown section [{unknown[0]}]; sections are the "
                              f"hypervisor names {', '.join(sorted(SECTIONS))}")
    for section in ["DEFAULT", *parser.sections()]:
        for key, text in parser[section].items():
            if key not in KEYS:
                raise HypervisorError(f"{file}: unknown key {key!r} in [{section}]; keys "
                                      f"are {', '.join(sorted(KEYS))}")
            if not text.strip() or any(ord(c) < 32 for c in text):
                raise HypervisorError(f"{file}: [{section}] {key} must be a non-empty "
                                      "single-line value")
            if key in INTEGER_KEYS and not _within(text.strip(), *INTEGER_KEYS[key]):
                low, high = INTEGER_KEYS[key]
                raise HypervisorError(f"{file}: [{section}] {key} must be an integer from "
                                      f"{low} to {high}, not {text.strip()!r}")
    # A missing section still inherits [DEFAULT].
    return {section: {k: v.strip() for k, v in (parser[section] if parser.has_section(section)
                                                 else parser.defaults()).items()}
            for section in sorted(SECTIONS)}


def _within(text: str, low: int, high: int) -> bool:
    return text.isascii() and text.isdigit() and low <= int(text) <= high


def run_dir() -> str:
    """The node's runtime directory (locks, ownership marks): ``HVLIBVIRT_RUN_DIR``,
    else ``/run/hvlibvirt`` for root (noded), else under ``$XDG_RUNTIME_DIR`` as
    libvirt's own session daemon keeps its runtime files (falling back the same way)."""
    explicit = getenv(RUN_DIR_ENV)
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return ROOT_RUN_DIR
    base = (getenv("XDG_RUNTIME_DIR") or getenv("XDG_CACHE_HOME")
            or os.path.expanduser("~/.cache"))
    return os.path.join(base, "hvlibvirt")
