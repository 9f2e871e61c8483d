"""Request-target checks: the cheap test that routes most paths past normalisation."""

from __future__ import annotations

import pytest

from porch.http import target
from porch.http.target import BadTarget, clean_path, needs_a_look

PATHS = [
    b"/", b"/small", b"/api/v1/users/42", b"/a.b/c.d", b"/file.tar.gz", b"/~user/x-y_z",
    b"/a%20b", b"/%2e%2e/etc", b"/a#frag", b"//double", b"/a//b", b"/./a", b"/a/../b",
    b"/a/.", b"/.well-known/acme-challenge/x", b"/trailing/", b"/a.", b"%", b"/\xff\xfe",
]


@pytest.mark.parametrize("path", PATHS)
def test_needs_a_look_flags_exactly_what_normalisation_may_change(path):
    # The compiled build runs a C loop, the interpreted one a regex: both must agree
    # with the definition, and a path not flagged must be its own normal form.
    expected = any(x in path for x in (b"%", b"#", b"//", b"/."))
    assert needs_a_look(path) is expected
    assert (target._LOOK(path) is not None) is expected
    if not expected:
        assert clean_path(path) == path


def test_clean_path_normalises_and_refuses():
    assert clean_path(b"/a/./b/../c//d") == b"/a/c/d"
    assert clean_path(b"/%7euser/%41") == b"/~user/A"
    assert clean_path(b"/a%2fb") == b"/a%2Fb"  # reserved escapes stay encoded
    for bad in (b"/../x", b"/a#b", b"/%zz"):
        with pytest.raises(BadTarget):
            clean_path(bad)
