"""Reading a submitted notebook: never executed here, never written, every problem a message.

    notebook = read(path)                 # the code cells (SubmissionError: not gradable at all)
    lesson, alias = lesson_of(notebook)   # "lesson01", and the name the checks are imported as
    decided = prejudge(notebook, checks, alias)   # verdicts found without running anything
    kept = notebook.kept()                # what a worker executes: imports, def/class blocks

Reading is robust to what real notebooks hold: cells that are not objects or whose source is
not text are skipped, IPython magics are dropped line by line (`%%time`, `%%timeit` and
`%%capture` keep their cell), a syntax error costs only the top-level statement it is in, and
statements keep their cell and line so that the learner's traceback names their own line.

`prejudge` scores an exercise 0 without running it when its name is not a `def`/`class` of
the notebook (imported, assigned) or when its definition refers to minitok's own solution of
it: `quantize.nearest_code`, a name imported from minitok bound to it, getattr with its name,
`__import__`/importlib inside the def, directly or through a helper the notebook defines.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType

from minitok.checks._core import Result
from minitok.tools.grading import REFERENCE_HINT

MAX_BYTES = 20 << 20  # a notebook larger than this is refused (outputs included)
MAX_MERGE = 20  # top-level chunks tried together when a cell has a syntax error
KEPT_CELL_MAGICS = {"time", "timeit", "capture"}  # %%magic cells whose body is Python
LINE_MAGIC = re.compile(r"^(\s*)(%|!(?!=))")
CELL_START = re.compile(r"^(?![\s#)\]}]|(else|elif|except|finally)\b)\S")
LESSON = re.compile(r"lesson\d\d")
MODULES = {path.stem for path in Path(__file__).parents[2].glob("*.py")} - {"__main__"}


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (not a notebook, no lesson)."""


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a code cell: where it is, its text, its syntax tree.

    A chunk of a cell that does not parse is a Statement with `node` None and `error` set.
    """

    cell: int  # 1-based position of the cell in the notebook
    line: int  # its first line in the cell (decorators included)
    text: str
    node: ast.stmt | None
    error: str | None = None

    @property
    def kept(self) -> bool:
        """True for what the grader runs: imports and def/class blocks."""
        return isinstance(self.node, (ast.Import, ast.ImportFrom, ast.FunctionDef,
                                      ast.AsyncFunctionDef, ast.ClassDef))

    def wire(self) -> tuple:
        """What a worker needs to run it: (cell, line, text, kind, names, module)."""
        kind = "import" if isinstance(self.node, (ast.Import, ast.ImportFrom)) else "def"
        if isinstance(self.node, ast.ImportFrom):
            module = self.node.module or "."
        else:
            module = ", ".join(alias.name for alias in getattr(self.node, "names", []))
        return self.cell, self.line, self.text, kind, sorted(bound_names(self.node)), module


@dataclass
class Notebook:
    """A submission's code, statement by statement, and what reading it skipped."""

    statements: list[Statement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def kept(self) -> list[tuple]:
        """The statements a worker executes, in notebook order (see Statement.wire)."""
        return [s.wire() for s in self.statements if s.kept]


# --------------------------------------------------------------------------- reading


def read(path: Path) -> Notebook:
    """A notebook file's code cells as statements; SubmissionError for an unusable file."""
    name = path.name
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{name} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise SubmissionError(f"{name} is {info.st_size / 2**20:.0f} MiB: a notebook may "
                                  f"have at most {MAX_BYTES // 2**20} MiB (clear its outputs)")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise SubmissionError(f"cannot read {name}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise SubmissionError(f"{name} grew past {MAX_BYTES // 2**20} MiB while being read")
    try:
        content = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SubmissionError(f"{name} is not UTF-8 text: not a notebook") from None
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{name} is not valid JSON ({err}): not a notebook") from None
    except RecursionError:
        raise SubmissionError(f"{name} is JSON nested too deeply to be a notebook") from None
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise SubmissionError(f"{name} is JSON but not a notebook (no 'cells' list)")
    return parse_cells(content["cells"])


def parse_cells(cells: list) -> Notebook:
    """The statements of a notebook's code cells (see the module docstring)."""
    notebook = Notebook()
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            notebook.notes.append(f"cell {number} is not a cell object: skipped")
            continue
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(part, str) for part in source):
            source = "".join(source)
        if not isinstance(source, str):
            notebook.notes.append(f"cell {number}'s source is not text: skipped")
            continue
        text = without_magics(source)
        if text is None:
            notebook.notes.append(f"cell {number} is a {source.split()[0]} cell: skipped")
            continue
        notebook.statements.extend(split_cell(number, text))
    return notebook


def without_magics(source: str) -> str | None:
    """The cell's Python: IPython magics and shell lines blanked out (line numbers kept).

    Returns None for a cell magic whose body is not Python (%%bash, %%writefile, ...).
    """
    lines = source.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].strip()[2:].split(maxsplit=1)
        if not magic or magic[0] not in KEPT_CELL_MAGICS:
            return None
        lines[first] = ""
    for i, line in enumerate(lines):
        found = LINE_MAGIC.match(line)
        if found:  # inside a block a `pass` keeps the block valid
            lines[i] = f"{found.group(1)}pass" if found.group(1) else ""
    return "\n".join(lines)


def split_cell(cell: int, text: str) -> list[Statement]:
    """A cell's top-level statements; a chunk with a syntax error becomes an error Statement.

    When the cell does not parse as a whole, it is cut where a line starts at column 0 (a
    decorator stays with its def), and each chunk is parsed alone, merged with the next
    ones while that makes it parse: a syntax error in one def costs only that def.
    """
    lines = text.split("\n")
    tree, _ = _parse(text)
    if tree is not None:
        return [_statement(cell, lines, node) for node in tree.body]
    starts = _chunk_starts(lines) + [len(lines)]
    last, budget = len(starts) - 1, 10 * len(lines) + 1000  # lines parsed, however broken
    statements, j = [], 0
    while j < last:
        merged = None
        for k in range(j + 1, min(last, j + MAX_MERGE) + 1):
            budget -= starts[k] - starts[j]
            tree, _ = _parse(_chunk(lines, starts[j], starts[k]))
            if tree is not None or budget < 0:
                merged = k if tree is not None else None
                break
        if merged is not None:
            statements += [_statement(cell, lines, node) for node in tree.body]
            j = merged
            continue
        end = starts[j + 1] if budget >= 0 else starts[last]  # out of budget: the rest at once
        _, error = _parse(_chunk(lines, starts[j], end))
        statements.append(Statement(cell, starts[j] + 1, "\n".join(lines[starts[j]:end]),
                                    None, error))
        j = starts.index(end)
    return statements


def _chunk_starts(lines: list[str]) -> list[int]:
    """Lines where a top-level statement may start: column 0, not a comment, not a closing
    bracket or an else/except, not right after a decorator."""
    starts, previous = [], ""
    for i, line in enumerate(lines):
        if CELL_START.match(line) and not previous.startswith("@"):
            starts.append(i)
        if line.strip() and not line.lstrip().startswith("#"):
            previous = line
    return starts


def _chunk(lines: list[str], start: int, end: int) -> str:
    """Lines [start, end) of a cell, at their own line numbers."""
    return "\n" * start + "\n".join(lines[start:end])


def _parse(text: str) -> tuple[ast.Module | None, str | None]:
    """(tree, None), or (None, the syntax error in a few words)."""
    try:
        return ast.parse(text), None
    except SyntaxError as err:
        return None, f"line {err.lineno}: {err.msg}"
    except (ValueError, RecursionError, MemoryError, OverflowError) as err:
        return None, f"the parser gave up ({type(err).__name__})"


def _statement(cell: int, lines: list[str], node: ast.stmt) -> Statement:
    """A parsed statement with its exact source text."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        return Statement(cell, first, "\n".join(lines[first - 1:node.end_lineno]), node)
    return Statement(cell, node.lineno, _segment(lines, node), node)


def _segment(lines: list[str], node: ast.stmt) -> str:
    """The source of a simple statement, from its first column (UTF-8 offsets, as ast's)."""
    part = [line.encode() for line in lines[node.lineno - 1:node.end_lineno]]
    part[-1] = part[-1][:node.end_col_offset]
    part[0] = part[0][node.col_offset:]
    return b"\n".join(part).decode(errors="replace")


# --------------------------------------------------------------------------- names


def bound_names(node: ast.stmt | None) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Import):
        return {a.asname or a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names if a.name != "*"}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and getattr(node, "value", None):
        targets = [node.target]
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in node.items if item.optional_vars]
    elif isinstance(node, ast.Delete):
        targets = node.targets
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


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


def _is_check_line(node: ast.stmt | None, alias: str) -> bool:
    """`name = check.name(name)` or `check.name(name)`: the notebook's check, not a binding."""
    value = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id == alias):
        return False
    name = value.func.attr
    targets = node.targets if isinstance(node, ast.Assign) else []
    return all(isinstance(t, ast.Name) and t.id == name for t in targets)


# --------------------------------------------------------------------------- prejudging


def prejudge(notebook: Notebook, checks: dict, alias: str) -> dict[str, Result]:
    """Verdicts for the exercises that need no worker (see the module docstring)."""
    imports = _ImportMap([s.node for s in notebook.statements
                          if isinstance(s.node, (ast.Import, ast.ImportFrom))])
    defs = {s.node.name: s for s in notebook.statements
            if isinstance(s.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    decided = {}
    for name, check in checks.items():
        binding = _last_binding(notebook, name, alias)
        if binding is None:
            decided[name] = Result(name, "not done", f"no function named {name} in the notebook.")
        elif binding.node is None:
            decided[name] = Result(name, "error", f"{name} has a syntax error (cell "
                                   f"{binding.cell}, {binding.error})",
                                   "run its cell: Python points at the mistake.")
        elif not isinstance(binding.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            decided[name] = _not_a_def(name, binding, imports, check)
        else:
            use = _reference_use(binding, defs, imports, _forbidden(check))
            if use is not None:
                decided[name] = Result(name, "failed", f"{name} {use}.", REFERENCE_HINT)
    return decided


def _last_binding(notebook: Notebook, name: str, alias: str) -> Statement | None:
    found = None
    for statement in notebook.statements:
        if statement.node is None:
            if re.match(rf"\s*(async\s+)?(def|class)\s+{re.escape(name)}\b", statement.text):
                found = statement
        elif name in bound_names(statement.node) and not _is_check_line(statement.node, alias):
            found = statement
    return found


def _not_a_def(name: str, binding: Statement, imports: _ImportMap, check) -> Result:
    """An exercise name bound by an import or an assignment: 0, saying which and where."""
    how = "an import" if isinstance(binding.node, (ast.Import, ast.ImportFrom)) else \
        "an assignment"
    where = f"cell {binding.cell}, line {binding.line}"
    local = _ImportMap([binding.node]) if how == "an import" else imports
    refers = any(_refers_to(local.lookup(path), _forbidden(check))
                 for path in _paths(binding.node, local))
    if refers:
        return Result(name, "failed", f"{name} is minitok's reference, bound by {how} ({where}), "
                      "which is not your work.", REFERENCE_HINT)
    return Result(name, "failed", f"{name} is bound by {how} ({where}), not by your def: "
                  "the grader runs only imports and def/class blocks.",
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
    if isinstance(node, (ast.Import, ast.ImportFrom)):
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
        inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
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
