"""Build step for the optional C extension of the `ipsecmb` backend; everything else about the
package is in pyproject.toml.

The extension needs a C compiler, Python's headers and intel-ipsec-mb's headers and library
(Debian: gcc python3-dev libipsec-mb-dev; tests/setup-system.sh installs them as root).  When
any is missing the build prints why and goes on without it: the package installs and works, and
`ipsec backends` lists ipsecmb as unavailable with the reason.  IPSEC_BUILD_IPSECMB=0 skips it.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

IPSECMB = Extension(
    "ipsec_plugins.ipsecmb._ipsecmb",
    sources=["plugins/ipsecmb/_ipsecmb.c"],
    libraries=["IPSec_MB"],
    extra_compile_args=["-O2", "-Wall"],
)


class OptionalBuildExt(build_ext):
    """build_ext that skips an extension it cannot build instead of failing the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:               # no compiler at all, and the like
            self._skipped(None, exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:               # CompileError, LinkError, missing headers
            self._skipped(ext, exc)

    @staticmethod
    def _skipped(ext, exc):
        name = ext.name if ext is not None else "the C extensions"
        print(f"ipsec-suite: not building {name} ({exc.__class__.__name__}: {exc}); the "
              "ipsecmb backend will be unavailable. It needs a C compiler, Python's headers and "
              "libipsec-mb-dev.", file=sys.stderr)


build = os.environ.get("IPSEC_BUILD_IPSECMB", "1").strip().lower() not in ("0", "no", "false", "off")
setup(ext_modules=[IPSECMB] if build else [], cmdclass={"build_ext": OptionalBuildExt})
