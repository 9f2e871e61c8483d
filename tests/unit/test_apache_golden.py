"""Golden tests of the Apache front-end: tests/golden/apache/NAME.conf in, NAME.out
beside it (Caddy's adapter tests): what `porch convert` prints, then what `porch
check` says (valid with its warnings, or the problems naming Apache lines).

PORCH_GOLDEN_UPDATE=1 rewrites the .out files; review the diff before committing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from porch.config import load
from porch.config.errors import ConfigError
from porch.config.apache.convert import convert

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "apache"
CASES = sorted(p.stem for p in GOLDEN.glob("*.conf"))


def render(name: str) -> str:
    path = f"{name}.conf"
    text, problems = convert(path)
    out = ["== porch convert", text.rstrip() if text else "cannot convert:", *problems, "== porch check"]
    try:
        config = load.load(path)
    except ConfigError as err:
        out += ["not valid:", *err.problems]
    else:
        out += [f"valid, {len(config.warnings)} warning(s)"]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)
    got = render(name)
    expected = GOLDEN / f"{name}.out"
    if os.environ.get("PORCH_GOLDEN_UPDATE"):
        expected.write_text(got)
    assert got == expected.read_text()


def test_cases_exist() -> None:
    assert len(CASES) >= 10
