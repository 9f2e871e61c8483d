"""nginx files as Porch configs: `load(path)` -> the model, `convert(path)` -> porch.toml.

The front-end produces the values a porch.toml holds and hands them to
`validate.load_data` (config/frontend.py, shared with Apache's), so every check and
message is porch.toml's; a problem's
key path (`site[0].route[1].proxy`) is then named by the nginx line it came from
(`sites-enabled/libretime:12: proxy_pass`).  Warnings name their line and the
porch.toml alternative.  docs/nginx.md lists the directives read.
"""

from __future__ import annotations

import re

from porch.config import frontend, keys
from porch.config.frontend import Result, not_toml
from porch.config.model import Config
from porch.config.nginx.build import Builder
from porch.config.nginx.parse import parse, prefix_for

# A block opener at the start of a line: what a TOML file never has.
_NGINX = re.compile(r"^\s*(?:http|server|events|upstream|location|map|stream)\b[^=\n]*\{", re.MULTILINE)
_DIRECTIVE = re.compile(r"^\s*[a-z_]+\s+[^=\n]*;\s*(?:#.*)?$", re.MULTILINE)


def looks_like_nginx(text: str) -> bool:
    """True for nginx syntax: a block opener, or `name value;` lines in what is not TOML
    (a TOML string may hold such a line; a TOML file never opens a block that way)."""
    if _NGINX.search(text):
        return True
    return bool(_DIRECTIVE.search(text)) and not_toml(text)


def read(path: str) -> Result:
    """The porch.toml values of an nginx file, with origins, problems and warnings."""
    return Builder(parse(path), frozenset(keys.ROUTE_KEYS) | frozenset(keys.SITE_KEYS)).run()


def load(path: str) -> Config:
    """The model an nginx file means; ConfigError naming nginx lines if it cannot be."""
    return frontend.load(read(path), path, base=prefix_for(path))


__all__ = ["load", "looks_like_nginx", "read"]
