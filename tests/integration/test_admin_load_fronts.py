"""POST /load with an nginx file or an Apache <VirtualHost> file (issue 15): read by the
same front-ends as `porch run -c FILE`, by Content-Type or from the content, problems
located in the body ("POST /load:LINE: ..."), relative includes from the running
config's directory, and the admin API's own settings kept."""

from __future__ import annotations

from .test_admin import TOKEN, admin_porch, admin_request, get, site  # noqa: F401  (admin_porch: a fixture)


def nginx_site(port: int, host: str, up: str) -> str:
    return (f"server {{\n    listen 127.0.0.1:{port};\n    server_name {host};\n"
            f"    location / {{\n        proxy_pass {up};\n        proxy_set_header Host $host;\n    }}\n}}\n")


def test_post_load_nginx_file_is_served_and_admin_stays(admin_porch, upstream):
    up = upstream()
    p = admin_porch(site("old.test", f'"{up.url}"'))
    status, body, _ = admin_request(p, "POST", "/load", nginx_site(p.port, "new.test", up.url).encode(),
                                    headers={"Content-Type": "text/x-nginx-conf"})
    assert status == 200, body
    assert get(p.port, "new.test")[0] == 200
    assert get(p.port, "old.test")[0] == 404
    status, body, _ = admin_request(p, "GET", "/config")  # the admin API, its token, still there
    assert status == 200 and b"new.test" in body


def test_post_load_nginx_includes_start_at_the_running_configs_directory(admin_porch, upstream):
    up = upstream()
    p = admin_porch(site("old.test", f'"{up.url}"'))
    (p.workdir / "sites-enabled").mkdir()
    (p.workdir / "sites-enabled" / "inc.conf").write_text(nginx_site(p.port, "inc.test", up.url))
    text = "http {\n    include sites-enabled/*.conf;\n}\n"
    status, body, _ = admin_request(p, "POST", "/load", text.encode(), headers={"Content-Type": "text/plain"})
    assert status == 200, body
    status, seen = get(p.port, "inc.test")
    assert status == 200 and b'"inc.test"' in seen


def test_post_load_bad_nginx_file_names_its_line_and_changes_nothing(admin_porch, upstream):
    up = upstream()
    p = admin_porch(site("old.test", f'"{up.url}"'))
    bad = nginx_site(p.port, "bad.test", up.url).replace(f"proxy_pass {up.url}", "proxy_pass htp://nowhere")
    status, body, _ = admin_request(p, "POST", "/load", bad.encode(), headers={"Content-Type": "text/x-nginx-conf"})
    text = body.decode()
    assert status == 400, text
    assert text.startswith("porch: POST /load: configuration is not valid:")
    assert "POST /load:5: proxy_pass:" in text and ".porch-load-" not in text, text
    assert get(p.port, "old.test")[0] == 200 and get(p.port, "bad.test")[0] == 404
    assert not list(p.workdir.glob(".porch-load-*"))  # the copy is gone


def test_post_load_apache_file_by_type_and_by_content(admin_porch, upstream):
    up = upstream()
    p = admin_porch(site("old.test", f'"{up.url}"'))
    vhost = (f"<VirtualHost 127.0.0.1:{p.port}>\n    ServerName ap.test\n    ProxyPreserveHost On\n"
             f"    ProxyPass / {up.url}/\n    ProxyPassReverse / {up.url}/\n</VirtualHost>\n")
    status, body, _ = admin_request(p, "POST", "/load", vhost.encode(), headers={"Content-Type": "text/x-apache-conf"})
    assert status == 200, body
    assert get(p.port, "ap.test")[0] == 200 and get(p.port, "old.test")[0] == 404
    status, body, _ = admin_request(p, "POST", "/load", vhost.replace("ap.test", "ap2.test").encode(),
                                    headers={"Content-Type": "text/plain"})
    assert status == 200, body
    assert get(p.port, "ap2.test")[0] == 200
    bad = vhost.replace("ProxyPass / ", "ProxyPass / htp://nowhere ")
    status, body, _ = admin_request(p, "POST", "/load", bad.encode(), headers={"Content-Type": "text/x-apache-conf"})
    assert status == 400 and "POST /load:4:" in body.decode(), body
    status, body, _ = admin_request(p, "POST", "/load", b"{}", headers={"Content-Type": "application/json"})
    assert status == 415 and b"text/x-nginx-conf" in body
