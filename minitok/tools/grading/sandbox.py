"""Where the learner's code runs: a stripped copy of minitok, bubblewrap, and zygotes.

Everything here runs in the grader (main process or judge); zygote.py is the other side.

- `build_library` copies minitok's .py files for one exercise and replaces the body of
  minitok's own solution of it with a `raise` (the sentinel remote.SENTINEL), and so every
  function of the modules the lesson's checks do not import (vq for lesson 01, ...): a
  worker that calls them, however it got there, fails that exercise with "uses minitok's
  reference". Only the lesson's own modules work, as the lesson's other exercises need them.
- `Plan` holds what every judge needs to start zygotes: the mode (bubblewrap or none), the
  libraries, the limits, and the folders the sandbox hides.
- `bwrap_command`: a judge's zygotes inside bubblewrap: no network and its own pid, IPC and UTS
  namespaces; the whole filesystem read-only; a private, size-capped /tmp and /dev/shm; the
  instructor's home, the course checkout (solutions/ included), minitok's own package and
  every submission's folder hidden under empty tmpfs mounts; the Python installation (its
  prefixes, the interpreter's real folder, every folder on its import path) bound back,
  read-only, wherever it lives (/tmp, a home, /opt, the checkout); as root, every
  capability dropped but the four the zygote needs to give workers a uid of their own, kill
  them and remove their files (a worker loses them all when it changes uid).
- `ZygoteProcess`: the judge's handle on its zygotes: one process in the sandbox, started
  once (it imports torch), forks a zygote per exercise, after the judge has put that
  exercise's library in the judge's library folder; `preflight` has the first judge's first
  zygote start one worker before it grades anything, so a sandbox that cannot run stops the
  run with one clear error.
"""

from __future__ import annotations

import ast
import fcntl
import functools
import importlib.util
import json
import math
import os
import py_compile
import random
import secrets
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
UID_BASE = 0x7FFE0000  # as root, run r's judge i gives its workers uid UID_BASE + r * 256 + i
UID_BLOCKS, MAX_JOBS = 256, 255  # blocks of 256 uids, one per concurrent run; judges per run
STARTUP_SECONDS = 300  # a judge's first process imports torch: slow on a busy machine
REPLY_SECONDS = 30
SCRATCH = 64 << 20  # bytes of a worker's /tmp (and /dev/shm): tmpfs is memory
LIBRARY = "MINITOK_GRADER_LIBRARY"  # the library's folder reaches the zygote in its environment
BOOT = ("import os, sys; sys.path.insert(0, os.environ['MINITOK_GRADER_LIBRARY']); "
        "from minitok.tools.grading.zygote import main; main(int(sys.argv[1]), sys.argv[2])")
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
    return _raise_in(source, [(node, message)])


def stub_module(source: str, module: str) -> str:
    """`source` with the body of every top-level function and every method replaced by a
    `raise` of the sentinel: the module still imports, nothing in it computes."""
    found = [(node, f"{SENTINEL}{module}.{node.name}") for node in ast.parse(source).body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return _raise_in(source, found)


def _raise_in(source: str, targets: list[tuple[ast.AST, str]]) -> str:
    """`source` with each target's body (each method's, for a class) a `raise`."""
    functions = []
    for node, message in targets:
        if isinstance(node, ast.ClassDef):
            functions += [(n, message) for n in node.body
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            functions.append((node, message))
    data = source.encode()
    starts = [0]
    for line in data.split(b"\n"):
        starts.append(starts[-1] + len(line) + 1)
    functions.sort(key=lambda item: (item[0].lineno, item[0].col_offset))
    for function, message in reversed(functions):  # from the end: earlier offsets stay valid
        body = f"raise NotImplementedError({message!r})".encode()
        begin = starts[function.body[0].lineno - 1] + function.body[0].col_offset
        end = starts[function.body[-1].end_lineno - 1] + function.body[-1].end_col_offset
        data = data[:begin] + body + data[end:]
    return data.decode()


_STUBS: dict[tuple[str, str], str] = {}  # (module, source) -> stubbed source, for this run


def _stubbed(text: str, module: str) -> str:
    if (module, text) not in _STUBS:
        _STUBS[module, text] = stub_module(text, module)
    return _STUBS[module, text]


WORKER_MODULES = ("minitok.tools.grading.zygote", "minitok.tools.grading.server")


@functools.cache
def lesson_modules(lesson: str) -> frozenset[str]:
    """minitok's modules a lesson's checks import, directly or not ("minitok.quantize", ...):
    what the judge may send a worker, and what the lesson's exercises may build on; and
    what the worker itself imports (zygote, server and theirs)."""
    package = Path(minitok.__file__).parent
    found, todo = set(), [f"minitok.checks.{lesson}", *WORKER_MODULES]
    while todo:
        module = todo.pop()
        path = package.joinpath(*module.split(".")[1:])
        # a package's __init__.py first, then a module's .py, as Python looks: a folder of
        # data beside a module (minitok/checkpoints/ beside checkpoints.py) is neither
        path = path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")
        if module in found or not path.is_file():
            continue
        found.add(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import, from the module's package
                    package_parts = module.split(".")
                    if path.name != "__init__.py":
                        package_parts = package_parts[:-1]
                    parts = package_parts[:len(package_parts) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                todo += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return frozenset(m for m in found if m.startswith("minitok"))


def build_library(root: Path, lesson: str, check) -> Path:
    """A folder holding a copy of minitok in which `check`'s solution raises the sentinel,
    and so does every function of a module outside the lesson's (see lesson_modules).

    Only .py files (and their cached bytecode, which Python checks against the copied
    sources) are copied; a changed module gets fresh bytecode, never the original's. The
    folder's name is random: without the sandbox, a worker cannot guess another's library.
    """
    source = Path(minitok.__file__).parent
    folder = root / f"lib-{secrets.token_hex(8)}"
    solution = check.solution
    keep = lesson_modules(lesson) | {"minitok", "minitok.checks", "minitok.tools",
                                     "minitok.tools.grading"}
    for path in source.rglob("*.py"):
        relative = path.relative_to(source)
        module = ".".join(("minitok", *relative.with_suffix("").parts)).removesuffix(".__init__")
        copy = folder / "minitok" / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        kept = module in keep or module.startswith(("minitok.checks.",
                                                    "minitok.tools.grading."))
        if module == solution.__module__:
            name = f"{module.removeprefix('minitok.')}.{solution.__qualname__}"
            text = strip_function(text, solution.__qualname__, SENTINEL + name)
        elif not kept:
            text = _stubbed(text, module.removeprefix("minitok."))
        copy.write_text(text)
        cached = Path(importlib.util.cache_from_source(str(path)))
        if module == solution.__module__:
            py_compile.compile(str(copy), doraise=True)
        elif kept and cached.exists():  # unchanged: the original's bytecode is valid
            (copy.parent / "__pycache__").mkdir(exist_ok=True)
            shutil.copy2(cached, copy.parent / "__pycache__" / cached.name)
            os.utime(copy, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
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
    timeout: float  # a worker's CPU seconds per exercise (wall time: see judge.wall_limit)
    hidden: list[str] = field(default_factory=list)  # folders the sandbox shows empty
    packages: list[str] = field(default_factory=list)  # minitok's package folders (hidden)
    python: list[tuple[str, str]] = field(default_factory=list)  # (real, seen) Python folders
    matplotlib: Path | None = None  # matplotlib's font list, built once for the run
    read_all: bool = False  # workers may read any file (root, no sandbox, Python unreadable)
    uid_base: int | None = None  # as root: judge i's workers run as uid_base + i
    libraries: dict = field(default_factory=dict)  # (lesson, exercise) -> library folder
    memory: int = 1 << 30  # bytes a worker may allocate beyond what the zygote holds
    file_size: int = 1 << 20  # bytes a worker may write to one file (its output included)
    processes: int = 64  # processes and threads of a worker's uid (root only)
    scratch: int = SCRATCH  # bytes of each private tmpfs (/tmp, /dev/shm, the work folder)

    def settings(self, slot: int, library: Path) -> dict:
        """What judge `slot`'s zygotes need to know (zygote.main); `library` is its library
        folder, which holds the current exercise's copy of minitok."""
        sandboxed = self.mode == "bwrap"
        own_mounts = self.uid_base is not None and not sandboxed  # root: mounts of its own
        work = WORK if sandboxed else str(self.run_dir / f"work-{slot}")
        config = CONFIG if sandboxed else str(self.run_dir / f"config-{slot}")
        fonts = self.matplotlib and (FONTS if sandboxed else str(self.matplotlib))
        binds = [str(library)] + ([str(self.matplotlib)] if self.matplotlib else [])
        if own_mounts:  # Python itself (a venv under /tmp, say) stays readable under the tmpfs
            binds += sorted({path for pair in self.python for path in pair
                             if any(_inside(path, f) for f in WORLD_WRITABLE)})
        if sandboxed:  # what the wipe of /tmp keeps: the zygote's folders, bound-back Python
            keep = [LIB, WORK, CONFIG, FONTS] + [_top("/tmp", seen) for _, seen in self.python
                                                 if _inside(seen, "/tmp")]
        else:
            keep = [_top(f, path) for f in WORLD_WRITABLE for path in (*binds, work, config)
                    if _inside(path, f)]
        return {"uid": None if self.uid_base is None else self.uid_base + slot,
                "read_all": self.read_all, "memory": self.memory,
                "cpu_seconds": math.ceil(self.timeout), "file_size": self.file_size,
                "processes": self.processes, "tmp": work, "sandboxed": sandboxed,
                "own_mounts": own_mounts, "binds": binds if own_mounts else [],
                "private": ["/tmp"] if sandboxed else list(WORLD_WRITABLE) if own_mounts else [],
                "scratch": self.scratch, "keep": sorted(set(keep)),
                "matplotlib": fonts, "config": config}

    def command(self, slot: int, library: Path, fd: int) -> list[str]:
        """The command line that starts judge `slot`'s zygotes on control socket `fd` (the
        library folder goes in the environment: see ZygoteProcess)."""
        settings = json.dumps(self.settings(slot, library))
        if self.mode == "none":
            return [sys.executable, "-I", "-c", BOOT, str(fd), settings]
        fonts = ["--ro-bind", str(self.matplotlib), FONTS] if self.matplotlib else []
        return [*bwrap_command(self, library), *fonts, "--",
                sys.executable, "-I", "-c", BOOT, str(fd), settings]


WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # as root: a zygote's own


def make_plan(mode: str, timeout: float, submissions: list[Path], reports: list[Path],
              jobs: int) -> Plan:
    """A run's plan, with its private folder (0711: workers reach only their own folders)
    and, as root, a block of uids no other run holds (see allocate_uids)."""
    run_dir = Path(tempfile.mkdtemp(prefix="minitok-grade-"))
    run_dir.chmod(0o711)
    found = probe_python()
    packages = sorted({str(Path(minitok.__file__).parent.resolve()), *found["minitok"]})
    read_all = mode == "none" and os.geteuid() == 0 and not python_readable()
    uid_base = allocate_uids(jobs) if os.geteuid() == 0 else None
    return Plan(mode, run_dir, timeout, hidden_folders(submissions, reports, packages),
                packages, found["folders"], font_list(run_dir), read_all, uid_base)


_UID_LOCKS: dict[int, int] = {}  # uid base -> the lock file held for this process's run


def allocate_uids(jobs: int) -> int:
    """The first uid of a block of MAX_JOBS + 1 that no other grading run on this machine holds
    (an flock on a file per block, released when the run ends: release_uids). Runs then
    never share a worker uid, so a worker's kill(-1) cannot reach another run's workers."""
    if jobs > MAX_JOBS:
        raise ValueError(f"--jobs must be at most {MAX_JOBS}, got {jobs}")
    folder = Path("/run/lock" if os.path.isdir("/run/lock") else "/tmp") / "minitok-grade-uids"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ValueError(f"{folder} is not a private folder of this user: remove it")
    for block in random.sample(range(UID_BLOCKS), UID_BLOCKS):
        fd = os.open(folder / f"{block}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        base = UID_BASE + block * (MAX_JOBS + 1)
        _UID_LOCKS[base] = fd
        return base
    raise ValueError(f"{UID_BLOCKS} grading runs hold every block of worker uids")


def release_uids(plan: Plan) -> None:
    fd = _UID_LOCKS.pop(plan.uid_base, None) if plan.uid_base is not None else None
    if fd is not None:
        os.close(fd)


def python_readable() -> bool:
    """True when any user can read the Python installation (a worker with a uid of its own
    must import from it); False for one in a private home (pyenv in /root)."""
    for folder in {real for real, _ in probe_python()["folders"]}:
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


def bwrap_command(plan: Plan, library: Path) -> list[str]:
    """bubblewrap's arguments for a zygote (see the module docstring), up to the command.

    /tmp and every hidden folder are empty tmpfs mounts; the Python installation is then
    bound back, read-only, at the paths Python knows it by, with the folders on the way
    made (0755, as bwrap would make them private); minitok's package folders are hidden
    again where they lie inside it."""
    size = ["--size", str(plan.scratch)]
    args = ["bwrap", "--die-with-parent", "--new-session", *_namespaces(),
            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", *size, "--tmpfs", "/tmp",
            "--perms", "1777", *size, "--tmpfs", "/dev/shm"]
    covered = ["/tmp"] + [h for h in plan.hidden if not _inside(h, "/tmp")]
    for folder in covered[1:]:
        args += ["--tmpfs", folder]
    made: set[str] = set()
    for real, seen in plan.python:
        outer = [c for c in covered if _inside(seen, c)]
        if outer:
            for step in _steps(outer[0], seen):
                if step not in made:
                    args += ["--perms", "0755", "--dir", step]
                    made.add(step)
            args += ["--ro-bind", real, seen]
    for folder in plan.packages:  # an installed minitok inside a bound-back folder
        args += ["--tmpfs", folder]
    return args + ["--ro-bind", str(library), LIB, "--chdir", "/tmp"]


def hidden_folders(submissions: list[Path], reports: list[Path],
                   packages: list[str]) -> list[str]:
    """The folders a sandboxed worker must not see: home, course checkouts, submissions."""
    candidates = [Path.home()] + [Path(p).absolute().parent for p in [*submissions, *reports]]
    for package in packages:
        checkout = Path(package).parent
        candidates.append(checkout if (checkout / "solutions").is_dir() else Path(package))
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates}, key=len):
        if path != "/" and not any(_inside(path, f) for f in found):
            found.append(path)
    return found


def _steps(top: str, folder: str) -> list[str]:
    """The folders strictly between `top` and `folder`, outermost first."""
    parents = [str(p) for p in Path(folder).parents if _inside(str(p), top) and str(p) != top]
    return list(reversed(parents))


def _top(folder: str, path: str) -> str:
    """The entry of `folder` that holds `path` (path inside folder)."""
    relative = Path(path).relative_to(folder)
    return str(Path(folder) / relative.parts[0]) if relative.parts else folder


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


PROBE = """import json, os, sys
try:
    import minitok
    found = [os.path.dirname(minitok.__file__)]
except Exception:
    found = []
folders = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
           os.path.dirname(sys.executable), *sys.path]
print(json.dumps({"minitok": found, "folders": folders, "executable": sys.executable}))
"""
_PROBED: dict = {}


def probe_python() -> dict:
    """What `python -I` (a zygote's interpreter) reads: its prefixes, the folder of its
    executable, its import path (site-packages and what .pth files add), as (real path, path
    as Python knows it) pairs, nested ones dropped; and the minitok it would import.

    A folder holding a course checkout (an editable install's minitok) is left out: the
    sandbox must not show solutions/."""
    if not _PROBED:
        done = subprocess.run([sys.executable, "-I", "-c", PROBE], capture_output=True,
                              text=True, env=ENVIRONMENT, timeout=120, check=True)
        found = json.loads(done.stdout)
        folders = {os.path.abspath(f) for f in found["folders"] if f and os.path.isdir(f)}
        executable = os.path.realpath(found["executable"])
        folders.add(os.path.dirname(executable))
        folders = {f for f in folders if not _checkout(f)}
        pairs = {(os.path.realpath(f), f) for f in folders}
        pairs |= {(real, real) for real, _ in pairs}
        seen = sorted(pairs, key=lambda pair: len(pair[1]))
        kept = [pair for pair in seen  # a folder inside another comes with it
                if not any(_inside(pair[1], other) and pair[1] != other for _, other in seen)]
        _PROBED.update(minitok=[os.path.realpath(f) for f in found["minitok"]],
                       folders=sorted(kept))
    return _PROBED


def _checkout(folder: str) -> bool:
    """A course checkout or a folder holding minitok's source (not an installed package)."""
    path = Path(folder)
    return path.name not in ("site-packages", "dist-packages") and (
        (path / "minitok" / "__init__.py").is_file() or (path / "solutions").is_dir())


# --------------------------------------------------------------------------- zygotes


class ZygoteProcess:
    """The judge's handle on its zygotes (zygote.main): one process in the sandbox, started
    once, that forks a zygote for one exercise at a time; spawn a worker, end it, stop.

    The judge's library folder (bound read-only in the sandbox) holds the current exercise's
    copy of minitok; `serve` replaces it only once the previous exercise's zygote has retired
    and everything it started is dead."""

    def __init__(self, plan: Plan, slot: int, lesson: str, exercise: str):
        self.plan, self.key = plan, None
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.errors = tempfile.TemporaryFile()
        self.library = Path(tempfile.mkdtemp(prefix=f"lib-{slot}-", dir=plan.run_dir))
        self.library.chmod(0o755)
        _fill(self.library, plan.libraries[lesson, exercise])  # the boot imports from it
        sandboxed = plan.mode == "bwrap"
        env = {**ENVIRONMENT, "HOME": "/tmp" if sandboxed else str(plan.run_dir),
               LIBRARY: LIB if sandboxed else str(self.library)}
        try:
            self.process = subprocess.Popen(
                plan.command(slot, self.library, theirs.fileno()), env=env,
                cwd=plan.run_dir, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self.errors)
        except OSError as err:
            raise ZygoteError(f"cannot start it: {err}") from None
        finally:
            theirs.close()
        try:
            self._reply("ready", STARTUP_SECONDS)  # torch and pyplot imported
            self.serve(lesson, exercise)
        except ZygoteError:
            self.stop()
            raise

    def serve(self, lesson: str, exercise: str) -> None:
        """Have a zygote of this exercise ready: unless the current one is, retire it, put
        the exercise's library in place, and start one (it imports the lesson's checks)."""
        if self.key == (lesson, exercise):
            return
        if self.key is not None:
            self._send({"op": "retire"})
            self._reply("retired", REPLY_SECONDS)  # the zygote and all it left are dead
            try:
                _fill(self.library, self.plan.libraries[lesson, exercise])
            except OSError as err:  # without root nor sandbox, a worker could write there
                raise ZygoteError(f"cannot put the exercise's library in place: {err}") from None
        self.key = None
        self._send({"op": "zygote", "preload": preload(lesson)})
        self._reply("ready", STARTUP_SECONDS)
        self.key = (lesson, exercise)

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

    def end(self) -> tuple[str, float]:
        """Kill the worker and all it left behind; how it ended ("exit code 0", ...) and
        the CPU seconds it (and the children it waited for) used."""
        self._send({"op": "end"})
        status = self._reply("status", REPLY_SECONDS)
        if not (isinstance(status, list) and len(status) == 2 and isinstance(status[0], str)
                and isinstance(status[1], (int, float))):
            return "unknown", 0.0
        return status[0][:200], float(status[1])

    def stop(self) -> None:
        self.control.close()
        try:
            self.process.wait(REPLY_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.errors.close()
        shutil.rmtree(self.library, ignore_errors=True)

    def _send(self, request: dict) -> None:
        try:
            self.control.send(json.dumps(request).encode())
        except OSError as err:
            raise ZygoteError(f"the zygote is gone ({err})") from None

    def _reply(self, key: str, seconds: float):
        self.control.settimeout(seconds)
        try:
            data = self.control.recv(4096)
            reply = json.loads(data) if data else None
        except (OSError, ValueError):
            reply = None
        if not isinstance(reply, dict) or key not in reply:
            raise ZygoteError(f"the zygote did not answer: {self.stderr_tail()}")
        return reply[key]

    def stderr_tail(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read()[-2000:].decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"


def preload(lesson: str) -> list[str]:
    """What a zygote imports for its workers: the lesson's checks and the worker's server."""
    return [f"minitok.checks.{lesson}", "minitok.tools.grading.server", "minitok.data"]


def _fill(folder: Path, library: Path) -> None:
    """Make `folder` hold a copy of `library`'s minitok, and nothing else."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.copytree(library / "minitok", folder / "minitok")


def preflight(zygote: ZygoteProcess, exercise: str) -> None:
    """Have a zygote start one worker and the worker load an empty submission, then end it;
    ZygoteError saying what failed if any step does. The first judge does this before its
    first unit (judge.run_units): a run whose sandbox cannot run a worker must stop before it
    scores anything (it would score 0 everywhere). The zygote stays for the unit."""
    from minitok.tools.grading.wire import WireError, dump_request, recv_frame, send_frame, unpack

    channel = zygote.spawn()
    try:
        channel.settimeout(STARTUP_SECONDS)
        send_frame(channel, b"", dump_request({"op": "load", "statements": [],
                                               "exercise": exercise, "others": {}}))
        message, _ = unpack(*recv_frame(channel))
    except (OSError, EOFError, ValueError, WireError) as err:
        status, _ = zygote.end()
        raise ZygoteError(f"its worker did not answer ({type(err).__name__}; it ended: "
                          f"{status}): {zygote.stderr_tail()}") from None
    finally:
        channel.close()
    zygote.end()
    if "loaded" not in message:
        raise ZygoteError(f"its worker could not load a submission: {message}"[:500])
