"""nginx files as Porch configs: `load(path)` -> the model, `convert(path)` -> porch.toml.

The front-end produces the values a porch.toml holds and hands them to
`config.toml.load_data`, so every check and message is porch.toml's; a problem's
key path (`site[0].route[1].proxy`) is then named by the nginx line it came from
(`sites-enabled/libretime:12: proxy_pass`).  Warnings name their line and the
porch.toml alternative.  docs/nginx.md lists the directives read.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace

from porch.config import keys, validate
from porch.config.errors import ConfigError
from porch.config.model import Config
from porch.config.nginx.build import Builder, Result
from porch.config.nginx.parse import parse, prefix_for

# A block opener at the start of a line: what a TOML file never has.
_NGINX = re.compile(r"^\s*(?:http|server|events|upstream|location|map|stream)\b[^=\n]*\{", re.MULTILINE)
_DIRECTIVE = re.compile(r"^\s*[a-z_]+\s+[^=\n]*;\s*(?:#.*)?$", re.MULTILINE)


def looks_like_nginx(text: str) -> bool:
    """True for nginx syntax: a block opener, or `name value;` lines in what is not TOML
    (a TOML string may hold such a line; a TOML file never opens a block that way)."""
    if _NGINX.search(text):
        return True
    if not _DIRECTIVE.search(text):
        return False
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True
    return False


def read(path: str) -> Result:
    """The porch.toml values of an nginx file, with origins, problems and warnings."""
    return Builder(parse(path), _known_keys()).run()


def load(path: str) -> Config:
    """The model an nginx file means; ConfigError naming nginx lines if it cannot be."""
    result = read(path)
    if result.problems:
        raise ConfigError(result.problems)
    try:
        config = _load_data(result, path)
    except ConfigError as err:
        raise ConfigError([named(problem, result.origins) for problem in err.problems]) from None
    warnings = tuple(result.warnings) + tuple(named(w, result.origins) for w in config.warnings)
    return replace(config, warnings=warnings)


def _load_data(result: Result, path: str) -> Config:
    return validate.load_data(result.data, path, base=prefix_for(path), origins=result.origins)


def named(problem: str, origins: dict[str, str]) -> str:
    """`site[0].route[1].proxy: msg` as `file:line: proxy_pass: msg (porch.toml key ...)`:
    the longest key path that has an origin names the line."""
    where, sep, message = problem.partition(": ")
    if not sep or where.startswith(("/", ".")) or ":" in where:
        return problem  # already a file name
    best = ""
    for key in origins:
        if (where == key or where.startswith(key + ".") or where.startswith(key + "[")) and len(key) > len(best):
            best = key
    if not best:
        return problem
    return f"{origins[best]}: {message} (porch.toml key {where})"


def _known_keys() -> frozenset[str]:
    return frozenset(keys.ROUTE_KEYS) | frozenset(keys.SITE_KEYS)


__all__ = ["load", "looks_like_nginx", "read"]
