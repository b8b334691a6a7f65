"""Spec errors: every problem names where it is (file:line:col, field) and what would be valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One mistake in a spec. ``line``/``col`` are 1-based; 0 means unknown."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.col:
                where += f":{self.col}"
        text = f"{where}: {self.field}: " if self.field else f"{where}: "
        text += self.message
        return _one_line(text)


def _one_line(text: str) -> str:
    """Problems print one per line: escape line breaks and other control characters."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


class SpecError(Exception):
    """One or more problems in a spec; ``str()`` gives one line per problem."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.col, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else ''."""
    match = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_of(choices: Iterable[str]) -> str:
    names = sorted(map(str, choices))
    return ", ".join(f"'{n}'" for n in names) if names else "(none)"


class InternalError(Exception):
    """A bug in rnngen (not in the spec), caught at a named stage of the pipeline.

    ``str()`` is one line: ``internal error while <stage> <file>: <Type>: <message>``.
    """

    def __init__(self, stage: str, file: str, error: BaseException):
        self.stage, self.file, self.error = stage, file, error
        detail = _one_line(str(error)) or "(no message)"
        where = f"{stage} {file}" if file else stage
        super().__init__(f"internal error while {where}: {type(error).__name__}: {detail}")


@contextmanager
def stage(what: str, file: str = "") -> Iterator[None]:
    """Re-raise anything but a spec error as an :class:`InternalError` naming the stage."""
    try:
        yield
    except (SpecError, InternalError):
        raise
    except Exception as err:
        raise InternalError(what, file, err) from err


def fail(ctx, err: Exception) -> None:
    """A user error on the command line: its message (the traceback with ``--debug``), exit 2.

    ``ctx`` is the click context of the command."""
    import traceback

    import click

    if ctx.obj.get("debug"):
        traceback.print_exception(err)
    click.echo(str(err), err=True)
    ctx.exit(2)
