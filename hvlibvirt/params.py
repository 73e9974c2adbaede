"""Hypervisor parameter checks: Ganeti's five-tuple framework and its standard checkers.

A hypervisor class declares ``PARAMETERS = {name: check}`` where ``check`` is the
five-tuple ``(required, syntax_fn, syntax_msg, node_fn, node_msg)``:

* ``syntax_fn`` runs in ``CheckParameterSyntax`` (cheap, on the master, no I/O);
* ``node_fn`` runs in ``ValidateParameters`` (on the node, may look at the system).

A value is *unspecified* when it is ``None`` or ``""``; unspecified optional values
skip their checks, unspecified required values are an error. ``0`` and ``False`` are
specified values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hvlibvirt import constants, urls
from hvlibvirt.errors import HypervisorError

CheckFn = Callable[[Any], bool]
Check = tuple[bool, CheckFn | None, str | None, CheckFn | None, str | None]


# -- value predicates ---------------------------------------------------------------
def is_norm_abs_path(path: Any) -> bool:
    """True for an absolute path with no ``.``/``..``/``//`` components."""
    return isinstance(path, str) and os.path.isabs(path) and os.path.normpath(path) == path


def is_url(value: Any) -> bool:
    """True for an http(s) or ftp(s) URL the XML builder can express (see hvlibvirt.urls:
    a host, a port in 1-65535, no credentials)."""
    return urls.problem(value, urls.IMAGE_SCHEMES) is None


def _file_or_url_problem(value: Any) -> str | None:
    if is_norm_abs_path(value):
        return None
    if urls.looks_like_url(value):
        return urls.problem(value, urls.IMAGE_SCHEMES)
    return "neither an absolute normalized path nor a URL"


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, URL credentials hidden."""
    return urls.redact(repr(value))


_CPU_NUMBER = re.compile(r"^\s*([0-9]+)\s*\Z")


def _clip(text: str, size: int = 40) -> str:
    """``text`` shortened for an error message (masks can be huge)."""
    return text if len(text) <= size else f"{text[:size]}..."


def _cpu_number(text: str, part: str) -> int:
    match = _CPU_NUMBER.match(text)
    if match is None:
        raise ValueError(f"invalid CPU range {_clip(part)!r}")
    digits = match.group(1).lstrip("0") or "0"
    # Bounded as text first: a number with thousands of digits is not worth converting.
    if len(digits) > len(str(constants.MAX_HOST_CPUS)) or \
            int(digits) >= constants.MAX_HOST_CPUS:
        raise ValueError(f"CPU {_clip(digits, 20)} is beyond the highest host CPU number "
                         f"libvirt can pin to ({constants.MAX_HOST_CPUS - 1})")
    return int(digits)


def cpu_ranges(mask: str) -> list[tuple[int, int]]:
    """Parse ``"0-2,5"`` into ``[(0, 2), (5, 5)]`` without expanding anything; raise
    ValueError when malformed or naming a CPU at or above ``MAX_HOST_CPUS``.

    An empty mask gives an empty list.
    """
    if not isinstance(mask, str):
        raise ValueError(f"a CPU mask is a string, not {type(mask).__name__}")
    ranges: list[tuple[int, int]] = []
    if not mask:
        return ranges
    for part in mask.split(","):
        bounds = part.split("-")
        if len(bounds) > 2:
            raise ValueError(f"invalid CPU range {_clip(part)!r}")
        lower, upper = _cpu_number(bounds[0], part), _cpu_number(bounds[-1], part)
        if lower > upper:
            raise ValueError(f"invalid CPU range {_clip(part)!r}: {lower} > {upper}")
        ranges.append((lower, upper))
    return ranges


def parse_cpu_mask(mask: str) -> list[int]:
    """Parse ``"0-2,5"`` into ``[0, 1, 2, 5]``; raise ValueError when malformed (see
    cpu_ranges). An empty mask gives an empty list."""
    return [cpu for lower, upper in cpu_ranges(mask) for cpu in range(lower, upper + 1)]


def multi_cpu_ranges(mask: str) -> list[list[tuple[int, int]] | None]:
    """The entries of a multiple CPU mask as ranges (None for ``all``), checked without
    expanding: at most ``MAX_VCPUS`` entries (one per vCPU), none empty. ValueError."""
    if not isinstance(mask, str):
        raise ValueError(f"a CPU mask is a string, not {type(mask).__name__}")
    if not mask:
        return []
    entries = mask.split(constants.CPU_PINNING_SEP)
    if len(entries) > constants.MAX_VCPUS:
        raise ValueError(f"{len(entries)} entries, more than one per vCPU of the largest "
                         f"instance ({constants.MAX_VCPUS} vCPUs)")
    result: list[list[tuple[int, int]] | None] = []
    for entry in entries:
        entry = entry.strip()
        if entry == constants.CPU_PINNING_ALL:
            result.append(None)
            continue
        ranges = cpu_ranges(entry)
        if not ranges:
            raise ValueError(f"empty CPU mask entry in {_clip(mask)!r}")
        result.append(ranges)
    return result


def parse_multi_cpu_mask(mask: str) -> list[list[int]]:
    """Parse ``"0-2,4:all:1,3"`` into ``[[0, 1, 2, 4], [-1], [1, 3]]``.

    Each ``:``-separated entry is ``all`` (``[-1]``) or a single CPU mask; entries are
    deduplicated and sorted. An empty string gives ``[]``. Raises ValueError, before
    expanding anything (see multi_cpu_ranges).
    """
    return [list(constants.CPU_PINNING_OFF) if ranges is None else
            sorted({cpu for lower, upper in ranges for cpu in range(lower, upper + 1)})
            for ranges in multi_cpu_ranges(mask)]


# For the hvparam tables' docs: what the cpu_mask syntax check bounds.
CPU_MASK_BOUNDS = (f"CPU numbers 0-{constants.MAX_HOST_CPUS - 1} (libvirt's cpuset limit, "
                   f"above Linux's NR_CPUS ceiling) and at most {constants.MAX_VCPUS} "
                   "entries (libvirt's vCPU limit), checked before any range is expanded")


def _problem(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """The ValueError message ``parse(value)`` raises, or None."""
    def problem(value: Any) -> str | None:
        try:
            parse(value)
        except ValueError as err:
            return str(err)
        return None
    return problem


def _cpu_mask_problem(value: Any) -> str | None:
    return _problem(cpu_ranges)(value) or (None if value else "an empty CPU mask")


class Explained:
    """A syntax predicate that can also say why a value fails: ``problem(value)`` returns
    the reason or None. check_syntax reports that reason; called, it is the plain
    true/false predicate of Ganeti's check tuples."""

    def __init__(self, problem: Callable[[Any], str | None]) -> None:
        self.problem = problem

    def __call__(self, value: Any) -> bool:
        return self.problem(value) is None


# -- check tuples ------------------------------------------------------------------------
def _req(required: bool, body: tuple[CheckFn | None, str | None, CheckFn | None, str | None]
         ) -> Check:
    return (required, *body)


_FILE = (is_norm_abs_path, "must be an absolute normalized path",
         os.path.isfile, "not found or not a file")
_FILE_OR_URL = (Explained(_file_or_url_problem),
                "must be an absolute normalized path or a URL",
                lambda v: os.path.isfile(v) or is_url(v), "not found or not a file or URL")
_DIR = (is_norm_abs_path, "must be an absolute normalized path",
        os.path.isdir, "not found or not a directory")
_CPU_MASK = (Explained(_cpu_mask_problem), "CPU mask definition is not well-formed",
             None, None)
_MULTI_CPU_MASK = (Explained(_problem(multi_cpu_ranges)),
                   "Multiple CPU mask definition is not well-formed", None, None)
_NET_PORT = (lambda v: 0 < v < 65535, "invalid port number (must be 1-65534)", None, None)
_VIRTIO_NET_QUEUES = (lambda v: 0 < v <= constants.MAX_VIRTIO_NET_QUEUES,
                      f"invalid number of queues (must be 1-{constants.MAX_VIRTIO_NET_QUEUES})",
                      None, None)
_NONNEGATIVE_INT = (lambda v: v >= 0, "cannot be negative", None, None)

REQ_FILE_CHECK = _req(True, _FILE)
OPT_FILE_CHECK = _req(False, _FILE)
REQ_FILE_OR_URL_CHECK = _req(True, _FILE_OR_URL)
OPT_FILE_OR_URL_CHECK = _req(False, _FILE_OR_URL)
REQ_DIR_CHECK = _req(True, _DIR)
OPT_DIR_CHECK = _req(False, _DIR)
REQ_NET_PORT_CHECK = _req(True, _NET_PORT)
OPT_NET_PORT_CHECK = _req(False, _NET_PORT)
REQ_VIRTIO_NET_QUEUES_CHECK = _req(True, _VIRTIO_NET_QUEUES)
OPT_VIRTIO_NET_QUEUES_CHECK = _req(False, _VIRTIO_NET_QUEUES)
REQ_CPU_MASK_CHECK = _req(True, _CPU_MASK)
OPT_CPU_MASK_CHECK = _req(False, _CPU_MASK)
REQ_MULTI_CPU_MASK_CHECK = _req(True, _MULTI_CPU_MASK)
OPT_MULTI_CPU_MASK_CHECK = _req(False, _MULTI_CPU_MASK)
REQ_NONNEGATIVE_INT_CHECK = _req(True, _NONNEGATIVE_INT)
OPT_NONNEGATIVE_INT_CHECK = _req(False, _NONNEGATIVE_INT)
NO_CHECK: Check = (False, None, None, None, None)
REQUIRED_CHECK: Check = (True, None, None, None, None)
MIGRATION_MODE_CHECK: Check = (True, lambda v: v in constants.HT_MIGRATION_MODES,
                               "invalid migration mode (must be live or non-live)", None, None)


def param_in_set(required: bool, values: Collection[Any]) -> Check:
    """A membership check: the value must be one of ``values``."""
    allowed = ", ".join(str(v) for v in values)
    return (required, lambda v: v in values, f"The value must be one of: {allowed}", None, None)


def int_range_check(required: bool, lower: int, upper: int, what: str) -> Check:
    """An inclusive integer range check."""
    return (required, lambda v: lower <= v <= upper, f"{what} (must be {lower}-{upper})",
            None, None)


# -- running the checks ----------------------------------------------------------------
def is_unspecified(value: Any) -> bool:
    """Ganeti's rule: only None and the empty string mean 'not set'."""
    return value is None or value == ""


# What XML 1.0 cannot carry (tab, newline and carriage return it can).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _type_ok(vtype: str, value: Any) -> bool:
    if vtype == constants.VTYPE_BOOL:
        return isinstance(value, bool)
    if vtype == constants.VTYPE_INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if vtype == constants.VTYPE_MAYBE_STRING:
        return value is None or isinstance(value, str)
    return isinstance(value, str)


def check_syntax(parameters: Mapping[str, Check], hvparams: Mapping[str, Any],
                 types: Mapping[str, str]) -> None:
    """Ganeti's CheckParameterSyntax rules over a full hvparams dict.

    Unknown keys, missing keys, values of the wrong type, missing required values and
    failed syntax checks all raise HypervisorError naming the parameter. ``types`` are
    the value types of the Ganeti followed.
    """
    if not isinstance(hvparams, Mapping):
        raise HypervisorError(f"hvparams must be a dict, not {type(hvparams).__name__}")
    for key in sorted(set(hvparams) - set(parameters), key=repr):
        raise HypervisorError(f"Parameter '{key}' is not supported")
    for key in sorted(set(parameters) - set(hvparams)):
        raise HypervisorError(f"Parameter '{key}' is missing")
    for name, (required, check_fn, errstr, _, _) in sorted(parameters.items()):
        value = hvparams[name]
        vtype = types.get(name, constants.VTYPE_STRING)
        if is_unspecified(value):
            if required:
                raise HypervisorError(
                    f"Parameter '{name}' is required but is currently not defined")
            # Ganeti's ForceDictType lets "" through for strings and None for
            # maybe-strings only: nothing else unset reaches a Ganeti hypervisor.
            if value == "" and vtype == constants.VTYPE_STRING or \
                    vtype == constants.VTYPE_MAYBE_STRING:
                continue
        if not _type_ok(vtype, value):
            raise HypervisorError(
                f"Parameter '{name}' must be of type {vtype}, not {type(value).__name__}"
                f" (current value: {shown(value)})")
        if isinstance(value, str) and _NOT_XML.search(value):
            raise HypervisorError(
                f"Parameter '{name}' contains a NUL or control character, which libvirt's "
                f"XML cannot carry (current value: {shown(value)})")
        if check_fn is None:
            continue
        if isinstance(check_fn, Explained):
            reason = check_fn.problem(value)
            reason = reason and f"{errstr}: {reason}"
        else:
            reason = None if check_fn(value) else errstr
        if reason:
            raise HypervisorError(f"Parameter '{name}' fails syntax check: {reason} "
                                  f"(current value: {shown(value)})")


def check_node(parameters: Mapping[str, Check], hvparams: Mapping[str, Any]) -> None:
    """Ganeti's ValidateParameters rules: run each parameter's node-side check."""
    for name, (required, _, _, check_fn, errstr) in sorted(parameters.items()):
        try:
            value = hvparams[name]
        except KeyError:
            raise HypervisorError(f"Parameter '{name}' is missing") from None
        if is_unspecified(value):
            if required:
                raise HypervisorError(
                    f"Parameter '{name}' is required but is currently not defined")
            continue
        if check_fn is not None and not check_fn(value):
            raise HypervisorError(
                f"Parameter '{name}' fails validation: {errstr} (current value: {shown(value)})")


# -- parameter tables ------------------------------------------------------------------
Refusal = Callable[[Any, Mapping[str, Any]], "str | None"]
#: a Ganeti version, (major, minor)
Version = tuple[int, int]
#: the Ganeti whose hvparams the rows' defaults and checks are; ``since`` says what later
#: versions changed
BASE_VERSION: Final[Version] = (3, 0)
#: the Ganeti versions the tables describe
KNOWN_VERSIONS: Final = ((3, 0), (3, 1))
_SAME: Final = object()


@dataclass(frozen=True)
class Since:
    """What a Ganeti version changed about one hvparam, from that version on: its
    default, its valid values (for a membership check), or its removal."""

    default: Any = _SAME
    values: tuple[Any, ...] | None = None
    removed: bool = False


@dataclass(frozen=True)
class HvParam:
    """One hvparam of a hypervisor (the row's key is its name): everything hvlibvirt
    knows about it, and the source ``tables.HVC_DEFAULTS``, ``HVS_PARAMETER_TYPES``,
    the hypervisor classes' ``PARAMETERS`` and docs/hvparams.md derive from.

    ``check`` is Ganeti's five-tuple and ``default`` its default, both Ganeti 3.0's;
    ``vtype`` its value type when the default's own type does not say (maybe-string).
    Exactly one of ``xml`` (how it shapes the domain XML) and ``runtime`` (how it shapes
    behaviour instead) describes it. ``refuse(value, hvparams)`` returns why a value
    cannot be honoured (``refused`` says which values, for the docs). ``valid`` names
    Ganeti's constant listing the values a membership check accepts (read from the
    installed Ganeti where there is one); ``since`` says what later Ganeti versions
    changed.
    """

    check: Check
    default: Any = field(kw_only=True)
    vtype: str = ""
    xml: str = ""
    runtime: str = ""
    refuse: Refusal | None = None
    refused: str = ""
    valid: str = ""
    since: Mapping[Version, Since] | None = None

    def _changes(self, version: Version) -> list[Since]:
        return [change for since, change in sorted((self.since or {}).items())
                if since <= version]

    def present_in(self, version: Version) -> bool:
        """Whether Ganeti ``version`` has this hvparam."""
        return not any(change.removed for change in self._changes(version))

    @property
    def value_type(self) -> str:
        """Ganeti's value type (VType) of this hvparam."""
        if self.vtype:
            return self.vtype
        if isinstance(self.default, bool):
            return constants.VTYPE_BOOL
        return constants.VTYPE_INT if isinstance(self.default, int) else constants.VTYPE_STRING

    def default_in(self, version: Version) -> Any:
        """Its default in Ganeti ``version``."""
        base = self.default
        for change in self._changes(version):
            if change.default is not _SAME:
                base = change.default
        return base

    def values_in(self, version: Version) -> tuple[Any, ...]:
        """The values its membership check accepts in Ganeti ``version``."""
        values = tuple(getattr(constants, self.valid))
        for change in self._changes(version):
            if change.values is not None:
                values = change.values
        return values

    def changes_doc(self) -> str:
        """What later Ganeti versions changed, for the docs ('' when nothing)."""
        notes = []
        for (major, minor), change in sorted((self.since or {}).items()):
            what = ["removed"] if change.removed else []
            if change.default is not _SAME:
                what.append(f"default `{change.default!r}`")
            if change.values is not None:
                what.append(f"values {', '.join(map(str, change.values))}")
            notes.append(f"Ganeti {major}.{minor}: {', '.join(what)}")
        return "; ".join(notes)

    def with_values(self, values: Collection[Any]) -> Check:
        """Its check accepting ``values`` (a membership check's required flag kept)."""
        return param_in_set(self.check[0], tuple(values))


def checks_of(table: Mapping[str, HvParam]) -> dict[str, Check]:
    """The ``PARAMETERS`` dict (name -> five-tuple) of a parameter table."""
    return {name: entry.check for name, entry in table.items()}


def check_refusals(table: Mapping[str, HvParam], hvparams: Mapping[str, Any]) -> None:
    """Refuse values the hypervisor cannot honour, naming the parameter and the reason."""
    for name, entry in sorted(table.items()):
        if entry.refuse is None or is_unspecified(hvparams[name]):
            continue
        reason = entry.refuse(hvparams[name], hvparams)
        if reason:
            raise HypervisorError(f"Parameter '{name}' value {shown(hvparams[name])} is not "
                                  f"supported: {reason}")


#: a cross-parameter rule: why a whole hvparams dict is not acceptable, or None
Rule = Callable[[Mapping[str, Any]], "str | None"]


def check_rules(rules: Iterable[Rule], hvparams: Mapping[str, Any]) -> None:
    """Apply cross-parameter rules in order; the first broken one raises its message."""
    for rule in rules:
        reason = rule(hvparams)
        if reason:
            raise HypervisorError(reason)


def refused(values: str, reason: str, predicate: Callable[[Any], bool]) -> dict[str, Any]:
    """HvParam fields refusing the values ``predicate`` accepts, for ``reason``;
    ``values`` says which ones, for the docs."""
    return {"refuse": lambda value, _hvp: reason if predicate(value) else None,
            "refused": f"{values}: {reason}"}


def error_of(fn: Callable[..., Any], *args: Any) -> str | None:
    """The message of the HypervisorError ``fn(*args)`` raises, or None (for refusals
    that ask the XML builders whether they can express a value)."""
    try:
        fn(*args)
    except HypervisorError as err:
        return str(err)
    return None
