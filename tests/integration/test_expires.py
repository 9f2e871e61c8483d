"""expires (policies/expires.py) side by side with Debian's nginx: the same upstream
responses through both, with and without the upstream's own Cache-Control and Expires,
must come out with the same Cache-Control fields and the same Expires (as a distance
from the response's Date, since the two do not answer in the same second)."""

from __future__ import annotations

import time
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote

import pytest

from .helpers import curl_fetch, resolve
from .shaped import Shaped, start_nginx
from .test_compress import HOST, fetch
from .test_h2 import h2porch  # noqa: F401  (a fixture: both HTTP/2 engines)

# (porch.toml value, nginx directive argument)
CASES = [("7d", "7d"), ("epoch", "epoch"), ("max", "max"), ("off", "off"), ("0", "0"), ("-1h", "-1h"),
         ("1h 30m", '"1h 30m"'), ("1M2w", "1M2w"), ("modified +1h", "modified +1h"),
         ("modified -1d", "modified -1d")]
HOUR_AGO = quote(formatdate(time.time() - 3600, usegmt=True))
RESPONSES = [
    "status=200",
    "status=200&h=Cache-Control:private&h=X-Between:1&h=Cache-Control:no-store"
    "&h=Expires:Thu,%2001%20Jan%202099%2000:00:00%20GMT",
    f"status=200&h=Last-Modified:{HOUR_AGO}&h=Cache-Control:public",
    "status=201&h=Cache-Control:no-cache",
    "status=204", "status=206&h=Content-Range:bytes%200-1999/5000",
    "status=301&h=Location:/a", "status=302&h=Location:/b", "status=303&h=Location:/c",
    "status=304&h=Cache-Control:max-age=5", "status=307&h=Location:/d", "status=308&h=Location:/e",
    "status=404&h=Cache-Control:no-store", "status=500", "status=403&h=Expires:0",
]


def seconds(date: str) -> int:
    return int(parsedate_to_datetime(date).timestamp())


def expires_view(r) -> tuple:
    """What must match nginx: the Cache-Control fields and Expires (as Expires - Date
    when it is counted from now; as it is otherwise)."""
    expires = r.header_all("Expires")
    if len(expires) == 1 and r.header("Date") and expires[0] not in ("0",) and "1970" not in expires[0] \
            and "2037" not in expires[0] and "2099" not in expires[0]:
        expires = [seconds(expires[0]) - seconds(r.header("Date"))]
    return r.status, r.header_all("Cache-Control"), expires


def close_enough(ours: tuple, theirs: tuple) -> bool:
    """Equal, but for a second of difference in a time counted from now (the upstream's
    Date, which Porch passes on, is up to a second older than Porch's clock)."""
    if ours[:1] != theirs[:1] or len(ours[1]) != len(theirs[1]) or len(ours[2]) != len(theirs[2]):
        return False
    for a, b in zip(ours[1] + ours[2], theirs[1] + theirs[2]):
        if isinstance(a, str) and a.startswith("max-age=") and b.startswith("max-age="):
            a, b = int(a[8:]), int(b[8:])
        if a != b and not (isinstance(a, int) and isinstance(b, int) and abs(a - b) <= 1):
            return False
    return True


@pytest.fixture
def shaped():
    s = Shaped()
    yield s
    s.close()


def test_same_expires_and_cache_control_as_nginx(porch, procs, tmp_path, shaped):
    locations = "".join(f"location /c{i}/ {{ proxy_pass {shaped.url}; expires {arg}; }}\n"
                        for i, (_, arg) in enumerate(CASES))
    ngx = start_nginx(procs, tmp_path, locations)
    routes = "".join(f'  [[site.route]]\n  path = "/c{i}/"\n  proxy = "{shaped.url}"\n  expires = "{value}"\n'
                     for i, (value, _) in enumerate(CASES))
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\n{routes}')
    for i, (value, _) in enumerate(CASES):
        for query in RESPONSES:
            path = f"/c{i}/r?{query}"
            theirs, ours = expires_view(fetch(ngx, path, None)), expires_view(fetch(p.port, path, None))
            assert close_enough(ours, theirs), f"expires = {value!r}, {query}: Porch {ours}, nginx {theirs}"


def test_what_the_values_are(porch, shaped):
    """The figures themselves, not only nginx's agreement: 7d from now, epoch, max."""
    p = porch(f'[[site]]\nhosts = ["{HOST}"]\n'
              f'  [[site.route]]\n  path = "/week/"\n  proxy = "{shaped.url}"\n  expires = "7d"\n'
              f'  [[site.route]]\n  path = "/epoch/"\n  proxy = "{shaped.url}"\n  expires = "epoch"\n'
              f'  [[site.route]]\n  path = "/max/"\n  proxy = "{shaped.url}"\n  expires = "max"\n')
    r = fetch(p.port, "/week/x?h=Cache-Control:private", None)
    assert r.header_all("Cache-Control") == ["max-age=604800"]
    assert seconds(r.header("Expires")) - seconds(r.header("Date")) in (604800, 604801)
    r = fetch(p.port, "/epoch/x", None)
    assert (r.header("Expires"), r.header("Cache-Control")) == ("Thu, 01 Jan 1970 00:00:01 GMT", "no-cache")
    r = fetch(p.port, "/max/x?status=500", None)  # an error: untouched
    assert r.header("Expires") is None and r.header("Cache-Control") is None
    r = fetch(p.port, "/max/x", None)
    assert (r.header("Expires"), r.header("Cache-Control")) == ("Thu, 31 Dec 2037 23:55:55 GMT",
                                                                "max-age=315360000")


def test_over_http2(h2porch, shaped):
    p = h2porch(f'[[site]]\nhosts = ["{HOST}"]\nredirect_http = false\nproxy = "{shaped.url}"\nexpires = "1h"\n'
                '  [[site.route]]\n  path = "/live/"\n  proxy = "' + shaped.url + '"\n  expires = "epoch"\n')
    r = curl_fetch(f"https://{HOST}:{p.https_port}/x?h=Cache-Control:no-store", "--http2", "-k",
                   *resolve(HOST, p.https_port))
    assert r.rc == 0, r.stderr
    assert r.header("cache-control") == "max-age=3600"
    assert seconds(r.header("expires")) - seconds(r.header("date")) in (3600, 3601)
    r = curl_fetch(f"https://{HOST}:{p.https_port}/live/x", "--http2", "-k", *resolve(HOST, p.https_port))
    assert r.header("expires") == "Thu, 01 Jan 1970 00:00:01 GMT" and r.header("cache-control") == "no-cache"
