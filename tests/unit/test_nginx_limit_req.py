"""limit_req read from an nginx file rejects with nginx's status: 503 (ngx_http_limit_req's
default), or what limit_req_status says; Porch's own default (429) is for porch.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from porch.config.nginx import read

FILE = """http {
    limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
    server {
        listen 80;
        server_name api.test;
        location / {
            proxy_pass http://127.0.0.1:8090;
            limit_req zone=api burst=20 nodelay;
            %s
        }
    }
}
"""


@pytest.mark.parametrize(("extra", "status"), [("", 503), ("limit_req_status 429;", 429)])
def test_limit_req_rejects_with_nginxs_status(tmp_path: Path, extra: str, status: int) -> None:
    (tmp_path / "nginx.conf").write_text(FILE % extra)
    result = read(str(tmp_path / "nginx.conf"))
    assert not result.problems
    assert result.data["site"][0]["rate_limit"] == {"rate": "10r/s", "burst": 20, "nodelay": True, "status": status}
