"""libvirt's TLS transport for the lab's nodes: a certificate authority made for one
cluster, and for each node a key and a certificate that serves both as libvirtd's server
certificate and as the client certificate its libvirtd shows a peer (a peer-to-peer
migration's connection is made by the source's libvirtd).

libvirt's default paths (what ``qemu+tls://HOST/system`` reads with no ``pkipath``):
/etc/pki/CA/cacert.pem, /etc/pki/libvirt/{servercert,clientcert}.pem and
/etc/pki/libvirt/private/{serverkey,clientkey}.pem. The client checks the server's
certificate against the URI's host, here the node's address (Ganeti's ``{target}``), so
each certificate names it as an IP subject alternative name, beside the node's name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CA_CERT = "/etc/pki/CA/cacert.pem"
FILES = {"servercert": "/etc/pki/libvirt/servercert.pem",
         "clientcert": "/etc/pki/libvirt/clientcert.pem",
         "serverkey": "/etc/pki/libvirt/private/serverkey.pem",
         "clientkey": "/etc/pki/libvirt/private/clientkey.pem"}
DAYS = "30"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make(workdir: Path, nodes: dict[str, str]) -> dict[str, dict[str, tuple[bytes, int]]]:
    """A CA in ``workdir`` and a certificate for each node (fqdn -> address); returns,
    per fqdn, the files to put in that node: node path -> (content, mode)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = workdir / "ca-key.pem", workdir / "ca-cert.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca_cert), "-days", DAYS, "-subj", "/O=hvlibvirt lab/CN=lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    made = {}
    for fqdn, ip in nodes.items():
        key, csr, cert = (workdir / f"{fqdn}-{part}.pem" for part in ("key", "csr", "cert"))
        ext = workdir / f"{fqdn}.ext"
        ext.write_text(f"subjectAltName=IP:{ip},DNS:{fqdn}\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       "basicConstraints=critical,CA:FALSE\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/O=hvlibvirt lab/CN={fqdn}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(ext))
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
        made[fqdn] = {CA_CERT: (ca_cert.read_bytes(), 0o644),
                      FILES["servercert"]: (cert_pem, 0o644),
                      FILES["clientcert"]: (cert_pem, 0o644),
                      FILES["serverkey"]: (key_pem, 0o600),
                      FILES["clientkey"]: (key_pem, 0o600)}
    return made
