"""A plugin that cannot be imported (its dependency is missing)."""
import ipsec_test_no_such_dependency  # noqa: F401
