"""What the nginx and Apache front-ends share (Caddy's config adapters): each reads its
files into the values a porch.toml holds, with the origin of every key, and hands them
to `validate.load_data`, so every check and message is porch.toml's, named by the
source line it came from.

- `Result`: the values, origins, problems and warnings of one read;
- `BuildBase`: the builder's common steps (warnings, [porch] keys, sites from groups
  of blocks, the TLS files of a site, a site's routes, the finished Result);
- `load(result, path, base)`: the model, or ConfigError naming source lines;
- `named(problem, origins)`: a porch.toml key path as the source line it came from;
- `not_toml(text)`: for `looks_like_nginx` / `looks_like_apache`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from typing import Any, Protocol

from porch.config import validate
from porch.config.errors import ConfigError
from porch.config.model import Config

STATE_DIR_ENV = "PORCH_STATE_DIR"  # [porch] state_dir for an nginx or Apache file (default /var/lib/porch)
LETSENCRYPT = "/etc/letsencrypt/live/"


@dataclass
class Result:
    data: dict[str, Any]
    origins: dict[str, str]  # key path -> "file:line: directive"
    problems: list[str]
    warnings: list[str]


class Located(Protocol):
    """A source directive: nginx's and Apache's both have these."""

    @property
    def origin(self) -> str: ...


class BuildBase:
    """State and steps both builders have; each sets these in its __init__."""

    problems: list[str]
    warnings: list[str]
    porch: dict[str, Any]
    origins: dict[str, str]

    def warn(self, d: Located, message: str) -> None:
        line = f"{d.origin}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)

    def set_global(self, key: str, value: Any, d: Located) -> None:
        self.porch[key] = value
        self.origins[f"porch.{key}"] = d.origin

    def result(self, sites: list[dict[str, Any]]) -> Result:
        """The finished read; PORCH_STATE_DIR is [porch] state_dir (the source files have
        no place for Porch's own state)."""
        if os.environ.get(STATE_DIR_ENV):
            self.porch["state_dir"] = os.environ[STATE_DIR_ENV]
            self.origins["porch.state_dir"] = f"${STATE_DIR_ENV}"
        data: dict[str, Any] = {"site": sites}
        if self.porch:
            data["porch"] = self.porch
        return Result(data, self.origins, self.problems, self.warnings)

    def site(self, i: int, names: tuple[str, ...], group: list[Any]) -> dict[str, Any] | None:
        raise NotImplementedError  # each builder's: the site of server blocks / VirtualHosts

    def grouped_sites(self, groups: dict[tuple[str, ...], list[Any]]) -> list[dict[str, Any]]:
        """One site per group of blocks naming the same hosts (None: not one, a problem said why)."""
        out: list[dict[str, Any]] = []
        for names, group in groups.items():
            site = self.site(len(out), names, group)
            if site is not None:
                out.append(site)
        return out

    def split(self, group: list[Any], kind: str) -> tuple[Any, list[Any], list[Any]]:
        """(the block that gives the site its routes: the TLS one, else the plain one;
        the TLS blocks; the plain ones); a second of either kind is a problem."""
        secure = [b for b in group if b.ssl]
        plain = [b for b in group if not b.ssl]
        for extra in secure[1:] + plain[1:]:
            self.problems.append(f"{extra.block.origin}: a second {kind} for the same names and kind"
                                 " of port; merge it into the first")
        return (secure[0] if secure else plain[0]), secure, plain

    def tls_files(self, site: dict[str, Any], where: str, cert: Located, cert_path: str, key_path: str) -> None:
        """tls = { cert, key } when the files are there; else tls = "auto", warned."""
        if os.path.isfile(cert_path) and os.path.isfile(key_path):
            site["tls"] = {"cert": cert_path, "key": key_path}
            self.origins[f"{where}.tls"] = cert.origin
            return
        why = "certbot has not written it yet" if cert_path.startswith(LETSENCRYPT) else "the file is not there"
        self.warn(cert, f"{cert_path}: {why}; Porch gets its own certificate from Let's Encrypt"
                  ' (tls = "auto") and renews it: no certbot needed')
        site["tls"] = "auto"
        self.origins[f"{where}.tls"] = cert.origin

    def place_routes(self, site: dict[str, Any], where: str, routes: list[tuple[dict, dict]]) -> None:
        """A site's routes: one for / (not a regex) is written as the site's own keys,
        several as its route list; `routes` are (values, {key: directive})."""
        if len(routes) == 1 and routes[0][0].get("path") == "/" and "regex" not in routes[0][0]:
            values, origins = routes[0]
            site.update({k: v for k, v in values.items() if k != "path"})
            self.origins.update({f"{where}.{k}": d.origin for k, d in origins.items() if k != "path"})
        elif routes:
            site["route"] = [values for values, _ in routes]
            for j, (_, origins) in enumerate(routes):
                self.origins.update({f"{where}.route[{j}].{k}": d.origin for k, d in origins.items()})
                if "path" in origins:
                    self.origins[f"{where}.route[{j}]"] = origins["path"].origin


def load(result: Result, path: str, base: str) -> Config:
    """The model a front-end's Result means; ConfigError naming source lines if it cannot be."""
    if result.problems:
        raise ConfigError(result.problems)
    try:
        config = validate.load_data(result.data, path, base=base, origins=result.origins)
    except ConfigError as err:
        raise ConfigError([named(problem, result.origins) for problem in err.problems]) from None
    warnings = tuple(result.warnings) + tuple(named(w, result.origins) for w in config.warnings)
    return replace(config, warnings=warnings)


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


def not_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True
    return False
