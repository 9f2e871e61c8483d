"""Access-log escaping (nginx's): the fast plain() test must agree with the definition."""

from __future__ import annotations

import pytest

from porch.observability import accesslog
from porch.observability.accesslog import escape, plain


@pytest.mark.parametrize("value", [
    b"", b"/small", b"Mozilla/5.0 (X11; Linux x86_64)", b"~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
    b'say "hi"', b"back\\slash", b"tab\there", b"\x7f", b"\x1b[31mred", "caf\u00e9".encode(), b" ",
])
def test_plain_agrees_with_the_safe_set(value):
    expected = not value.translate(None, accesslog._SAFE)
    assert plain(value) is expected
    assert (escape(value) == value.decode("latin-1")) is expected


def test_escape_spells_unsafe_bytes_as_nginx_does():
    assert escape(b'a"b\\c\x1bd\xe9') == "a\\x22b\\x5Cc\\x1Bd\\xE9"
