"""nginx files -> a tree of `Directive`s, includes followed, each with its origin.

Tokens come from `crossplane` (PyPI `ngxparse`, the maintained fork): one file at a
time (`single=True`) and with no context checks, because a file from `sites-enabled/`
holds bare `server` blocks and Radicale's guide prints bare `location` blocks.
`include` is expanded here, as nginx does it (ngx_conf_include):

- a relative pattern starts at the prefix (the directory of nginx.conf, or
  /etc/nginx's place for a file from sites-enabled/, conf.d/ or snippets/);
- a glob that matches nothing is fine, matches are read in sorted order;
- a plain path that does not exist is an error, except certbot's
  options-ssl-nginx.conf (Porch's TLS defaults stand in for it, with a warning);
- an absolute /etc/nginx/... path that does not exist is looked for under the prefix
  when the prefix is elsewhere (a copy of /etc/nginx being tried out), with a warning.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import crossplane

_MAX_DEPTH = 16  # includes inside includes: nginx has no limit, a loop would be one
_CERTBOT_OPTIONS = "options-ssl-nginx.conf"
_ETC_NGINX = "/etc/nginx/"
_PREFIX_DIRS = ("sites-enabled", "sites-available", "conf.d", "snippets", "modules-enabled")


@dataclass(frozen=True)
class Directive:
    """One directive as written: `name args...;` or `name args... { block }`."""

    name: str
    args: tuple[str, ...]
    file: str  # as shown in messages: relative to the prefix when under it
    line: int
    block: tuple[Directive, ...] | None = None

    @property
    def origin(self) -> str:
        """`sites-enabled/libretime:12: proxy_pass`: where messages point."""
        return f"{self.file}:{self.line}: {self.name}"

    def first(self, name: str) -> Directive | None:
        for d in self.block or ():
            if d.name == name:
                return d
        return None


@dataclass
class Parsed:
    """The directives of the main file (includes spliced in), what went wrong, and
    what a person should hear about."""

    directives: tuple[Directive, ...]
    prefix: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prefix_for(path: str) -> str:
    """nginx's conf prefix for `path`: the directory that holds nginx.conf."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) in _PREFIX_DIRS:
        return os.path.dirname(folder)
    return folder


def parse(path: str) -> Parsed:
    """Read `path` and every file it includes."""
    reader = _Reader(prefix_for(path))
    directives = reader.file(os.path.abspath(path), depth=0)
    return Parsed(tuple(directives), reader.prefix, reader.problems, reader.warnings)


class _Reader:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def shown(self, path: str) -> str:
        rel = os.path.relpath(path, self.prefix)
        return path if rel.startswith("..") else rel

    def file(self, path: str, depth: int) -> list[Directive]:
        result = crossplane.parse(path, single=True, check_ctx=False, comments=False, strict=False)
        out: list[Directive] = []
        for entry in result["config"]:
            for err in entry["errors"]:
                line = err.get("line") or 0
                self.problems.append(f"{self.shown(path)}:{line}: {_clean(err['error'], path)}")
            out += self.block(entry["parsed"], path, depth)
        return out

    def block(self, items: list[dict], path: str, depth: int) -> list[Directive]:
        out: list[Directive] = []
        shown = self.shown(path)
        for item in items:
            name, args, line = item["directive"], tuple(item["args"]), item["line"]
            if name == "#":  # a comment crossplane keeps after a broken line
                continue
            if name == "..." and args:  # a guide's "..." placeholder ran into the next line
                self.warnings.append(f"{shown}:{line}: ...: read as the guide's placeholder for"
                                     f" \"the lines above\"; {args[0]} is read on its own")
                name, args = args[0], args[1:]
            if name == "include" and len(args) == 1:
                out += self.include(Directive(name, args, shown, line), depth)
                continue
            block = item.get("block")
            inner = tuple(self.block(block, path, depth)) if block is not None else None
            out.append(Directive(name, args, shown, line, inner))
        return out

    def include(self, d: Directive, depth: int) -> list[Directive]:
        if depth >= _MAX_DEPTH:
            self.problems.append(f"{d.origin}: includes nest deeper than {_MAX_DEPTH} files"
                                 " (a file that includes itself?); break the loop")
            return []
        pattern = d.args[0]
        full = pattern if os.path.isabs(pattern) else os.path.join(self.prefix, pattern)
        if glob.has_magic(full):
            return [x for p in sorted(glob.glob(full)) for x in self.file(p, depth + 1)]
        if os.path.isfile(full):
            return self.file(full, depth + 1)
        moved = self.moved(full)
        if moved:
            self.warnings.append(f"{d.origin}: {pattern} is not there; read {self.shown(moved)} instead"
                                 " (the same path under the prefix)")
            return self.file(moved, depth + 1)
        if os.path.basename(full) == _CERTBOT_OPTIONS:
            self.warnings.append(f"{d.origin}: {pattern} is not there; Porch's own TLS defaults"
                                 ' apply (TLS 1.2 and 1.3, Mozilla\'s "intermediate" ciphers)')
            return []
        self.problems.append(f"{d.origin}: {pattern} does not exist (nginx refuses this too);"
                             " fix the path, or remove the include")
        return []

    def moved(self, full: str) -> str | None:
        """/etc/nginx/x under a prefix that is not /etc/nginx: the prefix's x, if there."""
        if not full.startswith(_ETC_NGINX) or os.path.abspath(self.prefix) == _ETC_NGINX.rstrip("/"):
            return None
        candidate = os.path.join(self.prefix, full[len(_ETC_NGINX):])
        return candidate if os.path.isfile(candidate) else None


def _clean(message: str, path: str) -> str:
    """crossplane's message without its trailing ` in FILE:LINE` (we say where first)."""
    cut = message.rfind(f" in {path}:")
    return message[:cut] if cut > 0 else message
