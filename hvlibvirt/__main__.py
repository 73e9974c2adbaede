"""``python .../hvlibvirt/__main__.py ARGS`` (or ``python -m hvlibvirt ARGS``): the
``hvlibvirt`` command.

Run as a file, this puts its own package's parent directory first on ``sys.path``, so
the helpers we start (the ssh console command, the migration helper) import this very
copy of hvlibvirt whatever the interpreter's path holds (see ``helper_command``).
"""

import os
import sys

if not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from hvlibvirt.cli import main  # noqa: E402

sys.exit(main())
