"""A bootable floppy image whose boot sector writes one line on COM1 and halts.

The lab kernel cannot read a floppy (Debian's cloud kernel is built without
CONFIG_BLK_DEV_FD), so the firmware is what reads the drive: SeaBIOS loads sector 0
through the floppy controller and jumps to it, and the line on the serial log shows it
did. The UART needs no set-up under QEMU: a byte written to its data port is sent.
"""

from __future__ import annotations

from pathlib import Path

SECTOR = 512
SIZE = 1440 * 1024  # a 3.5" HD floppy: SeaBIOS picks the geometry from the size
_LOAD = 0x7C00      # where the BIOS loads the boot sector
_TEXT = 64          # offset of the message in the sector, after the code
_COM1 = 0x3F8


def _boot_code() -> bytes:
    """16-bit real mode: ds=0, si=message, then out each byte to COM1 until the NUL."""
    code = bytearray()
    code += bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8])              # cli; xor ax,ax; mov ds,ax
    code += bytes([0xBE]) + (_LOAD + _TEXT).to_bytes(2, "little")  # mov si, text
    code += bytes([0xBA]) + _COM1.to_bytes(2, "little")        # mov dx, 0x3f8
    loop = len(code)
    code += bytes([0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB])  # lodsb; test al,al; jz +3;
    code += bytes([(loop - (len(code) + 1)) & 0xFF])           # out dx,al; jmp loop
    code += bytes([0xF4, 0xEB, 0xFD])                          # hlt; jmp hlt
    assert len(code) <= _TEXT
    return bytes(code)


def boot_image(path: Path, line: str) -> Path:
    """Write the image to ``path``: its boot sector prints ``line`` (ASCII) on COM1."""
    text = f"{line}\r\n".encode("ascii") + b"\0"
    assert _TEXT + len(text) <= SECTOR - 2, "line too long for the boot sector"
    sector = bytearray(SECTOR)
    code = _boot_code()
    sector[:len(code)] = code
    sector[_TEXT:_TEXT + len(text)] = text
    sector[-2:] = b"\x55\xaa"  # the boot signature
    with open(path, "wb") as f:
        f.write(sector)
        f.truncate(SIZE)
    return path
