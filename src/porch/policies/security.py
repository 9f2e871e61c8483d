"""`security_headers`: the response fields every guide asks nginx to add, in one key.

    security_headers = true
    security_headers = { csp = "default-src 'self'", frame_options = "DENY", override = true }

- X-Content-Type-Options: nosniff, X-Frame-Options: SAMEORIGIN and Referrer-Policy:
  strict-origin-when-cross-origin by default; Content-Security-Policy only when `csp`
  is given (a policy that fits every app does not exist); a value set to "" leaves that
  field out.
- An app's own field of the same name wins (it knows its pages: an app that embeds
  itself in a frame says so), unless `override = true`.
- On every response, Porch's own errors included.  HSTS is the site's `hsts` key
  (policies/hsts.py), sent over HTTPS only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from porch.http.model import ResponseHead
from porch.pipeline import Context, Policy

_FIELDS = (  # key -> field name, default value
    ("content_type_options", "X-Content-Type-Options", "nosniff"),
    ("frame_options", "X-Frame-Options", "SAMEORIGIN"),
    ("referrer_policy", "Referrer-Policy", "strict-origin-when-cross-origin"),
    ("csp", "Content-Security-Policy", ""),
)
_KEYS = tuple(key for key, _, _ in _FIELDS) + ("override",)
_EXAMPLE = "true, or a table like { csp = \"default-src 'self'\", override = true }"


@dataclass(frozen=True)
class SecurityHeaders:
    fields: tuple[tuple[str, str], ...]  # (name, value), empty values left out
    override: bool = False


def parse(value: Any) -> SecurityHeaders | None:
    if value is True:
        value = {}
    elif value is False:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not {_EXAMPLE}")
    unknown = [key for key in value if key not in _KEYS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(_KEYS)}")
    override = value.get("override", False)
    if not isinstance(override, bool):
        raise ValueError(f"override: {override!r} is not true or false")
    fields = []
    for key, name, default in _FIELDS:
        text = value.get(key, default)
        if not isinstance(text, str):
            raise ValueError(f'{key}: {text!r} is not a string; write {key} = "..." ("" leaves it out)')
        if any(c in text for c in "\r\n\x00"):
            raise ValueError(f"{key}: the value holds a line break or NUL; write it on one line")
        if text:
            fields.append((name, text))
    return SecurityHeaders(tuple(fields), override)


def dump(config: SecurityHeaders | None) -> dict[str, Any] | bool:
    """The value as porch.toml spells it (`porch check --dump`): every field, "" for
    those left out."""
    if config is None:
        return False
    values = dict(config.fields)
    out: dict[str, Any] = {key: values.get(name, "") for key, name, _ in _FIELDS}
    out["override"] = config.override
    return out


def describe(config: SecurityHeaders | None) -> str:
    if config is None:
        return "off"
    names = ", ".join(name for name, _ in config.fields) or "none"
    return names + (" (over the app's own)" if config.override else "")


class Security(Policy):
    name = "security_headers"
    __slots__ = ("fields", "override")

    def __init__(self, config: SecurityHeaders) -> None:
        self.fields = tuple((name.encode(), value.encode()) for name, value in config.fields)
        self.override = config.override

    def response(self, ctx: Context, head: ResponseHead) -> None:
        headers = head.headers
        if self.override:
            for name, value in self.fields:
                headers.set(name, value)
        else:
            headers.add_missing(self.fields)


def build(config: SecurityHeaders | None, env: object = None) -> Policy | None:
    return None if config is None else Security(config)
