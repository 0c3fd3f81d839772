"""TLS credentials for the TLS rows of tagmig and QEMU alike."""

import os
import shutil
import subprocess


def make_creds(d):
    """CA, server and client certificates in the QEMU/libvirt layout (what --tls-creds takes).
    Returns d, or None without the openssl command."""
    if shutil.which("openssl") is None:
        return None
    os.makedirs(d, exist_ok=True)

    def ossl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out",
         "ca-cert.pem", "-days", "30", "-subj", "/CN=tagmig bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for role, ext in (("server", "serverAuth"), ("client", "clientAuth")):
        with open(os.path.join(d, f"{role}.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    f"extendedKeyUsage={ext}\n"
                    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:198.18.0.2\n")  # --link: host B
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}-key.pem", "-out",
             f"{role}.csr", "-subj", f"/CN=localhost")
        ossl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-out", f"{role}-cert.pem", "-days", "30", "-extfile", f"{role}.ext")
    return d
