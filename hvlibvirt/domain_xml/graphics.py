"""Graphics and what goes with them: VNC/SPICE, video, input devices, sound."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from hvlibvirt import constants as C, param_values
from hvlibvirt.domain_xml import addresses
from hvlibvirt.domain_xml.options import Listen, StartupOptions
from hvlibvirt.errors import HypervisorError

# The libvirt sound models (param_values.SOUND_MODELS) that are PCI devices get a slot.
_PCI_SOUND = frozenset({"ich6", "ich9", "ac97", "es1370"})


def _listen(graphics: etree._Element, listen: Listen) -> None:
    if listen.socket:
        etree.SubElement(graphics, "listen", type="socket", socket=listen.socket)
    else:
        etree.SubElement(graphics, "listen", type="address", address=listen.address or "")


def _common(graphics: etree._Element, hvparams: Mapping[str, Any], password: str | None,
            listen: Listen) -> None:
    """Keymap, password and listen, the same for VNC and SPICE."""
    if hvparams.get(C.HV_KEYMAP):  # Xen has no keymap hvparam
        graphics.set("keymap", hvparams[C.HV_KEYMAP])
    if password:
        graphics.set("passwd", password)
    _listen(graphics, listen)


def _port(instance: Any, param: str) -> int:
    port = getattr(instance, "network_port", None)
    if isinstance(port, bool) or not isinstance(port, int) or not \
            C.VNC_BASE_PORT < port < 65536:
        raise HypervisorError(f"Invalid network_port of instance {instance.name}: {port!r} "
                              f"({param} needs a port above {C.VNC_BASE_PORT})")
    return port


def vnc(instance: Any, hvparams: Mapping[str, Any], options: StartupOptions
        ) -> etree._Element:
    listen = options.vnc_listen
    assert listen is not None
    elem = etree.Element("graphics", type="vnc")
    if not listen.socket:
        elem.set("port", str(_port(instance, C.HV_VNC_BIND_ADDRESS)))
    elem.set("autoport", "no")
    _common(elem, hvparams, options.vnc_password, listen)
    return elem


def spice(instance: Any, hvparams: Mapping[str, Any], options: StartupOptions
          ) -> etree._Element:
    listen = options.spice_listen
    assert listen is not None
    port = str(_port(instance, C.HV_KVM_SPICE_BIND))
    elem = etree.Element("graphics", type="spice")
    if hvparams[C.HV_KVM_SPICE_USE_TLS]:
        # Like Ganeti: the instance's port carries TLS only, no plaintext port.
        elem.set("tlsPort", port)
        elem.set("autoport", "no")
        elem.set("defaultMode", "secure")
    else:
        elem.set("port", port)
        elem.set("autoport", "no")
    _common(elem, hvparams, options.spice_password, listen)
    for param, tag, attr in ((C.HV_KVM_SPICE_LOSSLESS_IMG_COMPR, "image", "compression"),
                             (C.HV_KVM_SPICE_JPEG_IMG_COMPR, "jpeg", "compression"),
                             (C.HV_KVM_SPICE_ZLIB_GLZ_IMG_COMPR, "zlib", "compression")):
        if hvparams[param]:
            etree.SubElement(elem, tag, **{attr: hvparams[param]})
    etree.SubElement(elem, "playback",
                     compression="on" if hvparams[C.HV_KVM_SPICE_AUDIO_COMPR] else "off")
    if hvparams[C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION]:
        etree.SubElement(elem, "streaming", mode=hvparams[C.HV_KVM_SPICE_STREAMING_VIDEO_DETECTION])
    etree.SubElement(elem, "mouse",
                     mode="client" if hvparams[C.HV_KVM_SPICE_USE_VDAGENT] else "server")
    return elem


def video(hvparams: Mapping[str, Any], has_spice: bool) -> etree._Element:
    """The video card: ``vga`` if set, else qxl for SPICE, else standard VGA."""
    wanted = hvparams[C.HV_VGA]
    if wanted:
        model = param_values.video_model(wanted)
    elif has_spice:
        model = "qxl"
    else:
        # Ganeti's QEMU keeps its default VGA card with or without VNC (no -nodefaults,
        # and -display none only removes the display); libvirt adds none unless asked.
        model = "vga"
    elem = etree.Element("video")
    etree.SubElement(elem, "model", type=model)
    if model != "none":
        addresses.pci(elem, addresses.VIDEO_SLOT)
    return elem


def inputs(hvparams: Mapping[str, Any], has_vnc: bool) -> list[etree._Element]:
    """usb_mouse (tablet by default with VNC) and usb_devices."""
    elems = []
    mouse = hvparams[C.HV_USB_MOUSE] or ("tablet" if has_vnc else "")
    if mouse:
        elems.append(etree.Element("input", type=mouse, bus="usb"))
    for kind, *what in param_values.usb_devices(hvparams[C.HV_USB_DEVICES]):
        if kind == "input":
            elems.append(etree.Element("input", type=what[0], bus="usb"))
            continue
        dev = etree.Element("hostdev", mode="subsystem", type="usb")
        source = etree.SubElement(dev, "source")
        if kind == "id":
            etree.SubElement(source, "vendor", id=f"0x{what[0]}")
            etree.SubElement(source, "product", id=f"0x{what[1]}")
        else:
            etree.SubElement(source, "address", bus=what[0], device=what[1])
        elems.append(dev)
    return elems


def sound(hvparams: Mapping[str, Any], has_spice: bool) -> list[etree._Element]:
    """``<sound>`` plus the ``<audio>`` backend it plays to (SPICE, or nowhere)."""
    name = hvparams[C.HV_SOUNDHW]
    if not name:
        return []
    model = param_values.sound_model(name)
    elem = etree.Element("sound", model=model)
    etree.SubElement(elem, "audio", id="1")
    if model in _PCI_SOUND:
        addresses.pci(elem, addresses.SOUND_SLOT)
    audio = etree.Element("audio", id="1", type="spice" if has_spice else "none")
    return [elem, audio]


# -- Xen (libxl) ----------------------------------------------------------------------


def xen_vnc(instance: Any, hvparams: Mapping[str, Any], options: StartupOptions
            ) -> etree._Element:
    """The HVM guest's VNC server: at network_port when Ganeti allocated one above
    5900 (xl's vncdisplay), else a port libvirt picks (xl's vncunused)."""
    listen = options.vnc_listen
    assert listen is not None
    elem = etree.Element("graphics", type="vnc")
    port = getattr(instance, "network_port", None)
    if isinstance(port, int) and not isinstance(port, bool) and \
            C.VNC_BASE_PORT < port < 65536:
        elem.set("port", str(port))
        elem.set("autoport", "no")
    else:
        elem.set("autoport", "yes")
    _common(elem, hvparams, options.vnc_password, listen)
    return elem


def xen_hvm_inputs() -> list[etree._Element]:
    """Ganeti's xl config always gives HVM guests a USB tablet (usbdevice='tablet')."""
    return [etree.Element("input", type="tablet", bus="usb")]


def xen_video() -> etree._Element:
    """xl's default emulated card for HVM guests (what libxl picks when none is given)."""
    elem = etree.Element("video")
    etree.SubElement(elem, "model", type="cirrus")
    return elem


def xen_sound(name: str) -> etree._Element | None:
    """``soundhw`` -> ``<sound>``; None when empty."""
    if not name:
        return None
    return etree.Element("sound", model=param_values.xen_sound_model(name))
