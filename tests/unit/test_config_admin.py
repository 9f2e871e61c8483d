"""porch.toml keys of issue 17 (operations): the admin API's address and token, per-site
and per-route access_log / access_log_format, per-site error_log; each error names the
key, the value and the fix."""

from __future__ import annotations

import pytest

from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.observability.stats import PolicyMetrics, RouteStats

SITE = '[[site]]\nhosts = ["example.org"]\nproxy = "http://127.0.0.1:8080"\n'
TOKEN = "0123456789abcdef0123"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, source="porch.toml")
    return info.value.problems


def test_admin_tcp_with_token(monkeypatch):
    monkeypatch.delenv("PORCH_ADMIN_TOKEN", raising=False)
    g = loads(f'[porch]\nadmin = "127.0.0.1:2019"\nadmin_token = "{TOKEN}"\n' + SITE).porch
    assert (g.admin, g.admin_token) == ("127.0.0.1:2019", TOKEN)
    assert loads(SITE).porch.admin is None  # off by default


def test_admin_unix_socket_needs_no_token(monkeypatch):
    monkeypatch.delenv("PORCH_ADMIN_TOKEN", raising=False)
    assert loads('[porch]\nadmin = "/run/porch/admin.sock"\n' + SITE).porch.admin == "/run/porch/admin.sock"


@pytest.mark.parametrize("text, message", [
    ('admin = "127.0.0.1:2019"', 'porch.admin: "127.0.0.1:2019" is a TCP address and no token is set; add'
     " admin_token or admin_token_file (or set $PORCH_ADMIN_TOKEN), or use a unix socket path"),
    (f'admin = "localhost:2019"\nadmin_token = "{TOKEN}"', 'porch.admin: "localhost:2019" is not IP:port or an'
     ' absolute unix socket path; write "127.0.0.1:2019" (an IP address, not a name) or "/run/porch/admin.sock"'),
    ('admin = "127.0.0.1:2019"\nadmin_token = "short"', "porch.admin_token: is shorter than 16 characters;"
     " use a long random string (openssl rand -hex 32)"),
    ('admin = "127.0.0.1:2019"\nadmin_token_file = "/nonexistent/token"', "porch.admin_token_file:"
     " /nonexistent/token cannot be read: No such file or directory"),
])
def test_admin_errors(text, message, monkeypatch):
    monkeypatch.delenv("PORCH_ADMIN_TOKEN", raising=False)
    assert problems("[porch]\n" + text + "\n" + SITE) == [message]


def test_admin_token_from_file_and_env(tmp_path, monkeypatch):
    from porch.config import admin

    monkeypatch.delenv("PORCH_ADMIN_TOKEN", raising=False)
    (tmp_path / "token").write_text(TOKEN + "\n")
    g = loads('[porch]\nadmin = "127.0.0.1:2019"\nadmin_token_file = "token"\n' + SITE, base=str(tmp_path)).porch
    assert g.admin_token_file == str(tmp_path / "token")  # relative to the config's directory
    assert admin.token(g.admin, g.admin_token, g.admin_token_file) == TOKEN
    monkeypatch.setenv("PORCH_ADMIN_TOKEN", TOKEN)
    g = loads('[porch]\nadmin = "127.0.0.1:2019"\n' + SITE).porch
    assert admin.token(g.admin, g.admin_token, g.admin_token_file) == TOKEN


def test_site_and_route_logs():
    config = loads(SITE + 'access_log = "/var/log/porch/example.log"\nerror_log = "/var/log/porch/example.err"\n'
                   '[[site.route]]\npath = "/api/"\naccess_log_format = "json"\n'
                   '[[site.route]]\npath = "/dav/"\naccess_log = "off"\n')
    (site,) = config.sites
    assert site.error_log == "/var/log/porch/example.err"
    routes = {r.path: r for r in site.routes}
    assert (routes["/api/"].access_log, routes["/api/"].access_log_format) == ("/var/log/porch/example.log", "json")
    assert routes["/dav/"].access_log == "off"
    assert routes["/"].access_log == "/var/log/porch/example.log" and routes["/"].access_log_format is None


@pytest.mark.parametrize("text, message", [
    ('access_log_format = "xml"', 'site[0].access_log_format: "xml" is not supported; expected "combined" or "vhost_combined" or "json"'),
    ('error_log = "off"', 'site[0].error_log: "off" is not allowed: errors must go somewhere'
     ' (write a path, or "-" for stderr)'),
    ('access_log = ""', 'site[0].access_log: "" is empty; expected a file path, "-" for stdout, or "off"'),
])
def test_site_log_errors(text, message):
    assert problems(SITE + text + "\n") == [message]


def test_route_stats_counts():
    stats = RouteStats("example.org", "/")
    stats.record(200, b"1.1", 10, 100, 0.004, 0.003)
    stats.record(502, b"2.0", 0, 50, 2.0, -1.0)  # never reached an upstream
    stats.record(0, b"1.0", 0, 0, 100.0, -1.0)
    snap = stats.snapshot()
    assert snap["requests"][1 * 6 + 2] == 1 and snap["requests"][2 * 6 + 5] == 1 and snap["requests"][0] == 1
    assert snap["total"][0] == 1 and snap["total"][10] == 1 and snap["total"][16] == 1  # 5 ms, 2.5 s, +Inf
    assert sum(snap["upstream"]) == 1 and snap["upstream"][0] == 1
    assert (snap["bytes_in"], snap["bytes_out"]) == (10, 150)


def test_policy_metrics_interface():
    metrics = PolicyMetrics()
    metrics.rate_limited.inc("example.org", "/")
    counter = metrics.counter("porch_auth_failures_total", "Refused logins", ("site",))
    assert metrics.counter("porch_auth_failures_total", "Refused logins", ("site",)) is counter
    counter.inc("example.org", amount=2)
    with pytest.raises(ValueError, match="labels"):
        counter.inc()
    with pytest.raises(ValueError, match="start with porch_"):
        metrics.counter("auth_failures", "x")
    assert {c["name"]: c["values"] for c in metrics.snapshot()} == {
        "porch_rate_limit_rejections_total": [[["example.org", "/"], 1.0]],
        "porch_auth_failures_total": [[["example.org"], 2.0]]}
