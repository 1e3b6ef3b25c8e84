"""Build the optional C extension; a failed compile falls back to pure Python.

shardws works without its C speedups (shardws/_speedups.c): if the compiler
is missing or the build fails, the install goes on and shardws warns once at
import that it runs on the pure-Python path.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that reports, instead of raising, a failed compile."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure falls back
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        sys.stderr.write(
            "shardws: building the C speedups failed (%s); "
            "installing the pure-Python fallback\n" % exc
        )


ext_modules = []
if os.environ.get("SHARDWS_NO_BUILD_SPEEDUPS") != "1":
    ext_modules.append(
        Extension(
            "shardws._speedups",
            sources=["shardws/_speedups.c"],
            extra_compile_args=["-O3"] if sys.platform != "win32" else [],
            optional=True,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
