"""Apache httpd files -> a tree of `Directive`s, includes followed, each with its origin.

A small tokenizer of our own rather than PyPI's `apacheconfig`: its last release
(0.3.2) dates from 2019, it reads Perl Config::General's dialect (heredocs, `=`
assignments) rather than httpd's, and it keeps no line numbers, which every message
here needs.  httpd's syntax is small (server/util_cfgtree.c, core.c):

- one directive per line; a line ending in `\\` continues on the next one;
- `#` starts a comment only at the start of a line (after blanks);
- arguments are split on blanks, "double" or 'single' quotes group one;
- `<Name args>` opens a section, `</Name>` closes it; names are case-insensitive;
- `${VAR}` is an environment variable (Debian's envvars sets APACHE_LOG_DIR etc.).

`Include`/`IncludeOptional` are expanded in place: globs, relative paths from the
ServerRoot (the directory of apache2.conf, or /etc/apache2's place for a file from
sites-enabled/); Include of a missing plain path is an error (as httpd says),
certbot's options-ssl-apache.conf excepted (Porch's TLS defaults stand in for it).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

_MAX_DEPTH = 16
_CERTBOT_OPTIONS = "options-ssl-apache.conf"
_ETC_APACHE = "/etc/apache2/"
_ROOT_DIRS = ("sites-enabled", "sites-available", "conf-enabled", "conf-available", "conf.d",
              "mods-enabled", "mods-available")
# Debian's /etc/apache2/envvars, for ${VAR} when the environment does not have it.
_ENVVARS = {"APACHE_LOG_DIR": "/var/log/apache2", "APACHE_RUN_DIR": "/var/run/apache2",
            "APACHE_LOCK_DIR": "/var/lock/apache2", "APACHE_RUN_USER": "www-data",
            "APACHE_RUN_GROUP": "www-data", "APACHE_PID_FILE": "/var/run/apache2/apache2.pid"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Directive:
    """One directive (`Name args...`) or section (`<Name args> block </Name>`).
    `name` keeps the file's spelling; `key` is its lowercase form for lookups."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[Directive, ...] | None = None

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}: {self.name}"


@dataclass
class Parsed:
    directives: tuple[Directive, ...]
    root: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Problem(Exception):
    pass


def server_root(path: str) -> str:
    """Where relative Include paths start: httpd's ServerRoot."""
    here = os.path.dirname(os.path.abspath(path))
    if os.path.basename(here) in _ROOT_DIRS:
        return os.path.dirname(here)
    return here


def parse(path: str) -> Parsed:
    root = server_root(path)
    parsed = Parsed((), root)
    parsed.directives = tuple(_file(path, root, parsed, 0))
    return parsed


def _shown(path: str, root: str) -> str:
    full = os.path.abspath(path)
    if full.startswith(root + os.sep):
        return os.path.relpath(full, root)
    return path


def _file(path: str, root: str, parsed: Parsed, depth: int) -> list[Directive]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        parsed.problems.append(f"{path}: cannot be read ({e.strerror})")
        return []
    name = _shown(path, root)
    try:
        lines = list(_lines(text, name))
        items, _ = _block(lines, 0, None, name)
    except _Problem as e:
        parsed.problems.append(str(e))
        return []
    return _expand(items, root, parsed, depth)


def _lines(text: str, name: str):
    """(line number, name, args) per logical line; sections as `<Name` / `</Name`."""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if not line:
            continue
        if line.startswith("<"):
            if not line.endswith(">"):
                raise _Problem(f"{name}:{start}: {line.split()[0]}: the section has no closing >")
            head, rest = (line[1:-1].strip().split(None, 1) + [""])[:2]
            yield start, "<" + head, _split(rest, name, start)
            continue
        head, rest = (line.split(None, 1) + [""])[:2]
        yield start, head, _split(rest, name, start)
    if pending:
        raise _Problem(f"{name}:{start}: the last line ends with \\ and nothing follows")


def _split(rest: str, name: str, line: int) -> tuple[str, ...]:
    """httpd's ap_getword_conf: words split at white space; a word that starts with " or '
    ends at the same quote, inside which a backslash before that quote is the quote
    itself (LogFormat "%h \\"%r\\""); every other backslash is kept (RewriteRule regexes)."""
    words: list[str] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            return tuple(_env(w) for w in words)
        quote = rest[i] if rest[i] in "\"'" else ""
        if not quote:
            end = i
            while end < n and rest[end] not in " \t":
                end += 1
            words.append(rest[i:end])
            i = end
            continue
        i += 1
        word: list[str] = []
        while i < n and rest[i] != quote:
            if rest[i] == "\\" and i + 1 < n and rest[i + 1] == quote:
                i += 1
            word.append(rest[i])
            i += 1
        if i >= n:
            raise _Problem(f"{name}:{line}: a quote is not closed")
        words.append("".join(word))
        i += 1


def _env(arg: str) -> str:
    return _VAR.sub(lambda m: os.environ.get(m.group(1), _ENVVARS.get(m.group(1), m.group(0))), arg)


def _block(lines: list, i: int, opener: tuple | None, name: str) -> tuple[list[Directive], int]:
    out: list[Directive] = []
    while i < len(lines):
        number, head, args = lines[i]
        if head.startswith("</"):
            if opener is None:
                raise _Problem(f"{name}:{number}: {head}>: closes a section that was not opened")
            if head[2:].lower() != opener[1][1:].lower():
                raise _Problem(f"{name}:{number}: {head}>: expected </{opener[1][1:]}> (opened at"
                               f" line {opener[0]})")
            return out, i + 1
        if head.startswith("<"):
            inner, i = _block(lines, i + 1, (number, head), name)
            out.append(Directive(head[1:], args, name, number, tuple(inner)))
            continue
        out.append(Directive(head, args, name, number))
        i += 1
    if opener is not None:
        raise _Problem(f"{name}:{opener[0]}: <{opener[1][1:]}>: has no </{opener[1][1:]}>")
    return out, i


def _expand(items: list[Directive], root: str, parsed: Parsed, depth: int) -> list[Directive]:
    out: list[Directive] = []
    for d in items:
        if d.key in ("include", "includeoptional"):
            out += _include(d, root, parsed, depth)
        elif d.block is not None:
            out.append(Directive(d.name, d.args, d.file, d.line, tuple(_expand(list(d.block), root, parsed, depth))))
        else:
            out.append(d)
    return out


def _include(d: Directive, root: str, parsed: Parsed, depth: int) -> list[Directive]:
    if len(d.args) != 1:
        parsed.problems.append(f"{d.origin}: takes one path or pattern")
        return []
    if depth >= _MAX_DEPTH:
        parsed.problems.append(f"{d.origin}: includes nested {_MAX_DEPTH} deep (a loop?)")
        return []
    pattern = d.args[0]
    full = pattern if os.path.isabs(pattern) else os.path.join(root, pattern)
    if pattern.startswith(_ETC_APACHE) and root != _ETC_APACHE.rstrip("/"):
        local = os.path.join(root, pattern[len(_ETC_APACHE):])
        if glob.glob(local) and not glob.glob(full):
            full = local  # a copy of /etc/apache2 being tried out
    matches = sorted(glob.glob(full))
    if not matches:
        if os.path.basename(pattern) == _CERTBOT_OPTIONS:
            parsed.warnings.append(f"{d.origin}: {pattern} is not there; Porch's own TLS defaults apply"
                                   " (TLS 1.2 and 1.3, Mozilla's \"intermediate\" ciphers)")
        elif d.key == "include" and not glob.has_magic(pattern):
            parsed.problems.append(f"{d.origin}: {pattern} does not exist (httpd refuses to start too);"
                                   " fix the path, or write IncludeOptional")
        return []
    out: list[Directive] = []
    for match in matches:
        if os.path.isdir(match):
            for inner in sorted(os.listdir(match)):
                out += _file(os.path.join(match, inner), root, parsed, depth + 1)
        else:
            out += _file(match, root, parsed, depth + 1)
    return out
