"""How hvlibvirt runs itself: the console command Ganeti runs over ssh, and the
migration helper."""

from __future__ import annotations

import os
import sys


def helper_command(*args: str) -> list[str]:
    """argv running ``hvlibvirt ARGS`` with this interpreter and this installed copy of
    the package, by absolute paths: neither command may depend on the caller's
    ``sys.path`` or PYTHONPATH."""
    return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "__main__.py"), *args]
