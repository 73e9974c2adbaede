"""``hvlibvirt ganeti enable|disable|status``: make this node's Ganeti serve hypervisors
from hvlibvirt, and give Ganeti its own back.

Ganeti's ``ganeti/hypervisor/__init__.py`` (in the version directory that
``/usr/share/ganeti/default`` leads to) is diverted with ``dpkg-divert --rename`` to
``__init__.py.distrib``, so dpkg knows, ``apt-get install --reinstall ganeti-3.x``
writes Ganeti's new copy there, and ``disable`` moves the very same file back. In its
place goes a module written here (``_module_text``) that runs Ganeti's file unchanged
and then points the chosen map entries at hvlibvirt's classes. Before anything is
switched, Ganeti's interpreter must import the result; noded, which imported the old
map when it started, is restarted if it runs (job processes import it afresh).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError

log = logging.getLogger(__name__)

PACKAGE = "python3-hvlibvirt"
GANETI_DEFAULT = "/usr/share/ganeti/default"
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"
DIVERTED_SUFFIX = ".distrib"
MARKER = "# hvlibvirt-serves: "
SERVABLE = (constants.HT_KVM, constants.HT_XEN_PVM, constants.HT_XEN_HVM)


@dataclass(frozen=True)
class Status:
    """What serves Ganeti's hypervisors on this node."""

    module: str               # Ganeti's hypervisor/__init__.py (the path dpkg knows)
    served: tuple[str, ...]   # the hypervisors hvlibvirt serves; () when Ganeti's are active
    diverted_by: str | None   # the package holding the diversion, if any

    def describe(self) -> str:
        if self.served:
            return f"hvlibvirt serves {', '.join(self.served)} ({self.module} diverted)"
        if self.diverted_by:
            return f"{self.module} is diverted by {self.diverted_by}, not by hvlibvirt"
        return f"Ganeti's own hypervisors are active ({self.module})"


class GanetiNode:
    """Ganeti's installation on this machine (``root`` stands for / in tests: dpkg-divert
    then works on ``root``'s own database)."""

    def __init__(self, root: str = "/", share: str | None = None) -> None:
        self.root = root
        self.share = share or self._find_share()
        self.module = os.path.join(self.share, "ganeti", "hypervisor", "__init__.py")
        self.diverted = self.module + DIVERTED_SUFFIX

    def _host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _find_share(self) -> str:
        # default -> /etc/ganeti/share -> /usr/share/ganeti/<version>
        share = os.path.realpath(self._host(GANETI_DEFAULT))
        if not os.path.isdir(os.path.join(share, "ganeti", "hypervisor")):
            raise HypervisorError(f"Ganeti is not installed here: {GANETI_DEFAULT} leads to "
                                  f"{share}, which holds no ganeti/hypervisor package")
        return share if self.root == "/" else "/" + os.path.relpath(share, self.root)

    # -- reading -----------------------------------------------------------------------
    def status(self) -> Status:
        owner = self._diverted_by()
        served: tuple[str, ...] = ()
        if owner == PACKAGE:
            served = _served_by(self._host(self.module))
        return Status(self.module, served, owner)

    def _diverted_by(self) -> str | None:
        out = self._dpkg_divert("--listpackage", self.module).strip()
        return out or None

    # -- changing ----------------------------------------------------------------------
    def enable(self, names: Sequence[str]) -> bool:
        """Serve ``names`` from hvlibvirt; True if anything changed."""
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in SERVABLE]
        if not names or unknown:
            raise HypervisorError(f"Cannot serve {', '.join(unknown) or 'nothing'}: "
                                  f"hvlibvirt serves {', '.join(SERVABLE)}")
        current = self.status()
        if current.diverted_by not in (None, PACKAGE):
            raise HypervisorError(current.describe() + "; not touching it")
        if current.served == names:
            return False
        added = current.diverted_by is None
        if added:
            if _served_by(self._host(self.module)):
                raise HypervisorError(f"{self.module} is hvlibvirt's but dpkg has no "
                                      "diversion for it; reinstall Ganeti's package "
                                      "(ganeti-3.x) first")
            self._dpkg_divert("--package", PACKAGE, "--rename", "--divert", self.diverted,
                              "--add", self.module)
        previous = None if added else _read(self._host(self.module))
        try:
            _write(self._host(self.module), _module_text(names, os.path.basename(
                self.diverted)))
            self._check_import(names)
        except HypervisorError:
            if added:
                os.unlink(self._host(self.module))
                self._dpkg_divert("--package", PACKAGE, "--rename", "--remove", self.module)
            else:
                _write(self._host(self.module), previous or "")
            raise
        return True

    def disable(self) -> bool:
        """Give Ganeti its own file back (byte for byte); True if anything changed."""
        current = self.status()
        if current.diverted_by is None:
            return False
        if current.diverted_by != PACKAGE:
            raise HypervisorError(current.describe() + "; not touching it")
        path = self._host(self.module)
        if os.path.exists(path) and not _served_by(path):
            raise HypervisorError(f"{self.module} is not the file hvlibvirt wrote; "
                                  "remove it by hand, then run disable again")
        if os.path.exists(path):
            os.unlink(path)
        self._dpkg_divert("--package", PACKAGE, "--rename", "--remove", self.module)
        return True

    def restart_noded(self) -> bool:
        """Restart Ganeti's node daemon if it runs here; True if it was restarted."""
        if self.root != "/" or not os.access(DAEMON_UTIL, os.X_OK):
            return False
        if subprocess.run([DAEMON_UTIL, "check", "ganeti-noded"], capture_output=True,
                          check=False).returncode != 0:
            return False
        for action in ("stop", "start"):
            done = subprocess.run([DAEMON_UTIL, action, "ganeti-noded"], capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise HypervisorError(f"{DAEMON_UTIL} {action} ganeti-noded failed: "
                                      f"{done.stderr.strip() or done.returncode}")
        return True

    # -- helpers ---------------------------------------------------------------------
    def _dpkg_divert(self, *args: str) -> str:
        argv = ["dpkg-divert", *(["--root", self.root] if self.root != "/" else []), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as err:
            raise HypervisorError(f"Cannot run dpkg-divert: {err}") from None
        if done.returncode != 0:
            raise HypervisorError(f"{' '.join(argv)} failed: "
                                  f"{done.stderr.strip() or done.returncode}")
        return done.stdout

    def _check_import(self, names: Sequence[str]) -> None:
        """Ganeti's own interpreter must import the new map and find our classes there."""
        if self.root != "/":
            return  # a test tree: there is no Ganeti to run
        python = _interpreter_of(os.path.join(self.share, "ganeti-noded"))
        probe = ("import sys; from ganeti import hypervisor as h; "
                 "print(' '.join(h.GetHypervisorClass(n).__module__ for n in sys.argv[1:]))")
        try:
            done = subprocess.run([python, "-c", probe, *names], cwd=self.share,
                                  capture_output=True, text=True, check=False, timeout=60,
                                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                       "PYTHONPATH": self.share})
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HypervisorError(f"Cannot run Ganeti's interpreter {python}: {err}") from None
        modules = done.stdout.split()
        if done.returncode != 0 or not all(m.startswith("hvlibvirt.") for m in modules):
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise HypervisorError(f"Ganeti's interpreter {python} cannot use hvlibvirt "
                                  f"({detail}); is the {PACKAGE} package installed?")


def _module_text(names: Sequence[str], diverted_name: str) -> str:
    """The module that stands in for Ganeti's ganeti/hypervisor/__init__.py."""
    return f'''# Written by "hvlibvirt ganeti enable" (package {PACKAGE}); "hvlibvirt ganeti disable"
# gives Ganeti its own file back. dpkg keeps Ganeti's file diverted meanwhile, next to
# this one, as {diverted_name}.
{MARKER}{",".join(names)}
"""Ganeti's hypervisor package, with the hypervisors named above served by hvlibvirt."""

import os as _os

# Ganeti's own module, unchanged: its hypervisor map and lookup functions.
_GANETI_MODULE = _os.path.join(_os.path.dirname(__file__), {diverted_name!r})
with open(_GANETI_MODULE, encoding="utf-8") as _source:
    exec(compile(_source.read(), _GANETI_MODULE, "exec"))

from hvlibvirt.ganeti import serve as _serve  # noqa: E402

_serve(_HYPERVISOR_MAP, {tuple(names)!r})
'''


def _served_by(path: str) -> tuple[str, ...]:
    """The hypervisors a module we wrote serves; () if it is not ours (or missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as module:
            head = [next(module, "") for _ in range(5)]
    except OSError:
        return ()
    for line in head:
        if line.startswith(MARKER):
            return tuple(n for n in line[len(MARKER):].strip().split(",") if n)
    return ()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    """Replace ``path`` atomically (a reader sees the old or the new file, never half)."""
    tmp = f"{path}.hvlibvirt-new"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise HypervisorError(f"Cannot write {path}: {err.strerror}") from None


def _interpreter_of(script: str) -> str:
    """The interpreter a Ganeti script's #! line names (/usr/bin/python3 by default)."""
    try:
        with open(script, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        first = ""
    return first[2:].split()[0] if first.startswith("#!") and first[2:].split() \
        else "/usr/bin/python3"
