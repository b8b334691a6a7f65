"""Test tiers (README, "Tests"): ``tf`` marks the tests that need TensorFlow/Keras, ``slow`` the
long ones; ``python -m pytest -m "not tf and not slow"`` is the fast tier.

* A file that needs TensorFlow throughout says so: ``pytestmark = pytest.mark.tf``.
* In the other files a test is marked ``tf`` here when its body, a fixture it takes or a helper
  of its module (transitively) imports TensorFlow or Keras, imports a generated ``*_tf`` module,
  or calls the verifier's TensorFlow references (``verify_spec``, ``run_keras_layer``,
  ``run_equations``).
* When ``-m`` deselects ``tf``, the files marked ``tf`` are not even imported, and the session
  fails if TensorFlow got imported anyway, naming the test after which it first appeared.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys

import pytest
from _pytest.mark.expression import Expression

_TF_FILE = re.compile(r"^pytestmark\s*=.*\bpytest\.mark\.tf\b", re.M)
_TF_TEXT = re.compile(r"^(tensorflow|keras)(\.|$)|_tf$")  # a module name in a string
_TF_NAMES = {
    "tensorflow",
    "keras",
    "verify_spec",
    "run_keras_layer",
    "run_equations",
    "assert_autodiff_passes",  # tests/helpers.py: verify_spec on both backends
}


def _selected(config, marks: set[str]) -> bool:
    """Whether ``-m`` selects a test carrying exactly ``marks``."""
    expr = config.option.markexpr
    return not expr or Expression.compile(expr).evaluate(lambda name, **_: name in marks)


def _tf_deselected(config) -> bool:
    combos = ((), ("slow",), ("stress",), ("slow", "stress"))
    return not any(_selected(config, {"tf", *more}) for more in combos)


def pytest_ignore_collect(collection_path, config):
    if (
        collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and _tf_deselected(config)
        and _TF_FILE.search(collection_path.read_text(encoding="utf-8"))
    ):
        return True
    return None


# -- which tests of a mixed file need TensorFlow ------------------------------------------------


def _body(node) -> list:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body


def _uses(nodes) -> tuple[bool, set[str]]:
    """(whether ``nodes`` touch TensorFlow directly, the plain names they read)."""
    direct, names = False, set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            direct |= any(_TF_TEXT.search(m) for m in mods)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            direct |= bool(_TF_TEXT.search(node.value))
        elif isinstance(node, ast.Attribute):
            direct |= node.attr in _TF_NAMES
        elif isinstance(node, ast.Name):
            direct |= node.id in _TF_NAMES
            names.add(node.id)
    return direct, names


@functools.cache
def _tf_functions(module) -> frozenset[str]:
    """Qualified names of the module's functions (and methods) that need TensorFlow;
    ``"*"`` when the module's own top-level code does."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return frozenset()
    uses, top = {}, []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            uses[node.name] = _uses(_body(node))
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    uses[f"{node.name}.{sub.name}"] = _uses(_body(sub))
        else:
            top.append(node)
    if _uses(top)[0]:
        return frozenset({"*"})
    need = {name for name, (direct, _) in uses.items() if direct}
    changed = True
    while changed:  # helpers that call helpers that need TensorFlow
        changed = False
        for name, (_, reads) in uses.items():
            if name not in need and reads & need:
                need.add(name)
                changed = True
    return frozenset(need)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("tf") or not isinstance(item, pytest.Function):
            continue
        need = _tf_functions(item.module)
        if "*" in need or item.function.__qualname__ in need or need & set(item.fixturenames):
            item.add_marker(pytest.mark.tf)
    if "stress" not in (config.option.markexpr or ""):
        # a -m of the command line replaces addopts' "not stress": stress runs only by name
        stress = [item for item in items if item.get_closest_marker("stress")]
        if stress:
            config.hook.pytest_deselected(items=stress)
            items[:] = [item for item in items if not item.get_closest_marker("stress")]


# -- the fast tier imports no TensorFlow --------------------------------------------------------

_first_seen: list[str] = []


def pytest_collection_finish(session):
    if "tensorflow" in sys.modules:
        _first_seen.append("collection")


def pytest_runtest_logreport(report):
    if report.when == "teardown" and not _first_seen and "tensorflow" in sys.modules:
        _first_seen.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _tf_deselected(session.config) and "tensorflow" in sys.modules:
        where = _first_seen[0] if _first_seen else "the session"
        message = (
            f"tensorflow was imported although -m deselects tf (first seen after {where}); "
            "mark that test or its file tf"
        )
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", message, red=True, bold=True)
        else:
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
