"""One entry for every config front-end: the file's content says which it is.

`porch run -c /etc/nginx/nginx.conf`, `porch check -c sites-enabled/libretime.conf` and
`porch check -c porch.toml` all work: nginx syntax (blocks, `name value;` lines) is
read by config/nginx/, Apache's `<VirtualHost>` files by config/apache/, the rest is TOML.
"""

from __future__ import annotations

import os

from porch.config.model import Config


def kind(path: str | os.PathLike[str]) -> str:
    """"nginx", "apache" or "toml", from the file's first 64 KiB."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536).decode("utf-8", "replace")
    except OSError:
        return "toml"  # toml.load reports the error
    from porch.config.apache import looks_like_apache
    from porch.config.nginx import looks_like_nginx

    if looks_like_apache(head):
        return "apache"
    return "nginx" if looks_like_nginx(head) else "toml"


def load(path: str | os.PathLike[str]) -> Config:
    found = kind(path)
    if found == "nginx":
        from porch.config import nginx

        return nginx.load(str(path))
    if found == "apache":
        from porch.config import apache

        return apache.load(str(path))
    from porch.config import toml

    return toml.load(path)
