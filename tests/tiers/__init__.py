"""pytest plugins, one per group of test tiers (DESIGN.md), registered by tests/conftest.py.

* ``markers``: the tier markers, ``--tier`` and the check that every test has one tier;
* ``daemons``: tiers 3 and 4, private libvirtd daemons (one or two) and the lab guest;
* ``cluster``: tier 5, the two-node Ganeti cluster;
* ``xen``: tier 6, nested Xen hosts, booted early when the run selects tier 6.
"""
