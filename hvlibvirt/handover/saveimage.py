"""libvirt's QEMU save-image header, written in front of a migration stream so that
``virDomainRestoreFlags`` starts the domain and feeds it the stream.

The layout (libvirt's ``virQEMUSaveHeader``, src/qemu/qemu_saveimage.h) is not a public
format: it is checked against libvirt's version before use (``check_version``), and
tests/test_real_handover.py reads a header libvirt itself wrote and fails loudly when
it no longer matches this one.

    char     magic[16]     "LibvirtQemudSave" (no NUL); "LibvirtQemudPart" = unfinished
    uint32   version       2 (1 has no cookie)
    uint32   data_len      bytes after the header before QEMU's stream: the XML, its
                           NUL, an optional cookie and its NUL, padding
    uint32   was_running   1: libvirt resumes the guest once the stream is in
    uint32   compressed    0: raw stream
    uint32   cookieOffset  0: no cookie
    uint32   unused[14]

92 bytes, host byte order.
"""

from __future__ import annotations

import struct
from typing import Final
from dataclasses import dataclass

from hvlibvirt.errors import HypervisorError

MAGIC = b"LibvirtQemudSave"
MAGIC_PARTIAL = b"LibvirtQemudPart"
VERSION = 2
HEADER = struct.Struct("=16s5I56s")  # host byte order, no padding
HEADER_SIZE = 92
# libvirt versions whose header this layout is known to match (inclusive lower bound,
# exclusive upper): 9.0 (Debian 12) and 11.3 (Debian 13); the header is unchanged in
# libvirt's history up to 11.x.
KNOWN_VERSIONS = ((4, 0, 0), (12, 0, 0))
PAGE = 4096


@dataclass(frozen=True)
class Header:
    magic: bytes
    version: int
    data_len: int
    was_running: bool
    compressed: int
    cookie_offset: int
    xml: str

    @property
    def stream_offset(self) -> int:
        return HEADER_SIZE + self.data_len


def check_version(lib_version: int) -> None:
    """Refuse a libvirt (``virConnectGetLibVersion``'s number) whose save-image header
    this module has not been checked against."""
    major, minor, micro = lib_version // 1000000, lib_version // 1000 % 1000, lib_version % 1000
    low, high = KNOWN_VERSIONS
    if not low <= (major, minor, micro) < high:
        raise HypervisorError(
            f"libvirt {major}.{minor}.{micro}: its QEMU save-image header is not known to "
            f"match the one hvlibvirt writes (checked for {'.'.join(map(str, low))} up to "
            f"before {'.'.join(map(str, high))})")


# From libvirt 11.1 (its mapped-ram save format) a restore reads the header and XML in
# a pass of its own, closes the file and opens it again to restore from it; libvirt 9.0
# reads on in its one open. (Checked: 9.0 once, 11.3 twice.)
READS_HEADER_TWICE_FROM: Final = 11_001_000


def header_reads(lib_version: int) -> int:
    """How many times libvirt ``lib_version``'s restore opens the image and reads its
    header and XML."""
    return 2 if lib_version >= READS_HEADER_TWICE_FROM else 1


def build(xml: str, was_running: bool = True) -> bytes:
    """Header plus domain XML, padded so that the stream starts on a page boundary."""
    data = xml.encode() + b"\0"
    data += b"\0" * (-(HEADER_SIZE + len(data)) % PAGE)
    return HEADER.pack(MAGIC, VERSION, len(data), int(was_running), 0, 0,
                       b"\0" * 56) + data


def parse(blob: bytes) -> Header:
    """Read a header (and its XML) from the start of a save image."""
    if len(blob) < HEADER_SIZE:
        raise HypervisorError("save image: shorter than its header")
    magic, version, data_len, running, compressed, cookie, _unused = HEADER.unpack_from(blob)
    if magic not in (MAGIC, MAGIC_PARTIAL):
        raise HypervisorError(f"save image: unknown magic {magic!r}")
    data = blob[HEADER_SIZE:HEADER_SIZE + data_len]
    if len(data) < data_len:
        raise HypervisorError("save image: shorter than its data length")
    xml = data[:cookie or data_len].split(b"\0", 1)[0].decode()
    return Header(magic, version, data_len, bool(running), compressed, cookie, xml)
