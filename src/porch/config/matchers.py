"""Route matchers beside `path`: their parsers and how a route's draft names them.

A route matches by exactly one of `path` (a prefix), `exact` (nginx `location =`),
`regex` (`location ~`, or `~*` with `regex_case = false`) and `match` (a path glob);
`priority = "prefix"` is nginx's `^~` on a path route.  routing.py selects among them
in nginx's location order.  A matcher route keeps a label in `path` ("= /50x.html",
"~* \\.png$", "match *.css"): unique per site, it names the route in messages.
"""

from __future__ import annotations

import re
from typing import Any

from porch.config.model import Matcher
from porch.config.values import Values, expect, show
from porch.routing import glob_regex

KINDS = ("path", "exact", "regex", "match")
KEYS = ("path", "exact", "regex", "regex_case", "match", "priority")


def exact_path(value: Any) -> str:
    expect(isinstance(value, str), value, 'an exact path like "/50x.html"')
    if not value.startswith("/") or "?" in value or "#" in value or any(c.isspace() for c in value):
        raise ValueError(f'{show(value)} is not a path; write the exact path, like "/50x.html"')
    return value


def regex(value: Any) -> str:
    expect(isinstance(value, str) and value != "", value, 'a regular expression like "\\\\.(jpg|png)$"')
    try:
        re.compile(value.encode())
    except re.error as e:
        raise ValueError(f"{show(value)} is not a valid regular expression: {e}; fix the pattern"
                         " (Python re syntax, which reads nginx's usual PCRE patterns alike)") from None
    return value


def glob(value: Any) -> str:
    expect(isinstance(value, str) and value != "", value, 'a path glob like "*.{css,js,png}"')
    if value[0] not in "/*":
        raise ValueError(f"{show(value)} starts with neither / nor *, so no path matches it;"
                         f" write {show('*' + value if value.startswith('.') else '/' + value)}")
    try:
        glob_regex(value)
    except ValueError as e:
        raise ValueError(f"{show(value)} is not a valid glob: {e}") from None
    return value


def priority(value: Any) -> str:
    if value != "prefix":
        raise ValueError(f'{show(value)} is not "prefix" (priority = "prefix" makes a path route win'
                         " over regex and match routes, as nginx's ^~; leave it out otherwise)")
    return value


def draft_problems(table: Values, route: Values) -> list[tuple[str, str]]:
    """(key, message) for each matcher problem of a route table; labels `route` (its
    "path") when it matches otherwise than by prefix.  `route` holds the parsed values;
    a key that failed to parse is left out of the label (already reported)."""
    kinds = [key for key in KINDS if key in table]
    if not kinds:
        return [("", 'no path (add path = "/prefix/" to the route, or exact = "/page",'
                     ' regex = "\\\\.png$" or match = "*.png")')]
    if len(kinds) > 1:
        route.pop("path", None)
        return [(kinds[1], f"a route matches by one of path, exact, regex and match,"
                           f" and this one has {kinds[0]} too; split it into two routes")]
    kind = kinds[0]
    found = []
    for key, needs, what in (("regex_case", "regex", "regex routes (false: nginx ~*)"),
                             ("priority", "path", 'prefix routes (path = "/...", nginx ^~)')):
        if key in table and kind != needs:
            found.append((key, f"is for {what}; this route has {kind}"))
    # strip_prefix = false is allowed anywhere: it opts a matcher route out of a
    # site's strip_prefix = true (see `strip_problem`)
    if table.get("strip_prefix") is True and kind != "path":
        found.append(("strip_prefix", f'is for prefix routes (path = "/..."); this route has {kind},'
                                      " whose requests go upstream with their path unchanged"))
    value = route.get(kind)
    if kind == "path" or not isinstance(value, str):
        return found
    if kind == "exact":
        route["path"] = f"= {value}"
    elif kind == "regex":
        route["path"] = f"{'~' if route.get('regex_case', True) is not False else '~*'} {value}"
    else:
        route["path"] = f"match {value}"
    return found


def strip_problem(site: Values, route: Values) -> str | None:
    """A site's `strip_prefix = true` meeting a matcher route that does not turn it off:
    refused rather than ignored (nginx refuses a URI part in proxy_pass within a regex
    location, as there is no prefix to replace)."""
    if site.get("strip_prefix") is not True or "strip_prefix" in route or matcher(route) is None:
        return None
    return (f"{show(route['path'])} is not a prefix route, and the site has"
            " strip_prefix = true, which needs a prefix to strip; write strip_prefix = false in"
            " this route (its path goes upstream unchanged), or move strip_prefix = true from the"
            " site to its path routes")


def matcher(route: Values) -> Matcher | None:
    """The route's Matcher (None: a prefix route), from its values read by the draft."""
    if isinstance(route.get("exact"), str):
        return Matcher("exact", route["exact"])
    if isinstance(route.get("regex"), str):
        return Matcher("regex", route["regex"], route.get("regex_case", True) is not False)
    if isinstance(route.get("match"), str):
        return Matcher("glob", route["match"])
    return None
