"""Judging a submitted notebook before running it: never executed here, never written.

    notebook = read(path)                 # the code cells (SubmissionError: not gradable at all)
    lesson, alias = lesson_of(notebook)   # "lesson01", and the name the checks are imported as
    decided = prejudge(notebook, checks, alias)   # verdicts found without running anything
    kept = notebook.kept()                # what a worker executes (minitok/notebook_code.py)

Reading a notebook's code is minitok.notebook_code's (shared with minitok.earlier); its names
are importable from here too.

`prejudge` scores an exercise "not done" without running it when it is still the stub
`minitok assign` wrote, and 0 when its name is not bound by a kept
statement of the notebook (an import, an assignment that does not run outside the notebook)
or when its definition refers to minitok's own solution of it: `quantize.nearest_code`, a
name imported from minitok bound to it, getattr with its name, `__import__`/importlib inside
the def, directly or through a helper the notebook defines.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path
from types import FunctionType, ModuleType

from minitok.checks._core import Result
from minitok.notebook_code import (  # noqa: F401  (the reader's names, as the grader's)
    DEFS,
    IMPORTS,
    KEEP_RULE,
    MAX_BYTES,
    Notebook,
    Statement,
    bound_names,
    is_check_line,
    parse_cells,
    read,
    split_cell,
    unkept_reason,
    without_magics,
)
from minitok.notebook_code import NotebookError as SubmissionError
from minitok.tools.grading import REFERENCE_HINT

LESSON = re.compile(r"lesson\d\d")
GRAD_MODES = {"no_grad", "inference_mode", "enable_grad"}
NOT_DONE = "not done yet (your code raises NotImplementedError)."  # as checks._core says
MODULES = {path.stem for path in Path(__file__).parents[2].glob("*.py")} - {"__main__"}


def lesson_of(notebook: Notebook) -> tuple[str, str]:
    """The lesson a notebook imports its checks for, and the name it imports them as."""
    for statement in notebook.statements:
        node = statement.node
        if isinstance(node, ast.ImportFrom) and node.module == "minitok.checks":
            for alias in node.names:
                if LESSON.fullmatch(alias.name):
                    return alias.name, alias.asname or alias.name
        if isinstance(node, ast.Import):
            for alias in node.names:
                if LESSON.fullmatch(alias.name.removeprefix("minitok.checks.")) and alias.asname:
                    return alias.name.rsplit(".", 1)[1], alias.asname
    raise SubmissionError("no `from minitok.checks import lessonNN as check` line: which lesson?")


# --------------------------------------------------------------------------- prejudging


def prejudge(notebook: Notebook, checks: dict, alias: str) -> dict[str, Result]:
    """Verdicts for the exercises that need no worker (see the module docstring)."""
    imports = _ImportMap([s.node for s in notebook.statements if isinstance(s.node, IMPORTS)])
    kinds = {id(s): (kind, why) for s, kind, why in notebook.classified()}
    defs = {name: s for s in notebook.statements if kinds.get(id(s), ("",))[0] in ("def", "assign")
            for name in bound_names(s.node)}
    decided = {}
    for name, check in checks.items():
        binding = _last_binding(notebook, name)
        if binding is None:
            decided[name] = Result(name, "not done", f"no function named {name} in the notebook.")
        elif binding.node is None:
            decided[name] = Result(name, "error", f"{name} has a syntax error (cell "
                                   f"{binding.cell}, {binding.error})",
                                   "run its cell: Python points at the mistake.")
        elif is_stub(binding.node):
            decided[name] = Result(name, "not done", NOT_DONE)
        elif isinstance(binding.node, DEFS):
            use = _reference_use(binding, defs, imports, _forbidden(check))
            if use is not None:
                decided[name] = Result(name, "failed", f"{name} {use}.", REFERENCE_HINT)
        else:  # an import or an assignment
            found = _not_a_def(name, binding, kinds[id(binding)], imports, check)
            if found is None:  # a kept assignment (a lambda): judged like a def
                use = _reference_use(binding, defs, imports, _forbidden(check))
                found = use and Result(name, "failed", f"{name} {use}.", REFERENCE_HINT)
            if found:
                decided[name] = found
    return decided


def is_stub(node: ast.stmt | None) -> bool:
    """True for an exercise that can only raise NotImplementedError, as `minitok assign`
    wrote it: a def whose body runs straight (simple statements, no return, branch or loop)
    into `raise NotImplementedError()`, under no decorator but torch's grad modes; a class
    whose __init__ is one. It is "not done" with nothing run, as the notebook's check says."""
    if isinstance(node, ast.ClassDef):
        init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        return len(init) == 1 and is_stub(init[0])
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not all(
            _grad_mode(d) for d in node.decorator_list):
        return False
    raises = [i for i, s in enumerate(node.body) if _raises_not_implemented(s)]
    straight = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Pass)
    return bool(raises) and all(isinstance(s, straight) and not any(
        isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await, ast.Lambda, ast.NamedExpr))
        for n in ast.walk(s)) for s in node.body[:raises[0]])  # what follows never runs


def _raises_not_implemented(statement: ast.stmt) -> bool:
    """`raise NotImplementedError()`: nbgrader's stub."""
    exc = statement.exc if isinstance(statement, ast.Raise) else None
    return (isinstance(exc, ast.Call) and not exc.args and not exc.keywords
            and isinstance(exc.func, ast.Name) and exc.func.id == "NotImplementedError"
            and statement.cause is None)


def _grad_mode(decorator: ast.expr) -> bool:
    """`@torch.no_grad()` and the like: a decorator that changes no exception."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr in GRAD_MODES


def _last_binding(notebook: Notebook, name: str) -> Statement | None:
    found = None
    for statement in notebook.statements:
        if statement.node is None:
            if re.match(rf"\s*(async\s+)?(def|class)\s+{re.escape(name)}\b", statement.text):
                found = statement
        elif name in bound_names(statement.node) and not is_check_line(statement.node):
            found = statement
    return found


def _not_a_def(name: str, binding: Statement, kind: tuple[str, str], imports: _ImportMap,
               check) -> Result | None:
    """An exercise name bound by an import or an assignment: 0 when that is minitok's
    reference, an import, or an assignment that does not run outside the notebook, saying
    which and where; None for a kept assignment (a lambda: graded like a def)."""
    how = "an import" if isinstance(binding.node, IMPORTS) else "an assignment"
    where = f"cell {binding.cell}, line {binding.line}"
    local = _ImportMap([binding.node]) if how == "an import" else imports
    refers = any(_refers_to(local.lookup(path), _forbidden(check))
                 for path in _paths(binding.node, local))
    if refers:
        return Result(name, "failed", f"{name} is minitok's reference, bound by {how} ({where}), "
                      "which is not your work.", REFERENCE_HINT)
    if how == "an import":
        return Result(name, "failed", f"{name} is bound by an import ({where}), not by your "
                      "code.", f"write the exercise as `def {name}(...)` in its cell.")
    if kind[0] == "assign":
        return None
    return Result(name, "failed", f"{name} is bound by an assignment ({where}) that does not "
                  f"run outside the notebook: {kind[1]} ({KEEP_RULE}).",
                  f"write the exercise as `def {name}(...)` in its cell.")


def _forbidden(check) -> list:
    """What a submission may not use for this exercise: minitok's solution and the check."""
    return [check.solution, check.reference, check]


def _reference_use(statement: Statement, defs: dict, imports: _ImportMap,
                   forbidden: list) -> str | None:
    """How a def/class (or a helper it calls) reaches minitok's solution, or None."""
    seen, todo = set(), [statement]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        local = imports.with_imports_inside(current.node)
        for node in ast.walk(current.node):
            where = f"(cell {current.cell}, line {getattr(node, 'lineno', current.line)})"
            if isinstance(node, ast.Name) and node.id in ("__import__", "importlib"):
                return (f"imports modules by name with {node.id} {where}: the grader cannot "
                        "tell whether it calls minitok's reference")
            path = local.path(node)
            if path and _refers_to(local.lookup(path), forbidden):
                return (f"uses minitok's reference {path.removeprefix('minitok.')} {where}, "
                        "which is not your work")
            if isinstance(node, ast.Name) and node.id in defs and defs[node.id] is not current:
                todo.append(defs[node.id])
    return None


def _paths(node: ast.stmt, imports: _ImportMap) -> list[str]:
    """Every dotted path an import or assignment statement refers to."""
    if isinstance(node, IMPORTS):
        return list(imports.names.values())
    return [p for p in (imports.path(n) for n in ast.walk(node)) if p]


class _ImportMap:
    """Names bound by import statements, as dotted paths: `q` -> "minitok.quantize"."""

    def __init__(self, nodes: list, names: dict | None = None):
        self.names = dict(names or {})
        for node in nodes:
            for alias in node.names:
                if isinstance(node, ast.Import):
                    head = alias.asname or alias.name.split(".")[0]
                    self.names[head] = alias.name if alias.asname else head
                elif alias.name != "*" and node.module and not node.level:
                    self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def with_imports_inside(self, node: ast.AST) -> _ImportMap:
        inner = [n for n in ast.walk(node) if isinstance(n, IMPORTS)]
        return _ImportMap(inner, self.names)

    def path(self, node: ast.AST) -> str | None:
        """The dotted path an expression names: `q.nearest_code`, getattr(q, "x"), or None."""
        attrs = []
        while True:
            if isinstance(node, ast.Attribute):
                attrs.append(node.attr)
                node = node.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "getattr" and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str)):
                attrs.append(node.args[1].value)
                node = node.args[0]
            else:
                break
        if not isinstance(node, ast.Name) or node.id not in self.names:
            return None
        return ".".join([self.names[node.id], *reversed(attrs)])

    @staticmethod
    def lookup(path: str):
        """The object a dotted path names inside minitok, or None. Only minitok's own
        top-level modules are imported for it (minitok.vq re-exports nearest_code)."""
        parts = path.split(".")
        if parts[0] != "minitok":
            return None
        if len(parts) > 1 and parts[1] in MODULES and f"minitok.{parts[1]}" not in sys.modules:
            importlib.import_module(f"minitok.{parts[1]}")
        modules = [i for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in sys.modules]
        value = sys.modules[".".join(parts[:modules[-1]])]
        for part in parts[modules[-1]:]:
            if not isinstance(value, (ModuleType, type, FunctionType)):
                return None
            value = getattr(value, part, None)
        return value


def _refers_to(value, forbidden: list) -> bool:
    return value is not None and any(value is item for item in forbidden)
