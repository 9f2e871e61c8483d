"""Build hook: compiles Porch's hot path with Cython when it can.

The request path (server/client.py, server/proxy.py, upstream/connection.py and the
small modules they call) is plain Python that Cython compiles to C: `.pxd` files
beside the three protocol modules declare their classes as extension types with
typed fields, which cuts the instructions per proxied request by a third to a
half (bench/hotpath.py, bench/RESULTS.md).  The same `.py` files run uncompiled
when Cython or a C compiler is missing, or with PORCH_PURE_PYTHON=1: slower, same
behaviour.  Everything else (config, CLI, TLS, ACME) stays interpreted.

Bindings to C libraries (src/porch/_compiled.py NATIVE: HTTP/2 on libnghttp2, TLS
records on libssl) are
`.pyx` files, built where the library's header is installed and left out where it
is not; a pure-Python path (there: the `h2` library) serves instead.
"""

from __future__ import annotations

import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def compiled_modules() -> list[str]:
    """The list in src/porch/_compiled.py (run from its file: porch is not installed
    yet, and the file imports only the standard library).  A module there must keep
    working uncompiled."""
    return list(runpy.run_path(os.path.join(HERE, "src", "porch", "_compiled.py"))["MODULES"])


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python modules in charge, with a warning."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            print(f"porch: not compiling the hot path ({exc}); running it as pure Python",
                  file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"porch: not compiling {ext.name} ({exc}); it runs as pure Python", file=sys.stderr)


def native_modules() -> list:
    """Extensions binding a C library (src/porch/_compiled.py NATIVE), for those whose
    header is installed: libnghttp2's (Debian libnghttp2-dev) gives HTTP/2 on nghttp2
    (server/ngh2.pyx); without it the pure-Python h2 engine serves."""
    from setuptools import Extension

    found = runpy.run_path(os.path.join(HERE, "src", "porch", "_compiled.py"))
    out = []
    wanted = found["native_wanted"]()
    for rel, (header, library) in found["NATIVE"].items():
        if rel not in wanted:
            print(f"porch: not building {rel} ({header} not found); the pure-Python path "
                  f"serves instead", file=sys.stderr)
            continue
        name = rel[: -len(".pyx")].replace("/", ".")
        libraries = list(library) if isinstance(library, tuple) else [library]
        out.append(Extension(name, [os.path.join("src", rel)], libraries=libraries))
    return out


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("porch: Cython is not installed; the hot path runs as pure Python", file=sys.stderr)
        return []
    # PORCH_PURE_PYTHON=1 leaves the hot path's .py uncompiled; the library bindings,
    # which have no .py to fall back to, are built still.
    pure = os.environ.get("PORCH_PURE_PYTHON") == "1"
    return cythonize(
        ([] if pure else [os.path.join("src", m) for m in compiled_modules()]) + native_modules(),
        compiler_directives={
            "language_level": 3,
            # Annotations document; the .pxd files are what Cython types by.
            "annotation_typing": False,
        },
        quiet=True,
        include_path=[os.path.join(HERE, "src")],
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
