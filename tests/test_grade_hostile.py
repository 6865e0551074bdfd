"""`minitok grade` against hostile and broken submissions: one table row per attack.

Every row is a small lesson-01 notebook and what must happen to it: its score, the status and
the words of some exercises' verdicts, or the reason it cannot be graded. All rows, and a
solved classmate, are graded in one run per isolation mode (bubblewrap, when it works here,
and none); module-level tests then check the run's side effects: the victim file, the
classmate's notebook and the report are unchanged, no marker file was created, nothing
reached the network, and no process is left.

Rows marked `isolated` rely on the worker's own uid (root) or the sandbox; rows marked
`sandbox` hold only in bubblewrap (reading other files: see the README's threat model).
Rows with a `kind` are not notebooks at all (a symbolic link to the solution, a FIFO, a
folder, a symlink loop, a dangling symlink, a file name full of escapes). While the run
grades, a second run grades a classmate in another process: no worker of the first may
reach it (a kill(-1) row runs as it grades).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from notebooks import ROOT

from minitok import quantize
from minitok.checks import exercises_in, lesson01
from minitok.tools.grade import grade
from minitok.tools.grading import sandbox
from minitok.tools.grading.sandbox import SCRATCH, bwrap_problem

pytestmark = pytest.mark.slow

HEAD = "import os, sys, time\nimport torch\nfrom minitok import quantize\n" \
       "from minitok.checks import lesson01 as check"
USAGE = "torch.unique(indices).numel() / num_codes"  # a correct codebook_usage
GOOD = f"def codebook_usage(indices, num_codes):\n    return {USAGE}"
SECRET = "CLASSMATE-SECRET-7f3a"
TIMEOUT = 10  # CPU seconds; the wall-clock backstop is twice that (the kill(-1) row's)
JOBS = 2
ROOT_USER = os.geteuid() == 0


@dataclass
class Row:
    """An attack and what must happen. `expect`: exercise -> (status, words in message)."""

    name: str
    cells: list
    score: int | None = 0
    expect: dict = field(default_factory=dict)
    error: str | None = None  # words of a submission-level error ("cannot grade")
    raw: bytes | None = None  # the file's bytes, when it is not a notebook
    needs: str = ""  # "isolated": sandbox or root; "sandbox": bubblewrap only; "root"
    kind: str = ""  # not a notebook file: "symlink", "fifo", "folder", "loop", "dangling";
    # "escapes": a notebook whose file name holds escapes


FORGED = [
    Row("the reference imported in one line", [HEAD, "from minitok.quantize import "
        "squared_distances, nearest_code, quantize as quantize_feature_map, codebook_usage, "
        "perplexity, kmeans_step, kmeans"],
        expect={name: ("failed", "minitok's reference") for name in (
            "squared_distances", "nearest_code", "quantize_feature_map", "codebook_usage",
            "perplexity", "kmeans_step", "kmeans")}),
    Row("the reference called in the def", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    return quantize.codebook_usage(indices, num_codes)"],
        expect={"codebook_usage": ("failed", "uses minitok's reference quantize.codebook_usage")}),
    Row("the reference aliased", [HEAD, "from minitok.quantize import codebook_usage as usage",
        "def codebook_usage(indices, num_codes):\n    return usage(indices, num_codes)"],
        expect={"codebook_usage": ("failed", "minitok's reference")}),
    Row("the reference assigned", [HEAD, "codebook_usage = quantize.codebook_usage"],
        expect={"codebook_usage": ("failed", "minitok's reference, bound by an assignment")}),
    Row("the reference wrapped by a decorator", [HEAD, "import functools",
        "@functools.wraps(quantize.codebook_usage)\ndef codebook_usage(indices, num_codes):\n"
        "    return 0.0"], expect={"codebook_usage": ("failed", "minitok's reference")}),
    Row("the reference called through a helper", [HEAD, "def helper(indices, num_codes):\n"
        "    return quantize.codebook_usage(indices, num_codes)\n\n\n"
        "def codebook_usage(indices, num_codes):\n    return helper(indices, num_codes)"],
        expect={"codebook_usage": ("failed", "minitok's reference")}),
    Row("the reference by a computed name", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    name = 'codebook' + '_usage'\n    return getattr(quantize, name)(indices, num_codes)"],
        expect={"codebook_usage": ("failed", "uses minitok's reference quantize.codebook_usage")}),
    Row("the reference through sys.modules", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    module = sys.modules['minitok.' + 'quantize']\n"
        "    return module.__dict__['codebook' + '_usage'](indices, num_codes)"],
        expect={"codebook_usage": ("failed", "uses minitok's reference")}),
    Row("the reference reloaded", [HEAD, "class Reload:\n    import importlib\n"
        "    importlib.reload(quantize)", "def codebook_usage(indices, num_codes):\n"
        "    return vars(quantize)['codebook' + '_usage'](indices, num_codes)"],
        expect={"codebook_usage": ("failed", "uses minitok's reference")}),
    Row("the reference executed from minitok's own file", [HEAD, "class Steal:\n"
        "    space = {}\n    try:\n        exec(open(REALSOURCE).read(), space)\n"
        "    except OSError:\n        pass",
        "def codebook_usage(indices, num_codes):\n"
        "    return Steal.space['codebook' + '_usage'](indices, num_codes)"],
        expect={"codebook_usage": ("error", "KeyError")}, needs="sandbox"),
    Row("the check's own reference", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    return check.codebook_usage.reference(indices, num_codes)"],
        expect={"codebook_usage": ("failed", "minitok's reference")}),
    Row("torch.equal and torch.allclose replaced", [HEAD, "class Patch:\n"
        "    torch.equal = lambda *a, **k: True\n    torch.allclose = lambda *a, **k: True\n"
        "    torch.Tensor.__eq__ = lambda *a: True",
        "def squared_distances(z, codebook):\n"
        "    return torch.zeros(z.shape[0], codebook.shape[0])"],
        expect={"squared_distances": ("failed", "")}),
    Row("the checks' expectations and tests replaced", [HEAD, "class Patch:\n"
        "    from minitok.checks import _core, exercises_in\n"
        "    for c in exercises_in(check).values():\n        c.test = lambda fn: 'all good'\n"
        "    check.expect_close = check.expect_equal = lambda *a, **k: None\n"
        "    _core.expect = _core.run_check = lambda *a, **k: None",
        "def codebook_usage(indices, num_codes):\n    return 1.0"],
        expect={"codebook_usage": ("failed", "should be 0.3")}),
    Row("a Tensor subclass whose __torch_function__ says True", [HEAD,
        "class Liar(torch.Tensor):\n    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        return True",
        "def squared_distances(z, codebook):\n"
        "    return torch.zeros(z.shape[0], codebook.shape[0]).as_subclass(Liar)"]),
    Row("a float whose == is always True", [HEAD, "class Liar(float):\n"
        "    def __eq__(self, other):\n        return True",
        "def codebook_usage(indices, num_codes):\n    return Liar(7.0)"],
        expect={"codebook_usage": ("failed", "should be 0.3, got 7")}),
    Row("the checker's frames read", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    frame = sys._getframe()\n    while frame is not None:\n"
        "        for value in frame.f_locals.values():\n"
        "            if isinstance(value, float):\n                return value\n"
        "        frame = frame.f_back\n    return -1.0"]),
    Row("a fake verdict printed, then os._exit(0)", [HEAD,
        "def codebook_usage(indices, num_codes):\n    print('{\"exercise\": \"codebook_usage\", "
        "\"status\": \"passed\", \"message\": \"ok\", \"hint\": null}', flush=True)\n"
        "    os._exit(0)"],
        expect={"codebook_usage": ("error", "ended before answering (exit code 0)")}),
    Row("an atexit hook that prints a verdict", [HEAD, "class Hook:\n    import atexit\n"
        "    atexit.register(print, '{\"status\": \"passed\"}')",
        "def codebook_usage(indices, num_codes):\n    raise NotImplementedError"],
        expect={"codebook_usage": ("not done", "")}),
    Row("json.dumps wrapped in a class body", [HEAD, "class Wrap:\n    import json\n"
        "    json.dumps = lambda *a, **k: '{\"message\": {\"value\": {\"float\": \"0.3\"}, "
        "\"state\": [null, null]}, \"blobs\": []}'", GOOD.replace(USAGE, "Wrap and 0.0")],
        expect={"codebook_usage": ("error", "could not read")}),
    Row("raw bytes written to the judge's channel", [HEAD,
        "def codebook_usage(indices, num_codes):\n    import struct\n"
        "    forged = b'{\"message\": {\"status\": \"passed\"}, \"blobs\": []}'\n"
        "    os.write(3, struct.pack('<IQ', len(forged), 0) + forged)\n    time.sleep(60)"],
        expect={"codebook_usage": ("error", "could not read your function's answer")}),
    Row("a reply claiming 10 GB", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    import struct\n    os.write(3, struct.pack('<IQ', 2, 10 * 2**30) + b'{}')\n"
        "    time.sleep(60)"], expect={"codebook_usage": ("error", "the limit is")}),
    Row("one blob of tensor data named a hundred times (3 GB for the judge)", [HEAD,
        "def codebook_usage(indices, num_codes):\n    import json, struct\n"
        "    n = 32 * 2**20\n    value = {'list': [{'tensor': [0, 'uint8', [n], False]}] * 100}\n"
        "    header = json.dumps({'message': {'value': value, 'state': [None, None]}, "
        "'blobs': [n]}).encode()\n"
        "    os.write(3, struct.pack('<IQ', len(header), n) + header)\n"
        "    view = memoryview(bytes(n))\n    while view:\n"
        "        view = view[os.write(3, view):]\n    time.sleep(60)"],
        expect={"codebook_usage": ("error", "claim the same data")}),
    Row("minitok's other modules that compute the answers", [HEAD, "from minitok import vq",
        "def perplexity(indices, num_codes):\n"
        "    return vq.usage_stats(indices, num_codes)[0].item()",
        "def codebook_usage(indices, num_codes):\n"
        "    return vq.usage_stats(indices, num_codes)[1].item()",
        "def quantize_feature_map(z, codebook):\n"
        "    layer = vq.VectorQuantizer(codebook.shape[0], codebook.shape[1])\n"
        "    layer.codebook.data = codebook.clone()\n    out = layer(z)\n"
        "    return out.quantized, out.indices"],
        expect={"perplexity": ("failed", "minitok's reference vq.usage_stats"),
                "codebook_usage": ("failed", "minitok's reference vq.usage_stats"),
                "quantize_feature_map": ("failed", "minitok's reference vq.VectorQuantizer")}),
    Row("minitok's bytecode found on disk executed", [HEAD, "class Steal:\n"
        "    import marshal\n    space = {}\n    try:\n        cached = os.path.join("
        "os.path.dirname(REALSOURCE), '__pycache__', 'quantize.' + sys.implementation.cache_tag"
        " + '.pyc')\n        data = open(cached, 'rb').read()\n"
        "        exec(marshal.loads(data[16:]), space)\n    except OSError:\n        pass",
        "def codebook_usage(indices, num_codes):\n"
        "    return Steal.space['codebook' + '_usage'](indices, num_codes)"],
        expect={"codebook_usage": ("error", "KeyError")}, needs="sandbox"),
    Row("another exercise's copy of minitok executed", [HEAD, "import glob, minitok",
        "def codebook_usage(indices, num_codes):\n"
        "    run = os.path.dirname(os.path.dirname(os.path.dirname(minitok.__file__)))\n"
        "    for path in glob.glob(run + '/*/minitok/quantize.py'):\n        space = {}\n"
        "        try:\n            exec(open(path).read(), space)\n"
        "            return space['codebook_usage'](indices, num_codes)\n"
        "        except Exception:\n            pass\n    return 0.0"],
        expect={"codebook_usage": ("failed", "")}, needs="isolated"),
    Row("ANSI escapes, carriage returns and verdict lines in messages and a file name", [HEAD,
        "def codebook_usage(indices, num_codes):\n    raise ValueError('\\x1b[2J\\x1b[H\\r'\n"
        "        '  [PASS] codebook_usage: ok\\n  score: 7/7\\n[PASS] perplexity\\u2028x')"],
        expect={"codebook_usage": ("error", "ValueError")}, kind="escapes"),
]

HARM = [
    Row("code run at load by a default, a decorator and a class body", [HEAD,
        "def deco(f):\n    os.system('touch ' + MARKER + '-decorator')\n    return f",
        "class Body:\n    os.system('touch ' + MARKER + '-class')",
        "@deco\ndef codebook_usage(indices, num_codes, _=os.system('touch ' + MARKER)):\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("shell commands, subprocess, rename, open for writing, os reloaded", [HEAD,
        "class Reload:\n    import importlib\n    importlib.reload(os)",
        "def codebook_usage(indices, num_codes):\n    import subprocess\n"
        "    os.system('rm -f ' + VICTIM + '; echo pwned > ' + VICTIM)\n"
        "    subprocess.run(['rm', '-f', VICTIM])\n    for attack in (\n"
        "        lambda: os.rename(VICTIM, VICTIM + '.moved'),\n"
        "        lambda: open(VICTIM, 'w').write('pwned'),\n"
        "        lambda: os.remove(VICTIM),\n    ):\n        try:\n"
        "            attack()\n        except OSError:\n            pass\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("the network through _socket and a subprocess", [HEAD,
        "def codebook_usage(indices, num_codes):\n    import _socket, subprocess\n    try:\n"
        "        s = _socket.socket()\n        s.settimeout(2)\n"
        "        s.connect(('127.0.0.1', PORT))\n        s.send(b'leak')\n"
        "    except OSError:\n        pass\n    subprocess.run([sys.executable, '-c', "
        "'import socket; socket.create_connection((\"127.0.0.1\", %d), 2).send(b\"leak\")' "
        "% PORT])\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("a classmate's notebook read into the feedback", [HEAD,
        "def codebook_usage(indices, num_codes):\n"
        "    raise ValueError(open(CLASSMATE).read()[-3000:])"],
        expect={"codebook_usage": ("error", "FileNotFoundError")}, needs="sandbox"),
    Row("a classmate's notebook overwritten", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    try:\n        open(CLASSMATE, 'w').write('{}')\n    except OSError:\n        pass\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("a detached child that rewrites the report later", [HEAD,
        "def codebook_usage(indices, num_codes):\n    if os.fork() == 0:\n        os.setsid()\n"
        "        if os.fork() == 0:\n            for _ in range(600):  # once it is written\n"
        "                if os.path.exists(REPORT):\n                    break\n"
        "                time.sleep(0.1)\n"
        "            open(REPORT, 'w').write('{\"forged\": 1}')\n        os._exit(0)\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("forked children that never end", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    for _ in range(5):\n        if os.fork() == 0:\n            while True:\n"
        f"                time.sleep(1)\n    return {USAGE}"], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("a 3 GB allocation", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    return len(bytearray(3 * 2**30))"],
        expect={"codebook_usage": ("error", "MemoryError")}),
    Row("the grader killed with os.kill(getppid())", [HEAD,
        "def codebook_usage(indices, num_codes):\n    import signal\n"
        f"    os.kill(os.getppid(), signal.SIGKILL)\n    return {USAGE}"],
        expect={"codebook_usage": ("error", "PermissionError")}, needs="isolated"),
    Row("its zygote and the process above it ptraced", [HEAD,
        "def codebook_usage(indices, num_codes):\n    import ctypes\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    with open(f'/proc/{os.getppid()}/stat') as f:\n"
        "        above = int(f.read().rsplit(')', 1)[1].split()[1])\n"
        "    for pid in (os.getppid(), above):\n"
        "        if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH: it could rewrite them\n"
        f"            return -1.0\n    return {USAGE}"], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("every process it may signal killed", [HEAD, "def codebook_usage(indices, num_codes):\n"
        f"    import signal\n    os.kill(-1, signal.SIGKILL)\n    return {USAGE}"], score=1,
        expect={"codebook_usage": ("passed", "")}, needs="isolated"),
    Row("a fork bomb", [HEAD, "def codebook_usage(indices, num_codes):\n    while True:\n"
        "        os.fork()"], expect={"codebook_usage": ("error", "")}, needs="root"),
    Row(f"kill(-1) for {TIMEOUT + 5} s while another run grades", [HEAD,
        "def codebook_usage(indices, num_codes, _once=[]):\n    import signal\n"
        f"    if not _once:\n        _once.append(1)\n        end = time.time() + {TIMEOUT + 5}\n"
        "        while time.time() < end:\n            try:\n"
        "                os.kill(-1, signal.SIGKILL)\n            except OSError:\n"
        f"                pass\n            time.sleep(0.05)\n    return {USAGE}"], score=1,
        expect={"codebook_usage": ("passed", "")}, needs="isolated"),
    Row("a file left in /tmp and in its scratch folder", [HEAD,
        "def codebook_usage(indices, num_codes):\n"
        "    open('/tmp/minitok-left-behind', 'w').write('x')\n"
        "    open(os.path.join(os.environ['TMPDIR'], 'left'), 'w').write('x')\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("a later submission looks for it", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    if os.path.exists('/tmp/minitok-left-behind'):\n"
        "        raise ValueError('found what another submission left in /tmp')\n"
        f"    return {USAGE}"], score=1, expect={"codebook_usage": ("passed", "")},
        needs="isolated"),
    Row("2 GB written under /tmp, /dev/shm, /var/tmp and its scratch folder", [HEAD,
        "def codebook_usage(indices, num_codes):\n    total, chunk = 0, b'x' * 2**20\n"
        "    for folder in ('/tmp', '/dev/shm', '/var/tmp', os.environ['TMPDIR']):\n"
        "        for i in range(2048):\n            try:\n"
        "                with open(f'{folder}/fill-{i}', 'wb') as f:\n"
        "                    f.write(chunk)\n                total += len(chunk)\n"
        "            except OSError:\n                break\n"
        "    raise ValueError(f'wrote {total} bytes')"],
        expect={"codebook_usage": ("error", "wrote")}, needs="isolated"),
    Row("an infinite loop", [HEAD, "def codebook_usage(indices, num_codes):\n    while True:\n"
        "        pass"], expect={"codebook_usage": ("error", f"timed out after {TIMEOUT} s")}),
    Row("100 MB printed", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    sys.stdout.write('x' * 10**8)\n    sys.stdout.flush()\n"
        f"    return {USAGE}"], expect={"codebook_usage": ("error", "File too large")}),
]

BAD_FILES = [
    Row("not JSON", [], raw=b"{ this is not json", error="is not valid JSON", score=None),
    Row("JSON that is not a notebook", [], raw=b"[1, 2, 3]", error="not a notebook",
        score=None),
    Row("not UTF-8", [], raw=b'{"cells": ["\xff\xfe"]}', error="not UTF-8", score=None),
    Row("2.1 M characters of code", [], raw=b'{"cells": [{"cell_type": "code", "source": "'
        + b"x = 1\\n" * (2_100_000 // 6) + b'"}]}', error="at most 2,000,000 characters of code",
        score=None),
    Row("cells that are not objects, a source that is a number", [1, "text", None, {
        "cell_type": "code", "source": 5}, HEAD, GOOD], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("a def holding a 400-term sum", [HEAD, "def codebook_usage(indices, num_codes):\n"
        f"    return ({' + '.join(['0'] * 400)}) + {USAGE}"], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("no lesson import", ["import torch", GOOD], error="which lesson?", score=None),
    Row("a lesson that does not exist", [HEAD.replace("lesson01", "lesson99"), GOOD],
        error="no lesson lesson99", score=None),
    Row("a symbolic link to the solution", [], kind="symlink", error="symbolic link",
        score=None),
    Row("a FIFO", [], kind="fifo", error="not a regular file", score=None),
    Row("a folder", [], kind="folder", error="is a folder", score=None),
    Row("a symlink loop", [], kind="loop", error="symbolic link", score=None),
    Row("a dangling symlink", [], kind="dangling", error="symbolic link", score=None),
]

HONEST = [
    Row("%matplotlib inline in the import cell", ["%matplotlib inline\n" + HEAD, GOOD],
        score=1, expect={"codebook_usage": ("passed", "")}),
    Row("an import of a package that is not installed", [
        HEAD + "\nimport not_installed_xyz", GOOD, "def perplexity(indices, num_codes):\n"
        "    return not_installed_xyz.perplexity(indices)"], score=1,
        expect={"codebook_usage": ("passed", ""),
                "perplexity": ("error", "not_installed_xyz is not installed in the grader")}),
    Row("a syntax error in one def of a cell", [HEAD, GOOD + "\n\n\n"
        "def perplexity(indices, num_codes):\n    return (indices +\n"], score=1,
        expect={"codebook_usage": ("passed", ""), "perplexity": ("error", "syntax error")}),
    Row("modules the grader did not import already", [HEAD, "import colorsys",
        "def codebook_usage(indices, num_codes):\n    import shlex, minitok.vq\n"
        f"    return {USAGE} + 0 * len(shlex.split('a b')) * colorsys.ONE_THIRD"], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("%%time on a def cell", [HEAD, "%%time\n" + GOOD], score=1,
        expect={"codebook_usage": ("passed", "")}),
    Row("a default argument from a training cell", [HEAD, "steps = int('10')",
        "def codebook_usage(indices, num_codes, steps=steps):\n" f"    return {USAGE}"],
        expect={"codebook_usage": ("error", "steps is not defined outside the notebook: cell "
                                   "2, line 1 binds it, but it calls a function")}),
    Row("an error names the learner's line", [HEAD, "def codebook_usage(indices, num_codes):\n"
        "    counts = indices.bincount()\n    return counts.no_such_method()"],
        expect={"codebook_usage": ("error", "(line 3: return counts.no_such_method())")}),
    Row("a sleep just under the time limit", [HEAD,
        "def codebook_usage(indices, num_codes, _slept=[]):\n    if not _slept:\n"
        f"        time.sleep({TIMEOUT - 2})\n        _slept.append(1)\n    return {USAGE}"],
        score=1, expect={"codebook_usage": ("passed", "")}),
]

ROWS = FORGED + HARM + BAD_FILES + HONEST
MODES = ["bwrap", "none"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:60]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Listener:
    """A TCP server on 127.0.0.1 that records whether anything connected."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while self.running:
            try:
                self.server.accept()[0].close()
                self.connections += 1
            except OSError:
                pass

    def close(self):
        self.running = False
        self.thread.join()
        self.server.close()


def _make(row: Row, path: Path, paths: dict) -> Path:
    """The row's submission file at `path` (or beside it, for a file name with escapes)."""
    if row.kind == "symlink":
        path.symlink_to(ROOT / "solutions" / "01_vector_quantization.ipynb")
    elif row.kind == "fifo":
        os.mkfifo(path)
    elif row.kind == "folder":
        path.mkdir()
    elif row.kind == "loop":
        path.symlink_to(path)
    elif row.kind == "dangling":
        path.symlink_to(path.parent / "no-such-file.ipynb")
    else:
        if row.kind == "escapes":
            path = path.with_name("evil\x1b[2J\r  [PASS] x\n  score: 7-7.ipynb")
        content = {"cells": [_cell(c, paths) for c in row.cells], "metadata": {},
                   "nbformat": 4, "nbformat_minor": 5}
        path.write_bytes(row.raw if row.raw is not None else json.dumps(content).encode())
    return path


def _grader_processes(marker: str, uids: list[int]) -> list[str]:
    """This run's zygotes and workers (their command line names `marker`, the run's folder)
    and anything running as one of its workers' uids, anywhere on the machine."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
            command = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        mine = [base + slot for base in uids for slot in range(JOBS)]
        if uid in mine or marker.encode() in command:
            found.append(f"{entry.name}: {command[:200]!r}")
    return found


@pytest.fixture(scope="module", params=MODES)
def run(request, tmp_path_factory):
    """One grading run of every row (and a solved classmate) in one isolation mode."""
    mode = request.param
    if mode == "bwrap" and bwrap_problem():
        pytest.skip(f"no sandbox here: {bwrap_problem()}")
    base = tmp_path_factory.mktemp(f"hostile-{mode}")
    base.chmod(0o700)
    victim = base / "instructor" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("the instructor's file\n")
    classmate = base / "classmates" / "classmate.ipynb"
    classmate.parent.mkdir()
    solution = (ROOT / "solutions" / "01_vector_quantization.ipynb").read_text()
    classmate.write_text(solution.replace("import math", f"import math  # {SECRET}", 1))
    listener = _Listener()
    report = base / "reports" / "report.json"
    marker = base / "marker"
    paths = {"VICTIM": victim, "CLASSMATE": classmate, "REPORT": report, "MARKER": marker,
             "PORT": listener.port, "REALSOURCE": Path(quantize.__file__)}
    submissions = base / "submissions"
    submissions.mkdir()
    files = {row.name: _make(row, submissions / f"{_slug(row.name)}.ipynb", paths)
             for row in ROWS}
    before = {"victim": _digest(victim), "classmate": _digest(classmate)}
    other = base / "other-run"  # a concurrent run, grading a copy of the classmate
    other.mkdir()
    shutil.copy(classmate, other / "classmate.ipynb")
    concurrent = subprocess.Popen(
        [sys.executable, "-m", "minitok", "grade", str(other / "classmate.ipynb"), "--json",
         str(other / "report.json"), "--timeout", "60", "--jobs", "1", "--sandbox", mode],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    started = time.monotonic()
    printed = io.StringIO()
    uids: list[int] = []  # the run's block of worker uids (as root)
    allocate = sandbox.allocate_uids
    scratch = base / "tmp"  # the run's folder lies here: its processes name it
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(tempfile, "tempdir", str(scratch))
        patch.setattr(sandbox, "allocate_uids", lambda jobs: uids.append(allocate(jobs)) or uids[-1])
        grade([*files.values(), Path("/dev/zero"), classmate], json_path=report,
              timeout=TIMEOUT, jobs=JOBS, sandbox=mode)
    ended = time.monotonic()
    seconds = ended - started
    concurrent.wait(timeout=900)
    written = report.read_bytes()
    # a detached child that outlived its worker would have rewritten the report by now: it
    # looks for it every 0.1 s
    time.sleep(max(0.0, 2 - (time.monotonic() - ended)))
    listener.close()
    content = json.loads(written)
    reports = {Path(r["submission"]).name: r for r in content["submissions"]}
    yield {"mode": mode, "reports": {name: reports[path.name] for name, path in files.items()},
           "classmate": reports[classmate.name], "before": before, "victim": victim,
           "classmate_path": classmate, "report": report, "written": written,
           "marker": marker, "listener": listener, "seconds": seconds, "uids": uids,
           "scratch": str(scratch),
           "grader": content["grader"], "printed": printed.getvalue(),
           "dev_zero": reports["zero"],
           "other_run": json.loads((other / "report.json").read_text())["submissions"][0]}
    shutil.rmtree(base, ignore_errors=True)


def _cell(source, paths: dict):
    """A notebook cell from a row's entry: a code cell for a string, anything else as is."""
    if not isinstance(source, str):
        return source
    for key, value in paths.items():
        source = source.replace(key, repr(str(value)) if isinstance(value, Path) else str(value))
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
            "execution_count": None}


def _applies(row: Row, mode: str) -> bool:
    if row.needs == "sandbox":
        return mode == "bwrap"
    if row.needs == "isolated":
        return mode == "bwrap" or ROOT_USER
    if row.needs == "root":
        return ROOT_USER
    return True


@pytest.mark.parametrize("row", ROWS, ids=[_slug(r.name) for r in ROWS])
def test_attack(run, row):
    if not _applies(row, run["mode"]):
        pytest.skip(f"holds only with {row.needs} isolation (see the README)")
    report = run["reports"][row.name]
    if row.error is not None:
        assert row.error in (report["error"] or ""), report
        return
    assert report["error"] is None, report
    verdicts = {item["exercise"]: item for item in report["exercises"]}
    for name, (status, words) in row.expect.items():
        assert verdicts[name]["status"] == status, verdicts[name]
        assert words in verdicts[name]["message"], verdicts[name]
    if row.score is not None:
        assert report["score"] == row.score, report


def test_the_report_says_which_sandbox_ran(run):
    assert run["grader"]["sandbox"] == {"bwrap": "bubblewrap",
                                        "none": "none (process limits only)"}[run["mode"]]


def test_the_classmate_is_graded_and_untouched(run):
    full = len(exercises_in(lesson01))  # the solved classmate scores every exercise
    assert run["classmate"]["score"] == run["classmate"]["max_score"] == full, run["classmate"]
    assert _digest(run["classmate_path"]) == run["before"]["classmate"]


def test_nothing_leaks_into_anyones_feedback(run):
    if run["mode"] != "bwrap":
        pytest.skip("without the sandbox a worker may read the classmate's file (README)")
    for name, report in run["reports"].items():
        assert SECRET not in json.dumps(report), name


def test_no_file_of_the_instructor_changed_and_no_marker_made(run):
    if run["mode"] == "none" and not ROOT_USER:
        pytest.skip("without the sandbox and without root, workers run as the grader's user")
    assert _digest(run["victim"]) == run["before"]["victim"]
    assert not Path(str(run["victim"]) + ".moved").exists()
    assert not list(run["marker"].parent.glob("marker*"))


def test_the_report_is_the_graders_and_stays_so(run):
    assert run["report"].read_bytes() == run["written"]
    assert not list(run["report"].parent.glob(".report.json.*")), "a temporary file was left"


def test_nothing_reached_the_network(run):
    assert run["listener"].connections == 0


def test_no_process_is_left(run):
    assert _grader_processes(run["scratch"], run["uids"]) == []


def test_the_run_is_quick(run):
    """Not a benchmark: a guard against a run that waits on every worker (see grading.py)."""
    assert run["seconds"] < 600


def test_devices_among_the_files_are_refused_and_the_run_goes_on(run):
    assert "not a regular file" in run["dev_zero"]["error"]


def test_nothing_printed_can_draw_on_the_terminal_or_read_as_a_verdict(run):
    printed = run["printed"]
    assert "\x1b" not in printed and "\r" not in printed and "\u2028" not in printed
    reports = [*run["reports"].values(), run["classmate"], run["dev_zero"]]
    assert len(re.findall(r"^  score: ", printed, re.M)) == len(reports)
    passed = sum(item["exercise"] == "codebook_usage" and item["status"] == "passed"
                 for report in reports for item in report["exercises"])
    assert len(re.findall(r"^  \[PASS\] codebook_usage", printed, re.M)) == passed
    assert len(re.findall(r"^\S", printed, re.M)) == len(reports) + 2 + (
        run["mode"] == "none"), "a line starts at column 0 that is not a submission's"


def test_another_run_is_out_of_reach(run):
    """A run grading at the same time (a kill(-1) row ran meanwhile) gets full marks."""
    other = run["other_run"]
    assert other["score"] == other["max_score"] == len(exercises_in(lesson01)), other


def test_scratch_space_is_private_capped_and_removed(run):
    if not _applies(Row("", [], needs="isolated"), run["mode"]):
        pytest.skip("without the sandbox and without root, a worker writes where you can")
    message = {item["exercise"]: item for item in run["reports"][
        "2 GB written under /tmp, /dev/shm, /var/tmp and its scratch folder"]["exercises"]}
    written = int(re.search(r"wrote (\d+) bytes", message["codebook_usage"]["message"])[1])
    assert 0 < written <= 4 * SCRATCH, written  # at most four capped tmpfs, not 8 GB
    assert not Path("/tmp/minitok-left-behind").exists()
