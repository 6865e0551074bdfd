"""`make setup`'s torch step (scripts/install_torch.py): PyTorch's CPU index on Linux, and a
clear line, then pip's default index, where that index cannot be reached. pip runs with
--dry-run and finds torch already installed, so nothing is installed or downloaded."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest
import torch
from notebooks import ROOT

pytestmark = [pytest.mark.slow,  # runs pip
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="the CPU index is used on Linux only")]

REQUIREMENT = f"torch=={torch.__version__.split('+')[0]}"  # the installed one: no download


def install_torch(index: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_INDEX": index}
    return subprocess.run([sys.executable, ROOT / "scripts" / "install_torch.py", REQUIREMENT,
                           "--dry-run"], capture_output=True, text=True, env=env, timeout=300)


def test_an_unreachable_index_falls_back_to_the_default_one_with_a_clear_line():
    done = install_torch("http://127.0.0.1:9/whl/cpu")  # the discard port: nothing listens
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("install_torch: cannot reach PyTorch's CPU index "
                            "http://127.0.0.1:9/whl/cpu; installing " + REQUIREMENT)
    assert "--index-url" not in done.stdout


def test_a_reachable_index_is_the_one_pip_uses():
    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(404)  # any answer means the index is there
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_port}/whl/cpu"
        done = install_torch(index)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (f"install_torch: {REQUIREMENT}, CPU build, from "
                                           f"{index}")
    assert f"Looking in indexes: {index}" in done.stdout  # pip was pointed at it
