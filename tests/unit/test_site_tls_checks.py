"""Checks on the built model (config/checks.py): a site's certificate files load as a
pair or the config is refused, in words; chains, ACME on a port other than 80, and
route paths that read like regular expressions."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from porch.config.errors import ConfigError
from porch.config.model import TlsFiles
from porch.config.toml import loads

_CERTS = Path(__file__).resolve().parent.parent / "integration" / "certs.py"
_spec = importlib.util.spec_from_file_location("porch_test_certs", _CERTS)
certs = sys.modules["porch_test_certs"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(certs)  # the integration tests' certificate maker, by path

UP = 'proxy = "http://127.0.0.1:8080"\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = certs.TestCA(d, "Test Intermediate")
    leaf = ca.issue("leaf", ["example.org"])  # the leaf alone, as certbot's cert.pem
    other = ca.issue("other", ["example.org"])
    full = d / "fullchain.pem"
    full.write_bytes(leaf.cert.read_bytes() + ca.cert.read_bytes())
    swapped = d / "swapped.pem"  # intermediate first, then the leaf
    swapped.write_bytes(ca.cert.read_bytes() + leaf.cert.read_bytes())
    return {"ca": ca, "leaf": leaf, "other": other, "full": full, "swapped": swapped, "dir": d,
            "self": certs.self_signed(d, "self", ["example.org"])}


def site_with(cert, key, chain=None, extra="") -> str:
    chain_key = f', chain = "{chain}"' if chain else ""
    return f'[[site]]\nhosts = ["example.org"]\n{UP}tls = {{ cert = "{cert}", key = "{key}"{chain_key} }}\n{extra}'


def load(text: str):
    return loads(textwrap.dedent(text), source="porch.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems


# -- the pair --------------------------------------------------------------------


def test_fullchain_and_its_key_load_without_warnings(pki):
    cfg = load(site_with(pki["full"], pki["leaf"].key))
    assert cfg.sites[0].tls == TlsFiles(str(pki["full"]), str(pki["leaf"].key))
    assert cfg.warnings == ()


def test_key_of_another_certificate_is_refused_naming_both_files(pki):
    (found,) = problems(site_with(pki["full"], pki["other"].key))
    assert found.startswith(f'site[0].tls.key: "{pki["other"].key}" is not the private key of the certificate in'
                            f' "{pki["full"]}" (for example.org); give the key made with that certificate')
    assert "privkey.pem" in found


def test_key_given_as_the_certificate_is_refused(pki):
    (found,) = problems(site_with(pki["leaf"].key, pki["leaf"].key))
    assert found.startswith(f'site[0].tls.cert: "{pki["leaf"].key}" holds a private key, not a certificate;')
    assert "cert = fullchain.pem, key = privkey.pem" in found


def test_cert_and_key_swapped_is_said(pki):
    found = problems(site_with(pki["leaf"].key, pki["full"]))
    assert any("holds a private key, not a certificate (cert and key look swapped)" in p for p in found), found


def test_certificate_given_as_the_key_is_refused(pki):
    (found,) = problems(site_with(pki["full"], pki["full"]))
    assert found.startswith(f'site[0].tls.key: "{pki["full"]}" holds a certificate, not a private key;')


def test_chain_in_the_wrong_order_is_refused(pki):
    (found,) = problems(site_with(pki["swapped"], pki["leaf"].key))
    assert "lists the certificates in the wrong order" in found and found.startswith("site[0].tls.cert: ")


def test_unreadable_key_file_is_refused(pki, tmp_path):
    # a directory: unreadable as a file even for root (who reads mode-0 files)
    found = problems(site_with(pki["full"], tmp_path))
    assert found == [f'site[0].tls.key: "{tmp_path}" cannot be read: Is a directory; give a file'
                     " the user running porch can read"]


# -- chains ----------------------------------------------------------------------


def test_leaf_without_chain_warns_about_unable_to_get_local_issuer(pki):
    cfg = load(site_with(pki["leaf"].cert, pki["leaf"].key))
    (warning,) = cfg.warnings
    assert warning.startswith(f'site[0].tls.cert: "{pki["leaf"].cert}" holds only the site\'s certificate')
    assert '"unable to get local issuer certificate"' in warning and 'chain = "chain.pem"' in warning


def test_self_signed_certificate_needs_no_chain(pki):
    assert load(site_with(pki["self"].cert, pki["self"].key)).warnings == ()


def test_separate_chain_file_is_accepted(pki):
    cfg = load(site_with(pki["leaf"].cert, pki["leaf"].key, chain=pki["ca"].cert))
    assert cfg.sites[0].tls.chain == str(pki["ca"].cert)
    assert cfg.warnings == ()


def test_chain_file_without_certificates_is_refused(pki):
    found = problems(site_with(pki["leaf"].cert, pki["leaf"].key, chain=pki["leaf"].key))
    assert found == [f'site[0].tls.chain: "{pki["leaf"].key}" holds no certificate; expected the'
                     " intermediate certificates as PEM (-----BEGIN CERTIFICATE-----)"]


def test_missing_chain_file_is_refused(pki):
    (found,) = problems(site_with(pki["leaf"].cert, pki["leaf"].key, chain="/nonexistent/chain.pem"))
    assert found.startswith('site[0].tls.chain: "/nonexistent/chain.pem" does not exist')


def test_expired_certificate_warns(pki):
    old = pki["ca"].issue("expired", ["example.org"], days=-1)
    full = pki["dir"] / "expired_full.pem"
    full.write_bytes(old.cert.read_bytes() + pki["ca"].cert.read_bytes())
    (warning,) = load(site_with(full, old.key)).warnings
    assert "expired on" in warning and "renew it" in warning


# -- ACME on another port ----------------------------------------------------------


def test_auto_site_with_http_port_not_80_warns_that_http01_needs_port_80():
    cfg = load(f'[porch]\nhttp_port = 8080\n[[site]]\nhosts = ["example.org", "www.example.org"]\n{UP}')
    (warning,) = cfg.warnings
    assert warning.startswith("porch.http_port: 8080 is not 80, and site[0] (example.org, www.example.org)"
                              " get certificates from ACME over HTTP-01")
    assert "forwards port 80 to 8080" in warning and "set http_port = 80" in warning


def test_port_80_or_no_acme_site_gives_no_warning():
    assert load(f'[[site]]\nhosts = ["example.org"]\n{UP}').warnings == ()
    assert load(f'[porch]\nhttp_port = 8080\n[[site]]\nhosts = ["localhost"]\n{UP}').warnings == ()
    assert load(f'[porch]\nhttp_port = 8080\ntls = "off"\n[[site]]\nhosts = ["example.org"]\n{UP}').warnings == ()


# -- regex paths --------------------------------------------------------------------


@pytest.mark.parametrize("path", [r"~* \\.(jpg|png)$", r"^/api/", r"\\.php$", r"/static/.*\\.css$"])
def test_regex_looking_path_points_to_the_regex_key(path):
    (found,) = problems(f'[[site]]\nhosts = ["example.org"]\n{UP}[[site.route]]\npath = "{path}"\n')
    assert "looks like a regular expression" in found and 'write regex = "' in found and "match = " in found
    assert 'write "/' not in found


def test_plain_paths_keep_their_hints():
    (found,) = problems(f'[[site]]\nhosts = ["example.org"]\n{UP}[[site.route]]\npath = "api/"\n')
    assert found == 'site[0].route[0].path: "api/" does not start with /; write "/api/"'
    (found,) = problems(f'[[site]]\nhosts = ["example.org"]\n{UP}[[site.route]]\npath = "/api/*"\n')
    assert found == 'site[0].route[0].path: "/api/*" has a *; paths are prefixes already, write "/api/"'


def test_acme_port_warnings_follow_acme_challenge_type():
    site = f'[[site]]\nhosts = ["example.org"]\n{UP}'
    # HTTP-01 only: port 80 is what matters
    (warning,) = load(f'[porch]\nhttp_port = 8080\nacme_challenge_type = "http-01"\n{site}').warnings
    assert warning.endswith('set http_port = 80, or give these sites tls = { cert, key } files or tls = "internal"')
    # TLS-ALPN-01 only: port 443 is; http_port does not matter
    assert load(f'[porch]\nhttp_port = 8080\nacme_challenge_type = "tls-alpn-01"\n{site}').warnings == ()
    (warning,) = load(f'[porch]\nhttps_port = 8443\nacme_challenge_type = "tls-alpn-01"\n{site}').warnings
    assert warning.startswith("porch.https_port: 8443 is not 443, and site[0] (example.org) get certificates"
                              " from ACME over TLS-ALPN-01")
    assert "forwards port 443 to 8443" in warning
    # auto with port 80 elsewhere but 443 served: it works, after a failed HTTP-01 each time
    (warning,) = load(f'[porch]\nhttp_port = 8080\n{site}').warnings
    assert 'Porch then validates over TLS-ALPN-01 on https_port 443' in warning
    assert 'acme_challenge_type = "tls-alpn-01"' in warning
