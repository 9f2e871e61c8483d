"""Every name the sources use is defined: pyflakes over src/porch.

The compiled modules are also the pure-Python fallback (setup.py): a name that only a
.pxd `cimport` provides works compiled and is a NameError without a compiler, on a
path the compiled suite never sees.  proxy.py called policies/forwarding.py's
`trusted_part` that way (a request from a trusted proxy failed with 400 in pure
Python); this finds such a name before a user does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "porch"


def test_no_undefined_names():
    result = subprocess.run([sys.executable, "-m", "pyflakes", str(SRC)], capture_output=True, text=True)
    undefined = [line for line in result.stdout.splitlines() if "undefined name" in line]
    assert not undefined, "\n".join(undefined)
