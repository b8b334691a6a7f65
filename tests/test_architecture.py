"""The shape of the code base: no import cycles inside rnngen (function-level imports count),
modules of about 600 lines at most, templates of about 300, and no statement logic (IR
classes, ``isinstance``) in templates."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rnngen"
MODULE_LINES, TEMPLATE_LINES = 640, 300  # about 600, about 300


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """rnngen modules ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("rnngen"):
                continue
            for alias in node.names:  # ``from . import codegen`` imports a module
                sub = f"{target}.{alias.name}"
                out.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rnngen")}
    return out - {name}


def _runtime_nodes(tree):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path):
            # importing rnngen.a.b runs rnngen.a's __init__ too
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(modules)
        graph[name] = deps - {name}
    return graph


def _cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_in_rnngen():
    graph = _graph()
    assert "rnngen.printers.numpy" in graph and graph["rnngen.codegen"], graph
    # packages import their own modules from __init__: a package and its parts are one node
    collapsed = {}
    for n, deps in graph.items():
        collapsed.setdefault(n, set()).update(d for d in deps if not n.startswith(d + "."))
    assert _cycle(collapsed) is None, " -> ".join(_cycle(collapsed))


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_modules_stay_short():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    }
    assert not long, long


def test_templates_are_skeletons():
    long, logic = {}, []
    for p in (ROOT / "templates").glob("*.j2"):
        text = p.read_text(encoding="utf-8")
        if len(text.splitlines()) > TEMPLATE_LINES:
            long[p.name] = len(text.splitlines())
        for word in ("StoreAdjoint", "OperandVJP", "GroupProduct", "isinstance(s,"):
            if word in text:
                logic.append(f"{p.name}: {word}")
    assert not long, long
    assert not logic, logic
