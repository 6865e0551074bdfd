"""The wire between the judge and a worker: frames, and the plain data the judge accepts back.

A frame is a 12-byte prefix (header length, payload length), a header and a payload.

- Judge -> worker: the payload is a pickle. The worker is the untrusted side and receives
  the judge's own inputs (tensors, configs, nn.Modules, generators) exactly as they are.
- Worker -> judge: the header is JSON and the payload holds the tensors' bytes. `unpack` and
  `decode` accept plain data only: None, bool, int, float (nan and inf spelled out), str,
  list, tuple, dict with str keys, a named tuple (rebuilt here from its name and fields),
  a dense tensor of an allowed dtype (rebuilt from bytes: a Tensor subclass arrives as its
  plain data, so `__torch_function__` tricks end here) and a handle (an object that stays in
  the worker). Nothing from a worker is unpickled, executed or taken as a verdict; anything
  malformed or too large is a WireError, which the judge turns into an "error" verdict.
  What a reply costs the judge is bounded by its size: each blob of tensor data is rebuilt
  at most once (a reply naming one blob a thousand times would make the judge allocate a
  thousand copies), and a named tuple has at most MAX_FIELDS fields.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import socket
import struct
import time

import torch

MAX_HEADER = 1 << 20  # bytes of JSON in one reply
MAX_PAYLOAD = 256 << 20  # bytes of tensor data in one reply
MAX_DEPTH = 32  # nesting of lists, dicts and tuples
MAX_DIMS = 16
MAX_FIELDS = 256  # fields of a named tuple
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}
PREFIX = struct.Struct("<IQ")


class WireError(Exception):
    """A reply the judge refuses: malformed, too large, or not plain data."""


class Unencodable(TypeError):
    """A value that is not plain data (the worker then keeps it and sends a handle)."""


SKIP = object()  # Encoder.encode_or_skip: the value is not plain data


# --------------------------------------------------------------------------- frames


def send_frame(sock: socket.socket, header: bytes, payload: bytes = b"") -> None:
    sock.sendall(PREFIX.pack(len(header), len(payload)) + header)
    if payload:
        sock.sendall(payload)


def _recv_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytearray:
    """`size` bytes from `sock`; TimeoutError past `deadline`, EOFError if the peer is gone."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        n = sock.recv_into(view[got:])  # socket.timeout is a TimeoutError
        if n == 0:
            raise EOFError
        got += n
    return buffer


def recv_frame(sock: socket.socket, deadline: float | None = None, max_header: int = MAX_HEADER,
               max_payload: int = MAX_PAYLOAD) -> tuple[bytes, bytearray]:
    """One frame's (header, payload); WireError when a length is over its cap."""
    header_size, payload_size = PREFIX.unpack(_recv_exactly(sock, PREFIX.size, deadline))
    if header_size > max_header:
        raise WireError(f"a reply header of {header_size:,} bytes (the limit is {max_header:,})")
    if payload_size > max_payload:
        raise WireError(f"a reply of {payload_size:,} bytes of tensor data (the limit is "
                        f"{max_payload:,})")
    header = bytes(_recv_exactly(sock, header_size, deadline))
    return header, _recv_exactly(sock, payload_size, deadline)


# --------------------------------------------------------------------------- judge -> worker


def _rebuild_generator(state: torch.Tensor) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(state)
    return generator


def _rebuild_leaf(data: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return data.requires_grad_(requires_grad)


class Handle:
    """An object that stays in the worker; the judge holds its number (see remote.RemoteObject)."""

    __slots__ = ("wire_handle",)


class _Pickler(pickle.Pickler):
    """Pickles the judge's inputs: generators by state, tensors with a graph as fresh leaves,
    and the worker's own objects (handles) by number."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Generator):
            return _rebuild_generator, (obj.get_state(),)
        if type(obj) is torch.Tensor and obj.requires_grad and not obj.is_leaf:
            return _rebuild_leaf, (obj.detach(), True)
        return NotImplemented

    def persistent_id(self, obj):
        return obj.wire_handle if isinstance(obj, Handle) else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, handles: dict):
        super().__init__(io.BytesIO(data))
        self.handles = handles

    def persistent_load(self, pid):
        return self.handles[pid]


def dump_request(request: dict) -> bytes:
    """A judge's request as a pickle (see _Pickler)."""
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(request)
    return out.getvalue()


def load_request(data, handles: dict) -> dict:
    """A request in the worker; `handles` resolves the worker's own objects the judge names."""
    return _Unpickler(bytes(data), handles).load()


# --------------------------------------------------------------------------- worker -> judge


def tensor_bytes(t: torch.Tensor) -> tuple[str, list[int], bytes]:
    """(dtype name, shape, bytes) of a tensor's plain data: whatever subclass it was."""
    plain = t.detach()
    if plain.layout != torch.strided:
        raise Unencodable(f"a {plain.layout} tensor (only dense tensors can be graded)")
    name = str(plain.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise Unencodable(f"a tensor of dtype {plain.dtype}")
    plain = plain.cpu().contiguous()
    data = plain.reshape(-1).view(torch.uint8).numpy().tobytes()
    return name, list(plain.shape), data


class Encoder:
    """Turns a worker's values into JSON-able plain data and tensor blobs.

    A value that is not plain data becomes a handle when `handles` is given (the object is
    kept there, the judge gets its number), else raises Unencodable. `tensors` collects the
    tensors in the order they are encoded, which is the order the judge decodes them.
    """

    def __init__(self, handles: dict | None = None):
        self.handles = handles
        self.blobs: list[bytes] = []
        self.tensors: list[torch.Tensor] = []

    def encode(self, value, plain: bool = False):
        """`value` as JSON-able data; `plain`: never make a handle (raise Unencodable)."""
        return self._encode(value, 0, plain or self.handles is None)

    def encode_or_skip(self, value):
        """`value` encoded as plain data, or SKIP (and nothing added) when it is not."""
        blobs, tensors = len(self.blobs), len(self.tensors)
        try:
            return self._encode(value, 0, True)
        except Unencodable:
            del self.blobs[blobs:], self.tensors[tensors:]
            return SKIP

    def _encode(self, value, depth: int, plain: bool):
        if depth > MAX_DEPTH:
            raise Unencodable("a value nested too deeply")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return {"float": repr(float(value))}
        if isinstance(value, torch.Tensor):
            return self._tensor(value)
        if isinstance(value, tuple) and hasattr(type(value), "_fields"):
            fields = [str(f) for f in type(value)._fields]
            return {"namedtuple": [type(value).__name__, fields,
                                   [self._encode(v, depth + 1, plain) for v in value]]}
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            return {kind: [self._encode(v, depth + 1, plain) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": [[str(k), self._encode(v, depth + 1, plain)]
                             for k, v in value.items()]}
        if plain:
            raise Unencodable(f"a {type(value).__name__}")
        number = len(self.handles) + 1
        self.handles[number] = value
        return {"handle": number}

    def _tensor(self, value: torch.Tensor):
        name, shape, data = tensor_bytes(value)
        self.blobs.append(data)
        self.tensors.append(value)
        return {"tensor": [len(self.blobs) - 1, name, shape, bool(value.requires_grad)]}

    def pack(self, message: dict) -> tuple[bytes, bytes]:
        """(header, payload) of a reply carrying `message` and this encoder's blobs."""
        header = {"message": message, "blobs": [len(b) for b in self.blobs]}
        return json.dumps(header, allow_nan=False).encode(), b"".join(self.blobs)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def unpack(header: bytes, payload) -> tuple[dict, list[memoryview]]:
    """A reply's message and its tensor blobs, checked: WireError if anything is off."""
    if len(header) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise WireError("a reply over the size limits")
    if not isinstance(payload, bytearray):  # tensors are rebuilt from writable memory
        payload = bytearray(payload)
    try:
        frame = json.loads(header, parse_constant=_no_constants)
    except (ValueError, RecursionError) as err:
        raise WireError(f"a reply that is not valid JSON ({err})") from None
    if not isinstance(frame, dict) or set(frame) != {"message", "blobs"}:
        raise WireError("a reply without exactly a message and its blob sizes")
    sizes, message = frame["blobs"], frame["message"]
    if not isinstance(message, dict) or not isinstance(sizes, list) or not all(
            type(n) is int and n >= 0 for n in sizes) or sum(sizes) != len(payload):
        raise WireError("a reply whose blob sizes do not add up to its payload")
    view, blobs, at = memoryview(payload), [], 0
    for n in sizes:
        blobs.append(view[at:at + n])
        at += n
    return message, blobs


class Decoder:
    """Rebuilds plain data from a reply (see `Encoder`); every check is here.

    `requires_grad`: give decoded float tensors the worker's requires_grad flag (as leaves).
    `remote`: makes the judge's stand-in for a handle number. `tensors` collects the decoded
    tensors in order.
    """

    MAX_NAMEDTUPLE_KINDS = 64

    def __init__(self, blobs: list[memoryview], remote=None, requires_grad: bool = True):
        self.blobs, self.remote, self.requires_grad = blobs, remote, requires_grad
        self.tensors: list[torch.Tensor] = []
        self.used: set[int] = set()  # blobs already rebuilt: each one may be used once
        self._namedtuples: dict = {}  # (name, fields) -> the class rebuilt for this reply

    def decode(self, value, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WireError("a value nested too deeply")
        if value is None or type(value) in (bool, int, str):
            return value
        if not isinstance(value, dict) or len(value) != 1:
            raise WireError(f"{type(value).__name__} where plain data was expected")
        ((kind, body),) = value.items()
        if kind == "float" and isinstance(body, str) and len(body) <= 40:
            return _float(body)
        if kind in ("list", "tuple") and isinstance(body, list):
            items = [self.decode(v, depth + 1) for v in body]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and isinstance(body, list):
            return self._dict(body, depth)
        if kind == "namedtuple" and isinstance(body, list) and len(body) == 3:
            return self._namedtuple(*body, depth)
        if kind == "tensor" and isinstance(body, list) and len(body) == 4:
            return self._tensor(*body)
        if kind == "handle" and type(body) is int and self.remote is not None:
            return self.remote(body)
        raise WireError(f"an unknown kind of value {kind!r}")

    def _dict(self, pairs: list, depth: int) -> dict:
        out = {}
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise WireError("a dict entry that is not a [str key, value] pair")
            out[pair[0]] = self.decode(pair[1], depth + 1)
        return out

    def _namedtuple(self, name, fields, values, depth: int):
        if not (isinstance(name, str) and isinstance(fields, list) and isinstance(values, list)
                and len(fields) == len(values) <= MAX_FIELDS
                and all(isinstance(f, str) for f in fields)):
            raise WireError("a malformed named tuple")
        key = (name, tuple(fields))
        if key not in self._namedtuples:
            if len(self._namedtuples) >= self.MAX_NAMEDTUPLE_KINDS:
                raise WireError("too many kinds of named tuple")
            try:
                self._namedtuples[key] = collections.namedtuple(name, fields)
            except (ValueError, TypeError) as err:
                raise WireError(f"a named tuple the judge cannot rebuild ({err})") from None
        return self._namedtuples[key](*[self.decode(v, depth + 1) for v in values])

    def _tensor(self, index, dtype_name, shape, requires_grad) -> torch.Tensor:
        if type(index) is not int or not 0 <= index < len(self.blobs):
            raise WireError("a tensor without its data")
        if index in self.used:
            raise WireError("two tensors that claim the same data")
        self.used.add(index)
        dtype = DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise WireError(f"a tensor of an unknown dtype {dtype_name!r}")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
                and all(type(n) is int and n >= 0 for n in shape)):
            raise WireError(f"a tensor with a malformed shape {shape!r}"[:200])
        blob = self.blobs[index]
        if math.prod(shape) * dtype.itemsize != len(blob):
            raise WireError(f"a tensor of shape {shape} whose data has {len(blob)} bytes")
        if len(blob) == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            raw = torch.frombuffer(blob, dtype=torch.uint8).clone()
            tensor = raw.view(dtype).reshape(shape)
        if self.requires_grad and requires_grad is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        self.tensors.append(tensor)
        return tensor


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise WireError(f"a float spelled {text!r}") from None
