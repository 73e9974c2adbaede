"""Which libvirt domains are ours: those carrying our metadata element.

libvirt's listing returns names, UUIDs and ids only, and a domain's UUID stays Ganeti's
instance UUID (the guest's SMBIOS UUID, as under Ganeti's own KVM), so nothing listed
tells an instance from a foreign domain: the metadata read (one small RPC, nothing
parsed) does. Its answer is remembered in two places:

* in the process, per (URI, domain UUID), yes or no (long-lived processes);
* on the node, a yes only, as an empty file ``<dir>/<URI as a name>/<UUID>``: Ganeti's
  node daemon forks a fresh process for every RPC, and there one RPC per listed domain
  would make ListInstances cost a round trip per instance where Ganeti's own KVM lists
  a directory (docs/costs.md).
  ``<dir>`` is ``owned`` in the node's runtime directory (``/run/hvlibvirt/owned`` for
  root, see ``config.run_dir``), is created private, and is not used unless it is a trusted
  directory (``hvlibvirt.trusted``: this user's, nobody else may write to it or swap
  it); a mark that cannot be written is just not kept.

A mark is removed when hvlibvirt undefines the domain (``forget``). It goes stale only
if something else undefines an instance and then defines a foreign domain under the
same UUID, Ganeti's instance UUID: that domain would be taken for the instance. A driver
that keeps its domains inside the process (``connection.keeps_domains_in_process``) gets
no marks: they would outlive its domains.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import libvirt

from hvlibvirt import config, connection, instance_metadata, trusted

_known: dict[tuple[str, str], bool] = {}  # (uri, domain uuid) -> carries our metadata
# A long-lived caller meets ever new uuids (an instance gets a new domain at each start):
# past this many the oldest answer goes, and is asked again should it be needed.
KNOWN_MAX = 4096
_mark_dirs: dict[str, str | None] = {}  # uri -> its trusted mark directory, None: none
# URI characters a directory name shows as they are; the rest become "_" (a digest of
# the exact URI keeps the names apart). A table made at import: noded's parent has it.
_READABLE = str.maketrans({chr(c): "_" for c in range(128)
                           if not (chr(c).isalnum() or chr(c) in "._-")})


def is_ours(uri: str, dom: libvirt.virDomain) -> bool:
    """Whether ``dom`` carries our metadata (see the module docstring)."""
    uuid = dom.UUIDString()
    key = (uri, uuid)
    # No lock: each dict operation here is atomic under the GIL, and two threads that
    # race only both ask (noded's fresh child pays for every line it runs first).
    known = _known.get(key)
    if known is not None:
        return known
    marks = _mark_dir(uri)
    if marks is not None and _marked(marks, uuid):
        known = True
    else:
        carried = instance_metadata.carried(dom)
        if carried is None:
            # Gone since it was listed: remember nothing, the uuid may come back
            # (an instance is redefined under its uuid at every start).
            return False
        known = carried
        if known and marks is not None:
            _mark(marks, uuid)
    _remember(key, known)
    return known


def _remember(key: tuple[str, str], known: bool) -> None:
    _known[key] = known
    while len(_known) > KNOWN_MAX:
        try:
            del _known[next(iter(_known))]
        except (KeyError, RuntimeError, StopIteration):  # another thread took it first
            break


def remember(uri: str, dom: libvirt.virDomain) -> None:
    """Record a domain hvlibvirt has just defined as ours (no read needed)."""
    uuid = dom.UUIDString()
    _remember((uri, uuid), True)
    marks = _mark_dir(uri)
    if marks is not None:
        _mark(marks, uuid)


def forget(uri: str, dom: libvirt.virDomain) -> None:
    """Drop what is remembered of a domain that is being undefined."""
    uuid = dom.UUIDString()
    _known.pop((uri, uuid), None)
    marks = _mark_dir(uri, create=False)
    if marks is not None:
        try:
            os.unlink(os.path.join(marks, uuid))
        except OSError:
            pass


def mark_root() -> str:
    """The directory of the node's marks, one subdirectory per URI."""
    return os.path.join(config.run_dir(), "owned")


def prepare_for_fork(uris: Iterable[str]) -> None:
    """Find the mark directories of ``uris`` now, in a parent that will fork (noded)."""
    for uri in uris:
        _mark_dir(uri)


def uri_dir_name(uri: str) -> str:
    """The name of ``uri``'s mark directory: readable prefix, digest of the exact URI."""
    digest = hashlib.sha256(uri.encode(errors="surrogateescape")).hexdigest()[:16]
    readable = uri.translate(_READABLE) if uri.isascii() else ""
    return f"{readable[:80]}.{digest}"


def _mark_dir(uri: str, create: bool = True) -> str | None:
    """The trusted mark directory of ``uri``, made if ``create``; None if it has none."""
    if uri in _mark_dirs:
        return _mark_dirs[uri]
    if connection.keeps_domains_in_process(uri):
        found: str | None = None
    else:
        found = os.path.join(mark_root(), uri_dir_name(uri))
        if trusted.why_untrusted(found, create) is not None:
            if not create:
                return None  # perhaps made later: ask again next time
            found = None
    _mark_dirs[uri] = found
    return found


def _marked(marks: str, uuid: str) -> bool:
    try:
        os.lstat(os.path.join(marks, uuid))
        return True
    except OSError:
        return False


def _mark(marks: str, uuid: str) -> None:
    try:
        os.close(os.open(os.path.join(marks, uuid),
                         os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    except OSError:
        pass  # a cache: the next process asks libvirt again
