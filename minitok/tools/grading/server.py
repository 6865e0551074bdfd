"""The worker's side of the wire: run the learner's code for the judge, reply with plain data.

A worker is a process that holds one submission's definitions and answers the judge's
requests, one at a time, each with one reply (see wire.py for the format):

    load      execute the submission's kept statements (imports, def/class blocks), one by
              one, and bind the lesson's other exercises to minitok's references
    call      call the exercise (or an object it returned) on the judge's inputs, under the
              judge's grad mode and autocast; reply with the result and the new state of every
              argument the call changed (tensor data, a module's state and .grad, a generator,
              an object's attributes), so in-place changes reach the judge's own objects
    backward  the gradients of a kept call's inputs, given the gradients of its outputs
    probe     run a check's probe next to the learner's function (checks._core.probe)
    getattr   an attribute of an object the learner's code returned

`Server.reply` never raises: whatever the learner's code does becomes an "error" reply with
the exception's type, message and the learner's line. The same Server answers in-process
(the loopback the check tests use) and in a sandboxed worker process (zygote.py).
"""

from __future__ import annotations

import json
import linecache
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from minitok.checks._core import learner_line
from minitok.tools.grading.wire import SKIP, Encoder, load_request

MAX_MESSAGE = 2000  # characters of an exception message sent back


def grad_inputs(tree) -> list[torch.Tensor]:
    """Every tensor that requires grad in a call's (args, kwargs), modules' parameters
    included, in a fixed order: the judge and the worker walk the same structure."""
    found = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.requires_grad:
                found.append(item)
        elif isinstance(item, torch.nn.Module):
            found.extend(p for p in item.parameters() if p.requires_grad)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
    return found


def describe(err: BaseException) -> dict:
    """An exception as plain data: its type's name, its message and the learner's line."""
    try:
        message = str(err)
    except Exception:  # a learner's exception whose __str__ fails
        message = "(an exception whose message cannot be printed)"
    return {"type": type(err).__name__[:100], "message": message[:MAX_MESSAGE],
            "frame": learner_line(err)[:MAX_MESSAGE]}


class Unavailable:
    """Stands for a name the grader could not bind: a module that is not installed, a def
    that failed. Using it raises, so only the exercises that need it fail."""

    def __init__(self, error: type[Exception], message: str):
        self._error, self._message = error, message

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._error(self._message)

    def __call__(self, *args, **kwargs):
        raise self._error(self._message)


# Arguments whose attributes are not copied back (an optimizer's hold the judge's parameters).
UNTRACKED = (type, types.ModuleType, types.FunctionType, types.MethodType,
             types.BuiltinFunctionType, torch.optim.Optimizer)


def state_record(value, encoder: Encoder):
    """What a call may have changed in an argument, as plain data (None: nothing tracked)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": encoder.encode(value.detach())}
    if isinstance(value, torch.nn.Module):
        state = [[k, encoder.encode(v.detach())] for k, v in value.state_dict().items()]
        grads = [[k, encoder.encode(p.grad.detach())] for k, p in value.named_parameters()
                 if p.grad is not None]
        return {"module": {"state": state, "grads": grads}}
    if isinstance(value, torch.Generator):
        return {"generator": encoder.encode(value.get_state())}
    if isinstance(value, (list, dict)):
        items = encoder.encode_or_skip(value)
        return None if items is SKIP else {"items": items}
    if hasattr(value, "__dict__") and not isinstance(value, UNTRACKED):
        attrs = [[str(name), encoder.encode_or_skip(item)] for name, item in vars(value).items()]
        return {"attrs": [pair for pair in attrs if pair[1] is not SKIP]}
    return None


def fingerprint(value) -> bytes | None:
    """A comparable snapshot of `value`'s tracked state (see state_record)."""
    encoder = Encoder()
    record = state_record(value, encoder)
    if record is None:
        return None
    return json.dumps(record).encode() + b"".join(encoder.blobs)


class Server:
    """Answers the judge's requests about one submission (see the module docstring).

    `target` is the exercise's function when it is given directly (the loopback); a worker
    process gets it from a "load" request instead.
    """

    def __init__(self, target=None):
        self.target = target
        self.namespace: dict = {"__name__": "submission"}
        self.handles: dict[int, object] = {}
        self.graphs: dict[int, tuple[list, list]] = {}

    def reply(self, request_bytes) -> tuple[bytes, bytes]:
        """(header, payload) answering one pickled request."""
        encoder = Encoder(self.handles)
        try:
            request = load_request(request_bytes, self.handles)
            message = getattr(self, f"_{request['op']}")(request, encoder)
            return encoder.pack(message)
        except BaseException as err:  # the learner's code: report it, whatever it is
            return Encoder().pack({"error": describe(err)})

    # ----------------------------------------------------------------------- requests

    def _load(self, request: dict, encoder: Encoder) -> dict:
        problems = load_statements(request["statements"], self.namespace)
        self.namespace.update(request["others"])
        name = request["exercise"]
        self.target = self.namespace.get(name)
        return {"loaded": {"defined": name in self.namespace, "problem": problems.get(name),
                           "callable": callable(self.target),
                           "type": type(self.target).__name__}}

    def _call(self, request: dict, encoder: Encoder) -> dict:
        fn = self.target if request["target"] is None else self.handles[request["target"]]
        args, kwargs = request["args"], request["kwargs"]
        watched = [*args, *kwargs.values()]
        before = [fingerprint(value) for value in watched]
        with _context(request):
            value = fn(*args, **kwargs)
        message = {"value": encoder.encode(value)}
        outputs = list(encoder.tensors)
        message["state"] = [state_record(item, encoder) if fingerprint(item) != old else None
                            for item, old in zip(watched, before, strict=True)]
        if request["keep_graph"]:
            number = len(self.graphs) + 1
            self.graphs[number] = (outputs, grad_inputs((args, kwargs)))
            message["call"] = number
        return message

    def _backward(self, request: dict, encoder: Encoder) -> dict:
        outputs, inputs = self.graphs[request["call"]]
        pairs = [(out, grad) for out, grad in zip(outputs, request["grads"], strict=True)
                 if grad is not None and out.requires_grad]
        grads = [None] * len(inputs)
        if pairs and inputs:
            grads = torch.autograd.grad([out for out, _ in pairs], inputs,
                                        [grad for _, grad in pairs], allow_unused=True,
                                        retain_graph=True)
        return {"grads": [encoder.encode(g) for g in grads]}

    def _probe(self, request: dict, encoder: Encoder) -> dict:
        with _context(request):
            value = request["probe"](self.target, *request["args"])
        return {"value": encoder.encode(value)}

    def _getattr(self, request: dict, encoder: Encoder) -> dict:
        return {"value": encoder.encode(getattr(self.handles[request["target"]],
                                                request["name"]))}


@contextmanager
def _context(request: dict) -> Iterator[None]:
    """The judge's grad mode and CPU autocast, around the learner's call."""
    enabled, dtype = request["autocast"]
    with torch.set_grad_enabled(request["grad"]), torch.autocast("cpu", dtype=dtype,
                                                                 enabled=enabled):
        yield


# --------------------------------------------------------------------------- loading


def load_statements(statements: list[tuple], namespace: dict) -> dict[str, str]:
    """Execute a submission's kept statements in `namespace`, one by one, in notebook order.

    `statements` are (cell, line, text, kind, names, module) tuples (see
    submission.Statement.wire). Each is compiled as "<cell N>" at its own line number, so
    tracebacks name the learner's line. A failed import binds its names to an Unavailable
    that says so when used; a failed def binds its name to one that says why. Returns the
    reason each failed def/class failed, by name.
    """
    _register_cells(statements)
    problems = {}
    for cell, line, text, kind, names, module in statements:
        try:
            code = compile("\n" * (line - 1) + text, f"<cell {cell}>", "exec")
            exec(code, namespace)
        except BaseException as err:  # the learner's load-time code: report, do not stop
            if kind == "import":
                _bind_unavailable_import(namespace, names, module, err)
            else:
                problems.update({name: _definition_problem(name, err) for name in names})
                namespace.update({name: Unavailable(RuntimeError, problems[name])
                                  for name in names})
    return problems


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


def _definition_problem(name: str, err: BaseException) -> str:
    """Why defining `name` failed, in the learner's terms."""
    where = learner_line(err)
    text = f"defining {name} raised {type(err).__name__}: {describe(err)['message']}{where}"
    if isinstance(err, NameError):
        text += (": a default argument or decorator uses a variable from a cell the grader "
                 "does not run (it runs only imports and def/class blocks)")
    return text
