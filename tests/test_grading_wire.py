"""The grader's parts, one at a time: the wire's strict decoder, the remote proxy (class
exercises, learner exceptions), the submission reader, the stripped library.

The whole path (judge, zygote, worker) is in tests/test_grade.py and tests/test_grade_hostile.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import time

import pytest
import torch

from minitok.checks import lesson01
from minitok.tools.grade import Report, escaped, render
from minitok.tools.grading import SENTINEL, wire
from minitok.tools.grading.remote import loopback
from minitok.tools.grading.sandbox import (
    allocate_uids,
    lesson_modules,
    release_uids,
    strip_function,
    stub_module,
)
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


def test_a_blob_rebuilds_one_tensor_and_a_named_tuple_has_few_fields():
    """A reply's cost to the judge is bounded by its size: naming one blob of tensor data
    many times would make the judge allocate a copy per name."""
    many = {"list": [{"tensor": [0, "uint8", [4], False]}] * 3}
    with pytest.raises(WireError, match="claim the same data"):
        Decoder([memoryview(bytearray(4))]).decode(many)
    fields = [f"f{i}" for i in range(wire.MAX_FIELDS + 1)]
    with pytest.raises(WireError, match="malformed named tuple"):
        Decoder([]).decode({"namedtuple": ["T", fields, [None] * len(fields)]})


def test_a_module_outside_the_lesson_imports_but_computes_nothing():
    source = "import math\nK = 3\n\n\ndef f(x):\n    return x + K\n\n\nclass C:\n" \
             "    size = 2\n\n    def g(self):\n        return 1\n"
    space: dict = {}
    exec(stub_module(source, "vq"), space)
    assert space["K"] == 3 and space["C"].size == 2
    for call, name in ((lambda: space["f"](1), "vq.f"), (lambda: space["C"]().g(), "vq.C")):
        with pytest.raises(NotImplementedError, match=re.escape(SENTINEL + name)):
            call()
    assert "minitok.vq" not in lesson_modules("lesson01")
    assert {"minitok.quantize", "minitok.checks.lesson01"} <= lesson_modules("lesson01")
    assert "minitok.vq" in lesson_modules("lesson02")
    # checkpoints.py, whose module the models import, beside minitok/checkpoints/ (the .pt files)
    assert {"minitok.tokenizer", "minitok.checkpoints"} <= lesson_modules("lesson03")


@pytest.mark.skipif(os.geteuid() != 0, reason="worker uids are only allocated as root")
def test_two_runs_never_share_worker_uids():
    from minitok.tools.grading.sandbox import Plan

    first, second = allocate_uids(2), allocate_uids(2)
    try:
        assert first != second and abs(first - second) >= 256
    finally:
        for base in (first, second):
            release_uids(Plan("none", None, 1.0, uid_base=base))


def test_printed_learner_text_cannot_draw_or_forge_a_verdict():
    text = "\x1b[2J\rok\n  [PASS] kmeans: fine\n  score: 7/7\u2028\u202e"
    assert escaped(text) == ("\\x1b[2J\\rok\n        |   [PASS] kmeans: fine"
                             "\n        |   score: 7/7\\u2028\\u202e")
    report = Report("a\nb.ipynb", "lesson01", exercises=[{
        "exercise": "kmeans", "status": "error", "message": text, "hint": "h\n[PASS]"}])
    lines = render(report).splitlines()
    assert [line for line in lines if not line.startswith(" ")] == ["a"]
    assert sum(line.startswith("  [") for line in lines) == 1
    assert sum(line.startswith("  score:") for line in lines) == 1
