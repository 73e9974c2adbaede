"""Marks several test modules share."""

import pytest

# The test forks as Ganeti's node daemon does, from a process that has threads (the
# event loop of an earlier test's connection); the child runs only what the test
# checks. Python 3.12 warns of any fork with threads.
FORK_WITH_THREADS = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")

