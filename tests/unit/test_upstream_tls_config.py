"""`upstream_tls`: read, layered route over site over [porch], files checked at load,
problems named by key path, and what `porch check` shows."""

import importlib.util
import ssl
import sys
import textwrap
from pathlib import Path

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.model import UpstreamTLS
from porch.config.toml import load, loads

_CERTS = Path(__file__).resolve().parent.parent / "integration" / "certs.py"
_spec = importlib.util.spec_from_file_location("porch_test_certs", _CERTS)
certs = sys.modules["porch_test_certs"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(certs)  # the integration tests' certificate maker, by path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = certs.TestCA(d)
    client = ca.issue("client", ["porch client"], client=True)
    other = ca.issue("other", ["other"], client=True)
    return ca, client, other, d


def config(text: str, base=None):
    return loads(textwrap.dedent(text), source="porch.toml", base=str(base) if base else None)


def problems(text: str, base=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(text, base)
    return info.value.problems


def site(extra: str = "", proxy: str = "https://localhost:5443") -> str:
    return f'[[site]]\nhosts = "example.org"\nproxy = "{proxy}"\n{extra}'


def test_default_is_verify_with_sni():
    (route,) = config(site()).sites[0].routes
    assert route.upstream_tls == UpstreamTLS(verify=True, ca=None, cert=None, key=None, server_name=None)


def test_verify_off_and_server_name():
    text = site('upstream_tls = { verify = false, server_name = "Chat.Example.COM" }\n')
    (route,) = config(text).sites[0].routes
    assert route.upstream_tls == UpstreamTLS(verify=False, server_name="chat.example.com")


def test_relative_paths_start_at_the_config_files_directory(pki, tmp_path):
    ca, client, _, d = pki
    (tmp_path / "porch.toml").write_text(
        site(f'upstream_tls = {{ ca = "{ca.cert.name}", cert = "{client.cert.name}",'
             f' key = "{client.key.name}" }}\n'))
    path = d / "porch.toml"
    path.write_text((tmp_path / "porch.toml").read_text())
    (route,) = load(path).sites[0].routes
    assert route.upstream_tls == UpstreamTLS(ca=str(ca.cert), cert=str(client.cert), key=str(client.key))


def test_route_overrides_site_over_porch_key_by_key(pki):
    ca, client, _, d = pki
    cfg = config(f"""
        [porch]
        upstream_tls = {{ ca = "{ca.cert}" }}
        [[site]]
        hosts = "example.org"
        proxy = "https://app.internal"
        upstream_tls = {{ cert = "{client.cert}", key = "{client.key}" }}
        [[site.route]]
        path = "/raw/"
        upstream_tls = {{ verify = false }}
        [[site.route]]
        path = "/named/"
        upstream_tls = {{ server_name = "named.internal" }}
        [[site]]
        hosts = "plain.org"
        proxy = "https://other.internal"
    """)
    raw, named, root = cfg.sites[0].routes
    mtls = UpstreamTLS(ca=str(ca.cert), cert=str(client.cert), key=str(client.key))
    assert root.upstream_tls == mtls
    assert raw.upstream_tls == UpstreamTLS(verify=False, ca=str(ca.cert), cert=str(client.cert),
                                           key=str(client.key))
    assert named.upstream_tls == UpstreamTLS(ca=str(ca.cert), cert=str(client.cert),
                                             key=str(client.key), server_name="named.internal")
    assert cfg.sites[1].routes[0].upstream_tls == UpstreamTLS(ca=str(ca.cert))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('{ verify = "off" }', 'site[0].upstream_tls.verify: "off" is a string; expected true or false'),
        ("{ verfy = false }", "site[0].upstream_tls.verfy: unknown key (did you mean verify?)"),
        ('{ trusted_certificate = "x" }', (
            "site[0].upstream_tls.trusted_certificate: unknown key"
            " (expected one of: verify, ca, cert, key, server_name)")),
        ('"off"', 'site[0].upstream_tls: "off" is a string; expected a table like { verify = false }'
                  ' or { ca = "server_cert.pem" }'),
        ('{ server_name = "a b" }', 'site[0].upstream_tls.server_name: "a b" is not a valid host name'
                                    " (letters, digits, - and _ between dots)"),
        ('{ ca = "" }', 'site[0].upstream_tls.ca: "" is empty; expected a file path:'
                        " the CA certificate (or the upstream's own certificate) to trust"),
    ],
)  # fmt: skip
def test_bad_values_name_key_value_and_fix(table, message):
    assert problems(site(f"upstream_tls = {table}\n")) == [message]


def test_missing_file_is_a_load_error_naming_the_resolved_path(tmp_path):
    found = problems(site('upstream_tls = { ca = "nope/server_cert.pem" }\n'), base=tmp_path)
    assert found == [
        f'site[0].upstream_tls.ca: "nope/server_cert.pem" cannot be read: No such file or directory'
        f" (as {tmp_path}/nope/server_cert.pem: relative paths start at the config file's directory)"
    ]


def test_files_with_the_wrong_content(pki):
    ca, client, _, d = pki
    found = problems(site(f'upstream_tls = {{ ca = "{client.key}", cert = "{client.cert}", key = "{client.cert}" }}\n'))
    assert found == [
        f'site[0].upstream_tls.ca: "{client.key}" holds no certificate; expected the CA\'s or the'
        " upstream's certificate as PEM (-----BEGIN CERTIFICATE-----)",
        f'site[0].upstream_tls.key: "{client.cert}" holds no private key; expected a PEM file with'
        " -----BEGIN PRIVATE KEY-----",
    ]


def test_encrypted_key_is_refused_without_prompting(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    _, client, _, _ = pki
    key = serialization.load_pem_private_key(client.key.read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    (found,) = problems(site(f'upstream_tls = {{ cert = "{client.cert}", key = "{locked}" }}\n'))
    assert found.startswith(f'site[0].upstream_tls.key: "{locked}" is an encrypted key;')
    assert "openssl pkey" in found


def test_cert_and_key_must_match_and_come_together(pki):
    _, client, other, _ = pki
    assert problems(site(f'upstream_tls = {{ cert = "{client.cert}", key = "{other.key}" }}\n')) == [
        f"site[0].upstream_tls: cert {client.cert} and key {other.key} do not match:"
        " give the key the certificate was made for"
    ]
    assert problems(site(f'upstream_tls = {{ cert = "{client.cert}" }}\n')) == [
        'site[0].upstream_tls: cert is set without key; add key = "client_key.pem" (its private key)'
    ]
    assert problems(site(f'upstream_tls = {{ key = "{client.key}" }}\n')) == [
        'site[0].upstream_tls: key is set without cert; add cert = "client_cert.pem" (the client certificate)'
    ]


def test_one_file_with_cert_and_key(pki, tmp_path):
    _, client, _, _ = pki
    both = tmp_path / "both.pem"
    both.write_bytes(client.cert.read_bytes() + client.key.read_bytes())
    (route,) = config(site(f'upstream_tls = {{ cert = "{both}" }}\n')).sites[0].routes
    assert route.upstream_tls.cert == str(both)


def test_ca_and_verify_off_together_is_a_contradiction(pki):
    ca, *_ = pki
    assert problems(site(f'upstream_tls = {{ verify = false, ca = "{ca.cert}" }}\n')) == [
        "site[0].upstream_tls.ca: is not used with verify = false; keep one of them"
    ]


def test_upstream_tls_without_an_https_upstream(pki):
    message = 'is set but no upstream here is https://; write proxy = "https://..." (or remove upstream_tls)'
    assert problems(site("upstream_tls = { verify = false }\n", proxy="http://localhost:5443")) == [
        f"site[0].upstream_tls: {message}"
    ]
    text = site() + '[[site.route]]\npath = "/a/"\nproxy = "http://a:1"\nupstream_tls = { verify = false }\n'
    assert problems(text) == [f"site[0].route[0].upstream_tls: {message}"]


def test_the_context_is_built_as_checked(pki):
    from porch.upstream.tls import client_context

    ca, client, _, _ = pki
    ctx = client_context(ca=str(ca.cert), cert=str(client.cert), key=str(client.key))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN  # `ca` may be the leaf itself
    off = client_context(verify=False)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_check_shows_upstream_tls_per_route(pki):
    ca, client, _, _ = pki
    text = describe(config(f"""
        [porch]
        tls = "off"
        [[site]]
        hosts = "chat.example.com"
        proxy = "https://localhost:5443"
        upstream_tls = {{ verify = false }}
        [[site]]
        hosts = "dav.example.org"
        [[site.route]]
        path = "/radicale/"
        proxy = "https://localhost:5232"
        upstream_tls = {{ ca = "{ca.cert}", cert = "{client.cert}", key = "{client.key}" }}
        [[site.route]]
        path = "/ip/"
        proxy = "https://127.0.0.1:8443"
        upstream_tls = {{ server_name = "dav.internal" }}
        [[site.route]]
        path = "/plain/"
        proxy = "http://127.0.0.1:8080"
    """))
    assert text.split("\n\n", 1)[1] == textwrap.dedent(f"""\
        site[0] chat.example.com
          / -> https://localhost:5443
               upstream tls: verify off (any certificate accepted); sni localhost; alpn http/1.1

        site[1] dav.example.org
          /radicale/ -> https://localhost:5232
                        upstream tls: verify with ca {ca.cert}; client cert {client.cert} key {client.key}; sni localhost; alpn http/1.1
          /ip/       -> https://127.0.0.1:8443
                        upstream tls: verify with the system CAs; sni dav.internal (the name checked); alpn http/1.1
          /plain/    -> http://127.0.0.1:8080""")


def test_a_shared_bad_setting_is_reported_once(pki):
    _, client, _, _ = pki
    text = (f'[porch]\nupstream_tls = {{ cert = "{client.cert}" }}\n' + site()
            + '[[site.route]]\npath = "/a/"\nproxy = "https://a.internal"\n'
            + '[[site]]\nhosts = "plain.org"\nproxy = "http://plain:80"\n')
    assert problems(text) == [
        'site[0].route[0].upstream_tls: cert is set without key; add key = "client_key.pem" (its private key)'
    ]


def test_check_warns_when_verify_off_leaves_this_machine():
    text = describe(config(site('upstream_tls = { verify = false }\n', proxy="https://10.0.0.7:5443")))
    assert text.endswith("upstream tls: verify off (any certificate accepted, and 10.0.0.7 is not this"
                         " machine: a host between could pose as it); no sni (IP address); alpn http/1.1")
    for local in ("localhost", "127.0.0.1", "[::1]", "snikket.localhost"):
        text = describe(config(site('upstream_tls = { verify = false }\n', proxy=f"https://{local}:5443")))
        assert "verify off (any certificate accepted);" in text
