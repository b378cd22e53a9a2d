"""Build the optional C kernels; dedupkit works (more slowly) without them.

All metadata lives in pyproject.toml. When an extension cannot be built (no C compiler, say), the
install goes on with the Python fallbacks, but not silently: a banner on stderr names what failed
(``pip install -v`` shows it), every dedupkit run then logs a warning, ``dedupkit --version`` says
``kernels: python`` or ``mixed``, and each summary.json records the kernels (see
src/dedupkit/kernels.py). ``DEDUPKIT_REQUIRE_C=1 pip install .`` makes a failed build an error.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _skipped(what: str, exc: Exception) -> None:
    if os.environ.get("DEDUPKIT_REQUIRE_C"):
        raise exc
    bar = "!" * 78
    sys.stderr.write(f"\n{bar}\ndedupkit: WARNING: could not build {what} ({exc}).\n"
                     "dedupkit will use its Python fallbacks: the same results, several times slower.\n"
                     "Install a C compiler and Python headers, then reinstall; set DEDUPKIT_REQUIRE_C=1\n"
                     f"to make this an error.\n{bar}\n\n")


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # pragma: no cover - depends on the machine
            _skipped("the C kernels", exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # pragma: no cover
            _skipped(ext.name, exc)


_XXH = ["src/dedupkit/_vendor/xxhash/xxhash.h"]  # xxHash 0.8.2, BSD-2-Clause

setup(
    ext_modules=[Extension("dedupkit._speedups", ["src/dedupkit/_speedups.c"], depends=_XXH,
                           extra_compile_args=["-O3"]),
                 Extension("dedupkit._substring", ["src/dedupkit/_substring.c"], depends=_XXH,
                           extra_compile_args=["-O3"]),
                 Extension("dedupkit._decon", ["src/dedupkit/_decon.c"], depends=_XXH,
                           extra_compile_args=["-O3"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
