"""``hvlibvirt ganeti enable|disable|status``: make this node's Ganeti serve hypervisors
from hvlibvirt, and give Ganeti its own back.

Ganeti's ``ganeti/hypervisor/__init__.py`` (in the version directory that
``/usr/share/ganeti/default`` leads to) is diverted with dpkg to ``__init__.py.distrib``,
so dpkg knows, ``apt-get install --reinstall ganeti-3.x`` writes Ganeti's new copy there,
and ``disable`` gives the very same file back. In its place goes a module written here
(``_module_text``) that runs Ganeti's file unchanged and then points the chosen map
entries at hvlibvirt's classes. noded, which imported the old map when it started, is
restarted if it runs (job processes import it afresh).

Every step is ordered so that Ganeti's map is importable at every moment and is either
the old one or the new one: a new map is written beside the live one, imported by
Ganeti's interpreter in a child process, and only then renamed over it (one atomic
rename). Ganeti's own file changes names by hard links, never by a copy or a moment
without it: ``enable`` links it to the diverted name and tells dpkg without
``--rename``; ``disable`` links the diverted file back over ours first, so that
``dpkg-divert --rename --remove`` finds the same file at both names and only drops the
diverted one. A step that fails undoes the ones before it.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hvlibvirt import constants
from hvlibvirt.errors import HypervisorError
from hvlibvirt.ganeti import running

log = logging.getLogger(__name__)

PACKAGE = "python3-hvlibvirt"
GANETI_DEFAULT = "/usr/share/ganeti/default"
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"
DIVERTED_SUFFIX = ".distrib"
STAGED_SUFFIX = ".hvlibvirt-new"
MARKER = "# hvlibvirt-serves: "
SERVABLE = (constants.HT_KVM, constants.HT_XEN_PVM, constants.HT_XEN_HVM)
_CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
# Imports a map file (argv[2]) as Ganeti imports ganeti.hypervisor from its live path
# (argv[1]), then says which module serves each hypervisor name.
_PROBE = """
import os, sys, types
import ganeti
live, path = sys.argv[1], sys.argv[2]
mod = types.ModuleType("ganeti.hypervisor")
mod.__file__, mod.__path__, mod.__package__ = live, [os.path.dirname(live)], mod.__name__
sys.modules[mod.__name__] = ganeti.hypervisor = mod
with open(path, encoding="utf-8") as source:
    exec(compile(source.read(), live, "exec"), mod.__dict__)
print(" ".join(mod.GetHypervisorClass(n).__module__ for n in sys.argv[3:]))
"""
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


@dataclass(frozen=True)
class Outcome:
    """What ``enable`` or ``disable`` did, and what serves now."""

    status: Status
    changed: bool
    noded_restarted: bool = False


class GanetiNode:
    """Ganeti's installation on this machine.

    ``root`` stands for / (dpkg-divert then works on ``root``'s own database);
    ``python`` is the interpreter that must import a new map before it goes live
    (default: the one Ganeti's noded runs); ``daemon_util`` restarts noded (default:
    Ganeti's, when ``root`` is /; a tree elsewhere has no daemon to restart)."""

    def __init__(self, root: str = "/", share: str | None = None, python: str | None = None,
                 daemon_util: str | None = None) -> None:
        self.root = root
        self.share = share or self._find_share()
        self.module = os.path.join(self.share, "ganeti", "hypervisor", "__init__.py")
        self.diverted = self.module + DIVERTED_SUFFIX
        self.python = python or _interpreter_of(self._host(os.path.join(self.share,
                                                                        "ganeti-noded")))
        self.daemon_util = daemon_util or (DAEMON_UTIL if root == "/" else None)
        self._live = self._host(self.module)
        self._distrib = self._host(self.diverted)
        self._staged = self._live + STAGED_SUFFIX

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
            served = _served_by(self._live)
        return Status(self.module, served, owner)

    def _diverted_by(self) -> str | None:
        out = self._dpkg_divert("--listpackage", self.module).strip()
        return out or None

    def running_ganeti_kvm(self) -> list[str]:
        """Instances Ganeti's own hv_kvm runs on this node."""
        return running.ganeti_kvm_instances(self._host(running.KVM_PID_DIR))

    # -- changing ----------------------------------------------------------------------
    def enable(self, names: Sequence[str], force: bool = False) -> Outcome:
        """Serve ``names`` from hvlibvirt. Refused, unless ``force``, while instances
        run that the switch would hide: Ganeti's KVM ones when kvm is added, hvlibvirt's
        of the hypervisors it stops serving."""
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in SERVABLE]
        if not names or unknown:
            raise HypervisorError(f"Cannot serve {', '.join(unknown) or 'nothing'}: "
                                  f"hvlibvirt serves {', '.join(SERVABLE)}")
        current = self.status()
        if current.diverted_by not in (None, PACKAGE):
            raise HypervisorError(current.describe() + "; not touching it")
        if current.served == names:
            return Outcome(current, False)
        if not force:
            dropped = [n for n in current.served if n not in names]
            found, asked = running.hvlibvirt_instances(dropped) if dropped else ([], [])
            if constants.HT_KVM in names and constants.HT_KVM not in current.served:
                found = [f"{n} (Ganeti's kvm)" for n in self.running_ganeti_kvm()] + found
            listed = "" if names == (constants.HT_KVM,) else f" --hypervisors {','.join(names)}"
            why = running.refusal("enable", f"hvlibvirt ganeti enable{listed} --force", found,
                                  asked)
            if why:
                raise HypervisorError(why)
        text = _module_text(names, os.path.basename(self.diverted))
        undo: Callable[[], None] | None
        if current.diverted_by is None:
            if _served_by(self._live):
                raise HypervisorError(f"{self.module} is hvlibvirt's but dpkg has no "
                                      "diversion for it; reinstall Ganeti's package "
                                      "(ganeti-3.x) first")
            self._divert_in(text, names)
            undo = self._divert_out
        else:
            previous = self._ours_or_missing()
            self._go_live(text, names)
            undo = (lambda: self._go_live(previous, None)) if previous is not None else None
        now = Status(self.module, names, PACKAGE)
        return Outcome(now, True, self._restart_noded(undo, now))

    def disable(self, force: bool = False) -> Outcome:
        """Give Ganeti its own file back (byte for byte, the same inode). Refused, unless
        ``force``, while hvlibvirt's instances run or libvirt cannot say."""
        current = self.status()
        if current.diverted_by is None:
            return Outcome(current, False)
        if current.diverted_by != PACKAGE:
            raise HypervisorError(current.describe() + "; not touching it")
        previous = self._ours_or_missing()
        served = _served_by(self._live)
        if not force:
            why = running.refusal("disable", "hvlibvirt ganeti disable --force",
                                  *running.hvlibvirt_instances(served))
            if why:
                raise HypervisorError(why)
        self._divert_out(check=True)
        undo = (lambda: self._divert_in(previous, None)) if previous is not None else None
        now = Status(self.module, (), None)
        return Outcome(now, True, self._restart_noded(undo, now))

    def _ours_or_missing(self) -> str | None:
        """The text of the live map, which must be hvlibvirt's (None if it is missing)."""
        if not os.path.lexists(self._live):
            return None
        if not _served_by(self._live):
            raise HypervisorError(f"{self.module} is not the file hvlibvirt wrote; "
                                  "remove it by hand, then run this again")
        return _read(self._live)

    # -- the steps ---------------------------------------------------------------------
    def _divert_in(self, text: str, names: Sequence[str] | None) -> None:
        """Ganeti's file (live, no diversion) -> ``text`` live, Ganeti's file diverted.
        ``names``: the hypervisors ``text`` must serve (None: not checked, an undo)."""
        if os.path.lexists(self._distrib):
            if not _same_file(self._live, self._distrib):
                raise HypervisorError(f"{self.diverted} exists but dpkg has no diversion "
                                      "to it; move it away, then run enable again")
            linked = False  # left over from an interrupted run: already Ganeti's file
        else:
            _fs(f"link {self.module} to {self.diverted}", os.link, self._live, self._distrib)
            linked = True
        diverted = False
        try:
            self._stage(text, names)
            self._dpkg_divert("--package", PACKAGE, "--no-rename", "--divert", self.diverted,
                              "--add", self.module)
            diverted = True
            _fs(f"rename the new map over {self.module}", os.replace, self._staged,
                self._live)
        except HypervisorError as err:
            steps: list[tuple[str, Callable[[], object]]] = [
                (f"remove {self._staged}", lambda: _unlink_if_there(self._staged))]
            if diverted:
                steps.append(("remove the diversion", lambda: self._dpkg_divert(
                    "--package", PACKAGE, "--no-rename", "--remove", self.module)))
            if linked:
                steps.append((f"remove {self.diverted}", lambda: os.unlink(self._distrib)))
            raise _undone(err, steps) from None

    def _divert_out(self, check: bool = False) -> None:
        """hvlibvirt's map live, Ganeti's diverted -> Ganeti's file live, no diversion.
        ``check``: import Ganeti's file as the map first."""
        if not os.path.isfile(self._distrib):
            raise HypervisorError(f"Ganeti's own file {self.diverted} is missing; "
                                  "reinstall ganeti-3.0, then run disable again")
        if check:
            self._check_import(self._distrib, ())
        previous = _read(self._live)
        _fs(f"remove {self._staged}", _unlink_if_there, self._staged)
        _fs(f"link {self.diverted} to {self._staged}", os.link, self._distrib, self._staged)
        try:
            _fs(f"rename Ganeti's map over {self.module}", os.replace, self._staged,
                self._live)
        except HypervisorError as err:
            raise _undone(err, [(f"remove {self._staged}",
                                 lambda: _unlink_if_there(self._staged))]) from None
        try:
            self._dpkg_divert("--package", PACKAGE, "--rename", "--remove", self.module)
        except HypervisorError as err:
            steps: list[tuple[str, Callable[[], object]]] = []
            if previous is not None:
                steps.append(("put hvlibvirt's map back", lambda: self._go_live(previous,
                                                                                None)))
            raise _undone(err, steps) from None

    def _go_live(self, text: str, names: Sequence[str] | None) -> None:
        """Replace the live map by ``text`` (diversion unchanged), checked first unless
        ``names`` is None."""
        try:
            self._stage(text, names)
            _fs(f"rename the new map over {self.module}", os.replace, self._staged,
                self._live)
        except HypervisorError as err:
            raise _undone(err, [(f"remove {self._staged}",
                                 lambda: _unlink_if_there(self._staged))]) from None

    def _stage(self, text: str, names: Sequence[str] | None) -> None:
        """Write ``text`` beside the live map and, unless ``names`` is None, have Ganeti's
        interpreter import it as the map."""
        _write_file(self._staged, text)
        if names is not None:
            self._check_import(self._staged, names)

    def _restart_noded(self, undo: Callable[[], None] | None, now: Status) -> bool:
        """Restart Ganeti's node daemon if it runs here; True if it was restarted. noded
        that cannot be stopped keeps the old map in memory: the switch is undone."""
        if not self.daemon_util:
            return False
        if self._run([self.daemon_util, "check", "ganeti-noded"]).returncode != 0:
            return False
        stop = self._run([self.daemon_util, "stop", "ganeti-noded"])
        if stop.returncode != 0:
            err = HypervisorError(f"{self.daemon_util} stop ganeti-noded failed "
                                  f"({_detail(stop)}); it still runs the old map, so the switch "
                                  "is undone")
            raise _undone(err, [("undo the switch", undo)] if undo else []) from None
        start = self._run([self.daemon_util, "start", "ganeti-noded"])
        if start.returncode != 0:
            raise HypervisorError(f"{self.daemon_util} start ganeti-noded failed "
                                  f"({_detail(start)}) after the switch "
                                  f"({now.describe()}): start it by hand")
        return True

    # -- helpers ---------------------------------------------------------------------
    def _run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=120, **kwargs)  # type: ignore[call-overload]
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HypervisorError(f"Cannot run {argv[0]}: {err}") from None

    def _dpkg_divert(self, *args: str) -> str:
        argv = ["dpkg-divert", *(["--root", self.root] if self.root != "/" else []), *args]
        done = self._run(argv)
        if done.returncode != 0:
            raise HypervisorError(f"{' '.join(argv)} failed: {_detail(done)}")
        return done.stdout

    def _check_import(self, path: str, names: Sequence[str]) -> None:
        """Ganeti's interpreter, in a child, must import ``path`` as Ganeti's map and find
        hvlibvirt's classes for ``names``, Ganeti's for the other servable names."""
        share = self._host(self.share)
        done = self._run([self.python, "-c", _PROBE, self._live, path, *SERVABLE],
                         cwd=share, env=dict(_CHILD_ENV, PYTHONPATH=share))
        modules = done.stdout.split()
        want = ["hvlibvirt" if n in names else "ganeti" for n in SERVABLE]
        if done.returncode == 0 and [m.split(".")[0] for m in modules] == want:
            return
        detail = (done.stderr.strip().splitlines() or [" ".join(modules) or "no output"])[-1]
        if names:
            raise HypervisorError(f"Ganeti's interpreter {self.python} cannot use hvlibvirt "
                                  f"for {', '.join(names)} ({detail}); is the {PACKAGE} "
                                  "package installed?")
        raise HypervisorError(f"Ganeti's interpreter {self.python} cannot import Ganeti's "
                              f"own map {self.diverted} ({detail})")


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


def _write_file(path: str, text: str) -> None:
    """Write ``path`` afresh and flush it to disk (it is renamed into place next: a crash
    must not leave an empty map behind the new name)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            data = text.encode()
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        try:
            _unlink_if_there(path)
        except OSError:
            pass  # a stray file beside the map: never imported, replaced next time
        raise HypervisorError(f"Cannot write {path}: {err.strerror}") from None


def _fs(what: str, operation: Callable[..., object], *args: str) -> None:
    try:
        operation(*args)
    except OSError as err:
        raise HypervisorError(f"Cannot {what}: {err.strerror}") from None


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _undone(err: HypervisorError, steps: Sequence[tuple[str, Callable[[], object]]]
            ) -> HypervisorError:
    """``err``, after undoing ``steps`` in order; an undo that fails is named in it (the
    message stays one line)."""
    failed = []
    for what, step in steps:
        try:
            step()
        except (OSError, HypervisorError) as undo_err:
            failed.append(f"{what}: {getattr(undo_err, 'strerror', None) or undo_err}")
    if failed:
        return HypervisorError(f"{err}; undoing it failed too ({'; '.join(failed)})")
    return err


def _detail(done: subprocess.CompletedProcess) -> str:
    return (done.stderr or "").strip().replace("\n", " ") or f"exit status {done.returncode}"


def _interpreter_of(script: str) -> str:
    """The interpreter a Ganeti script's #! line names (/usr/bin/python3 by default)."""
    try:
        with open(script, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        first = ""
    return first[2:].split()[0] if first.startswith("#!") and first[2:].split() \
        else "/usr/bin/python3"
