"""Pure translation between Ganeti objects and libvirt domain XML.

No libvirt calls and no I/O here. ``builder`` assembles a domain from an instance, its
block devices, hvparams and ``StartupOptions``; one module per element kind does the
rest (``disks``, ``nics``, ``graphics``, ``cpu``, ``channels``, ``controllers``), with
``addresses`` for PCI/SCSI/IDE/SATA placement, ``pcie`` for q35's root ports and their
hotplug pool, ``identity`` for aliases and input checks, ``metadata`` for our
namespace, and ``parser`` for reading libvirt's XML back (the one reader).
"""

from hvlibvirt.domain_xml.builder import build_domain, redacted, to_string
from hvlibvirt.domain_xml.options import GuestTarget, Listen, StartupOptions
from hvlibvirt.domain_xml.parser import LiveDevice, LiveDomain, parse_domain

__all__ = ["GuestTarget", "Listen", "StartupOptions", "build_domain", "to_string", "redacted",
           "parse_domain", "LiveDomain", "LiveDevice"]
