# The conformance kit as a pytest plugin: the marker `ipsec_backend` and the `ipsec_check`
# parameters (see ipsec_core.testing).  Declared here, in the top-level conftest.py of this
# test suite, as pytest wants for `pytest_plugins`.
pytest_plugins = ["ipsec_core.testing"]
