"""Golden tests of the nginx and Apache front-ends: tests/golden/{nginx,apache}/NAME.conf
in, NAME.out beside it (Caddy's adapter tests): what `porch convert` prints, then what
`porch check` says (valid with its warnings, or the problems naming the file's lines).

PORCH_UPDATE_GOLDEN=1 rewrites the .out files, as for the porch.toml cases
(tests/golden/README.md); review the diff before committing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from porch.config import load
from porch.config.apache.convert import convert as apache_convert
from porch.config.errors import ConfigError
from porch.config.nginx.convert import convert as nginx_convert

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CONVERT = {"nginx": nginx_convert, "apache": apache_convert}
CASES = [(kind, p.stem) for kind in CONVERT for p in sorted((GOLDEN / kind).glob("*.conf"))]


def render(kind: str, name: str) -> str:
    path = f"{name}.conf"
    text, problems = CONVERT[kind](path)
    out = ["== porch convert", text.rstrip() if text else "cannot convert:", *problems, "== porch check"]
    try:
        config = load.load(path)
    except ConfigError as err:
        out += ["not valid:", *err.problems]
    else:
        out += [f"valid, {len(config.warnings)} warning(s)"]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_golden(kind: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN / kind)
    got = render(kind, name)
    expected = GOLDEN / kind / f"{name}.out"
    if os.environ.get("PORCH_UPDATE_GOLDEN") == "1":
        expected.write_text(got)
    assert got == expected.read_text(), f"{kind}/{name}.out differs (PORCH_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("kind", CONVERT)
def test_cases_exist(kind: str) -> None:
    assert sum(1 for k, _ in CASES if k == kind) >= 10
