"""`porch convert FILE` for an Apache file: the porch.toml it means, each key commented
with the Apache line it came from (the nginx converter's printer)."""

from __future__ import annotations

from porch.config.apache import read
from porch.config.nginx.convert import render


def convert(path: str) -> tuple[str, list[str]]:
    """(porch.toml text, problems); the text is empty when there are problems."""
    return render(path, read(path), "Apache")
