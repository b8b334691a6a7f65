"""A spec is data: nothing in it may run code, at parse time, build time or import time.

Every attack tries to create a marker file; the tests check it never appears.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from rnngen import codegen
from rnngen.errors import SpecError
from rnngen.spec import parse

VALID = (Path(__file__).parent.parent / "spec" / "simple_rnn.yaml").read_text(encoding="utf-8")
EQUATION = "  h: activation(x @ kernel + h_prev @ recurrent_kernel + bias)\n"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A marker file name, relative to a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "an attack created the marker file"


def with_equation(expr: str) -> str:
    # a YAML double-quoted scalar holds any text; escape what YAML itself interprets
    quoted = expr.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return VALID.replace(EQUATION, f'  h: "{quoted}"\n')


ATTACKS = [
    "__import__('os').system('touch MARKER')",
    '__import__("os").system("touch MARKER")',
    "tanh(x @ kernel).__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('MARKER', 'w')",
    "open(MARKER)",
    "eval('open(1)')",
    "eval(x)",
    "exec(x)",
    "compile(x)",
    "getattr(x, y)",
    "globals()",
    "(lambda: __import__('os').system('touch MARKER'))()",
    "(lambda q: q)(x @ kernel)",
    "x.__class__",
    "tanh.__globals__",
    "x[0]",
    "x[::-1] @ kernel",
    "[c for c in ().__class__.__bases__]",
    "{k: 1 for k in x}",
    "(y := x)",
    "f'{x}'",
    "b'MARKER'",
    "tanh(x @ kernel) # '''; import os; os.system('touch MARKER')",
    'tanh(x @ kernel) # """; import os; os.system("touch MARKER")',
    'tanh(x @ kernel\n) # """\nimport os\nos.system(\'touch MARKER\')\n"""',
    "__builtins__",
    "__import__",
    "tanh(x @ kernel) if x else 0",
    "x @ __import__",
    "tanh(*x)",
    "tanh(x @ kernel, **x)",
    "tanh(x @ kernel)\\\n + 1",
    "9 ** 9 ** 9 ** 9",
    "x ** 99999999",
    "(" * 200 + "x" + ")" * 200,
    "x" + " + x" * 2000,
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_equation_attacks_are_rejected(attack, marker):
    with pytest.raises(SpecError) as info:
        parse(with_equation(attack), "attack.yaml")
    text = str(info.value)
    assert text.startswith("attack.yaml:"), text
    assert "step.h" in text, text


def test_rejections_name_the_problem():
    def message(expr):
        with pytest.raises(SpecError) as info:
            parse(with_equation(expr), "a.yaml")
        return str(info.value)

    assert "strings and escapes are not allowed" in message("__import__('os').system('x')")
    assert "attribute access is not allowed" in message("x.__class__")
    assert "lambda is not allowed" in message("(lambda q: q)(x @ kernel)")
    assert "subscripts are not allowed" in message("x[0]")
    assert "comprehensions are not allowed" in message("sum([c for c in x])")
    assert "unknown function 'eval'" in message("eval(x)")
    assert "dunder name" in message("__builtins__")
    assert "comments ('#') are not allowed" in message("tanh(x @ kernel) # hi")


def _build_and_import(text: str, tmp_path: Path, name: str = "simple_rnn"):
    spec = parse(text, "attack.yaml")
    files = codegen.render(spec, "attack.yaml")
    out = tmp_path / "gen"
    out.mkdir()
    for fname, body in files.items():
        (out / fname).write_text(body, encoding="utf-8")
    path = out / f"{spec.name}_numpy.py"
    mod_name = f"_attack_{name}_{os.getpid()}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(mod_name, None)
    return spec, module


DOC_ATTACKS = [
    'doc: "x\\"\\"\\"\\nimport os; os.system(\'touch MARKER\')\\n\\"\\"\\""',
    'doc: |\n  Cell.\n  """\n  import os; os.system(\'touch MARKER\')\n  """',
    'doc: "a backslash \\\\N{...} escape"',
    "doc: 'ends with a quote \"'",
    'doc: "a control character \\x0b here"',
    'doc: "a line separator \\u2028 here"',
    'doc: "\\"\\"\\"; import os; os.system(\'touch MARKER\'); \\"\\"\\""',
]


@pytest.mark.parametrize("doc", DOC_ATTACKS)
def test_doc_injection_is_rejected(doc, marker):
    text = VALID.replace(VALID[VALID.index("doc:") : VALID.index("options:")], doc + "\n")
    with pytest.raises(SpecError) as info:
        parse(text, "attack.yaml")
    assert "doc:" in str(info.value)


def test_harmless_doc_with_quotes_is_escaped_safely(marker, tmp_path):
    doc = (
        "doc: >-\n  He said \"hi\" and it's fine; import os; os.system('touch MARKER')\n"
        "  {{ spec.name }} {% raw %} '' \"\" end.\n"
    )
    text = VALID.replace(VALID[VALID.index("doc:") : VALID.index("options:")], doc)
    spec, module = _build_and_import(text, tmp_path, "doc")
    assert "os.system('touch MARKER')" in module.__doc__
    assert "{{ spec.name }}" in module.SimpleRNN.__doc__


@pytest.mark.parametrize(
    "old, new",
    [
        ("name: simple_rnn", "name: x; import os"),
        ("name: simple_rnn", 'name: "simple_rnn\\nimport os"'),
        ("class_name: SimpleRNN", 'class_name: "A: pass\\nimport os\\nclass B"'),
        ("class_name: SimpleRNN", "class_name: A;B"),
        ("  kernel: {shape", '  "k;import os": {shape'),
        ("states: [h]", 'states: ["h;import os"]'),
        ("argument: recurrent", "argument: \"r_initializer=__import__('os')\""),
        (
            "initializer: zeros",
            "initializer: \"zeros'); __import__('os').system('touch MARKER'); ('\"",
        ),
        ("initializer: zeros", 'initializer: {class_name: "zeros\\"\\"\\"", config: {}}'),
        (
            "initializer: zeros",
            "initializer: {class_name: zeros, config: {value: \"'); import os; ('\"}}",
        ),
        ("activation: tanh", 'activation: {default: tanh, values: ["tanh; import os"]}'),
        ("activation: tanh", 'activation: {default: tanh, doc: \'""" import os\'}'),
        ("dropout: {x: dropout", 'dropout: {"x; import os": dropout'),
        (
            "reference: keras.layers.SimpleRNN",
            'reference: "keras.layers.SimpleRNN``\\"\\"\\" import os"',
        ),
    ],
)
def test_names_cannot_inject(old, new, marker):
    assert old in VALID
    with pytest.raises(SpecError):
        parse(VALID.replace(old, new, 1), "attack.yaml")


def test_yaml_python_tags_are_rejected(marker):
    for tagged in (
        "doc: !!python/object/apply:os.system ['touch MARKER']",
        "doc: !!python/name:os.system",
        "doc: !!python/object/new:os.system [touch MARKER]",
        "doc: !!python/object:builtins.str {}",
        "doc: !!binary aGVsbG8=",
        "doc: !custom x",
    ):
        text = VALID.replace(VALID[VALID.index("doc:") : VALID.index("options:")], tagged + "\n")
        with pytest.raises(SpecError) as info:
            parse(text, "attack.yaml")
        message = str(info.value)
        assert "YAML tag" in message and "not allowed" in message, message
        assert message.startswith("attack.yaml:5:"), message
        assert "expected string" not in message, message  # one clear problem, not two


def test_source_name_cannot_inject(tmp_path, monkeypatch):
    """The spec's file name is printed in the module docstring."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    spec = parse(VALID, "spec.yaml")
    files = codegen.render(spec, 'evil"""\nimport os; os.system("touch MARKER")\n""".yaml')
    out = tmp_path / "gen_source"
    out.mkdir()
    path = out / "simple_rnn_numpy.py"
    path.write_text(files["simple_rnn_numpy.py"], encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location("_attack_source", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError:
        pass  # broken, but not executed
    finally:
        sys.modules.pop("_attack_source", None)
    assert not marker.exists(), "the file name injected code into the generated module"
