"""Apache httpd files as Porch configs: `load(path)` -> the model, `convert(path)` -> porch.toml.

Same design as config/nginx/ (config/frontend.py holds what both do): the front-end
produces the values a porch.toml holds and the origin of each key (`site[0].route[1].proxy` -> `libretime.conf:5: ProxyPass`),
and `validate.load_data` checks them, so every message is porch.toml's, named by the
Apache line it came from.  docs/apache.md lists the directives read.
"""

from __future__ import annotations

import re

from porch.config import frontend, keys
from porch.config.apache.build import Builder
from porch.config.apache.parse import parse, server_root
from porch.config.frontend import Result, not_toml
from porch.config.model import Config

_SECTION = re.compile(r"^\s*</?(VirtualHost|IfModule|Location|Directory)\b", re.MULTILINE | re.IGNORECASE)
# httpd's capitalised directives (nginx's are lowercase) that start an apache2.conf
_MAIN = re.compile(r"^\s*(IncludeOptional|Include|LoadModule|ServerRoot)\s+[^=\s]", re.MULTILINE)


def looks_like_apache(text: str) -> bool:
    """True for httpd syntax: a <VirtualHost>, <IfModule>, <Location> section at a line's
    start, or an apache2.conf's Include/LoadModule/ServerRoot line (never TOML: no `=`)."""
    if _SECTION.search(text):
        return True
    return bool(_MAIN.search(text)) and not_toml(text)


def read(path: str) -> Result:
    """The porch.toml values of an Apache file, with origins, problems and warnings."""
    return Builder(parse(path), frozenset(keys.ROUTE_KEYS) | frozenset(keys.SITE_KEYS)).run()


def load(path: str) -> Config:
    """The model an Apache file means; ConfigError naming its lines if it cannot be."""
    return frontend.load(read(path), path, base=server_root(path))


__all__ = ["load", "looks_like_apache", "read"]
