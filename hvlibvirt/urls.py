"""URLs in hvparams (KVM's cdrom images) and in userspace drive URIs (gluster): one
parser for CheckParameterSyntax and the XML builders, so that whatever the check
accepts the builder can express.

Parsed here rather than with urllib.parse: its ``port`` raises ValueError lazily, it
drops tabs and newlines silently, and what it accepts inside brackets depends on the
Python release.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from hvlibvirt.errors import HypervisorError

# Network sources libvirt's QEMU driver takes for a read-only image, with default ports.
IMAGE_SCHEMES = {"http": 80, "https": 443, "ftp": 21, "ftps": 990}
GLUSTER_SCHEMES = {"gluster": 24007}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_PORT = re.compile(r"^[0-9]{1,5}\Z")
# Whitespace, control characters and what RFC 3986 wants percent-encoded: never part
# of a URL as written (and urllib would drop some of them without a word).
_NOT_URL = re.compile(r"[\x00-\x20\x7f-\x9f\s<>\"\\^`{|}]")
_MAX_HOST = 253
CREDENTIALS_REFUSED = ("a URL must not carry a user name or password: hvlibvirt records "
                       "hvparams in the domain's metadata, which libvirt's read-only "
                       "socket shows to every local user (write a literal '@' as %40)")


class Url(NamedTuple):
    """What a network ``<source>`` needs: protocol, host (lower case, IPv6 without
    brackets), port (the scheme's default when the URL has none), and the name (path and
    query; the fragment never reaches the server)."""

    scheme: str
    host: str
    port: int
    name: str


def looks_like_url(value: Any) -> bool:
    """Whether ``value`` starts like a URL (``scheme://``), accepted scheme or not."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def _host(text: str) -> str | None:
    """The host part's problem, or None."""
    if text.startswith("["):
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"{inner[:60]!r} in brackets is not an IPv6 address"
        return None if "%" not in inner else "an IPv6 zone (%...) cannot be used here"
    if not text:
        return "it has no host"
    if "[" in text or "]" in text:
        return "brackets may only enclose a whole IPv6 address"
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if len(name) > _MAX_HOST or not all(_LABEL.match(label) for label in labels):
        return f"{text[:60]!r} is not a host name or IP address"
    if labels[-1].isdigit():  # no top-level domain is numeric: an IPv4 address
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return f"{text[:60]!r} is not an IPv4 address"
    return None


def split(value: Any, schemes: dict[str, int]) -> Url | str:
    """``value`` parsed as a URL of one of ``schemes`` (name -> default port), or the
    reason it is not one. Reasons never quote credentials."""
    if not isinstance(value, str):
        return f"a URL is a string, not {type(value).__name__}"
    match = _SCHEME.match(value)
    if match is None or match.group(1) not in schemes:
        return f"a URL must start with one of {', '.join(f'{s}://' for s in schemes)}"
    scheme, rest = match.group(1), value[match.end():]
    # Any '@' may end a user:password whose password holds a '/', '?' or '#' (where
    # the authority would seem to end), so each counts as credentials and nothing of
    # the URL is quoted.
    if "@" in rest:
        return CREDENTIALS_REFUSED
    if _NOT_URL.search(value):
        return ("a URL cannot contain whitespace, control characters or any of <>\"\\^`{|} "
                "(percent-encode them)")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if authority.startswith("["):
        close = authority.find("]") + 1
        if not close:
            return "an IPv6 address must be closed by ']'"
        host, port_text = authority[:close], authority[close:]
        if port_text and not port_text.startswith(":"):
            return "only ':port' may follow an IPv6 address in brackets"
    else:
        host, colon, port_text = authority.partition(":")
        port_text = colon + port_text
        if ":" in port_text[1:]:
            return "an IPv6 address must be written in brackets ([...])"
    problem = _host(host)
    if problem:
        return problem
    port = schemes[scheme]
    if port_text:
        digits = port_text[1:]
        if not _PORT.match(digits) or not 1 <= int(digits) <= 65535:
            return f"port {digits[:20]!r} is not a number in 1-65535"
        port = int(digits)
    path_and_query = tail.split("#", 1)[0]
    path, _, query = path_and_query.partition("?")
    return Url(scheme, host.strip("[]").lower(), port,
               (path or "/") + (f"?{query}" if query else ""))


def problem(value: Any, schemes: dict[str, int]) -> str | None:
    """Why ``value`` is not a URL of ``schemes``, or None."""
    parsed = split(value, schemes)
    return parsed if isinstance(parsed, str) else None


def parse(value: Any, schemes: dict[str, int], what: str) -> Url:
    """``value`` as a URL of ``schemes``, or HypervisorError naming ``what`` (never
    quoting credentials)."""
    parsed = split(value, schemes)
    if isinstance(parsed, str):
        # Redacted before clipping: clipping first could cut off the '@' that marks
        # what redact hides.
        shown = "" if parsed == CREDENTIALS_REFUSED else f" {redact(repr(value))[:200]}"
        raise HypervisorError(f"Invalid {what}{shown}: {parsed}")
    return parsed


def redact(text: str) -> str:
    """``text`` with whatever could be credentials in a URL (after ``://``, up to the
    last '@' before whitespace) replaced by ``***``, for messages that quote a value."""
    if "@" not in text or "://" not in text:
        return text

    def hide(match: re.Match[str]) -> str:
        rest = match.group(1)
        return match.group(0) if "@" not in rest else "://***" + rest[rest.rindex("@"):]
    return re.sub(r"://(\S*)", hide, text)
