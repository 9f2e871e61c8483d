"""`root` (policies/root.py): its config forms and errors, the path checks done before
any file system call, and the validators, conditions and ranges (http/conditional.py)."""

from __future__ import annotations

import pytest

from porch.config.errors import ConfigError
from porch.config.toml import loads
from porch.http import conditional
from porch.policies.root import RootConfig, parse, relative_path


def test_short_and_table_forms(tmp_path):
    assert parse(str(tmp_path)) == RootConfig(str(tmp_path), False, ("index.html",))
    assert parse({"path": str(tmp_path), "try_files": True, "index": ["index.htm", "default.html"]}) == \
        RootConfig(str(tmp_path), True, ("index.htm", "default.html"))


@pytest.mark.parametrize("value,message", [
    ("www", "path 'www' is not an absolute directory path; write it from /"),
    ("/nonexistent/www", "'/nonexistent/www' is not a directory; create it, or give the directory"),
    ({"try_files": True}, "a table without path; expected"),
    ({"path": "/", "index": "a/b"}, "index: ['a/b'] is not a list of file names"),
    ({"path": "/", "try_files": "yes"}, "try_files: 'yes' is not true or false"),
    ({"path": "/", "tryfiles": True}, "'tryfiles' is not one of path, try_files, index"),
    (5, "5 is not \"/var/www/site\", or { path ="),
])
def test_bad_values_say_what_to_write(value, message):
    with pytest.raises(ValueError) as info:
        parse(value)
    assert message in str(info.value)


def test_a_route_with_root_needs_no_proxy(tmp_path):
    config = loads(f'[[site]]\nhosts = ["app.test"]\nroot = "{tmp_path}"\n')
    (route,) = config.sites[0].routes
    assert route.upstreams == () and dict(route.policies)["root"].path == str(tmp_path)


def test_try_files_without_an_upstream_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        loads(f'[[site]]\nhosts = ["app.test"]\n[[site.route]]\npath = "/"\n'
              f'root = {{ path = "{tmp_path}", try_files = true }}\n')
    assert info.value.problems == [
        "site[0].route[0].root: try_files = true falls back to the upstream, and there is no proxy here;"
        ' add proxy = "http://host:port", or remove try_files']


def test_root_error_names_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        loads('[[site]]\nhosts = ["app.test"]\nroot = "/nonexistent/www"\n')
    assert info.value.problems[0].startswith("site[0].root: '/nonexistent/www' is not a directory")


@pytest.mark.parametrize("path,expected", [
    (b"/", b"."),
    (b"/a/b.css", b"a/b.css"),
    (b"/a%20b.txt", b"a b.txt"),
    (b"/..%2Fetc/passwd", b""),  # an encoded slash: names no file
    (b"/a%2fb", b""),
    (b"/a\\..\\b", b""),  # a backslash
    (b"/%2E%2E%5Cx", b""),
    (b"/a%00.txt", None),  # NUL: 400
    (b"/a%zz", None),  # malformed escape: 400
])
def test_relative_path(path, expected):
    assert relative_path(path) == expected


@pytest.mark.parametrize("header,size,expected", [
    (b"bytes=0-9", 100, (0, 10)),
    (b"bytes=90-", 100, (90, 10)),
    (b"bytes=-10", 100, (90, 10)),
    (b"bytes=-1000", 100, (0, 100)),
    (b"bytes=95-200", 100, (95, 5)),
    (b"bytes=100-", 100, conditional.UNSATISFIABLE),
    (b"bytes=-0", 100, conditional.UNSATISFIABLE),
    (b"bytes=5-3", 100, None),  # invalid: ignored
    (b"bytes=0-1,5-6", 100, None),  # several: served whole (README)
    (b"items=0-1", 100, None),
    (b"bytes=a-b", 100, None),
    (b"BYTES=1-1", 100, (1, 1)),
])
def test_byte_range(header, size, expected):
    assert conditional.byte_range(header, size) == expected


def test_conditions():
    tag = conditional.etag(0x5F8D2E1A, 0x1C4)
    assert tag == b'"5f8d2e1a-1c4"'
    date = conditional.http_date(0x5F8D2E1A)
    assert conditional.not_modified(tag, None, tag, 0x5F8D2E1A)
    assert conditional.not_modified(b'W/"x", W/' + tag, None, tag, 0)
    assert conditional.not_modified(b"*", None, tag, 0)
    assert not conditional.not_modified(b'"other"', date, tag, 0x5F8D2E1A)  # If-None-Match decides alone
    assert conditional.not_modified(None, date, tag, 0x5F8D2E1A)
    assert not conditional.not_modified(None, date, tag, 0x5F8D2E1A + 1)
    assert not conditional.not_modified(None, b"garbage", tag, 0)
    assert conditional.if_range_holds(tag, tag, date) and conditional.if_range_holds(date, tag, date)
    assert not conditional.if_range_holds(b"W/" + tag, tag, date)
    assert not conditional.if_range_holds(b'"old"', tag, date)
