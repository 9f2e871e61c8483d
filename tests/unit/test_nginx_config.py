"""The nginx front-end on the guides' files (tests/data/nginx, verbatim from
../shared/seeds): each loads with `porch check` and means what nginx means; `porch
convert` prints a porch.toml that loads to the same model; the file type is found from
the content."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from porch.config import keys, load, toml
from porch.config.errors import ConfigError
from porch.config.frontend import named
from porch.config.nginx import read
from porch.config.nginx.convert import convert
from porch.config.nginx.parse import prefix_for

DATA = Path(__file__).resolve().parent.parent / "data" / "nginx"
OPENTALK = sorted((DATA / "opentalk" / "sites-enabled").glob("*.conf"))
LOADING = [DATA / n for n in ("libretime-2021.conf", "libretime.conf", "libretime-certbot.conf",
                              "snikket.conf", "radicale.conf")] + OPENTALK


def site_route(path: Path, i: int = 0):
    config = load.load(path)
    return config, config.sites[i], config.sites[i].routes[0]


@pytest.mark.parametrize("path", LOADING, ids=lambda p: p.name)
def test_guide_file_loads_and_converts_to_the_same_model(path: Path) -> None:
    config = load.load(path)
    text, problems = convert(str(path))
    assert problems == []
    again = toml.loads(text, str(path), base=prefix_for(str(path)))
    strip = dict(source="", warnings=())
    assert dataclasses.replace(again, **strip) == dataclasses.replace(config, **strip)


def test_libretime_means_what_nginx_means() -> None:
    config, site, route = site_route(DATA / "libretime.conf")
    assert site.hosts == ("libretime.example.org",) and site.tls == "off"
    assert route.upstreams[0].url == "http://localhost:8080"
    assert route.limits.max_body == 512 * 1024**2 and route.limits.body_timeout == 300
    assert route.upstream_host is None  # Host $host: the client's
    assert route.policies == ()  # every proxy_set_header line is what Porch sends anyway
    assert any("X-Forwarded-For the client sent" in w for w in config.warnings)


def test_libretime_certbot_redirects_and_gets_its_own_certificate() -> None:
    config, site, route = site_route(DATA / "libretime-certbot.conf")
    assert site.tls == "auto" and site.redirect_http
    assert any("options-ssl-nginx.conf is not there" in w for w in config.warnings)
    assert any("ssl_dhparam: has no effect" in w for w in config.warnings)


def test_snikket_keeps_its_mistakes_with_warnings() -> None:
    config, site, route = site_route(DATA / "snikket.conf")
    assert site.hosts == ("chat.example.com", "groups.chat.example.com", "share.chat.example.com")
    assert route.limits.max_body == 20 * 1024**2
    assert route.upstream_tls.verify is False
    assert site.acme_challenge == "upstream"
    assert ("request_headers", keys.POLICY_KEYS["request_headers"]({"set": {"X-Forwarded-Proto": "https"}})) \
        in route.policies
    assert any('"20MB" is refused by nginx' in w and "snikket.conf:41" in w for w in config.warnings)


def test_radicale_prefix_is_stripped_with_nginx_default_host_and_size() -> None:
    config, site, route = site_route(DATA / "radicale.conf")
    assert site.hosts == () and route.path == "/radicale/" and route.strip_prefix
    assert route.upstream_host == "localhost:5232"  # nginx's Host $proxy_host
    assert route.limits.max_body == 1024**2  # nginx's client_max_body_size default


def test_radicale_guide_snippets_that_cannot_load_alone_say_why() -> None:
    with pytest.raises(ConfigError) as err:
        load.load(DATA / "radicale-mtls.conf")  # "..." stands for the first block
    assert "radicale-mtls.conf:1: location: has no proxy_pass" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load.load(DATA / "radicale-auth.conf")
    # auth_basic is basic_auth now: the guide's file names an htpasswd this machine lacks
    assert ("radicale-auth.conf:6: auth_basic: htpasswd: /etc/nginx/htpasswd does not exist; create it with"
            in str(err.value))


def test_radicale_mtls_with_its_first_block_names_missing_files_by_line() -> None:
    with pytest.raises(ConfigError) as err:
        load.load(DATA / "radicale-mtls-full.conf")
    assert 'radicale-mtls-full.conf:9: proxy_ssl_certificate: "/path/to/client_cert.pem" cannot be read' \
        in str(err.value)


def test_opentalk_reads_its_shared_snippet_under_the_prefix() -> None:
    config, site, route = site_route(OPENTALK[0])  # controller
    assert config.porch.tls_ciphers.startswith("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert site.acme_challenge.root == "/var/www/letsencrypt"
    assert route.limits.max_body == 1024**3
    hsts = dict(route.policies)["response_headers"].add
    assert hsts == (("Strict-Transport-Security", "max-age=63072000"),)
    assert any("ssl_stapling: has no effect" in w and "Let's Encrypt has ended OCSP" in w
               for w in config.warnings)


def test_opentalk_gzip_pasted_beside_debians_is_refused_as_nginx_does(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text("http {\n    gzip on;\n"
                                         + (DATA / "opentalk" / "gzip-http.conf").read_text()[6:]
                                         + "server { listen 80; location / { proxy_pass http://127.0.0.1:1; } }\n")
    result = read(str(tmp_path / "nginx.conf"))
    assert result.problems == ['nginx.conf:7: gzip: written twice at this level; nginx refuses the file'
                               ' ("directive is duplicate"): remove one (Debian\'s nginx.conf has gzip on already)']


def test_file_type_comes_from_content(tmp_path: Path) -> None:
    nginx = tmp_path / "site"  # no extension, as in sites-enabled/
    nginx.write_text((DATA / "libretime.conf").read_text())
    porch = tmp_path / "x.conf"
    porch.write_text('[[site]]\nhosts = ["a.example.org"]\nproxy = "http://127.0.0.1:1"\n')
    assert load.kind(nginx) == "nginx" and load.kind(porch) == "toml"
    assert load.load(nginx).sites[0].hosts == ("libretime.example.org",)
    assert load.load(porch).sites[0].hosts == ("a.example.org",)


def test_problem_key_paths_become_nginx_lines() -> None:
    origins = {"site[0].route[1].proxy": "sites-enabled/libretime:12: proxy_pass", "site[0]": "x:1: server"}
    assert named("site[0].route[1].proxy: bad", origins) == \
        "sites-enabled/libretime:12: proxy_pass: bad (porch.toml key site[0].route[1].proxy)"
    assert named("site[0].hosts: bad", origins) == "x:1: server: bad (porch.toml key site[0].hosts)"
    assert named("/etc/x: cannot read", origins) == "/etc/x: cannot read"


def test_cli_check_and_convert() -> None:
    porch = [sys.executable, "-m", "porch"]
    check = subprocess.run([*porch, "check", "-c", str(DATA / "snikket.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "configuration is valid, with 4 warning(s)" in check.stdout
    out = subprocess.run([*porch, "convert", str(DATA / "snikket.conf")], capture_output=True, text=True)
    assert out.returncode == 0 and 'max_body = "20M"    # snikket.conf:41: client_max_body_size' in out.stdout
    auth = subprocess.run([*porch, "convert", str(DATA / "radicale-auth.conf")], capture_output=True, text=True)
    assert auth.returncode == 0, auth.stderr
    assert ('basic_auth = { htpasswd = "/etc/nginx/htpasswd", realm = "Radicale - Password Required", '
            'user_header = "X-Remote-User" }    # radicale-auth.conf:6: auth_basic') in auth.stdout


@pytest.mark.parametrize(("text", "kind"), [
    ("proxy_pass http://x;\nadd_header X-A b;\n", "nginx"),  # bare directives (a snippet)
    ("# comment = yes\nserver_tokens off;\n", "nginx"),
    ('[[site]]\nproxy = "http://127.0.0.1:1"\n', "toml"),
    ('[[site]]\ncsp = """\nscript-src self;\n"""\n', "toml"),  # a TOML string with a `name value;` line
    ("<VirtualHost *:80>\n</VirtualHost>\n", "apache"),
])
def test_kind_from_content(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "f"
    path.write_text(text)
    assert load.kind(path) == kind


def test_syslog_access_log_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.conf"
    path.write_text("server {\n    listen 8080;\n    server_name a.test;\n"
                    "    access_log syslog:server=unix:/dev/log,tag=nginx;\n"
                    "    location / { proxy_pass http://127.0.0.1:1; }\n}\n")
    assert read(str(path)).problems == [
        'site.conf:4: access_log: syslog:server=unix:/dev/log: Porch writes logs to files only; write a'
        ' path ("-": stdout, which journald keeps under systemd)']
