"""The pieces of URL work behind rewriting an upstream's own URLs in the response
headers that carry one (Location, Content-Location, Refresh): nginx's
`proxy_redirect default`, Apache's ProxyPassReverse.  No I/O: the Exchange
(server/proxy.py) says which origins are the upstream's and what the client's base is.

Only responses with such a header get here, so this is plain Python, not compiled.
"""

from __future__ import annotations

_DEFAULT_PORTS = {"http": 80, "https": 443}


def authorities(scheme: str, host: str, port: int) -> list[bytes]:
    """`scheme://host:port`, lowercase, and `scheme://host` when the port is the
    scheme's default (a URL may say it either way, RFC 3986 6.2.3)."""
    host = f"[{host}]" if ":" in host else host
    out = [f"{scheme}://{host}:{port}".lower().encode()]
    if _DEFAULT_PORTS.get(scheme) == port:
        out.append(f"{scheme}://{host}".lower().encode())
    return out


def split_origin(url: bytes) -> tuple[bytes, bytes] | None:
    """(lowercase `scheme://authority`, the rest) of an absolute http(s) URL, else None."""
    sep = url.find(b"://")
    if sep < 4 or url[:sep].lower() not in (b"http", b"https"):
        return None
    end = len(url)
    for c in b"/?#":
        i = url.find(bytes((c,)), sep + 3, end)
        if i >= 0:
            end = i
    return url[:end].lower(), url[end:]


def under(path: bytes, prefix: bytes) -> bool:
    """`path` (with any query) is `prefix` or below it, segment-wise."""
    return path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in (b"", b"/", b"?", b"#")


def after_base(rest: bytes, base: bytes) -> bytes:
    """A path from the upstream's point of view, as the route sees it: without the
    proxy URL's base path (`http://up:8080/app` -> `/app`), always starting with "/"."""
    if base and under(rest, base):
        rest = rest[len(base):]
    return rest if rest[:1] == b"/" else b"/" + rest


def refresh_url(value: bytes) -> tuple[bytes, bytes, bytes] | None:
    """A Refresh value (`5; url=http://x/`, HTML's meta refresh syntax) split as
    (before the URL, the URL, after it: a closing quote); None without a URL."""
    at = value.lower().find(b"url=")
    if at < 0:
        return None
    start = at + 4
    quote = value[start:start + 1]
    if quote in (b"'", b'"'):
        start += 1
        end = value.find(quote, start)
        if end < 0:
            end = len(value)
    else:
        end = len(value.rstrip())
    return value[:start], value[start:end], value[end:]
