"""Parsers of the ACME keys (porch.tls): the CA, challenges, deploy hooks, bundles."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

from porch.config.model import LETSENCRYPT, LETSENCRYPT_STAGING, Bundle, Webroot
from porch.config.values import expect, nonempty, one_of, show, strings, unique

# --- ACME keys (porch.tls) -------------------------------------------------------

_CA_NAMES = {"letsencrypt": LETSENCRYPT, "letsencrypt-staging": LETSENCRYPT_STAGING}
_CA = 'an ACME directory URL like "https://acme.example/directory", "letsencrypt" or "letsencrypt-staging"'


def acme_ca(value: Any) -> str:
    text = nonempty(_CA)(value)
    if text in _CA_NAMES:
        return _CA_NAMES[text]
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.netloc:  # RFC 8555 6.1: ACME is HTTPS only
        raise ValueError(f"{show(text)} is not an https:// URL; expected {_CA}")
    return text


def pem_file(value: Any) -> str:
    path = nonempty("a path to a PEM file")(value)
    if not os.path.isfile(path):
        raise ValueError(f"{show(path)} is not a file; expected the CA's root certificate (PEM)")
    return path


def command(value: Any) -> str:
    return nonempty('a shell command like "systemctl reload icecast2"')(value)


_CHALLENGE = '"porch", "upstream", or { webroot = "/var/www/letsencrypt" }'


def acme_challenge(value: Any) -> str | Webroot:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"webroot"})
        if unknown:
            raise ValueError(f"{show(unknown[0])} is not an acme_challenge key; expected {_CHALLENGE}")
        if "webroot" not in value:
            raise ValueError(f"{{}} has no webroot; expected {_CHALLENGE}")
        root = nonempty("a directory path")(value["webroot"])
        if not os.path.isabs(root):
            raise ValueError(f"webroot {show(root)} is relative; write an absolute path")
        return Webroot(root)
    return one_of("porch", "upstream")(value)


_PARTS = ("fullchain", "cert", "chain", "key")
_BUNDLE = 'a table like { path = "/etc/icecast2/bundle.pem", contents = ["fullchain", "key"] }'


def _bundle(value: Any) -> Bundle:
    expect(isinstance(value, dict), value, _BUNDLE)
    for key in value:
        if key not in ("path", "contents", "mode", "group"):
            raise ValueError(f"{show(key)} is not a bundle key; expected path, contents, mode or group")
    if "path" not in value:
        raise ValueError(f"a bundle without path; expected {_BUNDLE}")
    path = nonempty("a file path")(value["path"])
    if not os.path.isabs(path):
        raise ValueError(f"bundle path {show(path)} is relative; write an absolute path")
    contents = tuple(strings(value.get("contents", ["fullchain", "key"]), " or ".join(_PARTS)))
    for part in contents:
        if part not in _PARTS:
            raise ValueError(f"bundle contents {show(part)} is not one of {', '.join(_PARTS)}")
    mode = value.get("mode", "0600")
    expect(isinstance(mode, str), mode, 'an octal mode in quotes like "0640"')
    if not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ValueError(f'bundle mode {show(mode)} is not an octal mode; write one like "0640"')
    group = value.get("group")
    if group is not None:
        group = _group(group)
    return Bundle(path=path, contents=contents, mode=int(mode, 8), group=group)


def _group(value: Any) -> str:
    import grp

    name = nonempty("a group name")(value)
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"bundle group {show(name)} does not exist on this machine") from None
    return name


def bundles(value: Any) -> tuple[Bundle, ...]:
    expect(isinstance(value, list), value, f"an array of bundles, each {_BUNDLE}")
    return unique((_bundle(item) for item in value), show=lambda b: show(b.path))


