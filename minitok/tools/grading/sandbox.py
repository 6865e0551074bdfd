"""Where the learner's code runs: a stripped copy of minitok, bubblewrap, and zygotes.

Everything here runs in the grader (main process or judge); zygote.py is the other side.

- `build_library` copies minitok's .py files for one exercise and replaces the body of
  minitok's own solution of it with a `raise` (the sentinel remote.SENTINEL): a worker that
  calls it, however it got there, fails that exercise with "uses minitok's reference".
- `Plan` holds what every judge needs to start zygotes: the mode (bubblewrap or none), the
  libraries, the limits, and the folders the sandbox hides.
- `bwrap_command`: a zygote inside bubblewrap: no network and its own pid, IPC and UTS
  namespaces; the whole filesystem read-only; a private /tmp; the instructor's home, the
  course checkout (solutions/ included), minitok's own package and every submission's folder
  hidden under empty tmpfs mounts (the Python prefix is bound back, read-only); as root, every
  capability dropped but the four the zygote needs to give workers a uid of their own, kill
  them and remove their files (a worker loses them all when it changes uid).
- `ZygoteProcess`: the judge's handle on one zygote.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import py_compile
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import minitok
from minitok.tools.grading import SENTINEL
from minitok.tools.grading.zygote import ENVIRONMENT

LIB, WORK, CONFIG, FONTS = "/tmp/lib", "/tmp/work", "/tmp/config", "/tmp/fonts"  # in the sandbox
UID_BASE = 0x7FFE0000  # workers of judge i run as uid/gid UID_BASE + i when the grader is root
STARTUP_SECONDS = 300  # a zygote imports torch: slow on a busy machine
REPLY_SECONDS = 30
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from minitok.tools.grading.zygote import main; main(int(sys.argv[2]), sys.argv[3])")
MODES = {"bwrap": "bubblewrap", "none": "none (process limits only)"}


class ZygoteError(RuntimeError):
    """A zygote that did not start or stopped answering."""


# --------------------------------------------------------------------------- the library


def strip_function(source: str, qualname: str, message: str) -> str:
    """`source` with the body of function `qualname` ("f" or "Class.method") replaced by
    `raise NotImplementedError(message)`; the rest of the file is kept byte for byte.

    A class (an exercise that is a module class) keeps its name, bases and attributes, so
    that the module still imports; each of its methods raises instead."""
    node = ast.parse(source)
    for part in qualname.split("."):
        node = next(n for n in node.body if getattr(n, "name", None) == part
                    and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
    functions = [node]
    if isinstance(node, ast.ClassDef):
        functions = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    data = source.encode()
    starts = [0]
    for line in data.split(b"\n"):
        starts.append(starts[-1] + len(line) + 1)
    body = f"raise NotImplementedError({message!r})".encode()
    for function in reversed(functions):  # from the end, so earlier offsets stay valid
        begin = starts[function.body[0].lineno - 1] + function.body[0].col_offset
        end = starts[function.body[-1].end_lineno - 1] + function.body[-1].end_col_offset
        data = data[:begin] + body + data[end:]
    return data.decode()


def build_library(root: Path, lesson: str, check) -> Path:
    """A folder holding a copy of minitok in which `check`'s solution raises the sentinel.

    Only .py files (and their cached bytecode, which Python checks against the copied
    sources) are copied; the stripped module gets fresh bytecode, never the original's.
    """
    source = Path(minitok.__file__).parent
    folder = root / f"lib-{lesson}-{check.exercise}"
    solution = check.solution
    module = solution.__module__
    target = folder.joinpath(*module.split(".")).with_suffix(".py")
    for path in source.rglob("*.py"):
        copy = folder / "minitok" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        cached = Path(importlib.util.cache_from_source(str(path)))
        if cached.exists() and copy != target:
            (copy.parent / "__pycache__").mkdir(exist_ok=True)
            shutil.copy2(cached, copy.parent / "__pycache__" / cached.name)
    name = f"{module.removeprefix('minitok.')}.{solution.__qualname__}"
    target.write_text(strip_function(target.read_text(), solution.__qualname__, SENTINEL + name))
    py_compile.compile(str(target), doraise=True)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    folder.chmod(0o755)
    return folder


# --------------------------------------------------------------------------- the plan


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox a worker here, or None when it can."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        done = subprocess.run(["bwrap", *_namespaces(), "--ro-bind", "/", "/", "--proc",
                               "/proc", "--dev", "/dev", "--", "true"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap did not run: {err}"
    if done.returncode != 0:
        return f"bwrap cannot create a sandbox here: {done.stderr.strip()[:300]}"
    return None


def _namespaces() -> list[str]:
    if os.geteuid() == 0:  # no user namespace: keep real uids, drop capabilities instead
        keep = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE")
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL",
                *[arg for cap in keep for arg in ("--cap-add", cap)]]
    return ["--unshare-all"]


@dataclass
class Plan:
    """How a grading run isolates its workers; every judge starts its zygotes from this."""

    mode: str  # "bwrap" or "none"
    run_dir: Path  # the run's private folder (libraries, the workers' folders)
    timeout: float  # seconds per exercise
    hidden: list[str] = field(default_factory=list)  # folders the sandbox shows empty
    packages: list[str] = field(default_factory=list)  # minitok's package folders (hidden)
    matplotlib: Path | None = None  # matplotlib's font list, built once for the run
    read_all: bool = False  # workers may read any file (root, no sandbox, Python unreadable)
    libraries: dict = field(default_factory=dict)  # (lesson, exercise) -> library folder
    memory: int = 1 << 30  # bytes a worker may allocate beyond what the zygote holds
    file_size: int = 1 << 20  # bytes a worker may write to one file (its output included)
    processes: int = 64  # processes and threads of a worker's uid (root only)

    def settings(self, slot: int, lesson: str) -> dict:
        """What a zygote of judge `slot` needs to know (zygote.main)."""
        root = os.geteuid() == 0
        sandboxed = self.mode == "bwrap"
        work = WORK if sandboxed else str(self.run_dir / f"work-{slot}")
        config = CONFIG if sandboxed else str(self.run_dir / f"config-{slot}")
        fonts = self.matplotlib and (FONTS if sandboxed else str(self.matplotlib))
        return {"uid": UID_BASE + slot if root else None, "read_all": self.read_all,
                "memory": self.memory,
                "cpu_seconds": math.ceil(self.timeout) + 1, "file_size": self.file_size,
                "processes": self.processes, "tmp": work, "sandboxed": sandboxed,
                "keep": [LIB, WORK, CONFIG, FONTS], "own_network": root and not sandboxed,
                "matplotlib": fonts, "config": config, "preload": [
                    f"minitok.checks.{lesson}", "minitok.tools.grading.server", "minitok.data",
                    "matplotlib.pyplot"]}

    def command(self, slot: int, lesson: str, exercise: str, fd: int) -> list[str]:
        """The command line that starts a zygote for one exercise on control socket `fd`."""
        settings = json.dumps(self.settings(slot, lesson))
        library = self.libraries[lesson, exercise]
        if self.mode == "none":
            return [sys.executable, "-I", "-c", BOOT, str(library), str(fd), settings]
        fonts = ["--ro-bind", str(self.matplotlib), FONTS] if self.matplotlib else []
        return [*bwrap_command(self.hidden, self.packages, library), *fonts, "--",
                sys.executable, "-I", "-c", BOOT, LIB, str(fd), settings]


def make_plan(mode: str, timeout: float, submissions: list[Path], reports: list[Path]) -> Plan:
    """A run's plan, with its private folder (0711: workers reach only their own folders)."""
    run_dir = Path(tempfile.mkdtemp(prefix="minitok-grade-"))
    run_dir.chmod(0o711)
    packages = minitok_folders()
    read_all = mode == "none" and os.geteuid() == 0 and not python_readable()
    return Plan(mode, run_dir, timeout, hidden_folders(submissions, reports, packages),
                packages, font_list(run_dir), read_all)


def python_readable() -> bool:
    """True when any user can read the Python installation (a worker with a uid of its own
    must import from it); False for one in a private home (pyenv in /root)."""
    for folder in _python_folders():
        for path in [Path(folder), *Path(folder).parents]:
            if not path.stat().st_mode & stat.S_IXOTH:
                return False
        if not Path(folder).stat().st_mode & stat.S_IROTH:
            return False
    return True


def font_list(run_dir: Path) -> Path | None:
    """matplotlib's font cache, built once for the run (building it takes seconds, and every
    zygote imports pyplot, as the lessons do); None when matplotlib is not installed."""
    folder = run_dir / "matplotlib"
    done = subprocess.run([sys.executable, "-I", "-c", "import matplotlib.font_manager"],
                          env={**ENVIRONMENT, "MPLCONFIGDIR": str(folder)},
                          capture_output=True, timeout=300)
    if done.returncode != 0 or not folder.is_dir():
        return None
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def bwrap_command(hidden: list[str], packages: list[str], library: Path) -> list[str]:
    """bubblewrap's arguments for a zygote (see the module docstring), up to the command."""
    args = ["bwrap", "--die-with-parent", "--new-session", *_namespaces(),
            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for folder in hidden:
        args += ["--tmpfs", folder]
    for folder in _python_folders():
        outer = [h for h in hidden if _inside(folder, h)]
        if outer:  # bound back; bwrap would make the folders on the way private (0700)
            for step in _steps(outer[0], folder):
                args += ["--perms", "0755", "--dir", step]
            args += ["--ro-bind", folder, folder]
    for folder in packages:  # an installed minitok inside a bound-back prefix
        args += ["--tmpfs", folder]
    return args + ["--ro-bind", str(library), LIB, "--chdir", "/tmp"]


def hidden_folders(submissions: list[Path], reports: list[Path],
                   packages: list[str]) -> list[str]:
    """The folders a sandboxed worker must not see: home, course checkouts, submissions."""
    candidates = [Path.home()] + [Path(p).resolve().parent for p in [*submissions, *reports]]
    for package in packages:
        checkout = Path(package).parent
        candidates.append(checkout if (checkout / "solutions").is_dir() else Path(package))
    found: list[str] = []
    for path in sorted({str(Path(p).resolve()) for p in candidates}, key=len):
        if path != "/" and not any(_inside(path, f) for f in found):
            found.append(path)
    return found


def _steps(top: str, folder: str) -> list[str]:
    """The folders strictly between `top` and `folder`, outermost first."""
    parents = [str(p) for p in Path(folder).parents if _inside(str(p), top) and str(p) != top]
    return list(reversed(parents))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _python_folders() -> list[str]:
    """The Python installation a zygote runs: prefixes and the interpreter's folder."""
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix,
               str(Path(sys.executable).parent), str(Path(sys.executable).resolve().parent)}
    return sorted(str(Path(f).resolve()) for f in folders)


def minitok_folders() -> list[str]:
    """Every minitok package folder: the grader's own, and the one `python -I` would import."""
    own = str(Path(minitok.__file__).parent.resolve())
    probe = subprocess.run([sys.executable, "-I", "-c", "import minitok; print(minitok.__file__)"],
                           capture_output=True, text=True, env=ENVIRONMENT, timeout=60)
    found = {own}
    if probe.returncode == 0 and probe.stdout.strip():
        found.add(str(Path(probe.stdout.strip()).parent.resolve()))
    return sorted(found)


# --------------------------------------------------------------------------- zygotes


class ZygoteProcess:
    """The judge's handle on one zygote: spawn a worker, end it, stop."""

    def __init__(self, plan: Plan, slot: int, lesson: str, exercise: str):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.errors = tempfile.TemporaryFile()
        env = {**ENVIRONMENT, "HOME": "/tmp" if plan.mode == "bwrap" else str(plan.run_dir)}
        try:
            self.process = subprocess.Popen(
                plan.command(slot, lesson, exercise, theirs.fileno()), env=env,
                cwd=plan.run_dir, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self.errors)
        except OSError as err:
            raise ZygoteError(f"cannot start it: {err}") from None
        finally:
            theirs.close()
        self._reply("ready", STARTUP_SECONDS)

    def spawn(self) -> socket.socket:
        """A new worker; the judge's end of its channel."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [b'{"op": "spawn"}'], [theirs.fileno()])
        except OSError as err:
            raise ZygoteError(f"the zygote is gone ({err})") from None
        finally:
            theirs.close()
        self._reply("pid", REPLY_SECONDS)
        return ours

    def end(self) -> str:
        """Kill the worker and all it left behind; how it ended ("exit code 0", ...)."""
        try:
            self.control.send(b'{"op": "end"}')
        except OSError as err:
            raise ZygoteError(f"the zygote is gone ({err})") from None
        status = self._reply("status", REPLY_SECONDS)
        return status[:200] if isinstance(status, str) else "unknown"

    def stop(self) -> None:
        self.control.close()
        try:
            self.process.wait(REPLY_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.errors.close()

    def _reply(self, key: str, seconds: float):
        self.control.settimeout(seconds)
        try:
            data = self.control.recv(4096)
            reply = json.loads(data) if data else None
        except (OSError, ValueError):
            reply = None
        if not isinstance(reply, dict) or key not in reply:
            raise ZygoteError(f"the zygote did not answer: {self._stderr_tail()}")
        return reply[key]

    def _stderr_tail(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read()[-2000:].decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"
