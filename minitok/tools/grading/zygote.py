"""The zygote: a warm process that forks one isolated worker per submission.

Each judge starts one process inside bubblewrap (when the sandbox is on), which imports
torch and matplotlib once and then forks a zygote per exercise the judge grades, one at a
time (main). A zygote imports the lesson's checks from a stripped copy of minitok in which
the exercise's own solution raises (see sandbox.build_library): the judge puts that copy in
the library folder, which the sandbox shows read-only, before it asks for the zygote, and
replaces it only after the previous zygote has retired and every process it left is dead.
A zygote never runs learner code itself. On the judge's request it forks a worker, which
before anything else:

- starts its own session and process group, and keeps only its channel to the judge: stdin
  is /dev/null, stdout and stderr go to a file in its private folder;
- takes its limits: address space (what the zygote has plus a budget), CPU time (SIGXCPU
  at the limit, SIGKILL two seconds later), file size, no core dumps, and when it has a uid
  of its own, a number of processes;
- gets a scrubbed environment, and its private folder as working directory, HOME and TMPDIR;
- when the grader runs as root, becomes a uid of its own (no home, no files, no processes of
  anyone else), so it cannot write the instructor's files nor signal the grader, and with
  no_new_privs set no setuid program gives it rights back;

then serves the judge's requests (server.Server). When the judge is done with it, the zygote
kills it, its process group and every process left behind (the zygote is a child subreaper,
so double-forked and setsid'd orphans come back to it), removes its private folder and
empties the private /tmp: the next worker finds nothing of it.

Scratch space is memory (tmpfs), so it is capped: inside bubblewrap /tmp and /dev/shm are
size-capped tmpfs mounts; as root without bubblewrap the zygote makes a mount namespace of
its own with a size-capped tmpfs on every world-writable folder (/tmp, /var/tmp, /dev/shm,
/run/lock) and on the workers' folder, binding back what it reads (its library, the font
list). Without root and without bubblewrap a worker can write wherever you can.

Judge <-> zygote messages are small JSON datagrams; a worker's channel is passed with
SCM_RIGHTS. This module runs inside the sandbox: it imports nothing that would hold minitok's
solution (only the stripped copy is on its path), and a zygote drops every minitok module it
inherited before it imports its exercise's.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import traceback

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_KEEPCAPS = 1, 4, 8
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18)
CAP_DAC_READ_SEARCH = 2
CPU_GRACE = 2  # seconds of CPU between SIGXCPU and SIGKILL
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
CHANNEL_FD = 3


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def kill_children() -> None:
    """Kill and reap every child of this process, and the orphans that then come back to it."""
    while True:
        children = children_of(os.getpid())
        if not children:
            return
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


# --------------------------------------------------------------------------- the worker


def become_worker(channel: int, folder: str, settings: dict) -> None:
    """Turn this freshly forked child into an isolated worker and serve the judge (no return)."""
    os.setsid()
    output = os.open(os.path.join(folder, "output.txt"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(channel, CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    _limit(settings)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full output file is an error, not a kill
    os.chdir(folder)
    os.environ.clear()
    os.environ.update(ENVIRONMENT, HOME=folder, TMPDIR=folder, MPLCONFIGDIR=folder)
    if settings["uid"] is not None:
        _become(settings["uid"], settings["read_all"])
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid program can give it more rights
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    from minitok.tools.grading.server import Server
    from minitok.tools.grading.wire import recv_frame, send_frame

    sock = socket.socket(fileno=CHANNEL_FD)
    server = Server()
    while True:
        _, request = recv_frame(sock, max_payload=1 << 40)
        header, payload = server.reply(request)
        send_frame(sock, header, payload)


def _become(uid: int, read_all: bool) -> None:
    """Become `uid` (and its gid), with no capability left but, when `read_all`, reading
    any file: outside the sandbox Python itself may live where only root can read (pyenv in
    /root), and the worker must still import from it. It can write no file of anyone else."""
    if read_all:
        prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if read_all:
        _set_capabilities(1 << CAP_DAC_READ_SEARCH)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _set_capabilities(mask: int) -> None:
    """Keep exactly the capabilities in `mask` (effective and permitted), via capset(2)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask
    if _libc().capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _limit(settings: dict) -> None:
    with open("/proc/self/status") as f:
        vm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    cpu = settings["cpu_seconds"]
    limits = {
        resource.RLIMIT_AS: (vm_kib * 1024 + settings["memory"],) * 2,
        resource.RLIMIT_CPU: (cpu, cpu + CPU_GRACE),  # CPU time, never time spent waiting
        resource.RLIMIT_FSIZE: (settings["file_size"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    if settings["uid"] is not None:  # a count per uid: only meaningful for a uid of its own
        limits[resource.RLIMIT_NPROC] = (settings["processes"],) * 2
    for which, value in limits.items():
        resource.setrlimit(which, value)


# --------------------------------------------------------------------------- the zygote


class Zygote:
    """The zygote's state: its settings and the worker it is serving, if any."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.worker: tuple[int, str] | None = None  # (pid, private folder)

    def spawn(self, channel: int) -> int:
        folder = tempfile.mkdtemp(dir=self.settings["tmp"])
        os.chmod(folder, 0o777)  # the worker's uid writes here; nobody else can find it
        pid = os.fork()
        if pid == 0:
            try:
                become_worker(channel, folder, self.settings)
            finally:
                os._exit(1)
        os.close(channel)
        self.worker = (pid, folder)
        return pid

    def end(self) -> list:
        """Kill the worker and everything it started, remove its folder and whatever it
        left in the private folders; [how it ended, the CPU seconds it used]."""
        if self.worker is None:
            return ["no worker", 0.0]
        pid, folder = self.worker
        self.worker = None
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status, usage = os.wait4(pid, 0)
        kill_children()
        _remove(folder)
        for private in self.settings["private"]:
            _wipe(private, self.settings["keep"])
        return [_describe(status), usage.ru_utime + usage.ru_stime]


def _remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _wipe(folder: str, keep: list[str]) -> None:
    """Empty one of the zygote's private folders, but for what the zygote itself needs."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.path in keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            _remove(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _mount(source, target: str, kind, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    if _libc().mount(encode(source), encode(target), encode(kind), flags, encode(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount on {target} failed")


def own_mounts(settings: dict) -> None:
    """As root without bubblewrap: a mount namespace of the zygote's own, with a private,
    size-capped tmpfs on each world-writable folder and on the workers' folder; what the
    zygote reads from there (its library, the font list) bound back read-only."""
    if _libc().unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS | CLONE_NEWNET) failed")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    held = [(path, os.open(path, os.O_PATH)) for path in settings["binds"]]
    size = f"size={settings['scratch']}"
    for folder in settings["private"]:
        if os.path.isdir(folder) and not os.path.islink(folder):
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=1777")
    for path, fd in held:
        if not os.path.exists(path):  # under a new tmpfs now
            os.makedirs(path, mode=0o755)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    os.makedirs(settings["tmp"], mode=0o711, exist_ok=True)
    _mount("tmpfs", settings["tmp"], "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0711")


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    name = signal.Signals(-code).name
    why = {"SIGXCPU": ": its CPU time limit", "SIGKILL": ""}.get(name, "")
    return f"killed by {name}{why}"


def _warm(settings: dict) -> None:
    """Import, once per judge, what every exercise's workers need and no copy of minitok
    holds: torch and matplotlib's pyplot (whose font list was built once for the whole run:
    copied here, where it is writable)."""
    import torch

    torch.set_num_threads(1)
    if settings["matplotlib"]:
        shutil.copytree(settings["matplotlib"], settings["config"], dirs_exist_ok=True)
        os.environ["MPLCONFIGDIR"] = settings["config"]
    _import(["matplotlib.pyplot"])
    gc.freeze()  # a child's garbage collector then leaves these pages shared, not copied


def _import(modules: list[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional package: the workers that need it will say so
            pass


def main(control_fd: int, settings_json: str) -> None:
    """The judge's first process in the sandbox: it imports torch and pyplot once, then forks
    one zygote per exercise ("zygote", with the modules of the exercise's lesson), one at a
    time. Once that zygote retires, it kills whatever was left of its workers and answers
    "retired": only then does the judge put the next exercise's library in place. It stops
    when the judge closes the control socket."""
    settings = json.loads(settings_json)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its judge
    # Not dumpable, nor then its zygotes and workers (a fork keeps it): without root every
    # process in the sandbox has one uid, and a worker could otherwise ptrace its zygote or
    # this process, or write their memory, and so tamper with the workers after it.
    prctl(PR_SET_DUMPABLE, 0)
    if settings["own_mounts"]:
        own_mounts(settings)
    os.makedirs(settings["tmp"], mode=0o711, exist_ok=True)
    _warm(settings)
    control = socket.socket(fileno=control_fd)
    control.send(b'{"ready": true}')
    try:
        while message := control.recv(4096):
            pid = os.fork()
            if pid == 0:
                _zygote_child(control, settings, json.loads(message)["preload"])
            os.waitpid(pid, 0)
            kill_children()
            control.send(b'{"retired": true}')
    except OSError:  # the judge is gone
        pass
    kill_children()


def _zygote_child(control: socket.socket, settings: dict, preload: list[str]) -> None:
    """A zygote, freshly forked (no return): import minitok afresh from the library the judge
    has just put in place, then fork a worker ("spawn", with its channel) or end it ("end")
    until the judge retires it ("retire") or closes the control socket."""
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # neither survives a fork
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for name in [name for name in sys.modules if name.split(".")[0] == "minitok"]:
            del sys.modules[name]  # the boot imported them from the first exercise's library
        importlib.invalidate_caches()
        _import(preload)
        gc.freeze()
        zygote = Zygote(settings)
        control.send(b'{"ready": true}')
        while True:
            message, fds, _, _ = socket.recv_fds(control, 4096, 1)
            request = json.loads(message) if message else {"op": "retire"}
            if request["op"] == "retire":
                break
            if request["op"] == "spawn":
                reply = {"pid": zygote.spawn(fds[0])}
            else:
                reply = {"status": zygote.end()}
            control.send(json.dumps(reply).encode())
        zygote.end()
        kill_children()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
