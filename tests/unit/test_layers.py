"""The import layers of STYLE.md, as import-linter contracts (pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_compiled_declarations_keep_the_layers_too():
    """import-linter reads Python imports; a .pxd's `cimport` ties the compiled types as
    well (issue 12 item 6: the access log reads a LogRecord, not the Exchange)."""
    for pxd in (ROOT / "src" / "porch" / "observability").glob("*.pxd"):
        text = pxd.read_text()
        assert "porch.server" not in text and "porch.upstream" not in text, pxd.name
