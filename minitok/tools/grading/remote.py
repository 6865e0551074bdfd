"""The judge's side of the wire: the learner's function as a proxy that checks can call.

A check's test function runs in the judge unchanged, with `fn` a RemoteObject. Calling it
sends the inputs to the worker (a pickle of the judge's own objects), and the reply is
decoded as plain data (wire.Decoder). Four things make a remote call behave like a local one:

- in-place changes: the worker reports the new state of every argument the call changed,
  and `apply_state` copies it into the judge's objects, so "your function changed its input"
  and "the generator advanced" checks still see them;
- autograd: when an input requires grad, the call runs inside `_RemoteCall`, a
  torch.autograd.Function whose backward asks the worker for the gradients of the inputs,
  so `(fn(z, q) * up).sum().backward()` fills `z.grad` in the judge;
- exceptions: the learner's exception comes back as one of the same builtin type (a check
  may catch RuntimeError), with its message and the learner's line; a call that reaches
  minitok's hidden reference fails the exercise ("uses minitok's reference ...");
- objects: a result that is not plain data stays in the worker, and the judge gets a
  RemoteObject for it (attributes, method calls and calls go over the wire).

Anything wrong with the transport itself (a timeout, a worker that died, a malformed reply)
is a WorkerGone, which checks cannot catch, and the Session remembers it: the judge then
reports an "error" whatever the check concluded.
"""

from __future__ import annotations

import builtins
import time

import torch

from minitok.checks._core import CheckFailed, Remote
from minitok.tools.grading import REFERENCE_HINT, SENTINEL
from minitok.tools.grading.server import Server, grad_inputs
from minitok.tools.grading.wire import (
    Decoder,
    Handle,
    WireError,
    dump_request,
    recv_frame,
    send_frame,
    unpack,
)


class WorkerGone(BaseException):
    """The worker cannot answer (timed out, ended, or sent a malformed reply).

    A BaseException, so that no check's `except Exception` hides it."""


class Session:
    """The judge's end of one worker: a request out, one reply in, before `deadline`."""

    def __init__(self, exchange):
        self.exchange = exchange  # bytes -> (header, payload)
        self.failure: tuple[str, str] | None = None  # (kind, detail) once the worker is gone

    def request(self, request: dict) -> tuple[dict, list]:
        """The reply's message and blobs; a learner exception is raised here."""
        if self.failure:
            raise WorkerGone(self.failure[1])
        try:
            message, blobs = unpack(*self.exchange(dump_request(request)))
        except TimeoutError:
            self.fail("timeout", "timed out")
        except (EOFError, ConnectionError, OSError) as err:
            self.fail("ended", f"the worker ended ({type(err).__name__})")
        except WireError as err:
            self.fail("wire", str(err))
        if "error" in message:
            err = rebuild_error(message["error"])
            if isinstance(err, WireError):
                self.fail("wire", str(err))
            raise err
        return message, blobs

    def fail(self, kind: str, detail: str):
        self.failure = (kind, detail)
        raise WorkerGone(detail)

    def decode(self, value, blobs, requires_grad=True, tensors=None):
        decoder = Decoder(blobs, remote=lambda n: RemoteObject(self, n),
                          requires_grad=requires_grad)
        try:
            decoded = decoder.decode(value)
        except WireError as err:
            self.fail("wire", str(err))
        if tensors is not None:
            tensors.extend(decoder.tensors)
        return decoded

    # ----------------------------------------------------------------------- operations

    def load(self, statements: list[tuple], exercise: str, others: dict) -> dict:
        """Load a submission into the worker; what it says about the exercise's name."""
        message, _ = self.request({"op": "load", "statements": statements,
                                   "exercise": exercise, "others": others})
        loaded = message.get("loaded")
        if not (isinstance(loaded, dict) and set(loaded) == {"defined", "problem", "callable",
                                                             "type"}):
            self.fail("wire", "a malformed reply to loading the submission")
        return loaded

    def call(self, target: int | None, args: tuple, kwargs: dict):
        request = {"op": "call", "target": target, "args": args, "kwargs": kwargs,
                   "grad": torch.is_grad_enabled(), "autocast": _autocast()}
        inputs = grad_inputs((args, kwargs)) if request["grad"] else []
        if not inputs:
            message, blobs = self.request({**request, "keep_graph": False})
            self.apply_states(args, kwargs, message, blobs)
            return self.decode(message.get("value"), blobs)
        call = _Call(request)
        outputs = _RemoteCall.apply(self, call, *inputs)
        return _substitute(call.value, iter(outputs))

    def run_probe(self, probe_fn, args: tuple):
        message, blobs = self.request({"op": "probe", "probe": probe_fn, "args": args,
                                       "grad": torch.is_grad_enabled(),
                                       "autocast": _autocast()})
        return self.decode(message.get("value"), blobs)

    def getattr(self, number: int, name: str):
        message, blobs = self.request({"op": "getattr", "target": number, "name": name})
        return self.decode(message.get("value"), blobs)

    def backward(self, number: int, grads: list, inputs: list[tuple]) -> list:
        """The gradients of a kept call's inputs ((shape, dtype) each) from its outputs'."""
        message, blobs = self.request({"op": "backward", "call": number, "grads": grads})
        got = self.decode({"list": message.get("grads")}, blobs, requires_grad=False)
        if len(got) != len(inputs) or any(
                g is not None and (not isinstance(g, torch.Tensor) or g.shape != shape)
                for g, (shape, _) in zip(got, inputs, strict=True)):
            self.fail("wire", "gradients that do not match the inputs")
        return [None if g is None else g.to(dtype)
                for g, (_, dtype) in zip(got, inputs, strict=True)]

    def apply_states(self, args: tuple, kwargs: dict, message: dict, blobs) -> None:
        """Copy what the call changed in its arguments into the judge's objects."""
        watched = [*args, *kwargs.values()]
        states = message.get("state")
        if not isinstance(states, list) or len(states) != len(watched):
            self.fail("wire", "a reply without the arguments' state")
        for item, record in zip(watched, states, strict=True):
            if record is not None:
                try:
                    apply_state(item, record, lambda v: self.decode(v, blobs, False))
                except (WireError, RuntimeError, TypeError, ValueError, KeyError) as err:
                    self.fail("wire", f"an argument's new state the judge cannot apply ({err})")


def _autocast() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")


def apply_state(item, record, decode) -> None:
    """Apply one argument's new state (see server.state_record) to the judge's object."""
    if not (isinstance(record, dict) and len(record) == 1):
        raise WireError("a malformed state record")
    ((kind, body),) = record.items()
    if kind == "tensor" and isinstance(item, torch.Tensor):
        new = decode(body)
        with torch.no_grad():
            if isinstance(new, torch.Tensor) and new.shape == item.shape:
                item.copy_(new)
            else:
                item.data = new
    elif kind == "module" and isinstance(item, torch.nn.Module) and isinstance(body, dict):
        item.load_state_dict(decode({"dict": body["state"]}), strict=False)
        params = dict(item.named_parameters())
        for name, grad in decode({"dict": body["grads"]}).items():
            if grad.shape != params[name].shape:
                raise WireError(f"a gradient of shape {tuple(grad.shape)} for {name}")
            params[name].grad = grad.to(params[name].dtype)
    elif kind == "generator" and isinstance(item, torch.Generator):
        item.set_state(decode(body))
    elif kind == "items" and isinstance(item, (list, dict)):
        new = decode(body)
        if type(new) is not type(item):
            raise WireError("a list or dict argument replaced by another kind")
        item.clear()
        (item.extend if isinstance(item, list) else item.update)(new)
    elif kind == "attrs" and hasattr(item, "__dict__"):
        for name, value in decode({"dict": body}).items():
            if not name.startswith("__") and name in vars(item):  # only what the judge has
                setattr(item, name, value)
    else:
        raise WireError(f"a state record of kind {kind!r} for a {type(item).__name__}")


class _Call:
    """One call through autograd: the request, then the decoded result and its tensors."""

    def __init__(self, request: dict):
        self.request = request
        self.value = None


class _RemoteCall(torch.autograd.Function):
    """A remote call that autograd can backpropagate through (see the module docstring)."""

    @staticmethod
    def forward(ctx, session: Session, call: _Call, *inputs):
        message, blobs = session.request({**call.request, "keep_graph": True})
        session.apply_states(call.request["args"], call.request["kwargs"], message, blobs)
        tensors: list[torch.Tensor] = []
        call.value = session.decode(message.get("value"), blobs, requires_grad=False,
                                    tensors=tensors)
        flags = _requires_grad_flags(message.get("value"))
        number = message.get("call")
        if type(number) is not int or len(flags) != len(tensors):
            session.fail("wire", "a malformed reply to a call")
        ctx.session, ctx.number = session, number
        ctx.inputs = [(x.shape, x.dtype) for x in inputs]
        ctx.differentiable = [flag and t.is_floating_point()
                              for flag, t in zip(flags, tensors, strict=True)]
        ctx.mark_non_differentiable(*[t for t, d in zip(tensors, ctx.differentiable, strict=True)
                                      if not d])
        return tuple(tensors)

    @staticmethod
    def backward(ctx, *grads):
        sent = [g if d else None for g, d in zip(grads, ctx.differentiable, strict=True)]
        return (None, None, *ctx.session.backward(ctx.number, sent, ctx.inputs))


def _requires_grad_flags(value) -> list[bool]:
    """The worker's requires_grad flag of each tensor in an encoded value, in order."""
    flags, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict) and len(item) == 1:
            ((kind, body),) = item.items()
            if kind == "tensor" and isinstance(body, list) and len(body) == 4:
                flags.append(body[3] is True)
            elif kind in ("list", "tuple") and isinstance(body, list):
                stack.extend(reversed(body))
            elif kind == "dict" and isinstance(body, list):
                stack.extend(reversed([p[1] for p in body if isinstance(p, list) and len(p) == 2]))
            elif kind == "namedtuple" and isinstance(body, list) and len(body) == 3:
                stack.extend(reversed(body[2]))
    return flags


def _substitute(value, outputs):
    """`value` with its tensors replaced, in order, by autograd's outputs."""
    if isinstance(value, torch.Tensor):
        return next(outputs)
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        return type(value)(*[_substitute(v, outputs) for v in value])
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, outputs) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, outputs) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- errors


_REMOTE_CLASSES: dict[type, type] = {}


def _remote_class(base: type) -> type:
    """A subclass of `base` whose str() is exactly the worker's message."""
    if base not in _REMOTE_CLASSES:
        def init(self, message):
            Exception.__init__(self, message)

        _REMOTE_CLASSES[base] = type(base.__name__, (base,), {
            "__init__": init, "__str__": lambda self: self.args[0]})
    return _REMOTE_CLASSES[base]


def rebuild_error(info) -> Exception:
    """The learner's exception, as the judge raises it (see the module docstring)."""
    if not (isinstance(info, dict) and all(isinstance(info.get(k), str)
                                           for k in ("type", "message", "frame"))):
        return WireError("a malformed error reply")
    if info["message"].startswith(SENTINEL):
        reference = info["message"].removeprefix(SENTINEL)
        return CheckFailed(f"uses minitok's reference {reference}, which is not your work",
                           REFERENCE_HINT)
    base = getattr(builtins, info["type"], None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(
            base, (StopIteration, StopAsyncIteration)):
        base = Exception
    try:
        err = _remote_class(base)(info["message"])
    except TypeError:
        err = _remote_class(Exception)(info["message"])
    err.learner_type = info["type"]
    err.learner_frame = info["frame"]
    return err


# --------------------------------------------------------------------------- proxies


class RemoteObject(Remote, Handle):
    """The judge's stand-in for the learner's function, or for an object it returned.

    `number` None is the exercise itself; otherwise the worker's handle number.
    """

    __slots__ = ("session",)

    def __init__(self, session: Session, number: int | None = None):
        object.__setattr__(self, "session", session)
        object.__setattr__(self, "wire_handle", number)

    def __call__(self, *args, **kwargs):
        return self.session.call(self.wire_handle, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or self.wire_handle is None:
            raise AttributeError(name)
        return self.session.getattr(self.wire_handle, name)

    def run_probe(self, probe_fn, args: tuple):
        return self.session.run_probe(probe_fn, args)

    def __repr__(self) -> str:
        return f"<an object in the grader's worker, handle {self.wire_handle}>"


# --------------------------------------------------------------------------- channels


def socket_exchange(sock, deadline: float):
    """A Session's exchange over a worker's socket, every reply before `deadline`."""

    def exchange(request: bytes):
        if time.monotonic() > deadline:
            raise TimeoutError
        send_frame(sock, b"", request)
        return recv_frame(sock, deadline)

    return exchange


def loopback(fn) -> RemoteObject:
    """`fn` behind the whole wire, in this process: the same pickles, Server, decoder and
    state sync as a worker process, without one (the check tests' "wire" mode)."""
    server = Server(target=fn)
    return RemoteObject(Session(server.reply))
