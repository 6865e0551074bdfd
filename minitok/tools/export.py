"""`minitok export`: the exercises you passed, as a small package of your own.

    minitok export workspace/ --out mytok/

Every notebook NN_*.ipynb of the folder is graded with the grader's checks (as `minitok
progress` does); each exercise that passes goes, as you wrote it, into mytok/lessonNN.py
with the helpers, constants and imports it needs:

    mytok/__init__.py     imports every lesson module; YOURS lists your exercises by lesson
    mytok/lesson04.py     your attention, Block, Transformer ... (the def/class blocks)
    mytok/lesson05.py     your ar_generate ...: `from .lesson05 import ...`-style imports
                          replace minitok's where the name is yours from an earlier lesson
    mytok/README.md       what is yours and what still falls back to minitok

An exercise that did not pass is left out; where one of yours calls it, minitok's reference
is imported in its place (as during a check) and the module says so. The folder is written
whole into a fresh temporary folder and renamed into place: an existing `--out` is never
overwritten (with `--force` it is moved aside to `<out>.old-N`, never deleted), and a
symlink is never written through.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import shutil
import symtable
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from minitok.checks import exercises_in
from minitok.notebook_code import DEFS, Statement, bound_names, read

SOLUTION_MARKERS = {"### BEGIN SOLUTION", "### END SOLUTION"}  # nbgrader's, in solutions/


@dataclass
class Lesson:
    """One notebook's verdicts: which exercises are yours, which are minitok's."""

    number: str  # "05"
    notebook: Path
    passed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not passed (or not gradable)

    @property
    def module(self) -> str:
        return f"lesson{self.number}"


def has_checks(path: Path) -> bool:
    """True for a lesson notebook with exercises (minitok.checks.lessonNN exists)."""
    return importlib.util.find_spec(f"minitok.checks.lesson{path.name[:2]}") is not None


def graded_lessons(folder: Path, sandbox: str = "auto",
                   numbers: tuple[str, ...] | None = None) -> list[Lesson]:
    """Judge every lesson notebook NN_*.ipynb in `folder` (or those numbered `numbers`) as
    `minitok progress` does: read only where that decides every exercise (all still stubs),
    else graded by the grader's checks and workers."""
    from minitok.tools.grade import grade_reports
    from minitok.tools.workspace import _read_only

    lessons = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        if not has_checks(path) or (numbers is not None and path.name[:2] not in numbers):
            continue
        report = _read_only(path)
        if report is None:
            (report,), _ = grade_reports([path], timeout=60.0, sandbox=sandbox)
        if report.error:
            print(f"minitok export: {path.name}: cannot grade: {report.error}")
            continue
        lesson = Lesson(path.name[:2], path)
        if not {item["exercise"] for item in report.exercises} <= set(references(lesson.module)):
            print(f"minitok export: {path.name} holds another lesson's exercises: skipped")
            continue
        for item in report.exercises:
            (lesson.passed if item["status"] == "passed" else lesson.missing).append(
                item["exercise"])
        lessons.append(lesson)
    return lessons


# --------------------------------------------------------------------------- one module


def used_names(statement: Statement) -> set[str]:
    """The global names a statement reads: its decorators, defaults and bases, and inside
    its functions the names that are neither arguments nor assigned there (symtable's
    reading, as Python's compiler resolves them)."""
    try:
        top = symtable.symtable(statement.text, "<cell>", "exec")
    except (SyntaxError, ValueError, RecursionError):  # bare names: too many, never too few
        return {n.id for n in ast.walk(statement.node) if isinstance(n, ast.Name)}
    names, tables = set(), [top]
    while tables:
        table = tables.pop()
        tables += table.get_children()
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table.get_type() == "module" or symbol.is_global()):
                names.add(symbol.get_name())
    return names


def references(lesson: str) -> dict[str, tuple[str, str]]:
    """Each exercise of a lesson -> (module, name) of minitok's reference for it."""
    checks = exercises_in(importlib.import_module(f"minitok.checks.{lesson}"))
    return {name: (check.reference.__module__, check.reference.__name__)
            for name, check in checks.items()}


def module_source(lesson: Lesson, earlier: dict[str, str]) -> str:
    """lessonNN.py: the passed exercises' def/class blocks, what they need, in notebook
    order. `earlier` maps a name already exported to its module ("lesson04")."""
    classified = read(lesson.notebook).classified()  # what the grader's workers run
    statements = [s for s, kind, _ in classified if kind != "skip"]
    blocks = {}  # name -> the def/class or cheap assignment binding it last
    for s, kind, _ in classified:
        for name in bound_names(s.node):
            if kind in ("def", "assign"):
                blocks[name] = s
            else:  # an import, or a statement the grader does not run: not a block
                blocks.pop(name, None)
    reference = references(lesson.module)
    kept, fallbacks, todo = [], set(), list(lesson.passed)
    while todo:
        name = todo.pop()
        if name in lesson.missing:
            fallbacks.add(name)
            continue
        block = blocks.get(name)
        if block is None or block in kept:
            continue
        kept.append(block)
        todo += sorted(used_names(block) - bound_names(block.node))
    kept.sort(key=statements.index)
    defined = set().union(*(bound_names(s.node) for s in kept))
    needed = set().union(*(used_names(s) for s in kept)) - fallbacks - defined
    lines = [_docstring(lesson, fallbacks, reference), "", *_imports(statements, needed,
                                                                   earlier, reference)]
    lines += [f"from {reference[n][0]} import {reference[n][1]} as {n}  "
              f"# yours has not passed its check yet: minitok's stands in"
              if reference[n][1] != n else
              f"from {reference[n][0]} import {n}  # yours has not passed its check yet"
              for n in sorted(fallbacks)]
    for block in kept:
        text = "\n".join(line for line in block.text.rstrip().split("\n")
                         if line.strip() not in SOLUTION_MARKERS)
        lines += ["", "", text] if isinstance(block.node, DEFS) else [text]
    return "\n".join(lines).replace("\n\n\n\n", "\n\n\n") + "\n"


def _imports(statements: list[Statement], needed: set[str], earlier: dict[str, str],
             reference: dict) -> list[str]:
    """The notebook's import lines that bind a needed name, trimmed to those names; a name
    yours from an earlier lesson is imported from that lesson's module instead."""
    lines, bound, froms = [], set(), {}
    for s in statements:
        node = s.node
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for alias in node.names:
            name = alias.asname or alias.name.split(".")[0]
            if name not in needed or name in bound:
                continue
            bound.add(name)
            if isinstance(node, ast.Import):
                lines.append(f"import {alias.name}" + (f" as {alias.asname}" if alias.asname
                                                       else ""))
                continue
            module = "." * node.level + (node.module or "")
            if alias.name in earlier and _is_minitok(node.module, alias.name):
                module = f".{earlier[alias.name]}"  # yours, from an earlier lesson
            froms.setdefault(module, []).append(alias.name + (f" as {alias.asname}"
                                                              if alias.asname else ""))
    lines += [f"from {module} import {', '.join(names)}" for module, names in froms.items()]
    return sorted(lines, key=lambda line: (line.startswith("from ."), line.startswith("from"),
                                           line))


def _is_minitok(module: str | None, name: str) -> bool:
    return bool(module) and module.split(".")[0] == "minitok" and not module.startswith(
        "minitok.checks")


def _docstring(lesson: Lesson, fallbacks: set[str], reference: dict) -> str:
    title = lesson.notebook.stem[3:].replace("_", " ")
    text = [f'"""Lesson {lesson.number} ({title}), your code: {", ".join(lesson.passed)}.',
            "",
            f"Written by you in {lesson.notebook.name}; each exercise here passed its check "
            "(minitok export)."]
    if lesson.missing:
        text += ["", "Not yours yet (minitok's stands in): " + ", ".join(
            f"{n} ({reference[n][0]}.{reference[n][1]})" for n in lesson.missing) + "."]
    return "\n".join(text) + '\n"""'


# --------------------------------------------------------------------------- the package


def package_files(lessons: list[Lesson], package: str) -> dict[str, str]:
    """Every file of the package, by name."""
    files, earlier = {}, {}
    for lesson in lessons:
        if lesson.passed:
            files[f"{lesson.module}.py"] = module_source(lesson, earlier)
            earlier.update(dict.fromkeys(lesson.passed, lesson.module))
    mine = [lesson for lesson in lessons if lesson.passed]
    yours = "".join(f"    {lesson.module!r}: {tuple(lesson.passed)!r},\n" for lesson in mine)
    files["__init__.py"] = (
        f'"""{package}: the minitok exercises you passed, one module per lesson (README.md)."""'
        "\n\n" + "".join(f"from . import {lesson.module}\n" for lesson in mine) +
        "\n# your exercises, by lesson module\nYOURS = {\n" + yours + "}\n")
    files["README.md"] = readme(lessons, package)
    return files


def readme(lessons: list[Lesson], package: str) -> str:
    rows = "".join(
        f"| {lesson.number} | {lesson.notebook.name} | {', '.join(lesson.passed) or '-'} | "
        f"{', '.join(lesson.missing) or '-'} |\n" for lesson in lessons)
    return (f"# {package}: your minitok\n\n"
            "Generated by `minitok export` from your notebooks: each exercise below passed the "
            "grader's check, and its code is yours, as you wrote it. `minitok demo --yours "
            f"{package}/` trains and runs the course's pipeline on it, side by side with "
            "minitok's shipped one.\n\n"
            "| lesson | notebook | yours | still minitok's |\n|---|---|---|---|\n" + rows)


def write_package(files: dict[str, str], out: Path, force: bool) -> Path | None:
    """Write `files` into the folder `out` (made fresh, renamed into place). Returns where
    the old folder went with --force, else None; FileExistsError when `out` exists."""
    out = Path(out)
    if out.is_symlink():
        raise FileExistsError(f"{out} is a symbolic link: minitok export never writes "
                              "through one; choose another --out")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: minitok export never overwrites it (choose "
                              "another --out, or --force to move it aside to "
                              f"{out.name}.old-N)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (fresh / name).write_text(text, encoding="utf-8")
        moved = None
        if out.exists():
            moved = next(out.with_name(f"{out.name}.old-{n}") for n in range(1, 10**6)
                         if not out.with_name(f"{out.name}.old-{n}").exists())
            out.rename(moved)
        fresh.rename(out)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return moved


def export(folder: Path, out: Path, force: bool = False, sandbox: str = "auto",
           numbers: tuple[str, ...] | None = None) -> int:
    """`minitok export`: grade, write the package, print what is yours; 1 if nothing is.
    `numbers` ("03", "04", ...) limits it to those lessons (the capstone notebook's)."""
    folder, out = Path(folder), Path(out)
    if out.is_symlink() or (out.exists() and not force):
        write_package({}, out, force)  # raises, saying why, before any grading
    lessons = graded_lessons(folder, sandbox, numbers)
    if not lessons:
        print(f"minitok export: no lesson notebooks in {folder}/ (run `make lab` first)")
        return 1
    total = sum(len(lesson.passed) + len(lesson.missing) for lesson in lessons)
    if not any(lesson.passed for lesson in lessons):
        print(f"minitok export: none of the {total} exercises in {folder}/ passes its check "
              "yet, so nothing is yours to export (`minitok progress` says what is left)")
        return 1
    package = out.resolve().name
    moved = write_package(package_files(lessons, package), out, force)
    if moved is not None:
        print(f"moved the old {out} aside to {moved}")
    for lesson in lessons:
        mine = f"{len(lesson.passed)}/{len(lesson.passed) + len(lesson.missing)}"
        print(f"{lesson.module}: {mine} yours" +
              (f"; minitok's: {', '.join(lesson.missing)}" if lesson.missing else ""))
    print(f"wrote {out}/ ({sum(len(x.passed) for x in lessons)}/{total} exercises yours; "
          f"see {out}/README.md)")
    return 0
