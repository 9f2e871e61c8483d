"""`root`: static files from a directory, instead of the upstream or before it.

    root = "/var/www/site"
    root = { path = "/var/www/site", try_files = true, index = ["index.html"] }

As nginx's `root`: the request's whole (clean) path is looked up under the directory
(`/static/app.css` on any route is `/var/www/site/static/app.css`).  GET and HEAD only
(others: 405, or the upstream with try_files).  A file is sent with its Content-Type,
Last-Modified and an ETag in nginx's form, answered 304 to a matching If-None-Match or
If-Modified-Since, and in part (206) for a single byte range (http/conditional.py).
A directory is served by its first index file, `/dir` redirected to `/dir/` (301,
as nginx); without an index file: 403, as nginx (never a listing).

`try_files = true` is nginx's `try_files $uri $uri/ @upstream`: the file (or a
directory's index) when there is one, the upstream otherwise.

No way out of the root: the router has decoded unreserved escapes and removed dot
segments (http/target.py); the rest of the path is decoded here, and a NUL (400), a
backslash, an encoded slash or a dot segment that decoding produced (404) is refused
before any file system call.  Then the path is resolved (os.path.realpath) and must
stay under the root's own real path, so a symlink that points outside is a 404 while
one inside is followed; the file is opened with O_NOFOLLOW (a symlink swapped in after
the check is not followed) and O_NONBLOCK (a FIFO cannot block the worker).
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass
from typing import Any

from porch.http import conditional
from porch.http.model import Headers
from porch.pipeline import Context, FileBody, Policy, Reply

# Files up to this size are read whole with the head (one write); larger ones stream
# (server/filesend.py).
SMALL_FILE = 64 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
_EXAMPLE = '"/var/www/site", or { path = "/var/www/site", try_files = true, index = ["index.html"] }'
_KEYS = ("path", "try_files", "index")
_SEP, _CRLF = b": ", b"\r\n"


@dataclass(frozen=True)
class RootConfig:
    path: str
    try_files: bool = False
    index: tuple[str, ...] = ("index.html",)


def parse(value: Any) -> RootConfig:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not {_EXAMPLE}")
    unknown = [key for key in value if key not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}; expected {_EXAMPLE}")
    if "path" not in value:
        raise ValueError(f"a table without path; expected {_EXAMPLE}")
    path = value["path"]
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"path {path!r} is not an absolute directory path; write it from /, like \"/var/www/site\"")
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a directory; create it, or give the directory the files are in")
    try_files = value.get("try_files", False)
    if not isinstance(try_files, bool):
        raise ValueError(f"try_files: {try_files!r} is not true or false")
    index = value.get("index", ["index.html"])
    if isinstance(index, str):
        index = [index]
    if not isinstance(index, list) or not all(_file_name(n) for n in index):
        raise ValueError(f'index: {index!r} is not a list of file names; write index = ["index.html"] ([] for none)')
    return RootConfig(os.path.normpath(path), try_files, tuple(index))


def _file_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def describe(config: RootConfig) -> str:
    text = f"static files from {config.path}"
    if config.index:
        text += f" (index {', '.join(config.index)})"
    return text + (", else the upstream (try_files)" if config.try_files else "")


def dump(config: RootConfig) -> dict[str, Any]:
    """The value as porch.toml spells it (`porch check --dump`): every field written out."""
    return {"path": config.path, "try_files": config.try_files, "index": list(config.index)}


def build(config: RootConfig, env: object) -> Root:
    return Root(config)


class Root(Policy):
    """Answers with files under one directory (see the module docstring)."""

    name = "root"
    __slots__ = ("root", "try_files", "index")

    def __init__(self, config: RootConfig) -> None:
        self.root = os.fsencode(os.path.realpath(config.path))
        self.try_files = config.try_files
        self.index = tuple(os.fsencode(n) for n in config.index)

    def request(self, ctx: Context) -> Reply | None:
        method = ctx.method
        if method != b"GET" and method != b"HEAD":
            if self.try_files:
                return None
            return Reply(405, headers=Headers([b"Allow", _SEP, b"GET, HEAD", _CRLF]))
        rel = relative_path(ctx.path)
        if rel is None:
            return Reply(400, cause=f"NUL or malformed escape in path {ctx.path.decode('latin-1')}")
        if not rel:
            return self._missing()
        real = self._resolve(os.path.join(self.root, rel))
        if real is None:
            return self._missing()
        found = _open(real)
        if isinstance(found, int):
            return self._missing() if found == 404 else Reply(found, cause=f"cannot read {real!r}")
        fd, st = found
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            if not ctx.path.endswith(b"/"):
                # nginx: 301 to the directory's URL with its slash (relative here)
                return Reply(301, headers=Headers([b"Location", _SEP, ctx.path + b"/" + ctx.query, _CRLF]))
            return self._index(ctx, real)
        if not stat.S_ISREG(st.st_mode) or ctx.path.endswith(b"/"):
            os.close(fd)
            return self._missing()
        return _serve(ctx, fd, st, real)

    def _missing(self) -> Reply | None:
        return None if self.try_files else Reply(404)

    def _resolve(self, path: bytes) -> bytes | None:
        """The real path of `path`, or None when it is not under the root."""
        real = os.path.realpath(path)
        root = self.root
        if real == root or root == b"/" or (real.startswith(root) and real[len(root):len(root) + 1] == b"/"):
            return real
        return None

    def _index(self, ctx: Context, directory: bytes) -> Reply | None:
        for name in self.index:
            real = self._resolve(os.path.join(directory, name))
            if real is None:
                continue
            found = _open(real)
            if isinstance(found, int):
                continue
            fd, st = found
            if stat.S_ISREG(st.st_mode):
                return _serve(ctx, fd, st, real)
            os.close(fd)
        if self.try_files:
            return None
        # nginx: 403, "directory index of ... is forbidden"; never a listing
        return Reply(403, cause=f"directory index of {ctx.path.decode('latin-1')} is forbidden"
                                " (no index file in it)")


def relative_path(path: bytes) -> bytes | None:
    """The clean URL path as a path under the root (no leading "/"), fully decoded;
    None for a NUL or a malformed escape (400); b"" when it can name no file under the
    root (an encoded slash, a backslash, a dot segment that decoding made: 404)."""
    if b"%" in path:
        try:
            path = _unquote(path)
        except ValueError:
            return None
    if b"\x00" in path:
        return None
    if b"\\" in path:
        return b""
    parts = path.split(b"/")
    if any(p in (b".", b"..") for p in parts):
        return b""
    return path.lstrip(b"/") or b"."


def _unquote(path: bytes) -> bytes:
    """Every %XX decoded; an encoded slash (%2F) makes the path name nothing (b"")."""
    head, *pieces = path.split(b"%")
    out = [head]
    for piece in pieces:
        pair = piece[:2]
        if len(pair) != 2:
            raise ValueError("malformed escape")
        byte = int(pair, 16)
        if byte == 0x2F:
            return b"\\"  # an encoded slash: refused as a backslash is (404)
        out.append(bytes((byte,)) + piece[2:])
    return b"".join(out)


def _open(real: bytes) -> tuple[int, os.stat_result] | int:
    """(fd, its stat) or the status to answer: 404 (missing), 403 (not readable)."""
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except PermissionError:
        return 403
    except OSError:
        return 404  # missing, a symlink raced in (ELOOP), not a directory on the way
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        return 404


def _serve(ctx: Context, fd: int, st: os.stat_result, real: bytes) -> Reply:
    """The file on `fd`: 200, 206, 304 or 416 by the request's conditions and range."""
    size = st.st_size
    mtime = int(st.st_mtime)
    tag = conditional.etag(mtime, size)
    modified = conditional.http_date(mtime)
    fields = [b"Last-Modified", _SEP, modified, _CRLF, b"ETag", _SEP, tag, _CRLF]
    request = ctx.request.headers
    if conditional.not_modified(request.get(b"if-none-match"), request.get(b"if-modified-since"), tag, mtime):
        os.close(fd)
        return Reply(304, headers=Headers(fields))
    status, start, length = 200, 0, size
    asked = request.get(b"range")
    if asked is not None and conditional.if_range_holds(request.get(b"if-range"), tag, modified):
        found = conditional.byte_range(asked, size)
        if found == conditional.UNSATISFIABLE:
            os.close(fd)
            return Reply(416, headers=Headers([b"Content-Range", _SEP, b"bytes */%d" % size, _CRLF]))
        if found is not None:
            status, (start, length) = 206, found
            fields += (b"Content-Range", _SEP, b"bytes %d-%d/%d" % (start, start + length - 1, size), _CRLF)
    if status == 200:  # as nginx: on the whole file only
        fields += (b"Accept-Ranges", _SEP, b"bytes", _CRLF)
    ctype = content_type(real)
    if length <= SMALL_FILE and ctx.method != b"HEAD":
        try:
            data = os.pread(fd, length, start)
        finally:
            os.close(fd)
        return Reply(status, data, Headers(fields), content_type=ctype)
    return Reply(status, FileBody(fd, start, length), Headers(fields), content_type=ctype)


# -- content types ------------------------------------------------------------------

_TYPES: dict[bytes, bytes] = {}
_DEFAULT_TYPE = b"application/octet-stream"  # nginx's default_type
_CHARSET_TYPES = (b"application/javascript",)  # and text/*


def _load_types() -> dict[bytes, bytes]:
    """Extension (lowercase, with its dot) -> Content-Type: Python's table, then
    Debian's /etc/mime.types over it when present (the system's list wins)."""
    db = mimetypes.MimeTypes()
    if os.path.exists("/etc/mime.types"):
        db.read("/etc/mime.types")
    table: dict[bytes, bytes] = {}
    for ext, kind in {**db.types_map[False], **db.types_map[True]}.items():
        value = kind.encode()
        if value.startswith(b"text/") or value in _CHARSET_TYPES:
            value += b"; charset=utf-8"
        table[ext.lower().encode()] = value
    return table


def content_type(path: bytes) -> bytes:
    """The Content-Type for a file name, by its extension (any case, as nginx)."""
    if not _TYPES:
        _TYPES.update(_load_types())
    ext = os.path.splitext(path)[1].lower()
    return _TYPES.get(ext, _DEFAULT_TYPE)
