"""URL-shaped values (issue 23): KVM's cdrom hvparams and gluster drive URIs are parsed
fully where Ganeti checks syntax, refused with credentials (never quoting them), and
whatever passes the check is what the builder expresses.

Pure: no libvirt. The hostile-input properties are in tests/test_properties.py.
"""

from __future__ import annotations

import copy
import logging

import pytest

import hostile
from hvlibvirt import constants as C, params as P, urls
from hvlibvirt import tables
from hvlibvirt.domain_xml import disks
from hvlibvirt.errors import HypervisorError
from hvlibvirt.kvm import KVMHypervisor
from hvlibvirt.objects import Disk

pytestmark = pytest.mark.tier1

URL_PARAMS = [C.HV_CDROM_IMAGE_PATH, C.HV_KVM_CDROM2_IMAGE_PATH]
PER_PARAM = pytest.mark.parametrize("param", URL_PARAMS)


def kvm(**overrides: object) -> dict:
    hvp = copy.deepcopy(tables.HVC_DEFAULTS[C.HT_KVM])
    hvp.update(overrides)
    return hvp


def refusal(param: str, value: str) -> str:
    with pytest.raises(HypervisorError) as exc:
        KVMHypervisor.CheckParameterSyntax(kvm(**{param: value}))
    assert f"'{param}'" in str(exc.value)
    return str(exc.value)


def node_check(param: str, value: str) -> None:
    """ValidateParameters' check of ``param`` alone (the defaults name node files)."""
    P.check_node({param: KVMHypervisor.PARAMETERS[param]}, {param: value})


@PER_PARAM
@pytest.mark.parametrize("value, why", [
    ("http://h:99999/x.iso", "1-65535"),
    ("http://h:0/x.iso", "1-65535"),
    ("http://h:/x.iso", "1-65535"),
    ("http://h:abc/x.iso", "1-65535"),
    ("http://h:8\u0663/x.iso", "1-65535"),        # a non-ASCII digit
    ("http://[::1/x.iso", "closed by ']'"),
    ("https://[zz]/x.iso", "not an IPv6 address"),
    ("https://[fe80::1%25eth0]/x.iso", "zone"),
    ("http://[::1]x/x.iso", "only ':port'"),
    ("http://::1/x.iso", "in brackets"),
    ("http:///x.iso", "no host"),
    ("http://", "no host"),
    ("http://999.1.1.1/x.iso", "not an IPv4 address"),
    ("http://-h/x.iso", "not a host name"),
    ("http://h\u00fc/x.iso", "not a host name"),
    ("http://h/a b.iso", "percent-encode"),
    ("http://h/<x>.iso", "percent-encode"),
    ("gluster://h/v/x.iso", "must start with one of http://"),
    ("HTTP://h/x.iso", "must start with one of http://"),
])
def test_malformed_urls_are_refused_naming_the_parameter(param: str, value: str,
                                                         why: str) -> None:
    assert why in refusal(param, value)


@PER_PARAM
@pytest.mark.parametrize("value", [
    "http://u:S3cretPW@h/x.iso", "https://S3cretPW@h/x.iso", "ftp://u:S3cretPW/x@h/x.iso",
    "ftps://u:S3cretPW?x@h/x.iso", "http://u:S3cretPW#@h:99999/x.iso", "http://h/a@b.iso",
])
def test_credentials_are_refused_without_quoting_them(param: str, value: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    msg = refusal(param, value)
    assert "user name or password" in msg and "metadata" in msg
    assert hostile.PASSWORD not in msg and hostile.PASSWORD not in caplog.text
    with pytest.raises(HypervisorError) as exc:
        node_check(param, value)
    assert f"'{param}'" in str(exc.value) and hostile.PASSWORD not in str(exc.value)


@PER_PARAM
@pytest.mark.parametrize("value, source", [
    ("http://h/x.iso", ("http", "/x.iso", "h", "80")),
    ("https://Mirror.Example:8443/a/b.iso?x=1#top", ("https", "/a/b.iso?x=1",
                                                      "mirror.example", "8443")),
    ("ftp://[2001:db8::1]:2121/x.iso", ("ftp", "/x.iso", "2001:db8::1", "2121")),
    ("ftps://192.0.2.1", ("ftps", "/", "192.0.2.1", "990")),
    ("http://h:65535/%40x.iso", ("http", "/%40x.iso", "h", "65535")),
])
def test_accepted_urls_become_the_network_source(param: str, value: str,
                                                 source: tuple[str, ...]) -> None:
    KVMHypervisor.CheckParameterSyntax(kvm(**{param: value}))
    node_check(param, value)
    elem = disks.cdrom(1, value, C.HT_DISK_IDE, "hda")
    src, host = elem.find("source"), elem.find("source/host")
    assert elem.get("type") == "network"
    assert (src.get("protocol"), src.get("name"), host.get("name"), host.get("port")) == source


def test_paths_still_pass() -> None:
    KVMHypervisor.CheckParameterSyntax(kvm(cdrom_image_path="/srv/iso/x.iso"))
    assert "neither" in refusal(C.HV_CDROM_IMAGE_PATH, "srv/iso/x.iso")


@pytest.mark.parametrize("value", ["http://h:99999/x.iso", "https://[zz]/x.iso",
                                   "http://u:S3cretPW@h/x.iso"])
def test_the_builder_raises_only_hypervisor_errors(value: str) -> None:
    with pytest.raises(HypervisorError, match="cdrom_image_path") as exc:
        disks.cdrom(1, value, C.HT_DISK_IDE, "hda")
    assert hostile.PASSWORD not in str(exc.value)


def _gluster(uri: str) -> object:
    disk = Disk(uuid="932df160-7a22-4067-a566-7e0ca8386131", dev_type=C.DT_GLUSTER, size=64,
                params={C.LDP_ACCESS: C.DISK_USERSPACE})
    return disks.disk(disk, None, uri, 0, kvm(), "vda")


@pytest.mark.parametrize("uri", ["gluster://h:99999/vol/img", "gluster://h:abc/vol/img",
                                 "gluster://[::1/vol/img", "gluster://[zz]/vol/img",
                                 "gluster://u:S3cretPW@h/vol/img", "gluster://h/vol",
                                 "http://h/vol/img"])
def test_bad_gluster_uris_are_hypervisor_errors(uri: str) -> None:
    with pytest.raises(HypervisorError, match="drive_uri of disk 0") as exc:
        _gluster(uri)
    assert hostile.PASSWORD not in str(exc.value)


def test_gluster_uri_with_ipv6_and_default_port() -> None:
    host = _gluster("gluster://[2001:db8::2]/vol/dir/img").find("source/host")
    assert (host.get("name"), host.get("port")) == ("2001:db8::2", "24007")


def test_is_url_parses_fully() -> None:
    assert P.is_url("https://h:443/x.iso")
    assert not P.is_url("https://h:99999/x.iso")
    assert not P.is_url("http://u:p@h/x.iso")


@pytest.mark.parametrize("text, shown", [
    ("'http://u:S3cretPW@h/x'", "'http://***@h/x'"),
    ("a http://u:S3c/ret?PW@h/x b ftp://h/y", "a http://***@h/x b ftp://h/y"),
    ("no url@all", "no url@all"),
    ("'ftp://h/x'", "'ftp://h/x'"),
])
def test_redact(text: str, shown: str) -> None:
    assert urls.redact(text) == shown


def test_other_messages_quoting_a_url_hide_its_credentials() -> None:
    # A type or control-character refusal quotes the value: the password stays hidden.
    msg = refusal(C.HV_CDROM_IMAGE_PATH, "http://u:S3cretPW@h/\x01")
    assert hostile.PASSWORD not in msg and "***" in msg
