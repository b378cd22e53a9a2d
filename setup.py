"""Build the optional C speed-ups; dedupkit works (more slowly) without them.

All metadata lives in pyproject.toml. If no C compiler is available the extension is skipped
and dedupkit uses its numpy fallback.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # pragma: no cover - depends on the machine
            print(f"dedupkit: skipping C speed-ups ({exc}); using the numpy fallback")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # pragma: no cover
            print(f"dedupkit: skipping {ext.name} ({exc}); using the numpy fallback")


setup(
    ext_modules=[Extension("dedupkit._speedups", ["src/dedupkit/_speedups.c"], optional=True,
                           depends=["src/dedupkit/_vendor/xxhash/xxhash.h"],  # xxHash 0.8.2, BSD-2-Clause
                           extra_compile_args=["-O3"]),
                 Extension("dedupkit._substring", ["src/dedupkit/_substring.c"], optional=True,
                           depends=["src/dedupkit/_vendor/xxhash/xxhash.h"], extra_compile_args=["-O3"]),
                 Extension("dedupkit._decon", ["src/dedupkit/_decon.c"], optional=True,
                           depends=["src/dedupkit/_vendor/xxhash/xxhash.h"], extra_compile_args=["-O3"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
