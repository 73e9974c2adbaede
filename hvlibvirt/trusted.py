"""Directories that root (or this user) writes into on a guest's behalf.

hvlibvirt's ownership marks and lock files, and the serial console logs virtlogd writes
for an instance, go to directories named by configuration. Whoever can swap such a
directory, or a directory above it, for a symbolic link redirects those writes (root's,
with names and contents an instance partly chooses) anywhere on the node. One check
decides for all of them: the directory itself is a real directory (not a symbolic link)
of this user's that neither its group nor others may write, and every directory on the
way to it, as written and as resolved, belongs to root or this user and is writable
by nobody else unless sticky (as /tmp is: there others cannot rename what is not theirs).
"""

from __future__ import annotations

import os
import stat

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def why_untrusted(path: str, create: bool = False) -> str | None:
    """Why ``path`` is not a trusted directory (see the module docstring), or None if it
    is. ``create``: make a missing one (mode 0700), once the directories above it pass."""
    if not os.path.isabs(path):
        return "it is not an absolute path"
    path = os.path.normpath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return "it does not exist"
        why = _why_ancestors_untrusted(path)
        if why:
            return why
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError as err:
            return f"it cannot be created: {err.strerror}"
    except OSError as err:
        return f"it cannot be examined: {err.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to uid {os.geteuid()} who writes there"
    if st.st_mode & _OTHERS_WRITE:
        return f"its group or others may write to it (mode {stat.S_IMODE(st.st_mode):04o})"
    return _why_ancestors_untrusted(path)


def _why_ancestors_untrusted(path: str) -> str | None:
    """Why a directory above ``path`` lets someone else replace what is below it."""
    parent = os.path.dirname(path)
    # As written (a symbolic link on the way is as safe as the directory holding it) and
    # as resolved (the directories the link leads through). Missing ones are made later.
    chain = sorted(set(_prefixes(parent)) | set(_prefixes(os.path.realpath(parent))))
    trusted_owners = (0, os.geteuid())
    for directory in chain:
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            continue
        except OSError as err:
            return f"{directory} above it cannot be examined: {err.strerror}"
        if st.st_uid not in trusted_owners:
            return f"{directory} above it belongs to uid {st.st_uid}"
        if (not stat.S_ISLNK(st.st_mode) and st.st_mode & _OTHERS_WRITE
                and not st.st_mode & stat.S_ISVTX):
            return (f"{directory} above it may be written by its group or others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o})")
    return None


def _prefixes(path: str) -> list[str]:
    """``/``, ``/a``, ``/a/b`` for ``/a/b``."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
