"""`porch convert` on files that serve certbot's certificates (ssl_certificate,
SSLCertificateFile under letsencrypt/live/): the printed porch.toml keeps the files, so
it serves what the source serves, and offers Porch's own ACME (`tls = "auto"`) on the
line under them, commented (issue 15)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from porch.config import toml
from porch.config.apache.convert import convert as apache_convert
from porch.config.nginx.convert import convert as nginx_convert

_CERTS = Path(__file__).resolve().parent.parent / "integration" / "certs.py"
_spec = importlib.util.spec_from_file_location("porch_test_certs", _CERTS)
certs = sys.modules.setdefault("porch_test_certs", importlib.util.module_from_spec(_spec))
if not hasattr(certs, "TestCA"):
    _spec.loader.exec_module(certs)  # the integration tests' certificate maker, by path

OFFER = ["# certbot's certificate: Porch's own ACME can get and renew it itself (no certbot timer,",
         "# no deploy hook, renewed in the background with no reload); to let it, use this line",
         "# instead of the one above:",
         '# tls = "auto"']


def live(tmp_path: Path, under: str) -> tuple[Path, Path]:
    """certbot's layout: CONFIG_DIR/live/NAME/fullchain.pem and privkey.pem."""
    d = tmp_path / under / "live" / "app.example.org"
    d.mkdir(parents=True)
    pair = certs.TestCA(tmp_path / "ca").issue("app", ["app.example.org"])
    cert, key = d / "fullchain.pem", d / "privkey.pem"
    cert.write_bytes(pair.cert.read_bytes())
    key.write_bytes(pair.key.read_bytes())
    return cert, key


NGINX = """server {{
    listen 443 ssl;
    server_name app.example.org;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ proxy_pass http://127.0.0.1:8080; }}
}}
"""
APACHE = """<VirtualHost *:443>
    ServerName app.example.org
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    ProxyPass / http://127.0.0.1:8080/
    ProxyPassReverse / http://127.0.0.1:8080/
</VirtualHost>
"""
KINDS = {"nginx": (NGINX, nginx_convert, "ssl_certificate"), "apache": (APACHE, apache_convert, "SSLCertificateFile")}


@pytest.mark.parametrize("kind", KINDS)
def test_certbots_files_are_kept_and_acme_offered(tmp_path: Path, kind: str) -> None:
    template, convert, directive = KINDS[kind]
    cert, key = live(tmp_path, "letsencrypt")
    src = tmp_path / "site.conf"
    src.write_text(template.format(cert=cert, key=key))
    text, problems = convert(str(src))
    assert not problems
    lines = text.splitlines()
    tls = next(i for i, line in enumerate(lines) if line.startswith("tls = "))
    assert lines[tls] == f'tls = {{ cert = "{cert}", key = "{key}" }}    # site.conf:4: {directive}'
    assert lines[tls + 1:tls + 5] == OFFER
    config = toml.loads(text, source="porch.toml", base=str(tmp_path))  # the files, as the source
    assert config.sites[0].tls.cert == str(cert)
    uncommented = text.replace(lines[tls] + "\n", "").replace('# tls = "auto"', 'tls = "auto"')
    assert toml.loads(uncommented, source="porch.toml", base=str(tmp_path)).sites[0].tls == "auto"


@pytest.mark.parametrize("kind", KINDS)
def test_other_certificate_files_get_no_offer(tmp_path: Path, kind: str) -> None:
    template, convert, _ = KINDS[kind]
    cert, key = live(tmp_path, "mycerts")  # .../mycerts/live/...: not certbot's config dir
    src = tmp_path / "site.conf"
    src.write_text(template.format(cert=cert, key=key))
    text, problems = convert(str(src))
    assert not problems and 'tls = "auto"' not in text
