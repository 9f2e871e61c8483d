"""porch.toml -> model, the problems reported for bad files, and `porch check` output."""

import pickle
import textwrap

import pytest

from porch.config.describe import describe
from porch.config.errors import ConfigError
from porch.config.model import Global, Hsts, Limits, Route, TlsFiles, UpstreamTarget
from porch.config.toml import load, loads

SITE = '[[site]]\nhosts = "example.org"\nproxy = "http://127.0.0.1:8080"\n'


def config(text: str):
    return loads(textwrap.dedent(text), source="porch.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(text)
    return info.value.problems


def problem(text: str) -> str:
    """The one problem `text` has."""
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# --- good files ----------------------------------------------------------------


def test_minimal_site_gets_defaults_and_one_root_route():
    cfg = config(SITE)
    assert cfg.porch == Global()
    assert cfg.source == "porch.toml"
    (site,) = cfg.sites
    assert site.hosts == ("example.org",)
    assert site.tls == "auto"  # a public name: ACME
    assert site.redirect_http and site.hsts is None
    assert site.key_path == "site[0]"
    assert site.routes == (
        Route(path="/", upstreams=(UpstreamTarget("http", "127.0.0.1", 8080),), key_path="site[0]"),
    )


def test_porch_table_values():
    cfg = config(
        """
        [porch]
        http_port = 8080
        https_port = 8443
        bind = "127.0.0.1"
        trusted_proxies = ["10.1.2.3/8", "192.168.1.1", "2001:db8::/32"]
        workers = "auto"
        access_log = "/var/log/porch/access.log"
        access_log_format = "json"
        error_log = "/var/log/porch/error.log"
        state_dir = "/srv/porch"
        max_header_size = "32k"
        keepalive_timeout = "5s"
        shutdown_timeout = 0
        drain_timeout = "2m"
        email = "admin@example.org"
        """
        + SITE
    )
    assert cfg.porch == Global(
        http_port=8080,
        https_port=8443,
        bind=("127.0.0.1",),
        trusted_proxies=("10.0.0.0/8", "192.168.1.1/32", "2001:db8::/32"),
        workers="auto",
        access_log="/var/log/porch/access.log",
        access_log_format="json",
        error_log="/var/log/porch/error.log",
        state_dir="/srv/porch",
        max_header_size=32 * 1024,
        keepalive_timeout=5.0,
        shutdown_timeout=0.0,
        drain_timeout=120.0,
        email="admin@example.org",
    )


def test_bind_list_is_normalised():
    cfg = config('[porch]\nbind = ["::1", "0:0:0:0:0:0:0:0", "127.0.0.1"]\n' + SITE)
    assert cfg.porch.bind == ("::1", "::", "127.0.0.1")


def test_hosts_are_lowercased_and_normalised():
    cfg = config(
        """
        [[site]]
        hosts = ["Dav.Example.ORG", "*.example.org", "localhost", "192.168.1.10", "[::1]", "bücher.example", "my_app"]
        proxy = "http://127.0.0.1:8080"
        tls = "off"
        """
    )
    assert cfg.sites[0].hosts == (
        "dav.example.org", "*.example.org", "localhost", "192.168.1.10", "::1", "xn--bcher-kva.example", "my_app",
    )  # fmt: skip


def test_site_without_hosts_is_the_catch_all():
    cfg = config('[[site]]\nproxy = "http://127.0.0.1:8080"\n')
    assert cfg.sites[0].hosts == ()
    assert cfg.sites[0].name == "*"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8080", UpstreamTarget("http", "127.0.0.1", 8080)),
        ("http://app", UpstreamTarget("http", "app", 80)),
        ("https://App.Internal", UpstreamTarget("https", "app.internal", 443)),
        ("HTTP://[::1]:3000", UpstreamTarget("http", "::1", 3000)),
        ("http://app:8080/", UpstreamTarget("http", "app", 8080, "")),
        ("http://app:8080/base/path/", UpstreamTarget("http", "app", 8080, "/base/path")),
    ],
)
def test_proxy_urls(url, target):
    cfg = config(f'[[site]]\nproxy = "{url}"\n')
    assert cfg.sites[0].routes[0].upstreams == (target,)


def test_proxy_list_keeps_order():
    cfg = config('[[site]]\nproxy = ["http://a:1", "http://b:2"]\n')
    assert [t.url for t in cfg.sites[0].routes[0].upstreams] == ["http://a:1", "http://b:2"]


def test_routes_inherit_from_the_site_and_get_a_root_route():
    cfg = config(
        """
        [[site]]
        hosts = "example.org"
        proxy = "http://web:8080"
        upstream_host = "web.internal"
        strip_prefix = true
        [[site.route]]
        path = "/api/"
        proxy = "http://api:9000"
        [[site.route]]
        path = "/static/"
        strip_prefix = false
        """
    )
    api, static, root = cfg.sites[0].routes
    assert (api.path, api.upstreams[0].host, api.strip_prefix, api.upstream_host, api.key_path) == (
        "/api/", "api", True, "web.internal", "site[0].route[0]",
    )  # fmt: skip
    assert (static.path, static.upstreams[0].host, static.strip_prefix) == ("/static/", "web", False)
    assert (root.path, root.upstreams[0].host, root.key_path) == ("/", "web", "site[0]")


def test_explicit_root_route_is_not_doubled():
    cfg = config(
        """
        [[site]]
        proxy = "http://web:8080"
        [[site.route]]
        path = "/"
        proxy = "http://other:8080"
        """
    )
    (root,) = cfg.sites[0].routes
    assert root.upstreams[0].host == "other"


def test_routes_without_a_site_proxy_get_no_root_route():
    cfg = config('[[site]]\n[[site.route]]\npath = "/api/"\nproxy = "http://api:9000"\n')
    assert [r.path for r in cfg.sites[0].routes] == ["/api/"]


def test_limits_route_over_site_over_porch_over_model():
    cfg = config(
        """
        [porch]
        max_body = "10M"
        upstream_timeout = "5m"
        header_timeout = 30
        [[site]]
        proxy = "http://web:8080"
        max_body = "1G"
        body_timeout = "1.5s"
        [[site.route]]
        path = "/upload/"
        max_body = "off"
        upstream_connect_timeout = "250ms"
        [[site]]
        hosts = "other.org"
        proxy = "http://other:8080"
        """
    )
    upload, root = cfg.sites[0].routes
    assert upload.limits == Limits(None, 30.0, 1.5, 0.25, 300.0)
    assert root.limits == Limits(1024**3, 30.0, 1.5, 60.0, 300.0)
    assert cfg.sites[1].routes[0].limits == Limits(10 * 1024**2, 30.0, 60.0, 60.0, 300.0)


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "porch.toml"
    path.write_text(SITE, encoding="utf-8")
    assert load(path).source == str(path)


# --- problems --------------------------------------------------------------------


def test_wrong_type_names_the_expected_type():
    assert problem('[porch]\nhttp_port = "80"\n' + SITE) == (
        'porch.http_port: "80" is a string; expected an integer port 1-65535'
    )


@pytest.mark.parametrize(
    ("porch", "message"),
    [
        ("http_port = 0", "porch.http_port: 0 is out of range; expected an integer port 1-65535"),
        ("https_port = 80", "porch.https_port: 80 is also http_port; use two different ports"),
        ("http_port = true", "porch.http_port: true is a boolean; expected an integer port 1-65535"),
        ('bind = "localhost"', 'porch.bind: "localhost" is not an IP address; expected one like "127.0.0.1" or "::1"'),
        ('bind = "127.0.0.1:80"', 'porch.bind: "127.0.0.1:80" has a port; write the address alone and the port as http_port'),
        ('bind = ["::1", "::1"]', 'porch.bind: "::1" is listed twice'),
        ("bind = []", 'porch.bind: [] is empty; expected at least one: an IP address like "127.0.0.1"'),
        ('trusted_proxies = "10.0.0.0/8"', 'porch.trusted_proxies: "10.0.0.0/8" is a string; expected an array of CIDRs or IPs like ["10.0.0.0/8"]'),
        ('trusted_proxies = ["10.0.0.0/33"]', 'porch.trusted_proxies: "10.0.0.0/33" is not a CIDR or IP; expected one like "10.0.0.0/8"'),
        ("workers = 0", 'porch.workers: 0 is below 1; expected "auto" or a number of worker processes, 1 or more'),
        ('workers = "4"', 'porch.workers: "4" is a string; expected "auto" or a number of worker processes, 1 or more'),
        ('access_log_format = "common"', 'porch.access_log_format: "common" is not supported; expected "combined" or "vhost_combined" or "json"'),
        ('acme_challenge_type = "dns-01"', 'porch.acme_challenge_type: "dns-01" is not supported; expected "auto" or "http-01" or "tls-alpn-01"'),
        ('error_log = "off"', 'porch.error_log: "off" is not allowed: errors must go somewhere (write a path, or "-" for stderr)'),
        ('state_dir = ""', 'porch.state_dir: "" is empty; expected a directory path'),
        ('email = "admin"', 'porch.email: "admin" is not an email address; expected one like "admin@example.org"'),
        ('max_header_size = "1.5k"', 'porch.max_header_size: "1.5k" is not a size (write bytes as 1048576 or with a unit: 64k, 20M, 1G (1024-based))'),
        ("max_header_size = 0", 'porch.max_header_size: 0 is too small; expected a size like "64k", "20M" or "1G", or a number of bytes'),
        ('keepalive_timeout = "5 min"', 'porch.keepalive_timeout: "5 min" is not a duration (write seconds as 30 or with a unit: 250ms, 1.5s, 5m, 1h, 2d, 1y)'),
        ("keepalive_timeout = -1", "porch.keepalive_timeout: -1 is not a duration of 0 or more seconds"),
        ('header_timeout = "0s"', 'porch.header_timeout: "0s" would fail every request; expected a duration above 0'),
        ("max_body = 0", 'porch.max_body: 0 is ambiguous; write max_body = "off" for no limit, or a size like "20M"'),
        ("max_body = 1.5", 'porch.max_body: 1.5 is a float; expected a size like "64k", "20M" or "1G", or a number of bytes'),
    ],
)  # fmt: skip
def test_porch_value_problems(porch, message):
    assert problem(f"[porch]\n{porch}\n" + SITE) == message


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ('"*"', '"*" is not a host name; leave hosts out to make this the catch-all site'),
        ('"a.*.org"', '"a.*.org": * may only be the whole first label, as in "*.example.org"'),
        ('"*example.org"', '"*example.org": * may only be the whole first label, as in "*.example.org"'),
        ('"*.*.org"', '"*.*.org": * may only be the whole first label, as in "*.example.org"'),
        ('""', '"" is empty; expected a host name like "example.org"'),
        ('"a.org b.org"', '"a.org b.org" contains whitespace; write one host name per string'),
        ('"example.org:8080"', '"example.org:8080" has a port; write the name alone (ports are http_port and https_port in [porch])'),
        ('"https://example.org"', '"https://example.org" is not a host name; write only the name, like "example.org"'),
        ('"example.org."', '"example.org." ends with a dot; write "example.org"'),
        ('"-bad.org"', '"-bad.org" is not a valid host name (letters, digits, - and _ between dots)'),
        ('"999.1.1.1"', '"999.1.1.1" is not a valid IP address'),
        ('["a.org", "A.org"]', '"a.org" is listed twice'),
        ("[]", "[] is empty; list at least one host name, or leave hosts out for the catch-all site"),
        ("[1]", '1 is an integer; expected a host name like "example.org"'),
    ],
)  # fmt: skip
def test_host_problems(hosts, message):
    assert problem(f'[[site]]\nhosts = {hosts}\nproxy = "http://x:1"\n') == f"site[0].hosts: {message}"


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ('"htp://x"', '"htp://x" is not an http:// or https:// URL (write it as http://host:port)'),
        ('"localhost:8080"', '"localhost:8080" is not an http:// or https:// URL (write it as http://localhost:8080)'),
        ('"http://:8080"', '"http://:8080" has no host (write it as http://host:port)'),
        ('"http://x:99999"', '"http://x:99999" is not a valid URL (Port out of range 0-65535); write it as http://host:port'),
        ('"http://x:0"', '"http://x:0" has port 0; expected a port 1-65535'),
        ('"http://x/?a=1"', '"http://x/?a=1" has a query or fragment; proxy URLs take a scheme, host, port and path only'),
        ('"http://x/#top"', '"http://x/#top" has a query or fragment; proxy URLs take a scheme, host, port and path only'),
        ('"http://user:secret@x"', '"http://...@x" has user info; proxy URLs take no user or password'),
        ('["http://x:1", "http://x:1/"]', '"http://x:1" is listed twice'),
        ('["http://a/app", "http://b/"]', '["http://a/app", "http://b/"] mixes paths; the upstreams of one route share one path'),
        ("[]", '[] is empty; expected at least one: a URL like "http://127.0.0.1:8080"'
               ' or { url = "http://127.0.0.1:8080", weight = 5 }'),
        ("8080", '8080 is not a target; expected a URL like "http://127.0.0.1:8080"'
                 ' or { url = "http://127.0.0.1:8080", weight = 5 }, or an array of them'),
    ],
)  # fmt: skip
def test_proxy_problems(proxy, message):
    assert problem(f"[[site]]\n[[site.route]]\npath = '/'\nproxy = {proxy}\n") == f"site[0].route[0].proxy: {message}"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ('"api"', 'site[0].route[0].path: "api" does not start with /; write "/api"'),
        ('"/api/*"', 'site[0].route[0].path: "/api/*" has a *; paths are prefixes already, write "/api/"'),
        ('"/a?b"', 'site[0].route[0].path: "/a?b" is not a plain path; write only the path, like "/api/"'),
        ("1", 'site[0].route[0].path: 1 is an integer; expected a path prefix like "/api/"'),
    ],
)
def test_route_path_problems(path, message):
    assert problem(f'[[site]]\nproxy = "http://x:1"\n[[site.route]]\npath = {path}\n') == message


def test_route_without_path():
    assert problem('[[site]]\nproxy = "http://x:1"\n[[site.route]]\nstrip_prefix = true\n') == (
        'site[0].route[0]: no path (add path = "/prefix/" to the route, or exact = "/page",'
        ' regex = "\\\\.png$" or match = "*.png")'
    )


def test_route_without_any_proxy():
    text = '[[site]]\n[[site.route]]\npath = "/a/"\nproxy = "http://a:1"\n[[site.route]]\npath = "/b/"\n'
    assert problem(text) == ('site[0].route[1]: no proxy (add proxy = "http://host:port" to the route or the site,'
                             ' or root = "/var/www/..." for static files)')


def test_site_without_proxy_or_routes():
    assert problem('[[site]]\nhosts = "a.org"\n') == (
        'site[0]: no proxy (add proxy = "http://host:port" to the site, root = "/var/www/..."'
        ' for static files, or [[site.route]] tables)'
    )


def test_duplicate_route_paths():
    text = '[[site]]\nproxy = "http://x:1"\n' + '[[site.route]]\npath = "/api/"\n' * 2
    assert problem(text) == 'site[0].route[1].path: "/api/" is also site[0].route[0]; a path may appear once per site'


def test_same_host_in_two_sites_names_both():
    text = SITE + '[[site]]\nhosts = ["other.org", "Example.org"]\nproxy = "http://x:1"\n'
    assert problem(text) == 'site[1].hosts: "example.org" is also in site[0]; a host may belong to one site only'


def test_at_most_one_catch_all():
    text = '[[site]]\nproxy = "http://x:1"\n' * 2
    assert problem(text) == (
        "site[1]: a second catch-all site (no hosts); site[0] is one already (add hosts = [...] to one of them)"
    )


@pytest.mark.parametrize(
    ("hosts", "tls"),
    [
        ('["example.org", "www.example.org"]', "auto"),
        ('["example.org", "*.example.org", "192.0.2.1"]', "auto"),  # ACME skips what it cannot cover
        ('["localhost", "127.0.0.1", "[::1]", "app.localhost"]', "internal"),
        ('["nas.local", "git.internal", "app.test", "router.home.arpa", "*.dev.test", "app"]', "internal"),
    ],
)
def test_tls_default_follows_the_hosts(hosts, tls):
    assert config(f'[[site]]\nhosts = {hosts}\nproxy = "http://x:1"\n').sites[0].tls == tls


def test_tls_defaults_catch_all_off_and_porch_level_default():
    assert config('[[site]]\nproxy = "http://x:1"\n').sites[0].tls == "off"
    cfg = config('[porch]\ntls = "off"\n' + SITE + '[[site]]\nhosts = "b.org"\nproxy = "http://x:1"\ntls = "auto"\n')
    assert [s.tls for s in cfg.sites] == ["off", "auto"]


def _pair(directory):
    """A self-signed certificate and its key, as fullchain.pem and privkey.pem."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "example.org")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_files_and_hsts(tmp_path):
    cert, key = _pair(tmp_path)
    cfg = config(SITE + f'tls = {{ cert = "{cert}", key = "{key}" }}\nhsts = {{ max_age = "1y", include_subdomains = true }}\n'
                 "redirect_http = false\n")
    site = cfg.sites[0]
    assert site.tls == TlsFiles(str(cert), str(key))
    assert site.hsts == Hsts(31536000, True, False)
    assert site.hsts.value == "max-age=31536000; includeSubDomains"
    assert site.redirect_http is False
    assert config(SITE + 'hsts = "180d"\n').sites[0].hsts.value == "max-age=15552000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SITE + 'tls = "on"\n', 'site[0].tls: "on" is not supported; expected "auto", "internal", "off", or { cert = "/path/fullchain.pem", key = "/path/privkey.pem" }'),
        (SITE + 'tls = { cert = "/nonexistent/fullchain.pem", key = "/etc/hostname" }\n',
         'site[0].tls.cert: "/nonexistent/fullchain.pem" does not exist; give the path of a PEM file'),
        (SITE + 'tls = { cert = "/etc/hostname" }\n', 'site[0].tls: {...} has no key; write { cert = "fullchain.pem", key = "privkey.pem" }'),
        (SITE + 'tls = { crt = "a", key = "b" }\n', "site[0].tls: {...} has unknown key crt (did you mean cert?)"),
        ('[[site]]\nhosts = ["localhost"]\nproxy = "http://x:1"\ntls = "auto"\n',
         'site[0].tls: "localhost" cannot get an ACME certificate (tls = "auto"): public CAs only certify public DNS names;'
         ' use tls = "internal" (Porch\'s local CA), { cert = ..., key = ... } or "off"'),
        ('[[site]]\nhosts = ["example.org", "localhost"]\nproxy = "http://x:1"\n',
         'site[0].hosts: mixes public names ("example.org") and local ones ("localhost"), which no public CA certifies;'
         ' split them into two sites, or set tls = "internal", { cert = ..., key = ... } or "off"'),
        ('[[site]]\nproxy = "http://x:1"\ntls = "auto"\n',
         'site[0].tls: "auto" needs host names, and this is the catch-all site; write tls = { cert = ..., key = ... }'
         ' (served for unknown names) or "off", or add hosts = [...]'),
        (SITE + 'tls = "off"\nhsts = "1y"\n', 'site[0].hsts: needs HTTPS, and this site has tls = "off" (remove hsts, or give the site a certificate)'),
        (SITE + 'hsts = { max_age = "1d", preload = true }\n',
         'site[0].hsts: preload needs include_subdomains = true and a max_age of at least "1y" (hstspreload.org)'),
        (SITE + 'hsts = { maxage = "1y" }\n', "site[0].hsts: {...} has unknown key maxage (did you mean max_age?)"),
        ('[porch]\ntls_protocols = ["1.1", "1.2"]\n' + SITE,
         'porch.tls_protocols: "1.1" is not allowed: TLS 1.0 and 1.1 are deprecated (RFC 8996); expected "1.2" and/or "1.3"'),
        ('[porch]\ntls_ciphers = "NOPE"\n' + SITE,
         'porch.tls_ciphers: "NOPE" selects no cipher OpenSSL knows; expected an OpenSSL cipher list like "ECDHE+AESGCM"'),
        ('[porch]\ntls = "files"\n' + SITE,
         'porch.tls: "files" is not supported; expected "auto", "internal" or "off" (the default for sites without tls)'),
    ],
)  # fmt: skip
def test_tls_problems(text, message):
    assert problem(text) == message


def test_tls_protocols_and_ciphers():
    cfg = config('[porch]\ntls_protocols = ["1.3"]\ntls_ciphers = "ECDHE+AESGCM"\n' + SITE)
    assert cfg.porch.tls_protocols == ("1.3",)
    assert cfg.porch.tls_ciphers == "ECDHE+AESGCM"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SITE + "max_bodyy = 3\n", "site[0].max_bodyy: unknown key (did you mean max_body?)"),
        ("[porch]\nworker = 2\n" + SITE, "porch.worker: unknown key (did you mean workers?)"),
        ('[[sites]]\nproxy = "http://x:1"\n' + SITE, "sites: unknown key (did you mean site?)"),
        (SITE + "colour = 1\n", (
            "site[0].colour: unknown key (expected one of: hosts, tls, redirect_http, hsts, proxy, strip_prefix,"
            " upstream_host, allow_trace, upstream_proxy_protocol, access_log, access_log_format, balance, max_fails, fail_timeout, retries, health, upstream_tls, max_body, header_timeout, body_timeout, upstream_connect_timeout, upstream_timeout,"
            " tunnel_idle_timeout, request_headers, response_headers, security_headers, basic_auth, expires, compress, rate_limit, allow, deny, root, forward_auth, acme_challenge, on_certificate, bundles, error_log, listen, route)"
        )),
        ("http_port = 8080\n" + SITE, "http_port: not a top-level key (write it in [porch])"),
        (SITE + "http_port = 8080\n", "site[0].http_port: not a site key (write it in [porch])"),
        (SITE + 'path = "/"\n', "site[0].path: not a site key (write it in [[site.route]])"),
        ("[porch]\nproxy = 'http://x:1'\n" + SITE, "porch.proxy: not a [porch] key (write it in [[site]])"),
        (SITE + '[[site.route]]\npath = "/a/"\nhosts = "x.org"\n', "site[0].route[0].hosts: not a route key (write it in [[site]])"),
        ('[[route]]\npath = "/"\n' + SITE, "route: not a top-level key (write it in [[site.route]] tables, after their [[site]])"),
    ],
)  # fmt: skip
def test_unknown_and_misplaced_keys(text, message):
    assert problem(text) == message


def test_single_brackets_for_an_array_of_tables():
    assert problem('[site]\nproxy = "http://x:1"\n') == "site: is a single table; write [[site]] (double brackets), once for each"
    text = SITE + '[site.route]\npath = "/a/"\n'
    assert problem(text) == "site[0].route: is a single table; write [[site.route]] (double brackets), once for each"


def test_porch_written_as_array():
    assert problem("[[porch]]\nworkers = 2\n" + SITE) == "porch: is not a table; write a single [porch] section"


def test_no_sites():
    assert problem("[porch]\nworkers = 2\n") == (
        'porch.toml: no sites (add a [[site]] with hosts = ["example.org"] and proxy = "http://127.0.0.1:8080")'
    )


def test_all_problems_are_reported_in_file_order():
    found = problems(
        """
        [[site]]
        hosts = "a.org"
        proxy = "htp://x"
        [[site.route]]
        path = "/b/"
        [[site]]
        hosts = "A.org"
        max_body = "lots"
        [porch]
        http_port = 70000
        """
    )
    assert found == [
        "porch.http_port: 70000 is out of range; expected an integer port 1-65535",
        'site[0].proxy: "htp://x" is not an http:// or https:// URL (write it as http://host:port)',
        'site[1].max_body: "lots" is not a size (write bytes as 1048576 or with a unit: 64k, 20M, 1G (1024-based))',
        'site[1].hosts: "a.org" is also in site[0]; a host may belong to one site only',
        'site[1]: no proxy (add proxy = "http://host:port" to the site, root = "/var/www/..."'
        ' for static files, or [[site.route]] tables)',
    ]


def test_syntax_error_names_the_file():
    assert problem("[porch\n") == "porch.toml: Expected ']' at the end of a table declaration (at line 1, column 7)"


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read the file: No such file or directory"]


def test_load_non_utf8(tmp_path):
    path = tmp_path / "porch.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="byte 5 is not UTF-8; TOML files are UTF-8"):
        load(path)


def test_config_error_text_and_pickling():
    err = ConfigError(["a: one", "b: two"])
    assert str(err) == "a: one\nb: two"
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == ["a: one", "b: two"]
    assert str(again) == str(err)


# --- porch check output (golden) -------------------------------------------------

GOLDEN_TOML = """
[porch]
http_port = 8080
trusted_proxies = ["10.0.0.0/8"]
access_log = "/var/log/porch/access.log"
access_log_format = "json"
max_body = "10M"
email = "admin@example.org"

[[site]]
hosts = ["cloud.example.org", "www.cloud.example.org"]
proxy = "http://127.0.0.1:8080/nextcloud/"
upstream_timeout = "5m"
hsts = "1y"

[[site.route]]
path = "/api/"
proxy = ["http://10.0.0.5:9000", "http://[fd00::5]:9000"]
strip_prefix = true
upstream_host = "api.internal"
max_body = "off"

[[site]]
proxy = "https://fallback.internal"
"""

GOLDEN_CHECK = """\
  listen           http on 0.0.0.0:8080, [::]:8080; https on 0.0.0.0:443, [::]:443
  workers          1
  access log       /var/log/porch/access.log (json)
  error log        stderr
  trusted proxies  10.0.0.0/8
  max header size  16k
  keep-alive       75s
  send timeout     1m
  shutdown         drain for 30s
  reload           old workers drain for 30s
  state dir        /var/lib/porch
  email            admin@example.org
  acme ca          https://acme-v02.api.letsencrypt.org/directory
  acme challenge   HTTP-01 on http_port, TLS-ALPN-01 on https_port when HTTP-01 fails
  tls              TLS 1.2, 1.3; ciphers Mozilla intermediate
  http/2           on (ALPN h2), 100 streams per connection

site[0] cloud.example.org, www.cloud.example.org
  tls auto: ACME certificate in /var/lib/porch/certs/cloud.example.org/; http redirects to https; hsts max-age=31536000
  /api/ -> http://10.0.0.5:9000, http://[fd00::5]:9000  (strip_prefix, upstream_host api.internal, upstream_timeout 5m)
           pool: round robin, out for 10s after 1 failure(s), 1 retry
  /     -> http://127.0.0.1:8080/nextcloud  (max_body 10M, upstream_timeout 5m)

site[1] * (catch-all)
  / -> https://fallback.internal:443  (max_body 10M)
       upstream tls: verify with the system CAs; sni fallback.internal; alpn http/1.1"""


def test_describe_golden():
    assert describe(config(GOLDEN_TOML)) == GOLDEN_CHECK


def test_describe_defaults():
    text = describe(config(SITE + 'tls = "off"\n'))
    assert text.splitlines()[0] == "  listen           http on 0.0.0.0:80, [::]:80"
    assert "  access log       stdout (combined)" in text
    assert "  trusted proxies  none" in text
    assert "email" not in text
    assert text.endswith("site[0] example.org\n  / -> http://127.0.0.1:8080")


def test_describe_access_log_off_and_keepalive_off():
    text = describe(config('[porch]\naccess_log = "off"\nkeepalive_timeout = 0\n' + SITE))
    assert "tls auto: ACME certificate in /var/lib/porch/certs/example.org/" in text
    assert "  access log       off\n" in text
    assert "  keep-alive       off\n" in text


def test_tls_files_relative_to_the_config_file(tmp_path):
    (tmp_path / "certs").mkdir()
    _pair(tmp_path / "certs")
    path = tmp_path / "porch.toml"
    path.write_text(SITE + 'tls = { cert = "certs/fullchain.pem", key = "certs/privkey.pem" }\n')
    files = load(path).sites[0].tls
    assert files == TlsFiles(str(tmp_path / "certs/fullchain.pem"), str(tmp_path / "certs/privkey.pem"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[porch]\nhttp2 = "yes"\n' + SITE, 'porch.http2: "yes" is a string; expected true or false'),
        ('[porch]\nmax_concurrent_streams = 0\n' + SITE,
         "porch.max_concurrent_streams: 0 is out of range; expected a whole number from 1 to 10000, such as 100"),
        ('[porch]\nmax_concurrent_streams = "100"\n' + SITE,
         'porch.max_concurrent_streams: "100" is a string; expected a whole number from 1 to 10000, such as 100'),
        ('[porch]\nsend_timeout = "0s"\n' + SITE,
         'porch.send_timeout: "0s" would fail every request; expected a duration above 0'),
        ('[porch]\nmax_concurent_streams = 10\n' + SITE,
         "porch.max_concurent_streams: unknown key (did you mean max_concurrent_streams?)"),
        ('[porch]\nhttp2_engine = "spdy"\n' + SITE,
         'porch.http2_engine: "spdy" is not supported; expected "auto" or "nghttp2" or "h2"'),
    ],
)  # fmt: skip
def test_http2_problems(text, message):
    assert problem(text) == message


def test_http2_keys():
    cfg = config('[porch]\nhttp2 = false\nmax_concurrent_streams = 32\nsend_timeout = "5s"\n' + SITE)
    assert (cfg.porch.http2, cfg.porch.max_concurrent_streams, cfg.porch.send_timeout) == (False, 32, 5.0)
    assert config(SITE).porch.http2 is True


def test_allow_trace_site_and_route_keys_and_check_output():
    cfg = config(SITE + 'allow_trace = true\n[[site.route]]\npath = "/api/"\n'
                 '[[site.route]]\npath = "/static/"\nallow_trace = false\n')
    api, static, root = cfg.sites[0].routes
    assert (api.allow_trace, static.allow_trace, root.allow_trace) == (True, False, True)
    assert config(SITE).sites[0].routes[0].allow_trace is False
    text = describe(cfg)
    assert "/api/    -> http://127.0.0.1:8080  (allow_trace)" in text
    assert "/static/ -> http://127.0.0.1:8080\n" in text
    assert problem(SITE + 'allow_trace = "yes"\n') == 'site[0].allow_trace: "yes" is a string; expected true or false'


def test_underscores_in_headers_and_error_log_level():
    cfg = config('[porch]\nunderscores_in_headers = true\nerror_log_level = "debug"\n' + SITE)
    assert (cfg.porch.underscores_in_headers, cfg.porch.error_log_level) == (True, "debug")
    plain = config(SITE).porch
    assert (plain.underscores_in_headers, plain.error_log_level) == (False, "info")
    text = describe(cfg)
    assert "underscores in headers  passed (names Porch sets are dropped in any spelling)" in text
    assert "error log               stderr (level debug)" in text
    assert "underscores" not in describe(config(SITE))
    assert problem('[porch]\nerror_log_level = "verbose"\n' + SITE) == (
        'porch.error_log_level: "verbose" is not supported; expected "debug" or "info" or "warn" or "error"')


def test_http2_engine_key():
    """Both engines are built in the suite (scripts/test.sh installs libnghttp2-dev)."""
    from porch.server.h2engine import resolve

    assert config(SITE).porch.http2_engine == "auto"
    for engine in ("auto", "nghttp2", "h2"):
        assert config(f'[porch]\nhttp2_engine = "{engine}"\n' + SITE).porch.http2_engine == engine
    assert resolve("auto") == "nghttp2"  # what runs (config/compile.py) where it is built
    assert resolve("h2") == "h2"


def test_http2_engine_nghttp2_where_it_is_not_built(monkeypatch):
    from porch import _compiled

    monkeypatch.setattr(_compiled, "native_loads", lambda rel: False)
    assert problem('[porch]\nhttp2_engine = "nghttp2"\n' + SITE).startswith(
        'porch.http2_engine: "nghttp2" is not built into this install (libnghttp2-dev was missing')
    assert _compiled.http2_engine("auto") == "h2"  # auto falls back
