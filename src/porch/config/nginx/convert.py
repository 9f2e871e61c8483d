"""`porch convert FILE`: the porch.toml an nginx file means, each line commented with
the nginx line it came from, the warnings on top.  Loading the printed file gives the
model `porch run -c FILE` serves (tests/unit/test_nginx_convert.py)."""

from __future__ import annotations

import json
from typing import Any

from porch.config.nginx import read

# certbot's live directory: /etc/letsencrypt/live/NAME/ (or under another --config-dir
# named letsencrypt).  Porch's ACME can take these over: offered, not done, so the
# printed file serves the certificate the source serves.
_LETSENCRYPT = "letsencrypt/live/"
_ACME_OFFER = [
    "# certbot's certificate: Porch's own ACME can get and renew it itself (no certbot timer,",
    "# no deploy hook, renewed in the background with no reload); to let it, use this line",
    "# instead of the one above:",
    '# tls = "auto"',
]


def convert(path: str) -> tuple[str, list[str]]:
    """(porch.toml text, problems); the text is empty when there are problems."""
    return render(path, read(path), "nginx")


def render(path: str, result: Any, server: str) -> tuple[str, list[str]]:
    """A front-end's Result (nginx's, Apache's) as commented porch.toml text."""
    if result.problems:
        return "", result.problems
    out = [f"# porch.toml for {path}, written by `porch convert`: each key's comment names",
           f"# the {server} line it comes from."]
    if result.warnings:
        out.append(f"#\n# What {server} did differently or what Porch ignores (porch check says the same):")
        out += [f"#   {w}" for w in result.warnings]
    porch = result.data.get("porch")
    if porch:
        out += ["", "[porch]"]
        out += _table(porch, "porch", result.origins, "")
    for i, site in enumerate(result.data.get("site", [])):
        where = f"site[{i}]"
        out += ["", f"[[site]]{_comment(result.origins.get(where))}"]
        keys = {k: v for k, v in site.items() if k != "route"}
        for key, line in zip(keys, _table(keys, where, result.origins, "")):
            out.append(line)
            if key == "tls" and _letsencrypt(site["tls"]):
                out += _ACME_OFFER
        for j, route in enumerate(site.get("route", [])):
            out += ["", "  [[site.route]]"]
            out += _table(route, f"{where}.route[{j}]", result.origins, "  ")
    return "\n".join(out) + "\n", []


def _letsencrypt(tls: Any) -> bool:
    return isinstance(tls, dict) and _LETSENCRYPT in str(tls.get("cert", ""))


def _table(values: dict[str, Any], where: str, origins: dict[str, str], indent: str) -> list[str]:
    return [f"{indent}{_key(k)} = {value(v)}{_comment(origins.get(f'{where}.{k}'))}" for k, v in values.items()]


def _comment(origin: str | None) -> str:
    return f"    # {origin}" if origin else ""


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def value(v: Any) -> str:
    """One value in TOML syntax (inline tables and arrays on one line)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"no TOML form for {v!r}")
