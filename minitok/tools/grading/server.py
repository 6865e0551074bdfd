"""The worker's side of the wire: run the learner's code for the judge, reply with plain data.

A worker is a process that holds one submission's definitions and answers the judge's
requests, one at a time, each with one reply (see wire.py for the format):

    load      execute what the exercise needs of the submission's kept statements
              (notebook_code.load_statements), and bind the lesson's other exercises to
              minitok's references
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
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from minitok.checks._core import learner_line
from minitok.notebook_code import (  # noqa: F401  (Unavailable: the grader's name for it)
    Unavailable,
    load_statements,
    missing_name,
)
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


def describe(err: BaseException, skipped: dict | None = None) -> dict:
    """An exception as plain data: its type's name, its message and the learner's line.
    A NameError for a name the notebook binds in a statement not kept says so (`skipped`)."""
    try:
        message = str(err) + missing_name(err, skipped or {})
    except Exception:  # a learner's exception whose __str__ fails
        message = "(an exception whose message cannot be printed)"
    return {"type": type(err).__name__[:100], "message": message[:MAX_MESSAGE],
            "frame": learner_line(err)[:MAX_MESSAGE]}


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
        self.skipped: dict[str, str] = {}  # names bound only by statements not kept: why

    def reply(self, request_bytes) -> tuple[bytes, bytes]:
        """(header, payload) answering one pickled request."""
        encoder = Encoder(self.handles)
        try:
            request = load_request(request_bytes, self.handles)
            message = getattr(self, f"_{request['op']}")(request, encoder)
            return encoder.pack(message)
        except BaseException as err:  # the learner's code: report it, whatever it is
            return Encoder().pack({"error": describe(err, self.skipped)})

    # ----------------------------------------------------------------------- requests

    def _load(self, request: dict, encoder: Encoder) -> dict:
        name, others = request["exercise"], request["others"]
        self.namespace.update(others)  # not followed: the references stand in for them
        problems = load_statements(request["statements"], self.namespace, {name},
                                   self.skipped)
        self.namespace.update(others)
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
