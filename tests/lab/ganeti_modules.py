"""Ganeti's own Python modules for the tests, from Debian's packages: downloaded with
``apt-get download`` and unpacked (never installed) into the test cache.

Each Debian release carries one Ganeti (Debian 12: ganeti-3.0, with ganeti-3.1 in
bookworm-backports; Debian 13: ganeti-3.1). A version the machine's own apt sources
lack is fetched through a private apt configuration in the cache naming the suite that
has it, so the host's /etc/apt is never changed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Ganeti version -> the Debian suite that carries its package
SUITES = {"3.0": "bookworm", "3.1": "bookworm-backports"}
MIRROR_ENV = "HVLIBVIRT_DEBIAN_MIRROR"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class ModulesUnavailable(Exception):
    """The package could not be fetched (no apt, no network, no such package)."""


def ganeti_share(version: str, cache: Path) -> Path:
    """``usr/share/ganeti/<version>`` of package ganeti-<version>, unpacked in ``cache``
    (the directory to put on sys.path for ``import ganeti``)."""
    work = cache / f"ganeti-{version}"
    share = work / "usr/share/ganeti" / version
    if (share / "ganeti" / "constants.py").is_file():
        return share
    work.mkdir(parents=True, exist_ok=True)
    package = f"ganeti-{version}"
    errors = []
    for environment in (lambda: None, lambda: _private_apt(version, cache)):
        try:
            _run(["apt-get", "download", package], work, environment())
            break
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(str(getattr(err, "stderr", b"") or err).strip()[-300:])
    else:
        raise ModulesUnavailable(f"cannot download {package}: " + " / ".join(errors))
    try:
        (deb,) = work.glob(f"{package}_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(work)], work, None)
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        raise ModulesUnavailable(f"cannot unpack {package}: {err}") from None
    return share


def _private_apt(version: str, cache: Path) -> dict[str, str] | None:
    """An environment whose APT_CONFIG adds the suite carrying ganeti-<version>, with
    package lists fetched into the cache (None when no suite is known)."""
    suite = SUITES.get(version)
    if suite is None:
        return None
    root = cache / "apt" / suite
    for sub in ("lists/partial", "archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get(MIRROR_ENV, "http://deb.debian.org/debian")
    (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    (root / "apt.conf").write_text(
        f'Dir::Etc::SourceList "{root}/sources.list";\n'
        f'Dir::Etc::SourceParts "{root}/sources.list.d";\n'
        f'Dir::State::Lists "{root}/lists";\n'
        f'Dir::Cache::Archives "{root}/archives";\n'
        f'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
        'APT::Sandbox::User "root";\n')
    env = dict(os.environ, APT_CONFIG=str(root / "apt.conf"))
    _run(["apt-get", "update", "-qq"], root, env)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None) -> None:
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True, timeout=300)
