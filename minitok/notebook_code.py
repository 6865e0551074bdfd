"""Reading a notebook's code without running the notebook: what the grader and `earlier` share.

    notebook = read(path)                 # the code cells, statement by statement
    statements = notebook.kept()          # what may run outside the notebook (see below)
    problems = load_statements(statements, namespace, wanted={"kmeans"})

Reading is robust to what real notebooks hold: only code cells are read (Markdown and outputs
may be large, code may not: MAX_CODE), cells that are not objects or whose source is not text
are skipped, IPython magics are dropped line by line (`%%time`, `%%timeit` and `%%capture`
keep their cell), a syntax error costs only the top-level statement it is in, and statements
keep their cell and line so that a traceback names the learner's own line.

Which statements run outside the notebook (the grader's workers, `earlier.yours`): those
whose cost is the definition itself, never a training cell.

    kept      imports, def/class blocks, and assignments whose value is cheap and safe to
              evaluate: literals, lambdas, names kept before (or builtins), and tuples,
              dicts, attributes, subscripts and arithmetic of those (no call, no loop)
    not kept  everything else (a call, a loop, a comprehension, a name that is not kept);
              a name it binds is unbound from there on, and using it raises a NameError
              that says which cell and line bind it and why that line does not run

`load_statements(..., wanted=...)` runs only what the wanted names need: the statements
that bind them and, transitively, every name their code uses. An endless loop in one def's
default argument, or 300,000 helpers, cost only the exercises whose code reaches them.
"""

from __future__ import annotations

import ast
import builtins
import json
import linecache
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from minitok.checks._core import learner_line

MAX_BYTES = 100 << 20  # a notebook file larger than this is refused (outputs included)
MAX_CODE = 2_000_000  # characters of code, all code cells together
MAX_STATEMENTS = 10_000  # top-level statements, all code cells together
MAX_MERGE = 20  # top-level chunks tried together when a cell has a syntax error
KEPT_CELL_MAGICS = {"time", "timeit", "capture"}  # %%magic cells whose body is Python
LINE_MAGIC = re.compile(r"^(\s*)(%|!(?!=))")
CELL_START = re.compile(r"^(?![\s#)\]}]|(else|elif|except|finally)\b)\S")
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
IMPORTS = (ast.Import, ast.ImportFrom)
BUILTINS = frozenset(dir(builtins))
KEEP_RULE = ("outside the notebook only imports, def/class blocks and assignments of "
             "literals, lambdas and expressions of those run")


class NotebookError(ValueError):
    """A notebook whose code cannot be read at all (not a notebook, too much code)."""


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

    def wire(self, kind: str, why: str = "") -> tuple:
        """(cell, line, text, kind, names bound, module or why, names used): plain data for
        load_statements. kind is "import", "def", "assign" or "skip" (not kept: why)."""
        if kind == "skip":
            detail = why
        elif isinstance(self.node, ast.ImportFrom):
            detail = self.node.module or "."
        else:
            detail = ", ".join(alias.name for alias in getattr(self.node, "names", []))
        return (self.cell, self.line, self.text, kind, sorted(bound_names(self.node)), detail,
                sorted(used_names(self.node)))


@dataclass
class Notebook:
    """A notebook's code, statement by statement, and what reading it skipped."""

    statements: list[Statement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def classified(self) -> list[tuple[Statement, str, str]]:
        """(statement, kind, why) for every statement that binds names, in notebook order:
        kind "import", "def", "assign" (kept) or "skip" (not kept: why; module docstring).
        A check line (`f = check.f(f)`) binds nothing: it returns the function it checks."""
        known, out = set(BUILTINS), []
        for statement in self.statements:
            node = statement.node
            names = bound_names(node)
            if node is None or is_check_line(node) or not names and not isinstance(node, IMPORTS):
                continue
            if isinstance(node, IMPORTS):
                kind, why = "import", ""
            elif isinstance(node, DEFS):
                kind, why = "def", ""
            else:
                why = unkept_reason(node, known)
                kind = "skip" if why else "assign"
            out.append((statement, kind, why))
            if why:
                known -= names
            else:
                known |= names
        return out

    def kept(self) -> list[tuple]:
        """The statements as load_statements takes them (Statement.wire), in notebook order."""
        return [statement.wire(kind, why) for statement, kind, why in self.classified()]


# --------------------------------------------------------------------------- reading


def read(path: Path) -> Notebook:
    """A notebook file's code cells as statements; NotebookError for an unusable file."""
    name = path.name
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise NotebookError(f"{name} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise NotebookError(f"{name} is {info.st_size / 2**20:.0f} MiB: a notebook may "
                                f"have at most {MAX_BYTES // 2**20} MiB (clear its outputs)")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise NotebookError(f"cannot read {name}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise NotebookError(f"{name} grew past {MAX_BYTES // 2**20} MiB while being read")
    try:
        content = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not UTF-8 text: not a notebook") from None
    except json.JSONDecodeError as err:
        raise NotebookError(f"{name} is not valid JSON ({err}): not a notebook") from None
    except RecursionError:
        raise NotebookError(f"{name} is JSON nested too deeply to be a notebook") from None
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise NotebookError(f"{name} is JSON but not a notebook (no 'cells' list)")
    return parse_cells(content["cells"])


def parse_cells(cells: list) -> Notebook:
    """The statements of a notebook's code cells (see the module docstring)."""
    notebook, sources, size = Notebook(), [], 0
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            notebook.notes.append(f"cell {number} is not a cell object: skipped")
            continue
        if cell.get("cell_type") != "code":
            continue  # Markdown and raw cells are never read, whatever their size
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(part, str) for part in source):
            source = "".join(source)
        if not isinstance(source, str):
            notebook.notes.append(f"cell {number}'s source is not text: skipped")
            continue
        size += len(source)
        sources.append((number, source))
    if size > MAX_CODE:
        raise NotebookError(f"its code cells hold {size:,} characters: a notebook may have at "
                            f"most {MAX_CODE:,} characters of code (Markdown and outputs aside)")
    for number, source in sources:
        text = without_magics(source)
        if text is None:
            notebook.notes.append(f"cell {number} is a {source.split()[0]} cell: skipped")
            continue
        notebook.statements.extend(split_cell(number, text))
        if len(notebook.statements) > MAX_STATEMENTS:
            raise NotebookError(f"its code has more than {MAX_STATEMENTS:,} top-level "
                                "statements (defs, imports, lines): too many to load")
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
    if isinstance(node, DEFS):
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
    if isinstance(node, DEFS):
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
    return {n.id for t in targets if isinstance(t, (ast.Name, ast.Tuple, ast.List))
            for n in ast.walk(t) if isinstance(n, ast.Name)}


def is_check_line(node: ast.stmt | None) -> bool:
    """`name = check.name(name)` or `check.name(name)`: a notebook's check, not a binding."""
    call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and len(call.args) == 1
            and isinstance(call.args[0], ast.Name) and call.args[0].id == call.func.attr):
        return False
    targets = node.targets if isinstance(node, ast.Assign) else []
    return all(isinstance(t, ast.Name) and t.id == call.func.attr for t in targets)


def used_names(node: ast.stmt | None) -> set[str]:
    """Every global name a statement's code may read, now or when it is called (an upper
    bound: a local variable with a global's name counts too)."""
    if node is None or isinstance(node, IMPORTS):
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)}


def unkept_reason(node: ast.stmt, known: set[str]) -> str:
    """Why an assignment is not kept ("" when it is): the value must be cheap and safe to
    evaluate from the names kept so far (`known`)."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        targets, value = [node.target], ast.BinOp(ast.Name(node.target.id, ast.Load()),
                                                  node.op, node.value)
    else:
        return "it is not an assignment (a loop, a with or del block)"
    if not all(_plain_target(t) for t in targets):
        return "it assigns to something other than names"
    return _eager_reason(value, known)


def _plain_target(target: ast.expr) -> bool:
    if isinstance(target, (ast.Tuple, ast.List)):
        return all(_plain_target(t) for t in target.elts)
    return isinstance(target, ast.Name)


def _eager_reason(node: ast.expr, known: set[str]) -> str:
    """Why evaluating `node` now could be slow or need something not kept ("" if it cannot)."""
    if isinstance(node, ast.Lambda):  # its body runs only when called
        defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
        return next(filter(None, (_eager_reason(d, known) for d in defaults)), "")
    if isinstance(node, ast.Name):
        return "" if node.id in known else f"it uses {node.id}, which is not kept either"
    if isinstance(node, ast.Call):
        return "it calls a function, which could run for long"
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return "it loops (a comprehension)"
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.LShift)) and not (
            isinstance(node.right, ast.Constant) and isinstance(node.right.value, (int, float))
            and abs(node.right.value) <= 64):
        return "it raises to a power (or shifts by) more than a small constant"
    if not isinstance(node, (ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple,
                             ast.List, ast.Set, ast.Dict, ast.Starred, ast.UnaryOp, ast.BinOp,
                             ast.BoolOp, ast.Compare, ast.IfExp, ast.JoinedStr,
                             ast.FormattedValue, ast.Load, ast.operator, ast.unaryop,
                             ast.boolop, ast.cmpop, ast.expr_context)):
        return f"the grader does not evaluate {type(node).__name__} expressions"
    children = (c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
    return next(filter(None, (_eager_reason(c, known) for c in children)), "")


# --------------------------------------------------------------------------- loading


class Unavailable:
    """Stands for a name that could not be bound: a module that is not installed, a def
    that failed. Using it raises, so only the code that needs it fails."""

    def __init__(self, error: type[Exception], message: str):
        self._error, self._message = error, message

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._error(self._message)

    def __call__(self, *args, **kwargs):
        raise self._error(self._message)


def needed(statements: list[tuple], wanted: set[str], given: set[str] = frozenset()) -> list:
    """The statements that `wanted` needs: those binding a wanted name, and transitively
    those binding a name their code uses (imports without names always). Names in `given`
    are bound by the caller and not followed."""
    binders: dict[str, list[int]] = {}
    for i, (_, _, _, _, names, _, _) in enumerate(statements):
        for name in names:
            binders.setdefault(name, []).append(i)
    chosen = {i for i, s in enumerate(statements) if s[3] == "import" and not s[4]}
    todo, seen = list(wanted), set(given)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for i in binders.get(name, []):
            chosen.add(i)
            todo.extend(statements[i][6])
    return [statements[i] for i in sorted(chosen)]


def load_statements(statements: list[tuple], namespace: dict, wanted: set[str] | None = None,
                    skipped: dict | None = None) -> dict[str, str]:
    """Execute kept statements (Notebook.kept) in `namespace`, one by one, in notebook order.

    With `wanted`, only what those names need (see `needed`; names already in `namespace`
    are not followed). Each statement is compiled as "<cell N>" at its own line number, so
    tracebacks name the learner's line. A failed import binds its names to an Unavailable
    that says so when used; a failed def binds its name to one that says why. A "skip"
    record unbinds its names, and `skipped` (when given) learns why, by name, for
    missing_name(). Returns the reason each failed def/class failed, by name.
    """
    if wanted is not None:
        statements = needed(statements, wanted, set(namespace))
    _register_cells(statements)
    problems = {}
    skipped = {} if skipped is None else skipped
    for cell, line, text, kind, names, detail, _ in statements:
        if kind == "skip":
            for name in names:
                namespace.pop(name, None)
                skipped[name] = f"cell {cell}, line {line} binds it, but {detail}"
            continue
        try:
            code = compile("\n" * (line - 1) + text, f"<cell {cell}>", "exec")
            exec(code, namespace)
            for name in names:
                skipped.pop(name, None)
        except BaseException as err:  # the learner's load-time code: report, do not stop
            if kind == "import":
                _bind_unavailable_import(namespace, names, detail, err)
            elif kind == "def":
                problems.update({name: _definition_problem(name, err, skipped)
                                 for name in names})
                namespace.update({name: Unavailable(RuntimeError, problems[name])
                                  for name in names})
            else:
                for name in names:
                    namespace.pop(name, None)
                    skipped[name] = (f"cell {cell}, line {line} binds it, but it raised "
                                     f"{type(err).__name__} when run outside the notebook")
    return problems


def missing_name(err: BaseException, skipped: dict) -> str:
    """For a NameError whose name a statement that does not run binds: why, else ""."""
    name = getattr(err, "name", None)
    if not isinstance(err, NameError) or name not in skipped:
        return ""
    return (f" ({name} is not defined outside the notebook: {skipped[name]}; "
            f"{KEEP_RULE}: define {name} that way, or inside your function)")


def _register_cells(statements: list[tuple]) -> None:
    """Let tracebacks show the learner's lines: linecache learns each "<cell N>"."""
    cells: dict[int, list[str]] = {}
    for cell, line, text, *_ in statements:
        lines = cells.setdefault(cell, [])
        body = text.split("\n")
        end = line - 1 + len(body)
        lines.extend([""] * (end - len(lines)))
        lines[line - 1:end] = body
    for cell, lines in cells.items():
        filename = f"<cell {cell}>"
        linecache.cache[filename] = (0, None, [f"{x}\n" for x in lines], filename)


def _bind_unavailable_import(namespace: dict, names: list[str], module: str,
                             err: BaseException) -> None:
    if isinstance(err, ModuleNotFoundError):
        message = f"module {module} is not installed in the grader"
        error = ModuleNotFoundError
    else:
        message = f"importing {module} failed in the grader ({type(err).__name__}: {err})"
        error = ImportError
    for name in names:
        if name not in namespace:
            namespace[name] = Unavailable(error, message)


def _definition_problem(name: str, err: BaseException, skipped: dict) -> str:
    """Why defining `name` failed, in the learner's terms."""
    try:
        message = str(err)[:2000]
    except Exception:  # a learner's exception whose __str__ fails
        message = "(an exception whose message cannot be printed)"
    text = f"defining {name} raised {type(err).__name__}: {message}{learner_line(err)}"
    if isinstance(err, NameError):
        text += missing_name(err, skipped) or (
            f": no statement that runs outside the notebook binds {err.name} ({KEEP_RULE})")
    return text
