"""The Apache front-end: its tokenizer, the guides' files (tests/data/apache, verbatim)
as Porch reads them, and the messages for what it cannot read."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from porch.config import load, toml
from porch.config.apache import looks_like_apache
from porch.config.apache.convert import convert
from porch.config.apache.parse import parse, server_root
from porch.config.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data" / "apache"


def write(tmp_path: Path, text: str, name: str = "site.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tokenizer_quotes_continuations_comments_and_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("APACHE_LOG_DIR", raising=False)
    path = write(tmp_path, '# a comment\n<VirtualHost *:80>\n    Header set X-A "a b # c"\n'
                 "    RequestHeader set X-B 'd e'\n    ProxyPass / \\\n        http://127.0.0.1:1/\n"
                 "    ErrorLog ${APACHE_LOG_DIR}/e.log\n</VirtualHost>\n")
    parsed = parse(str(path))
    assert not parsed.problems
    (vhost,) = parsed.directives
    assert vhost.name == "VirtualHost" and vhost.args == ("*:80",) and vhost.line == 2
    header, request, proxy, log = vhost.block
    assert header.args == ("set", "X-A", "a b # c")
    assert request.args == ("set", "X-B", "d e")
    assert (proxy.args, proxy.line) == (("/", "http://127.0.0.1:1/"), 5)
    assert log.args == ("/var/log/apache2/e.log",)  # Debian's envvars


@pytest.mark.parametrize(("text", "message"), [
    ("<VirtualHost *:80>\n  ServerName a\n", "site.conf:1: <VirtualHost>: has no </VirtualHost>"),
    ("<VirtualHost *:80>\n</Location>\n", "site.conf:2: </Location>: expected </VirtualHost> (opened at line 1)"),
    ("</VirtualHost>\n", "site.conf:1: </VirtualHost>: closes a section that was not opened"),
    ('<VirtualHost *:80>\n  Header set X "a\n</VirtualHost>\n', "site.conf:2: a quote is not closed"),
    ("<VirtualHost *:80>\n  Include missing.conf\n</VirtualHost>\n",
     "site.conf:2: Include: missing.conf does not exist (httpd refuses to start too); fix the path, or write IncludeOptional"),
])
def test_syntax_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load.load(write(tmp_path, text))
    assert message in err.value.problems[0]


def test_content_decides_the_kind(tmp_path: Path) -> None:
    assert looks_like_apache((DATA / "libretime.conf").read_text())
    assert load.kind(DATA / "snikket.conf") == "apache"
    assert load.kind(write(tmp_path, "[porch]\nhttp_port = 8080\n", "x.conf")) == "toml"
    assert not looks_like_apache('[[site]]\nhosts = ["<VirtualHost>"]\n')


def test_libretime_guide_loads_as_httpd_means_it() -> None:
    config = load.load(DATA / "libretime.conf")
    (site,) = config.sites
    (route,) = site.routes
    assert site.hosts == ("libretime.example.org",) and site.tls == "off"
    assert (route.upstreams[0].host, route.upstreams[0].port) == ("localhost", 8080)
    assert route.upstream_host == "localhost:8080"  # ProxyPreserveHost Off: httpd's default
    assert route.limits.max_body == 1 << 30  # LimitRequestBody's default since 2.4.54


def test_certbot_pair_loads_together_and_redirects(tmp_path: Path) -> None:
    """certbot writes the :80 redirect and the -le-ssl.conf vhost in two files."""
    main = write(tmp_path, f"IncludeOptional {DATA}/libretime-certbot*.conf\n", "apache2.conf")
    config = load.load(main)
    (site,) = config.sites
    assert site.tls == "auto" and site.redirect_http
    assert any("options-ssl-apache.conf is not there" in w for w in config.warnings)
    with pytest.raises(ConfigError) as err:
        load.load(DATA / "libretime-certbot.conf")
    assert "NAME-le-ssl.conf: load a file that Includes both" in err.value.problems[0]


def test_snikket_guide_loads_with_its_warnings() -> None:
    config = load.load(DATA / "snikket.conf")
    (site,) = config.sites
    assert site.hosts == ("chat.example.com", "groups.chat.example.com", "share.chat.example.com")
    (route,) = site.routes
    assert route.upstream_host is None  # ProxyPreserveHost On
    assert route.upstream_tls.verify is False  # httpd's SSLProxyVerify none
    # the SSL VirtualHost's own logs; the :80 one's go with its answers (Porch redirects)
    assert route.access_log == "/var/log/apache2/chat.example.com-ssl_access.log"
    assert site.error_log == "/var/log/apache2/chat.example.com-ssl_error.log"
    text = "\n".join(config.warnings)
    for what in ("SSLCertificateChainFile", "DocumentRoot", "SSLProxyVerify require"):
        assert what in text


def test_unknown_directive_is_an_error_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load.load(write(tmp_path, "<VirtualHost *:80>\n  ServerName a\n  ProxyPass / http://127.0.0.1:1/\n"
                        "  SetEnvIf Origin x y\n</VirtualHost>\n"))
    assert err.value.problems == ["site.conf:4: SetEnvIf: is not supported by Porch's Apache reader"
                                  " (docs/apache.md lists what is); write the porch.toml equivalent"]


def test_porch_toml_errors_are_named_by_the_apache_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load.load(write(tmp_path, "<VirtualHost *:80>\n  ServerName a\n  ProxyPreserveHost On\n"
                        "  ProxyPass / http://127.0.0.1:1/\n  Header set X-A \"{nope}\"\n</VirtualHost>\n"))
    assert err.value.problems[0].startswith("site.conf:5: Header: ")


def test_relative_auth_user_file_starts_at_the_server_root(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("alice:$2y$05$Tj/3v/3iGjKPB7Pu3mChn.mhQvOg0Dwn.9fWaTxdpTMbB7hX6G3vS\n")
    config = load.load(write(tmp_path, "<VirtualHost *:80>\n  ServerName a\n  <Location />\n    AuthType Basic\n"
                             "    AuthName x\n    AuthUserFile users\n    Require valid-user\n"
                             "    ProxyPass http://127.0.0.1:1/\n  </Location>\n</VirtualHost>\n"))
    (route,) = config.sites[0].routes
    auth = dict(route.policies)["basic_auth"]
    assert str(tmp_path / "users") in repr(auth)


def test_websocket_proxypass_is_read_as_http_with_a_warning(tmp_path: Path) -> None:
    config = load.load(write(tmp_path, "<VirtualHost *:80>\n  ServerName a\n  ProxyPreserveHost On\n"
                             "  ProxyPass /ws/ ws://127.0.0.1:1/ws/\n  ProxyPassReverse /ws/ ws://127.0.0.1:1/ws/\n"
                             "  ProxyPass / http://127.0.0.1:1/ upgrade=websocket\n"
                             "  ProxyPassReverse / http://127.0.0.1:1/\n</VirtualHost>\n"))
    paths = {r.path: r.upstreams[0].scheme for r in config.sites[0].routes}
    assert paths == {"/ws/": "http", "/": "http"}
    assert sum("WebSocket" in w for w in config.warnings) == 2


GOLDEN = DATA.parent.parent / "golden" / "apache"
CONVERTIBLE = [DATA / "libretime.conf", DATA / "snikket.conf", GOLDEN / "certbot.conf", GOLDEN / "paths.conf",
               GOLDEN / "headers.conf", GOLDEN / "tls_files.conf", GOLDEN / "include_main.conf",
               GOLDEN / "preserve_host.conf"]


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.name)
def test_convert_prints_a_porch_toml_with_the_same_model(path: Path) -> None:
    config = load.load(path)
    text, problems = convert(str(path))
    assert problems == []
    again = toml.loads(text, str(path), base=server_root(str(path)))
    strip = dict(source="", warnings=())
    assert dataclasses.replace(again, **strip) == dataclasses.replace(config, **strip)


def test_cli_check_and_convert() -> None:
    porch = [sys.executable, "-m", "porch"]
    check = subprocess.run([*porch, "check", "-c", str(DATA / "snikket.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "configuration is valid, with 7 warning(s)" in check.stdout
    out = subprocess.run([*porch, "convert", str(DATA / "libretime.conf")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'upstream_host = "localhost:8080"    # libretime.conf:5: ProxyPass (httpd\'s default' in out.stdout
    bad = subprocess.run([*porch, "convert", str(DATA / "libretime-certbot.conf")], capture_output=True, text=True)
    assert bad.returncode == 1 and "libretime-certbot.conf:6: RewriteRule: redirects to https://" in bad.stderr


def test_redirect_to_another_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load.load(write(tmp_path, "<VirtualHost *:80>\n  ServerName www.a.org\n  Redirect permanent / https://a.org/\n"
                        "</VirtualHost>\n<VirtualHost *:443>\n  ServerName www.a.org\n  SSLEngine on\n"
                        "  SSLCertificateFile /nonexistent/fullchain.pem\n  ProxyPass / http://127.0.0.1:1/\n"
                        "</VirtualHost>\n"))
    assert err.value.problems[0].startswith("site.conf:3: Redirect: redirects to a.org, another host")


def test_require_all_with_a_user_and_addresses_is_basic_auth_and_allow(tmp_path: Path) -> None:
    """<RequireAll> Require valid-user + Require ip: both must pass in httpd, as Porch's
    basic_auth and allow do on one route."""
    users = subprocess.run(["htpasswd", "-nbB", "alice", "secret"], capture_output=True, text=True, check=True)
    (tmp_path / "users").write_text(users.stdout)
    path = write(tmp_path, "<VirtualHost *:80>\n    ServerName a.test\n    <Location />\n"
                 "    ProxyPass http://127.0.0.1:1/\n    ProxyPassReverse http://127.0.0.1:1/\n"
                 "    AuthType Basic\n    AuthName Admin\n"
                 f"    AuthUserFile {tmp_path / 'users'}\n    <RequireAll>\n        Require valid-user\n"
                 "        Require ip 10.1 192.168.0.0/255.255.0.0\n        Require not ip 10.1.2.3\n"
                 "    </RequireAll>\n    </Location>\n</VirtualHost>\n")
    from porch.config.apache import read
    site = read(str(path)).data["site"][0]
    assert site["allow"] == ["10.1.0.0/16", "192.168.0.0/16"] and site["deny"] == ["10.1.2.3/32"]
    assert site["basic_auth"] == {"htpasswd": str(tmp_path / "users"), "realm": "Admin"}
    assert load.load(str(path)).sites[0].hosts == ("a.test",)
    text, problems = convert(str(path))
    assert not problems and 'allow = ["10.1.0.0/16", "192.168.0.0/16"]    # site.conf:9: RequireAll' in text


@pytest.mark.parametrize(("rules", "allow", "deny"), [
    ("Require all granted", None, None),
    ("Require all denied", None, ["all"]),
    ("Require ip 10.0.0.0/8\n    Require ip ::1", ["10.0.0.0/8", "::1/128"], None),
    ("Require local", ["127.0.0.0/8", "::1"], None),
    ("Require ip 10.0.0.0/8\n    Require all granted", None, None),
    ("<RequireAny>\n Require ip 10.0.0.0/8\n Require ip 10.2.0.0/16\n </RequireAny>", ["10.0.0.0/8", "10.2.0.0/16"], None),
    ("<RequireAll>\n Require all denied\n Require ip 10.0.0.0/8\n </RequireAll>", None, ["all"]),
    ("Order deny,allow\n    Deny from all\n    Allow from 10.0.0.0/8", ["10.0.0.0/8"], None),
    ("Order allow,deny\n    Allow from 10.0.0.0/8\n    Deny from 10.0.0.1", ["10.0.0.0/8"], ["10.0.0.1/32"]),
    ("Order allow,deny\n    Allow from all\n    Deny from 10.0.0.1", None, ["10.0.0.1/32"]),
    ("Order allow,deny", None, ["all"]),
    ("Order deny,allow\n    Deny from 10.0.0.1", None, ["10.0.0.1/32"]),
])
def test_address_rules_as_allow_and_deny(tmp_path: Path, rules: str, allow, deny) -> None:
    """A <Location>'s Require (or Order/Allow/Deny) lines: its route's allow and deny."""
    path = write(tmp_path, "<VirtualHost *:80>\n    ServerName a.test\n    <Location />\n"
                 "    ProxyPass http://127.0.0.1:1/\n    ProxyPassReverse http://127.0.0.1:1/\n"
                 f"    {rules}\n    </Location>\n</VirtualHost>\n")
    from porch.config.apache import read
    result = read(str(path))
    assert not result.problems
    site = result.data["site"][0]
    assert (site.get("allow"), site.get("deny")) == (allow, deny)
    load.load(str(path))



def test_quoted_words_as_httpd_reads_them(tmp_path: Path) -> None:
    """ap_getword_conf: \\" inside "..." is a quote (LogFormat's), other backslashes stay
    (RewriteRule regexes), a quote inside an unquoted word is a character."""
    path = write(tmp_path, 'LogFormat "%h \\"%r\\" %>s" mine\nRewriteRule ^/a\\.b$ "x\\y" [R]\n'
                 "Header set X-A a\"b'c\n")
    fmt, rule, header = parse(str(path)).directives
    assert fmt.args == ('%h "%r" %>s', "mine")
    assert rule.args == ("^/a\\.b$", "x\\y", "[R]")
    assert header.args == ("set", "X-A", "a\"b'c")
