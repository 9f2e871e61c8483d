"""Suite-wide set-up: test what ships, the compiled hot path, current with its sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _build_stale() -> None:
    # Read the module list without importing porch (its import refuses stale builds).
    sys.path.insert(0, str(REPO / "src" / "porch"))
    try:
        import _compiled  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    compiled, stale = _compiled.status()
    if os.environ.get("PORCH_PURE_PYTHON") == "1":
        if compiled:
            raise SystemExit("PORCH_PURE_PYTHON=1 but compiled modules are present: "
                             "delete src/porch/**/*.so to test pure Python")
        return
    if _compiled.needs_build():
        try:
            import Cython  # noqa: F401
        except ImportError:
            raise SystemExit("the suite tests the compiled hot path, which needs Cython: run "
                             "`.venv/bin/pip install -e '.[test]'` (or set PORCH_PURE_PYTHON=1 "
                             "to test pure Python)") from None
        # Incremental: Cython regenerates only changed modules, the compiler only their C.
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)
        compiled, stale = _compiled.status()
        if stale:
            raise SystemExit(f"compiled modules still stale after a rebuild: {stale}")


_build_stale()
