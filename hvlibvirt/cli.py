"""The ``hvlibvirt`` command: a demo and small operator tools.

    hvlibvirt demo [--uri test:///default]   KVM, Xen PVM and HVM lifecycles, step by step (demo.py)
    hvlibvirt check-params kvm KEY=VALUE...  CheckParameterSyntax on defaults + overrides
    hvlibvirt hvparams-doc                   the hvparam tables (docs/hvparams.md)
    hvlibvirt list [--uri URI]               GetAllInstancesInfo
    hvlibvirt console [--uri URI] NAME       the serial console (resumes a paused instance)
    hvlibvirt ganeti enable|disable|status|check   serve Ganeti's hypervisors from hvlibvirt
                                             (--force: even while instances run)
    hvlibvirt forget-hv-kvm-runtime [--uri URI] NAME   a handed-over instance stops
                                             offering hv_kvm the way back (docs/handover.md)

check-params takes each VALUE as the hvparam's type: true/false (also yes/no, on/off,
1/0) for booleans, a decimal number for integers, the text as given for strings.

Every error is one line on stderr; the library's log messages go there too only with -v
(warnings) or -vv (everything). Exit status:
    0  done
    1  refused or failed: bad hvparams, libvirt unreachable or refusing, a file that
       cannot be read; ganeti check: hvlibvirt would refuse something
    2  bad command line: unknown subcommand, hypervisor or hvparam, a value not of the
       hvparam's type, a missing or extra argument
    3  ganeti status: Ganeti's own hypervisors serve this node
    4  unexpected error (a bug in hvlibvirt: please report it)
  130  interrupted
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hvlibvirt import __version__, constants, urls
from hvlibvirt.hypervisors import get_hypervisor_class
from hvlibvirt.errors import HypervisorError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_SERVED, EXIT_BUG = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_INT = re.compile(r"^[+-]?[0-9]{1,30}\Z")


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage is in --help) and raised, not exits,
    so that main() decides the exit status."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def hvparams_markdown() -> str:
    """docs/hvparams.md: every hvparam of each hypervisor, what it becomes, and what is
    refused."""
    from hvlibvirt.kvm_params import KVM_PARAMS
    from hvlibvirt.xen_params import XEN_HVM_PARAMS, XEN_PVM_PARAMS

    def cell(text: object) -> str:
        return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    lines = [
        "# hvparams in hvlibvirt",
        "",
        "Generated from `hvlibvirt/kvm_params.py` and `hvlibvirt/xen_params.py` by",
        "`hvlibvirt hvparams-doc`; a test checks that this file and the code agree. Every",
        "one of Ganeti's hvparams (65 KVM, 18 Xen PVM, 25 Xen HVM; Ganeti 3.1 drops",
        "`xen_cmd`) either shapes the libvirt domain XML, shapes runtime behaviour, or",
        "has values that `CheckParameterSyntax` refuses with the reason given here.",
        "Defaults are Ganeti 3.0's (what hvlibvirt follows standalone), with what later",
        "versions changed in brackets; inside Ganeti, the running Ganeti's own names,",
        "defaults and valid values apply.",
    ]
    for title, table in (("KVM (`kvm`, libvirt's QEMU driver)", KVM_PARAMS),
                         ("Xen PVM (`xen-pvm`, libvirt's libxl driver)", XEN_PVM_PARAMS),
                         ("Xen HVM (`xen-hvm`, libvirt's libxl driver)", XEN_HVM_PARAMS)):
        lines += ["", f"## {title}", "",
                  "| parameter | default | what hvlibvirt does with it | "
                  "refused values |", "|---|---|---|---|"]
        for name in sorted(table):
            entry = table[name]
            if entry.xml:
                does = f"XML: {entry.xml}"
            elif entry.runtime:
                does = f"runtime: {entry.runtime}"
            else:
                does = "nothing beyond the default: every other value is refused"
            default = f"`{entry.default!r}`"
            if entry.since:
                default += f" ({cell(entry.changes_doc())})"
            lines.append(f"| `{name}` | {default} | {cell(does)} | "
                         f"{cell(entry.refused) if entry.refused else ''} |")
    return "\n".join(lines) + "\n"


def _shown(text: str) -> str:
    """``text`` quoted for a message: clipped, URL credentials hidden."""
    shown = urls.redact(repr(text))
    return shown if len(shown) <= 60 else f"{shown[:60]}..."


def parse_value(hv_name: str, key: str, text: str) -> Any:
    """``text`` as the value of hvparam ``key`` of ``hv_name``, by the hvparam's type in
    the Ganeti hvlibvirt follows; UsageError for an unknown key or a value not of its
    type."""
    hv_class = get_hypervisor_class(hv_name)
    if key not in hv_class.DEFAULTS:
        raise UsageError(f"{hv_name} has no hvparam {_shown(key)} (hvlibvirt hvparams-doc "
                         "lists them)")
    vtype = hv_class.TYPES[key]
    if vtype == constants.VTYPE_BOOL:
        if text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise UsageError(f"{key} is a boolean (true or false), not {_shown(text)}")
    if vtype == constants.VTYPE_INT:
        if _INT.match(text.strip()):
            return int(text)
        raise UsageError(f"{key} is an integer, not {_shown(text)}")
    return text


def check_params(hv_name: str, overrides: Sequence[str]) -> int:
    hv_class = get_hypervisor_class(hv_name)
    hvparams = dict(hv_class.DEFAULTS)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {_shown(item)}")
        hvparams[key] = parse_value(hv_name, key, value)
    hv_class.CheckParameterSyntax(hvparams)
    print(f"{hv_name}: parameters accepted")
    return EXIT_OK


def list_instances(hv_name: str, uri: str | None) -> int:
    hv = get_hypervisor_class(hv_name)(uri=uri)
    for info in hv.GetAllInstancesInfo():
        print("\t".join(str(v) for v in info))
    return 0


def forget_hv_kvm_runtime(uri: str | None, name: str) -> int:
    """Drop the hv_kvm runtime a handed-over KVM instance keeps for the way back."""
    from hvlibvirt.handover import back
    from hvlibvirt.host import Host

    host = Host(get_hypervisor_class(constants.HT_KVM)(uri=uri).uri)
    dom = host.owned(name)
    if dom is None:
        raise HypervisorError(f"{name}: no hvlibvirt instance of that name at {host.uri}")
    print(f"{name}: hv_kvm runtime dropped; it now migrates by libvirt only" if back.forget(dom)
          else f"{name}: keeps no hv_kvm runtime; nothing to change")
    return EXIT_OK


def ganeti_command(action: str, hypervisors: str, config_data: str, force: bool) -> int:
    """``hvlibvirt ganeti enable|disable|status|check`` on this node (see
    hvlibvirt.ganeti). ``status`` exits 0 when hvlibvirt serves Ganeti's hypervisors,
    3 when it does not; ``check`` exits 1 when hvlibvirt would refuse something."""
    names = tuple(n.strip() for n in hypervisors.split(",") if n.strip())
    unknown = [n for n in names if n not in constants.HYPER_TYPES]
    if unknown or not names:
        raise UsageError(f"--hypervisors: {', '.join(map(_shown, unknown)) or 'none given'}"
                         f" (expected some of {', '.join(sorted(constants.HYPER_TYPES))})")
    if action == "check":
        from hvlibvirt.ganeti.check import check
        found = check(config_data, names)
        for where, problem in found:
            print(f"{where}: {problem}")
        print(f"{len(found)} hvparam problem(s) for hvlibvirt in {config_data}")
        return EXIT_FAILED if found else EXIT_OK
    from hvlibvirt.ganeti.node import GanetiNode

    node = GanetiNode()
    if action == "status":
        status = node.status()
        print(status.describe())
        return EXIT_OK if status.served else EXIT_NOT_SERVED
    outcome = node.enable(names, force) if action == "enable" else node.disable(force)
    print(outcome.status.describe()
          + ("" if outcome.changed else "; nothing to change")
          + ("; ganeti-noded restarted" if outcome.noded_restarted else ""))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hvlibvirt", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show the library's warnings (-vv: all its log messages)")
    parser.add_argument("--version", action="version",
                        version=f"hvlibvirt {__version__} ({os.path.dirname(__file__)})")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="KVM, Xen PVM and Xen HVM instance lifecycles on "
                            "libvirt's test driver")
    p_demo.add_argument("--uri", default="test:///default")
    p_check = sub.add_parser("check-params", help="check hvparams (defaults + KEY=VALUE)")
    p_check.add_argument("hypervisor", choices=sorted(constants.HYPER_TYPES))
    p_check.add_argument("overrides", nargs="*")
    sub.add_parser("hvparams-doc", help="print docs/hvparams.md (the hvparam tables)")
    p_console = sub.add_parser("console", help="attach to an instance's serial console "
                               "(resumes a paused instance; Ctrl-] detaches)")
    p_console.add_argument("--uri")
    p_console.add_argument("--hypervisor", default=constants.HT_KVM,
                           choices=sorted(constants.HYPER_TYPES))
    p_console.add_argument("instance")
    p_list = sub.add_parser("list", help="list running instances")
    p_list.add_argument("--hypervisor", default=constants.HT_KVM,
                        choices=sorted(constants.HYPER_TYPES))
    p_list.add_argument("--uri")
    p_ganeti = sub.add_parser("ganeti", help="make this node's Ganeti serve hypervisors "
                              "from hvlibvirt (enable), give Ganeti its own back (disable), "
                              "say which is active (status), or list the hvparams of the "
                              "cluster's instances hvlibvirt would refuse (check, on the "
                              "master)")
    p_ganeti.add_argument("action", choices=("enable", "disable", "status", "check"))
    p_ganeti.add_argument("--hypervisors", default=constants.HT_KVM,
                          help="enable, check: comma-separated, from kvm,xen-pvm,xen-hvm "
                               "(default: kvm)")
    p_ganeti.add_argument("--force", action="store_true",
                          help="enable, disable: switch even while instances run that the "
                               "switch hides from Ganeti (or libvirt cannot say)")
    p_ganeti.add_argument("--config-data", default="/var/lib/ganeti/config.data",
                          help="check: Ganeti's configuration file")
    p_forget = sub.add_parser("forget-hv-kvm-runtime",
                              help="make an instance that came from Ganeti's hv_kvm by the "
                                   "live handover migrate by libvirt only (no way back to "
                                   "an hv_kvm node)")
    p_forget.add_argument("--uri")
    p_forget.add_argument("instance")
    p_helper = sub.add_parser("migration-helper")  # internal: started by MigrateInstance
    p_helper.add_argument("spec")
    p_relay = sub.add_parser("handover-relay")  # internal: started by AcceptInstance
    p_relay.add_argument("spec")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from hvlibvirt import demo
        return demo.run(args.uri)
    if args.command == "check-params":
        return check_params(args.hypervisor, args.overrides)
    if args.command == "console":
        from hvlibvirt import console
        uri = get_hypervisor_class(args.hypervisor)(uri=args.uri).uri
        return console.attach(uri, args.instance)
    if args.command == "hvparams-doc":
        print(hvparams_markdown(), end="")
        return EXIT_OK
    if args.command == "ganeti":
        return ganeti_command(args.action, args.hypervisors, args.config_data, args.force)
    if args.command == "forget-hv-kvm-runtime":
        return forget_hv_kvm_runtime(args.uri, args.instance)
    if args.command == "migration-helper":
        from hvlibvirt import migration
        try:
            spec = migration.parse_spec(args.spec)
        except ValueError as err:
            raise UsageError(f"migration-helper: {err}") from None
        return migration.run_helper(spec)
    if args.command == "handover-relay":
        from hvlibvirt.handover import relay
        return relay.run_helper(args.spec)
    return list_instances(args.hypervisor, args.uri)


def _logging(verbosity: int) -> None:
    """Library log records reach stderr only when asked for: without -v, an error is the
    one line main() prints (Python would otherwise print warnings by itself)."""
    root = logging.getLogger()
    if verbosity:
        logging.basicConfig(level=logging.WARNING if verbosity == 1 else logging.DEBUG,
                            format="hvlibvirt: %(levelname)s: %(name)s: %(message)s")
    elif not root.handlers:
        root.addHandler(logging.NullHandler())


def _fail(status: int, message: object) -> int:
    """Say what went wrong in one line on stderr; return the exit status."""
    text = " ".join(str(message).split()) or "(no message)"
    try:
        print(f"hvlibvirt: error: {text}", file=sys.stderr, flush=True)
    except OSError:
        pass  # stderr is gone too: the status still tells
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hvlibvirt`` command; returns the exit status (see the module docstring)."""
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as done:  # --help, --version
            return done.code if isinstance(done.code, int) else EXIT_OK
        _logging(args.verbose)
        return _run(args)
    except UsageError as err:
        return _fail(EXIT_USAGE, err)
    except HypervisorError as err:
        return _fail(EXIT_FAILED, err)
    except BrokenPipeError:
        # The reader left (hvlibvirt list | head): nothing more to say, and Python must
        # not complain about flushing stdout at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as err:
        return _fail(EXIT_FAILED, err)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")
    except Exception as err:  # noqa: BLE001 - a bug: still one line, not a traceback
        return _fail(EXIT_BUG, f"unexpected {type(err).__name__}: {err} (a bug in "
                               "hvlibvirt; please report it)")


if __name__ == "__main__":
    sys.exit(main())
