"""The one error a config front-end raises: every problem found, one line each."""

from __future__ import annotations

from collections.abc import Mapping

# Where a front-end read each value: key path ("site[0].route[1].proxy") -> its place,
# "porch.toml:12" or "nginx.conf:40: proxy_pass" (Caddy's Warning{File, Line, Directive}).
Origins = Mapping[str, str]


def locate(origins: Origins, where: str) -> str | None:
    """The origin of key path `where`, else of its nearest parent that has one
    ("site[0].upstream_tls.ca" written inline falls back to "site[0].upstream_tls")."""
    while where:
        found = origins.get(where)
        if found is not None:
            return found
        cut = max(where.rfind("."), where.rfind("["))
        if cut <= 0:
            return None
        where = where[:cut]
    return None


class ConfigError(Exception):
    """A config that cannot be used.

    `problems` holds one line per problem, each naming where it is, what is wrong and
    how to fix it:

        site[2].route[0].proxy: "htp://x" is not an http:// or https:// URL (write it as http://host:port)

    `origins` holds, for each problem, where the front-end read its value
    ("porch.toml:12"), or None; `located()` gives the lines with it in front, as a
    compiler does: `porch.toml:12: site[2].route[0].proxy: ...`.  A syntax error is
    a single problem prefixed with the file name instead of a key path.  `str(err)` is
    the problems joined with newlines, ready to print.
    """

    def __init__(self, problems: list[str], origins: list[str | None] | None = None) -> None:
        self.problems = list(problems)
        self.origins = list(origins) if origins is not None else [None] * len(self.problems)
        # The lists (not the joined text) are the only args so that the error pickles
        # back into the same problems when it crosses a process boundary.
        super().__init__(self.problems, self.origins)

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def located(self) -> list[str]:
        """Each problem with its origin in front, when there is one."""
        return [f"{origin}: {line}" if origin else line for line, origin in zip(self.problems, self.origins)]


def invalid_config_message(path: str, err: ConfigError, *, located: bool = True) -> str:
    """What `porch check`, `porch run` and `porch reload` print for a bad file: each
    problem with its file and line when known.  `located=False`: key paths only (the
    supervisor's one-line reload message, which names the file already)."""
    lines = err.located() if located else err.problems
    return f"porch: {path}: configuration is not valid:\n" + "\n".join(lines)
