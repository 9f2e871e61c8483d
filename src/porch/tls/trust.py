"""`porch trust`: the local CA's root certificate, and where to install it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from porch.config.model import Config
from porch.storage import FileStorage
from porch.tls.local_ca import ROOT_CERT, LocalCA

INSTALL_NAME = "porch-local-ca.crt"


def no_local_ca(config: Config, storage: FileStorage, config_path: str) -> str | None:
    """Why `porch trust` prints nothing for `config`, or None when it should: a site
    uses the local CA, or its root exists already.  Making a CA nobody uses would
    leave a signing key in state_dir, and a root people install for nothing."""
    if any(site.tls == "internal" for site in config.sites) or storage.get(ROOT_CERT) is not None:
        return None
    return f"""\
porch: no site in {config_path} uses Porch's local CA (tls = "internal"), so there is
no root certificate to trust; nothing was created in {storage.root}.
  tls = "auto" sites get certificates from a public CA (acme_ca) that browsers and
  curl trust already; tls = {{ cert, key }} sites are trusted through whoever issued
  those files.
For HTTPS on a local name (localhost, an IP address, *.test, *.internal), give a site
that name (tls = "internal" is the default for such names), then run porch trust again."""


def root_pem(storage: FileStorage) -> bytes:
    """The root (PEM), made now if Porch has not made it yet."""
    return LocalCA(storage).root_pem()


def instructions(pem: bytes, storage: FileStorage, config_path: str) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    name = cert.subject.rfc4514_string()
    config = "" if config_path == "/etc/porch/porch.toml" else f" -c {config_path}"
    return f"""\
Above: the root certificate of Porch's local CA, which signs the certificates of
sites with tls = "internal" (localhost, IP addresses, .test, .local, .internal ...).
  subject      {name}
  SHA-256      {fingerprint}
  valid until  {cert.not_valid_after_utc:%Y-%m-%d}
  file         {storage.path(ROOT_CERT)}

Trust it on this machine (Debian, Ubuntu: curl, Python, most programs):
  porch trust{config} > /usr/local/share/ca-certificates/{INSTALL_NAME}
  update-ca-certificates
Browsers keep their own list: Firefox: Settings > Privacy & Security > Certificates >
View Certificates > Authorities > Import; Chrome/Chromium on Linux:
  certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n "Porch local CA" -i {INSTALL_NAME}
Other devices: copy {INSTALL_NAME} there and import it as a trusted root certificate
(macOS: Keychain Access, System keychain, "Always Trust"; Windows: certlm.msc, Trusted
Root Certification Authorities; Android and iOS: Settings, install a CA certificate)."""
