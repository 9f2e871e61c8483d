"""The one error a config front-end raises: every problem found, one line each."""

from __future__ import annotations


class ConfigError(Exception):
    """A config that cannot be used.

    `problems` holds one line per problem, each naming where it is, what is wrong and
    how to fix it:

        site[2].route[0].proxy: "htp://x" is not an http:// or https:// URL (write it as http://host:port)

    A syntax error is a single problem prefixed with the file name instead of a key
    path.  `str(err)` is the problems joined with newlines, ready to print.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        # The list (not the joined text) is the only arg so that the error pickles
        # back into the same problems when it crosses a process boundary.
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def invalid_config_message(path: str, err: ConfigError) -> str:
    """What `porch check`, `porch run` and `porch reload` print for a bad file."""
    return f"porch: {path}: configuration is not valid:\n{err}"
