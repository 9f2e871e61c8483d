"""Where a value was read: the TOML front-end's line scan, origins from another
front-end through load_data, and how `porch check` prints them."""

import pickle
import subprocess
import sys
import textwrap

import pytest

from porch.config.errors import ConfigError, locate
from porch.config.toml import load, load_data, loads, origins

TEXT = textwrap.dedent("""\
    [porch]
    http_port = 8080

    [[site]]
    hosts = ["a.example"]
    proxy = "http://127.0.0.1:1"

    [[site]]
    hosts = ["b.example"]
      [[site.route]]
      path = "/x/"
      proxy = "https://127.0.0.1:2"
      upstream_tls = { verify = false }
      [[site.route]]
      path = "/y/"
      proxy = "https://127.0.0.1:3"
    [site.upstream_tls]
    verify = true
    """)


def test_lines_of_headers_and_keys_by_key_path():
    found = origins(TEXT, "porch.toml")
    assert found["porch"] == "porch.toml:1"
    assert found["porch.http_port"] == "porch.toml:2"
    assert found["site[0].proxy"] == "porch.toml:6"
    assert found["site[1]"] == "porch.toml:8"
    assert found["site[1].route[0].upstream_tls"] == "porch.toml:13"
    assert found["site[1].route[1].path"] == "porch.toml:15"
    assert found["site[1].upstream_tls.verify"] == "porch.toml:18"


def test_a_nested_key_takes_its_parents_line():
    found = origins(TEXT, "porch.toml")
    assert locate(found, "site[1].route[0].upstream_tls.ca") == "porch.toml:13"
    assert locate(found, "site[1].route[0]") == "porch.toml:10"
    assert locate(found, "stream[0]") is None


def test_problems_keep_their_key_path_and_carry_the_line():
    with pytest.raises(ConfigError) as info:
        loads(TEXT.replace('"http://127.0.0.1:1"', '"htp://x"'), source="porch.toml")
    err = info.value
    assert err.problems[0].startswith('site[0].proxy: "htp://x" is not an http:// or https:// URL')
    assert err.located()[0] == f"porch.toml:6: {err.problems[0]}"
    again = pickle.loads(pickle.dumps(err))  # across the supervisor's process boundary
    assert (again.problems, again.origins) == (err.problems, err.origins)


def test_another_front_end_passes_its_own_origins():
    """The nginx front-end's spelling: file, line and directive."""
    data = {"site": [{"hosts": ["a.example"], "proxy": "http://a:1", "max_body": "20Q"}]}
    with pytest.raises(ConfigError) as info:
        load_data(data, "nginx.conf", origins={"site[0]": "nginx.conf:3: server",
                                                "site[0].max_body": "nginx.conf:7: client_max_body_size"})
    assert info.value.located() == [
        'nginx.conf:7: client_max_body_size: site[0].max_body: "20Q" is not a size'
        " (write bytes as 1048576 or with a unit: 64k, 20M, 1G (1024-based))"]


def test_check_prints_file_and_line(tmp_path):
    path = tmp_path / "porch.toml"
    path.write_text(TEXT.replace("http_port = 8080", "http_port = 0"))
    r = subprocess.run([sys.executable, "-m", "porch", "check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{path}:2: porch.http_port: 0 is out of range" in r.stderr, r.stderr


def test_check_dump_prints_toml_that_loads_back(tmp_path):
    path = tmp_path / "porch.toml"
    path.write_text(TEXT)
    r = subprocess.run([sys.executable, "-m", "porch", "check", "--dump", "-c", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(r.stdout)
    first, second = load(path), load(dumped)
    assert [s.hosts for s in second.sites] == [s.hosts for s in first.sites]
    assert [[r.path for r in s.routes] for s in second.sites] == [["/"], ["/x/", "/y/"]]
    assert second.porch == first.porch
