"""porch.toml -> the values and their origins -> config/validate.py -> the model.

The TOML front-end does the syntax only: tomllib reads the text, and a light scan of
the same text finds the line of each table header (`[[site]]`, `[[site.route]]`,
`[porch]`) and each `key =` line, keyed by the path validation reports problems at
(`site[2].route[0].proxy` -> "porch.toml:31").  Everything else (types, defaults,
checks across tables) is config/validate.py's, shared with every other front-end.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from porch.config.errors import ConfigError, Origins
from porch.config.model import Config
from porch.config.validate import load_data
from porch.config.values import Values


def load(path: str | os.PathLike[str]) -> Config:
    """Read and check a porch.toml file; raise ConfigError listing every problem.

    Relative file paths in it (upstream_tls files) start at the file's directory."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: cannot read the file: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{source}: byte {e.start} is not UTF-8; TOML files are UTF-8"]) from None
    return loads(text, source, base=os.path.dirname(os.path.abspath(path)))


def loads(text: str, source: str = "<string>", base: str | None = None) -> Config:
    """Check porch.toml text; `source` names it in messages and in `Config.source`;
    relative file paths start at `base` (default: the current directory)."""
    data = parse(text, source)
    return load_data(data, source, base, origins(text, source))


def parse(text: str, source: str) -> Values:
    """The values of porch.toml text; ConfigError (one problem, naming the file) for a
    syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{source}: {e}"]) from None


# `[porch]`, `[[site]]`, `[[site.route]]`, `[site.upstream_tls]`: a header, its
# brackets, its dotted name.  Quoted names are left to tomllib (then no origin).
_HEADER = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.\s-]+?)\s*\]\]?\s*(?:#.*)?$")
# `key = ...` or `a.b = ...` at the start of a line (bare keys: porch.toml's keys are).
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*=")


def origins(text: str, source: str) -> Origins:
    """Key path -> "source:line" for each table header and `key =` line of `text`.

    A light scan, not a second parser: a line inside a multi-line string or array
    may be taken for a key; then its origin is wrong by a few lines, never its
    problem.  Arrays of tables count as validation does: the third [[site]] is
    `site[2]`, a [[site.route]] belongs to the [[site]] above it."""
    found: dict[str, str] = {}
    counts: dict[str, int] = {}  # array-of-tables path -> tables seen
    table = ""  # the key path keys are written under
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            table = _table_path(header.group(1) == "[[", header.group(2), table, counts)
            found.setdefault(table, f"{source}:{number}")
            continue
        key = _KEY.match(line)
        if key:
            name = ".".join(part.strip() for part in key.group(1).split("."))
            found.setdefault(f"{table}.{name}" if table else name, f"{source}:{number}")
    return found


def _table_path(array: bool, name: str, table: str, counts: dict[str, int]) -> str:
    """The key path of a header: `site.route` under `site[1]` is `site[1].route[N]`."""
    parts = [part.strip() for part in name.split(".")]
    path = ""
    for i, part in enumerate(parts):
        plain = f"{path}.{part}" if path else part
        last = i == len(parts) - 1
        if last and array:
            n = counts.get(plain, 0)
            counts[plain] = n + 1
            for key in [k for k in counts if k.startswith(plain + "[")]:
                del counts[key]  # a new [[site]]: its routes count from 0
            path = f"{plain}[{n}]"
        elif plain in counts:  # an array of tables seen: the latest one
            path = f"{plain}[{counts[plain] - 1}]"
        else:
            path = plain
    return path


__all__ = ["ConfigError", "load", "load_data", "loads", "origins"]
