"""Meta-test: every hook in ipsec_core/hookspecs.py is documented and exercised by a test.

"Documented" means a docstring that says when the hook is called and what it must return or
call; "exercised" means some test module (here, or the example plugin's own tests) implements
or calls it by name.  A new hook without both fails here.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ipsec_core.crypto import hookspecs
from ipsec_core.crypto.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name, value in vars(hookspecs).items()
               if callable(value) and hasattr(value, f"{hookspecs.PROJECT_NAME}_spec"))
TEST_SOURCES = {path: path.read_text() for path in
                [*ROOT.glob("tests/**/*.py"), *ROOT.glob("examples/*/tests/**/*.py")]
                if path.name != Path(__file__).name}


def test_the_hooks_are_the_documented_set():
    assert HOOKS == ["ipsec_choose_backend", "ipsec_register_backends", "ipsec_register_transforms"]
    assert Registry.hook_names() == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_full_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 40, f"{hook}: the docstring should say when it runs and what it gets"
    params = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    for name in params:
        assert f"``{name}``" in doc or f"`{name}`" in doc or f"{name}(" in doc, \
            f"{hook}: the docstring does not describe its argument {name!r}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    users = sorted(str(p.relative_to(ROOT)) for p, text in TEST_SOURCES.items() if hook in text)
    assert users, f"no test implements or calls {hook}"
