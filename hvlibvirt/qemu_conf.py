"""Host-wide settings of libvirt's QEMU driver that hvparams depend on (qemu.conf).

Some of Ganeti's per-instance hvparams are, in libvirt, settings of the whole host:
VNC TLS and its certificates, and the private mount namespace QEMU runs in. Such an
hvparam is honoured when this node's qemu.conf already does what it asks, which is
checked on the node (ValidateParameters, before every start). libvirt has no API that
reports these settings, so the file is read; its path is the ``qemu_conf`` key of the
configuration file (default /etc/libvirt/qemu.conf). Unset keys take libvirt's defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from hvlibvirt import config, constants as C
from hvlibvirt.errors import HypervisorError

DEFAULT_PATH = "/etc/libvirt/qemu.conf"
# libvirt's defaults for the keys we read (qemu.conf's comments say the same)
DEFAULTS: dict[str, Any] = {
    "vnc_tls": 0,
    "default_tls_x509_cert_dir": "/etc/pki/qemu",
    "default_tls_x509_verify": 0,
    "namespaces": ["mount"],
}
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def path() -> str:
    return config.value(C.HT_KVM, "qemu_conf") or DEFAULT_PATH


def read(file: str) -> dict[str, Any]:
    """Key -> int, string or list of strings; libvirt's defaults for what is unset."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as err:
        raise HypervisorError(f"Cannot read libvirt's QEMU configuration {file}: "
                              f"{getattr(err, 'strerror', None) or err}") from None
    values = dict(DEFAULTS)
    pending = ""  # a list value may span lines
    for line in map(_without_comment, text.splitlines()):
        if pending:
            pending += " " + line
        elif _ASSIGNMENT.match(line):
            pending = line
        if not pending or pending.count("[") > pending.count("]"):
            continue
        key, raw = _ASSIGNMENT.match(pending).groups()
        pending = ""
        raw = raw.strip()
        if raw.startswith("["):
            values[key] = _STRING.findall(raw)
        elif raw.startswith('"'):
            found = _STRING.match(raw)
            values[key] = found.group(1) if found else ""
        else:
            try:
                values[key] = int(raw.split()[0])
            except (ValueError, IndexError):
                values[key] = raw
    return values


def _without_comment(line: str) -> str:
    quoted = False
    for index, char in enumerate(line):
        if char == '"' and (index == 0 or line[index - 1] != "\\"):
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def problems(hvparams: Mapping[str, Any]) -> list[str]:
    """Why this node's QEMU driver configuration does not do what these host-wide
    hvparams ask ([] when it does)."""
    if not (hvparams.get(C.HV_VNC_TLS) or hvparams.get(C.HV_KVM_USE_CHROOT)):
        return []
    file = path()
    conf = read(file)
    found = []
    if hvparams.get(C.HV_VNC_TLS) and hvparams.get(C.HV_VNC_BIND_ADDRESS):
        if not conf["vnc_tls"]:
            found.append(f"Parameter 'vnc_tls' is true but {file} does not set vnc_tls = 1 "
                         "(libvirt enables VNC TLS for every domain of a host)")
        cert_dir = conf.get("vnc_tls_x509_cert_dir") or conf["default_tls_x509_cert_dir"]
        wanted = hvparams.get(C.HV_VNC_X509)
        if wanted and os.path.normpath(wanted) != os.path.normpath(cert_dir):
            found.append(f"Parameter 'vnc_x509_path' is {wanted} but libvirt reads VNC "
                         f"certificates from {cert_dir} ({file})")
        verify = bool(conf.get("vnc_tls_x509_verify", conf["default_tls_x509_verify"]))
        if bool(hvparams.get(C.HV_VNC_X509_VERIFY)) != verify:
            found.append(f"Parameter 'vnc_x509_verify' is "
                         f"{bool(hvparams.get(C.HV_VNC_X509_VERIFY))} but {file} has "
                         f"vnc_tls_x509_verify = {int(verify)}")
    if hvparams.get(C.HV_KVM_USE_CHROOT) and "mount" not in (conf["namespaces"] or []):
        found.append(f"Parameter 'use_chroot' is true but {file} turns off the private "
                     "mount namespace libvirt confines QEMU in (namespaces lacks \"mount\")")
    return found
