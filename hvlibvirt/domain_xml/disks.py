"""``<disk>`` elements: instance disks, cdroms, the floppy, and the SCSI controller.

A Ganeti disk reaches us as ``(disk, link_name, drive_uri)``: a kernel-space path (file
or block device, by disk template) or, for ``access=userspace``, a QEMU storage URI
(rbd, gluster) that becomes a network disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from lxml import etree

from hvlibvirt import constants as C, urls
from hvlibvirt.domain_xml import addresses, identity, inputs
from hvlibvirt.errors import HypervisorError
# Where cdroms go and what q35 lacks: facts the hvparam tables' refusals share (the
# builder reads them from here too).
from hvlibvirt.param_values import (CDROM_KINDS, CDROM_PARAMS, SATA,  # noqa: F401
                                    boots_from_cdrom, cdrom_type, on_q35)

# Ganeti disk_type -> (libvirt device, bus, guest name prefix)
DISK_KINDS = {
    C.HT_DISK_PARAVIRTUAL: ("disk", "virtio", "vd"),
    C.HT_DISK_IDE: ("disk", "ide", "hd"),
    "scsi-hd": ("disk", "scsi", "sd"),
    "scsi-cd": ("cdrom", "scsi", "sd"),
    "scsi-block": ("lun", "scsi", "sd"),
}


def disk_kind(hvparams: Mapping[str, Any]) -> tuple[str, str, str]:
    """(device, bus, name prefix) of the instance disks: disk_type's, IDE as SATA on q35."""
    device, bus, prefix = DISK_KINDS[hvparams[C.HV_DISK_TYPE]]
    if bus == "ide" and on_q35(hvparams):
        return device, SATA, "sd"
    return device, bus, prefix


def _driver(elem: etree._Element, hvparams: Mapping[str, Any], cache: str | None,
            aio: bool) -> None:
    driver = etree.SubElement(elem, "driver", name="qemu", type="raw")
    if cache and cache != "default":
        driver.set("cache", cache)
    if aio:
        driver.set("io", hvparams[C.HV_KVM_DISK_AIO] or "threads")
    discard = hvparams.get(C.HV_DISK_DISCARD)
    if discard and discard != "default":
        driver.set("discard", discard)


def _network_source(elem: etree._Element, uri: str, what: str) -> None:
    """rbd:pool/image[:id=user] or gluster://host[:port]/volume/path."""
    elem.set("type", "network")
    if uri.startswith("rbd:"):
        image, *opts = uri[4:].split(":")
        if "/" not in image or not all(image.split("/")):
            raise HypervisorError(f"Invalid {what} {uri!r}: expected rbd:pool/image")
        source = etree.SubElement(elem, "source", protocol="rbd", name=image)
        for opt in opts:
            key, _, value = opt.partition("=")
            if key != "id" or not value:
                raise HypervisorError(f"Unsupported option {opt!r} in {what} {uri!r} (only "
                                      "id=<user> is understood)")
            # The key lives in a libvirt secret the operator defines, by this usage name.
            auth = etree.SubElement(source, "auth", username=value)
            etree.SubElement(auth, "secret", type="ceph", usage=f"client.{value} secret")
        return
    if urls.looks_like_url(uri):
        url = urls.parse(uri, urls.GLUSTER_SCHEMES, what)
        path = url.name.partition("?")[0]
        if path.count("/") >= 2:
            source = etree.SubElement(elem, "source", protocol="gluster",
                                      name=path.lstrip("/"))
            etree.SubElement(source, "host", name=url.host, port=str(url.port),
                             transport="tcp")
            return
    raise HypervisorError(f"Unsupported storage URI in {what}: {urls.redact(repr(uri))} "
                          "(expected rbd:pool/image or gluster://host[:port]/volume/path)")


def _template_and_mode(disk_obj: Any, what: str) -> tuple[str, str]:
    """The disk's template (one with storage) and access mode, or HypervisorError."""
    with_storage = set(C.DISK_TEMPLATES) - {C.DT_DISKLESS}
    template = inputs.one_of(getattr(disk_obj, "dev_type", None), with_storage,
                             f"dev_type of {what}", "not a disk template that has storage")
    mode = inputs.one_of(getattr(disk_obj, "mode", C.DISK_RDWR), C.DISK_ACCESS_SET,
                         f"mode of {what}", "expected rw or ro")
    return template, mode


def disk(disk_obj: Any, link_name: str | None, drive_uri: str | None, index: int,
         hvparams: Mapping[str, Any], target: str) -> etree._Element:
    """The ``<disk>`` for ``block_devices[index]`` (address and boot added by the caller)."""
    what = f"disk {index}"
    dev_uuid = getattr(disk_obj, "uuid", None)
    alias = identity.device_alias("disk", dev_uuid)
    template, mode = _template_and_mode(disk_obj, what)
    device, bus, _ = disk_kind(hvparams)
    if bus in ("ide", SATA) and mode == C.DISK_RDONLY:
        raise HypervisorError(f"{what} is read-only, which {bus.upper()} hard disks cannot "
                              "be (use disk_type paravirtual or scsi-hd)")
    params = inputs.disk_params(disk_obj, what)
    userspace = params.get(C.LDP_ACCESS) == C.DISK_USERSPACE and drive_uri
    elem = etree.Element("disk", type="block", device=device)  # type settled below
    # Shared storage must not be cached on the host, or a migration can corrupt it
    # (Ganeti forces this too); rbd has its own cache coherency.
    forced_none = template in C.DTS_EXT_MIRROR and template != C.DT_RBD
    cache = "none" if forced_none else hvparams[C.HV_DISK_CACHE]
    _driver(elem, hvparams, cache, aio=not userspace)
    if userspace:
        _network_source(elem, identity.plain_text(drive_uri, f"drive_uri of {what}"),
                        f"drive_uri of {what}")
    else:
        if not link_name:
            raise HypervisorError(f"{what} ({dev_uuid}) has neither a link_name nor a "
                                  "userspace drive_uri")
        path = identity.absolute_path(link_name, f"link_name of {what}")
        if template in C.DTS_FILEBASED:
            if device == "lun":
                raise HypervisorError(f"disk_type scsi-block needs a block device, but {what}"
                                      f" uses the file-based template {template!r}")
            elem.set("type", "file")
            etree.SubElement(elem, "source", file=path)
        else:
            elem.set("type", "block")
            etree.SubElement(elem, "source", dev=path)
    etree.SubElement(elem, "target", dev=target, bus=bus)
    if mode == C.DISK_RDONLY or device == "cdrom":
        etree.SubElement(elem, "readonly")
    etree.SubElement(elem, "alias", name=alias)
    return elem


def cdrom(number: int, image: str, cdrom_type: str, target: str) -> etree._Element:
    """cdrom ``number`` (1 or 2) from a local image or an http(s)/ftp(s) URL."""
    what = f"cdrom{'2' if number == 2 else ''}_image_path"
    device, bus, _ = CDROM_KINDS[cdrom_type]
    elem = etree.Element("disk", type="file", device=device)  # type settled below
    etree.SubElement(elem, "driver", name="qemu", type="raw")
    image = identity.plain_text(image, what)
    if urls.looks_like_url(image):
        url = urls.parse(image, urls.IMAGE_SCHEMES, what)
        elem.set("type", "network")
        source = etree.SubElement(elem, "source", protocol=url.scheme, name=url.name)
        etree.SubElement(source, "host", name=url.host, port=str(url.port))
    else:
        elem.set("type", "file")
        etree.SubElement(elem, "source", file=identity.absolute_path(image, what))
    etree.SubElement(elem, "target", dev=target, bus=bus)
    etree.SubElement(elem, "readonly")
    etree.SubElement(elem, "alias", name=f"ua-cdrom{number}")
    return elem


def floppy(image: str) -> etree._Element:
    """Drive A of the floppy controller (on q35 the builder adds that controller)."""
    elem = etree.Element("disk", type="file", device="floppy")
    etree.SubElement(elem, "driver", name="qemu", type="raw")
    etree.SubElement(elem, "source", file=identity.absolute_path(image, "floppy_image_path"))
    etree.SubElement(elem, "target", dev="fda", bus="fdc")
    etree.SubElement(elem, "alias", name="ua-floppy1")
    addresses.drive(elem, bus=0, target=0, unit=0)
    return elem



# -- Xen (libxl) ----------------------------------------------------------------------
# Ganeti's file driver (first item of a file-based disk's logical_id) -> libxl backend,
# as Ganeti's xl config names them: loop -> file:, blktap -> tap:aio, blktap2 -> tap2.
# Ganeti's loop driver is xl's "file:" prefix, for which libxl picks blkback over a loop
# device (on Linux its phy backend takes regular files; the block script sets up the
# loop). libvirt's driver name 'file' would force qdisk instead, which needs a device
# model started with the domain, so a hot-added file disk fails on real libxl.
XEN_FILE_DRIVERS = {C.FD_LOOP: "phy", C.FD_BLKTAP: "tap", C.FD_BLKTAP2: "tap2"}
XEN_CDROM_TARGET = "hdc"  # where Ganeti's xl config always puts the HVM cdrom


def _file_driver(disk_obj: Any, what: str) -> str:
    logical_id = getattr(disk_obj, "logical_id", None)
    name = logical_id[0] if isinstance(logical_id, (tuple, list)) and logical_id else \
        C.FD_LOOP
    try:
        return XEN_FILE_DRIVERS[name]
    except KeyError:
        raise HypervisorError(f"Invalid file driver of {what}: {name!r} (expected one of "
                              f"{', '.join(sorted(XEN_FILE_DRIVERS))})") from None


def xen_disk(disk_obj: Any, link_name: str | None, index: int, target: str, bus: str
             ) -> etree._Element:
    """The ``<disk>`` for ``block_devices[index]`` of a Xen guest: blkback (``phy``) for
    block devices, the disk's file driver for file-based templates."""
    what = f"disk {index}"
    alias = identity.device_alias("disk", getattr(disk_obj, "uuid", None))
    template, mode = _template_and_mode(disk_obj, what)
    if not link_name:
        raise HypervisorError(f"{what} ({disk_obj.uuid}) has no link_name: Xen guests use "
                              "kernel-space disk paths only")
    path = identity.absolute_path(link_name, f"link_name of {what}")
    if template in C.DTS_FILEBASED:
        elem = etree.Element("disk", type="file", device="disk")
        etree.SubElement(elem, "driver", name=_file_driver(disk_obj, what), type="raw")
        etree.SubElement(elem, "source", file=path)
    else:
        elem = etree.Element("disk", type="block", device="disk")
        etree.SubElement(elem, "driver", name="phy", type="raw")
        etree.SubElement(elem, "source", dev=path)
    etree.SubElement(elem, "target", dev=target, bus=bus)
    if mode == C.DISK_RDONLY:
        etree.SubElement(elem, "readonly")
    etree.SubElement(elem, "alias", name=alias)
    return elem


def xen_cdrom(image: str) -> etree._Element:
    """The HVM cdrom: a read-only image on the emulated IDE bus at hdc."""
    elem = etree.Element("disk", type="file", device="cdrom")
    etree.SubElement(elem, "driver", name="file", type="raw")
    etree.SubElement(elem, "source", file=identity.absolute_path(image, "cdrom_image_path"))
    etree.SubElement(elem, "target", dev=XEN_CDROM_TARGET, bus="ide")
    etree.SubElement(elem, "readonly")
    etree.SubElement(elem, "alias", name="ua-cdrom1")
    return elem
