"""From spec files to generated files in memory: shared by ``rnngen build`` and ``rnngen verify``.

(Kept out of :mod:`rnngen.cli` so the verifier can build specs without importing the command
line, which imports the verifier.)
"""

from __future__ import annotations

from pathlib import Path

from . import codegen, spec
from .errors import Problem, SpecError, stage


def resolve_specs(names: tuple[str, ...]) -> list[Path]:
    """Shipped spec names or paths -> spec files (all shipped specs when empty)."""
    if not names:
        return sorted(codegen.spec_dir().glob("*.yaml"))
    out = []
    shipped = {p.stem: p for p in codegen.spec_dir().glob("*.yaml")}
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.is_file():
                raise SpecError([Problem(str(path), 0, 0, "", "no such spec file")])
            out.append(path)
        elif name in shipped:
            out.append(shipped[name])
        else:
            from .errors import one_of, suggest

            raise SpecError(
                [
                    Problem(
                        name,
                        0,
                        0,
                        "",
                        f"unknown spec{suggest(name, shipped)}; shipped specs: "
                        f"{one_of(shipped)}, or give a path to a .yaml file",
                    )
                ]
            )
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _source(path: Path) -> str:
    """How a generated header names its spec: stable across machines (codegen escapes it)."""
    path = path.resolve()
    shipped = codegen.spec_dir().resolve()
    return f"spec/{path.name}" if path.parent == shipped else path.name


def parse_specs(paths: list[Path]) -> list[spec.CellSpec]:
    """Parse every spec, collecting every problem of every file into one :class:`SpecError`."""
    problems: list[Problem] = []
    parsed = []
    for path in paths:
        try:
            with stage("parsing", _display(path)):
                parsed.append(spec.parse(spec._read(path), _display(path)))
        except SpecError as err:
            problems += err.problems
    if problems:
        raise SpecError(problems)
    return parsed


def build_files(paths: list[Path]) -> dict[str, str]:
    """Parse every spec (collecting all problems), then render every file in memory."""
    specs = list(zip(parse_specs(paths), map(_source, paths), strict=True))
    names = [s.name for s, _ in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SpecError(
            [
                Problem(src, 0, 0, "name", f"two specs are named '{s.name}'")
                for s, src in specs
                if s.name in dupes
            ]
        )
    files: dict[str, str] = {}
    for parsed, source in specs:
        with stage("generating code from", source):
            files.update(codegen.render(parsed, source))
    return files
