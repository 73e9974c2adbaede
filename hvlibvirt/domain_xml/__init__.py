"""Pure translation between Ganeti objects and libvirt domain XML.

No libvirt calls and no I/O here: builders turn (instance, block devices, hvparams,
target) into an lxml tree; the parser turns live XML back into devices, addresses and
our metadata. One module per concern: ``builder`` (the domain), ``devices`` (one
function per device element), ``metadata`` (our namespace), ``parser``.
"""

from hvlibvirt.domain_xml.builder import GuestTarget, build_domain, to_string
from hvlibvirt.domain_xml.parser import LiveDevice, LiveDomain, parse_domain

__all__ = ["GuestTarget", "build_domain", "to_string", "parse_domain", "LiveDomain",
           "LiveDevice"]
