"""The lab's exceptions (shared by the process, mount-point, network and daemon modules)."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not be set up."""


class LabLeakError(LabError):
    """Teardown found processes, namespaces or mounts that should be gone (they were killed/removed)."""

