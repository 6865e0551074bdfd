"""The grader's parts, one at a time: the wire's strict decoder, the remote proxy (class
exercises, learner exceptions), the submission reader, the stripped library.

The whole path (judge, zygote, worker) is in tests/test_grade.py and tests/test_grade_hostile.py.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import pytest
import torch

from minitok.checks import lesson01
from minitok.tools.grading import wire
from minitok.tools.grading.remote import loopback
from minitok.tools.grading.sandbox import strip_function
from minitok.tools.grading.submission import (
    Notebook,
    lesson_of,
    prejudge,
    split_cell,
    without_magics,
)
from minitok.tools.grading.wire import Decoder, Encoder, WireError, unpack


def _round_trip(value, handles=None):
    encoder = Encoder(handles)
    header, payload = encoder.pack({"value": encoder.encode(value)})
    message, blobs = unpack(header, payload)
    return Decoder(blobs, remote=lambda n: ("handle", n)).decode(message["value"])


# --------------------------------------------------------------------------- the decoder


def test_plain_data_crosses_the_wire():
    step = torch.nn.utils.rnn.PackedSequence  # any named tuple
    value = {"floats": [1.5, float("nan"), float("inf")], "ints": (1, -2**70, True, None),
             "text": "é", "named": step(torch.ones(2), torch.tensor([1]), None, None)}
    got = _round_trip(value)
    assert got["floats"][0] == 1.5 and got["floats"][1] != got["floats"][1]
    assert got["ints"] == (1, -2**70, True, None) and got["text"] == "é"
    assert type(got["named"]).__name__ == "PackedSequence" and got["named"].batch_sizes.tolist() == [1]


@pytest.mark.parametrize("tensor", [
    torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t(),  # not contiguous
    torch.tensor([True, False]), torch.zeros(0, 3), torch.tensor(7, dtype=torch.int8),
    torch.randn(3, requires_grad=True),
])
def test_tensors_come_back_equal_and_plain(tensor):
    got = _round_trip(tensor)
    assert type(got) is torch.Tensor and got.dtype == tensor.dtype
    assert torch.equal(got, tensor.detach()) and got.requires_grad == tensor.requires_grad


def test_a_tensor_subclass_arrives_as_its_plain_data():
    class Loud(torch.Tensor):
        pass

    got = _round_trip(torch.ones(2).as_subclass(Loud))
    assert type(got) is torch.Tensor and torch.equal(got, torch.ones(2))


def test_objects_that_are_not_plain_data_stay_behind_as_handles():
    handles = {}
    assert _round_trip([object(), object()], handles) == [("handle", 1), ("handle", 2)]
    assert len(handles) == 2


def _reply(message: dict, blobs: list[bytes] = ()) -> tuple[bytes, bytes]:
    header = json.dumps({"message": message, "blobs": [len(b) for b in blobs]}).encode()
    return header, b"".join(blobs)


@pytest.mark.parametrize("value, words", [
    ({"tensor": [0, "float32", [3], False]}, "whose data has 8 bytes"),  # 2 floats for 3
    ({"tensor": [0, "complex64", [1], False]}, "unknown dtype"),
    ({"tensor": [0, "float32", [-2], False]}, "malformed shape"),
    ({"tensor": [5, "float32", [2], False]}, "without its data"),
    ({"pickle": "gASV"}, "unknown kind"),
    ({"list": [1], "tuple": [2]}, "where plain data was expected"),
    ([1, 2], "where plain data was expected"),
    ({"float": "twelve"}, "a float spelled"),
    ({"dict": [[1, 2]]}, "not a [str key, value] pair"),
    ({"namedtuple": ["1bad", ["x"], [1]]}, "cannot rebuild"),
    ({"handle": 3}, "unknown kind"),  # no handles where none are expected
])
def test_the_decoder_refuses_what_is_not_plain_data(value, words):
    message, blobs = unpack(*_reply({"value": value}, [b"\0" * 8]))
    with pytest.raises(WireError, match=re.escape(words)):
        Decoder(blobs).decode(message["value"])


def test_nesting_and_sizes_are_capped():
    deep = {"value": None}
    for _ in range(wire.MAX_DEPTH + 5):
        deep = {"list": [deep]}
    message, blobs = unpack(*_reply({"value": deep}))
    with pytest.raises(WireError, match="nested too deeply"):
        Decoder(blobs).decode(message["value"])
    with pytest.raises(WireError, match="do not add up"):
        unpack(json.dumps({"message": {}, "blobs": [4]}).encode(), b"12")
    with pytest.raises(WireError, match="not valid JSON"):
        unpack(b'{"message": NaN}', b"")
    with pytest.raises(WireError, match="exactly a message"):
        unpack(json.dumps({"message": {}, "blobs": [], "verdict": "passed"}).encode(), b"")


def test_frames_are_refused_past_their_caps_and_time_out():
    ours, theirs = socket.socketpair()
    theirs.sendall(struct.pack("<IQ", 10, wire.MAX_PAYLOAD + 1))
    with pytest.raises(WireError, match="the limit is"):
        wire.recv_frame(ours, time.monotonic() + 5)
    with pytest.raises(TimeoutError):
        wire.recv_frame(ours, time.monotonic() + 0.2)
    theirs.close()
    with pytest.raises(EOFError):
        wire.recv_frame(ours, time.monotonic() + 5)
    ours.close()


# --------------------------------------------------------------------------- the proxy


class Scaler(torch.nn.Module):
    """A class a learner might write for a class exercise."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(size))

    def forward(self, x):
        return x * self.weight

    def describe(self, prefix: str) -> str:
        return f"{prefix}: {self.weight.numel()} weights"


def test_a_class_exercise_works_through_handles():
    remote = loopback(Scaler)
    model = remote(3)
    model.load_state_dict({"weight": torch.tensor([1.0, 2.0, 3.0])})
    assert torch.equal(model(torch.ones(3)), torch.tensor([1.0, 2.0, 3.0]))
    assert model.describe("scaler") == "scaler: 3 weights"
    assert torch.equal(model.state_dict()["weight"], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(model.weight, torch.tensor([1.0, 2.0, 3.0]))


def test_learner_exceptions_keep_their_type_message_and_line():
    def broken(kind):
        if kind == "runtime":
            raise RuntimeError("backward through the graph a second time")
        if kind == "key":
            return {}["missing"]
        raise SystemExit(3)

    remote = loopback(broken)
    with pytest.raises(RuntimeError, match="second time") as info:
        remote("runtime")
    assert "raise RuntimeError" in info.value.learner_frame
    with pytest.raises(KeyError) as info:
        remote("key")
    assert str(info.value) == "'missing'"
    with pytest.raises(Exception) as info:  # an Exception: a check's except cannot miss it
        remote("exit")
    assert info.value.learner_type == "SystemExit"


def test_in_place_changes_and_gradients_reach_the_judges_objects():
    def learner(z, generator, log):
        log.append(torch.randint(0, 9, (2,), generator=generator))
        z.data.mul_(2)
        return (z * 3).sum()

    z = torch.ones(2, requires_grad=True)
    g, log = torch.Generator().manual_seed(0), []
    loss = loopback(learner)(z, g, log)
    loss.backward()
    assert torch.equal(z.detach(), torch.tensor([2.0, 2.0])) and len(log) == 1
    assert torch.equal(z.grad, torch.tensor([3.0, 3.0]))
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


# --------------------------------------------------------------------------- submissions


def test_magics_are_dropped_line_by_line_and_some_cells_skipped():
    assert without_magics("%matplotlib inline\nimport torch\n!ls") == "\nimport torch\n"
    assert without_magics("def f():\n    %time g()\n    return 1") == \
        "def f():\n    pass\n    return 1"
    assert without_magics("%%time\nx = 1") == "\nx = 1"
    assert without_magics("%%bash\nrm -rf /") is None
    assert without_magics("y = (a\n!= b)") == "y = (a\n!= b)"  # != is not a shell line


def test_a_syntax_error_costs_only_its_own_statement():
    cell = ("import torch\n\ndef good(x):\n    return x\n\n\ndef bad(x):\n    return (x +\n\n"
            "@decorator\ndef after(x):\n    '''a docstring\nwith a line at column 0'''\n"
            "    return x\n")
    statements = split_cell(4, cell)
    kinds = [(s.line, s.node.__class__.__name__ if s.node else s.error) for s in statements]
    assert kinds[:2] == [(1, "Import"), (3, "FunctionDef")]
    assert kinds[2][0] == 7 and "line" in kinds[2][1]
    assert kinds[3] == (10, "FunctionDef") and statements[3].text.startswith("@decorator")
    assert statements[1].wire("def") == (4, 3, "def good(x):\n    return x", "def", ["good"], "",
                                         ["x"])


def _prejudged(*cells):
    notebook = Notebook([s for i, cell in enumerate(cells, 1) for s in split_cell(i, cell)])
    lesson, alias = lesson_of(notebook)
    checks = {"nearest_code": lesson01.nearest_code, "squared_distances": lesson01.squared_distances}
    return {name: (r.status, r.message) for name, r in prejudge(notebook, checks, alias).items()}


HEAD = "from minitok.checks import lesson01 as check\nfrom minitok import quantize"


def test_prejudging_finds_minitoks_reference_however_it_is_named():
    decided = _prejudged(HEAD, "import minitok.quantize as q\nfrom minitok.vq import nearest_code "
                         "as nc\n\ndef squared_distances(z, c):\n    return q.squared_distances(z, c)"
                         "\n\ndef nearest_code(z, c, chunk_size=None):\n    return nc(z, c)")
    assert decided["squared_distances"][0] == "failed"
    assert "quantize.squared_distances (cell 2, line 5)" in decided["squared_distances"][1]
    assert decided["nearest_code"][0] == "failed"  # re-exported by minitok.vq, still the same


def test_prejudging_lets_through_other_minitok_functions_and_the_check_line():
    decided = _prejudged(HEAD, "def nearest_code(z, c, chunk_size=None):\n"
                         "    return quantize.squared_distances(z, c).argmin(1)\n\n\n"
                         "nearest_code = check.nearest_code(nearest_code)")
    assert "nearest_code" not in decided  # it will run: squared_distances is another exercise
    assert decided["squared_distances"][0] == "not done"


# --------------------------------------------------------------------------- the library


def test_strip_function_replaces_only_the_body():
    source = ("import math\n\n\ndef keep(x):\n    return x\n\n\nclass Model:\n"
              "    def forward(self, x):\n        '''Doc.'''\n        return x * 2\n\n"
              "    def other(self):  # é\n        return 1\n\n\ndef one_line(x): return x\n")
    out = strip_function(source, "Model.forward", "hidden")
    assert "return x * 2" not in out and "raise NotImplementedError('hidden')" in out
    assert out.replace("        raise NotImplementedError('hidden')", "        '''Doc.'''\n"
                       "        return x * 2") == source
    assert "def one_line(x): raise NotImplementedError('h')" in strip_function(source, "one_line",
                                                                                "h")


def test_strip_function_of_a_class_keeps_the_class_and_strips_every_method():
    source = ("import torch.nn as nn\n\n\nclass Layer(nn.Module):\n    '''Doc.'''\n\n"
              "    size = 3\n\n    def __init__(self, n):\n        super().__init__()\n"
              "        self.n = n\n\n    def forward(self, x):\n        return x * self.n\n\n\n"
              "class Sub(Layer):\n    pass\n")
    out = strip_function(source, "Layer", "hidden")
    assert out.count("raise NotImplementedError('hidden')") == 2
    assert "size = 3" in out and "class Sub(Layer)" in out and "self.n = n" not in out
    namespace = {}
    exec(compile(out, "stripped", "exec"), namespace)  # the module still imports
    with pytest.raises(NotImplementedError, match="hidden"):
        namespace["Sub"](2)
