"""ACME pieces without a network: config keys, renewal timing, bundles, ARI ids."""

from __future__ import annotations

import datetime as dt
import os
import stat
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from porch.config.errors import ConfigError
from porch.config.model import LETSENCRYPT, LETSENCRYPT_STAGING, Bundle, Webroot
from porch.config.toml import loads
from porch.tls import renewal
from porch.tls.acme import ari_cert_id, directory_slug
from porch.tls.auto import acme_names, skipped_names, wants_acme
from porch.tls.deploy import bundle_bytes, run_hook, write_bundle

SITE = '[[site]]\nhosts = ["a.example.org", "*.example.org", "192.0.2.1"]\nproxy = "http://127.0.0.1:8080"\n'


def config(text: str):
    return loads(textwrap.dedent(text), source="porch.toml")


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config(text)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def test_acme_ca_names_and_urls():
    assert config(SITE).porch.acme_ca == LETSENCRYPT
    assert config('[porch]\nacme_ca = "letsencrypt-staging"\n' + SITE).porch.acme_ca == LETSENCRYPT_STAGING
    assert config('[porch]\nacme_ca = "https://ca.internal/dir"\n' + SITE).porch.acme_ca == "https://ca.internal/dir"
    assert problem('[porch]\nacme_ca = "http://ca.internal/dir"\n' + SITE) == (
        'porch.acme_ca: "http://ca.internal/dir" is not an https:// URL; expected an ACME directory URL like'
        ' "https://acme.example/directory", "letsencrypt" or "letsencrypt-staging"')


def test_acme_ca_root_must_be_a_file():
    assert problem('[porch]\nacme_ca_root = "/nonexistent/root.pem"\n' + SITE) == (
        'porch.acme_ca_root: "/nonexistent/root.pem" is not a file; expected the CA\'s root certificate (PEM)')


def test_acme_challenge_values():
    assert config(SITE).sites[0].acme_challenge == "porch"
    assert config(SITE + 'acme_challenge = "upstream"\n').sites[0].acme_challenge == "upstream"
    got = config(SITE + 'acme_challenge = { webroot = "/var/www/le" }\n').sites[0].acme_challenge
    assert got == Webroot("/var/www/le")
    assert problem(SITE + 'acme_challenge = { webroot = "www" }\n') == (
        'site[0].acme_challenge: webroot "www" is relative; write an absolute path')
    assert problem(SITE + 'acme_challenge = { root = "/x" }\n') == (
        'site[0].acme_challenge: "root" is not an acme_challenge key;'
        ' expected "porch", "upstream", or { webroot = "/var/www/letsencrypt" }')
    assert problem(SITE + 'acme_challenge = "dns"\n') == (
        'site[0].acme_challenge: "dns" is not supported; expected "porch" or "upstream"')


def test_bundles_and_hooks():
    site = config('[porch]\non_certificate = "true"\n' + SITE + textwrap.dedent('''
        on_certificate = "systemctl restart icecast2"
        bundles = [{ path = "/etc/icecast2/bundle.pem", mode = "0640", group = "root" },
                   { path = "/etc/x/chain.pem", contents = ["chain"] }]
    ''')).sites[0]
    assert site.on_certificate == "systemctl restart icecast2"
    assert site.bundles == (Bundle("/etc/icecast2/bundle.pem", ("fullchain", "key"), 0o640, "root"),
                            Bundle("/etc/x/chain.pem", ("chain",), 0o600, None))
    assert problem(SITE + 'bundles = [{ path = "/x", mode = "640x" }]\n') == (
        'site[0].bundles: bundle mode "640x" is not an octal mode; write one like "0640"')
    assert problem(SITE + 'bundles = [{ path = "/x", contents = ["pem"] }]\n') == (
        'site[0].bundles: bundle contents "pem" is not one of fullchain, cert, chain, key')
    assert problem(SITE + 'bundles = [{ path = "/x", group = "no-such-group-here" }]\n') == (
        'site[0].bundles: bundle group "no-such-group-here" does not exist on this machine')
    assert problem(SITE + 'bundles = [{ contents = ["key"] }]\n').startswith(
        "site[0].bundles: a bundle without path")


def test_which_names_acme_covers():
    plain, auto = config(SITE + 'tls = "off"\n').sites[0], config(SITE + 'tls = "auto"\n').sites[0]
    assert not wants_acme(plain) and wants_acme(auto)
    assert acme_names(auto) == ("a.example.org",)
    assert skipped_names(auto) == ("*.example.org", "192.0.2.1")
    only_wildcard = config('[[site]]\nhosts = ["*.x.org"]\nproxy = "http://h:1"\ntls = "auto"\n').sites[0]
    assert not wants_acme(only_wildcard)


def test_renewal_when_a_third_is_left():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert renewal.lifetime_due(start, start + dt.timedelta(days=90)) == start + dt.timedelta(days=60)
    assert renewal.ari_pick(start, start + dt.timedelta(hours=10), rand=0.25) == start + dt.timedelta(hours=2.5)


def test_backoff_doubles_with_jitter_up_to_the_cap():
    assert [renewal.backoff(n, 60, 3600, rand=1.0) for n in (1, 2, 3, 7, 8, 50)] == [60, 120, 240, 3600, 3600, 3600]
    assert renewal.backoff(1, 60, 3600, rand=0.0) == 30


def _cert(serial: int, with_chain: bool = True) -> tuple[x509.Certificate, bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(b"\x69\x88\x5b\x6b\x87\x46\x40\x41\xe1\xb3"
                                                       b"\x7b\x84\x7b\xa0\xae\x2c\xde\x01\xc8\xd4",
                                                       None, None), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, cert.public_bytes(Encoding.PEM)


def test_ari_certificate_id_is_rfc_9773s_example():
    # RFC 9773 4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
    # serial 0x0087654321 -> "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    cert, _ = _cert(0x87654321)
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_directory_slug_is_a_plain_name():
    assert directory_slug(LETSENCRYPT) == "acme-v02.api.letsencrypt.org_directory"
    assert directory_slug("https://127.0.0.1:14000/dir") == "127.0.0.1_14000_dir"


def test_bundle_parts_and_file(tmp_path):
    _, leaf = _cert(1)
    _, inter = _cert(2)
    key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    fullchain = leaf + inter
    assert bundle_bytes(("fullchain", "key"), fullchain, key) == fullchain + key
    assert bundle_bytes(("cert",), fullchain, key) == leaf
    assert bundle_bytes(("chain",), fullchain, key) == inter
    path = tmp_path / "bundle.pem"
    path.write_text("old")
    write_bundle(Bundle(str(path), ("fullchain", "key"), 0o640, "root"), fullchain, key)
    assert path.read_bytes() == fullchain + key
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 0
    assert os.listdir(tmp_path) == ["bundle.pem"]  # no temporary file left


def test_hook_failure_is_reported_not_raised():
    assert run_hook("exit 0", {}) is None
    assert run_hook('echo "no such unit" >&2; exit 5', {}) == (
        "on_certificate 'echo \"no such unit\" >&2; exit 5' exited with status 5: no such unit")
    assert run_hook("sleep 5", {}, timeout=0.2) == "on_certificate 'sleep 5' still running after 0.2s (killed)"
