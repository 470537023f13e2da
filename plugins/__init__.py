"""Built-in plugins of ipsec-suite, installed as the package `ipsec_plugins`.

Each sub-package is a plugin like any third-party one: it implements `ipsec_register_backends`
and is listed in the `ipsec` entry-point group of this distribution.  One distribution keeps the
two set-up commands simple; a plugin that needs heavy optional dependencies (gpu: CuPy) imports
them lazily and reports itself unavailable when they are missing.
"""
