"""Judges: the processes that run the checks, each against one worker at a time.

`run_units` (in the main process) starts `jobs` judge processes, forked after the checks are
imported, and hands them units of work, one (submission, exercise) each, in exercise-major
order, so a judge keeps one zygote for an exercise while it grades that exercise's share of
the submissions. A judge runs the check's test function with the learner's function replaced
by a RemoteObject: it builds the inputs, computes the reference and compares, and executes
no learner code. The first judge begins with a preflight (sandbox.preflight): if its first
zygote cannot run a worker, the run stops with that error and no verdict.

Limits that load cannot make unfair: a worker's time limit (--timeout) is CPU time, counted
by the kernel for its whole unit (loading the submission and the check's calls), so a busy
machine, which makes everything wait, costs no correct answer a point. Waiting (a sleep, a
blocked read) is bounded by a wall-clock backstop, `wall_limit`: twice the limit, scaled up
by the load measured when the unit starts. The judge itself is bounded as well, whatever a
worker answers: its memory (RLIMIT_AS) and its CPU time per unit (JUDGE_CPU_SECONDS, watched
by the pool, which ends a judge past it).

If a judge dies (a worker cannot reach it unless the grader runs without sandbox and without
root), its unit is an error, a new judge takes its place, and the run goes on. The judges'
supervisor and every judge are child subreapers: whatever a worker left behind comes back to
them and is killed before the reports are written.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait

import torch

from minitok.checks._core import Result, other_references, run_check
from minitok.tools.grading import REFERENCE_HINT, SENTINEL
from minitok.tools.grading.remote import (
    RemoteObject,
    Session,
    WorkerGone,
    socket_exchange,
)
from minitok.tools.grading.sandbox import Plan, ZygoteError, ZygoteProcess, preflight
from minitok.tools.grading.zygote import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    children_of,
    prctl,
)

TIMEOUT_HINT = "make sure every loop in this exercise ends on small inputs."
WAIT_HINT = "make sure nothing in this exercise sleeps or waits for input."
MAX_JUDGE_RESTARTS = 20
JUDGE_MEMORY = 3 << 30  # bytes a judge may allocate beyond what it holds when it starts
JUDGE_CPU_SECONDS = 30  # a judge's CPU per unit: at least this, or the --timeout if longer
POLL_SECONDS = 0.5


def wall_limit(timeout: float) -> float:
    """Seconds a unit may take on the clock: twice its CPU limit, times the load per core
    measured now when the machine is busier than that (a worker waits its turn then)."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return timeout * 2 * max(1.0, per_core)


def judge_cpu_limit(timeout: float) -> float:
    return max(JUDGE_CPU_SECONDS, timeout)


@dataclass
class Unit:
    """One exercise of one submission, as a judge receives it."""

    number: int
    lesson: str
    exercise: str
    statements: list[tuple]  # the submission's kept statements (submission.Statement.wire)


# --------------------------------------------------------------------------- a judge


class Judge:
    """One judge process's state: its slot, the plan, and the zygote it keeps."""

    def __init__(self, plan: Plan, slot: int):
        self.plan, self.slot = plan, slot
        self.zygote: ZygoteProcess | None = None
        self.wall = wall_limit(plan.timeout)  # the current unit's wall-clock backstop

    def grade(self, unit: Unit) -> Result:
        """The verdict on one unit; every failure is a Result, never an exception."""
        try:
            zygote = self._zygote(unit.lesson, unit.exercise)
        except ZygoteError as err:
            return Result(unit.exercise, "error", f"the grader could not start a worker: {err}")
        self.wall = wall_limit(self.plan.timeout)
        deadline = time.monotonic() + self.wall
        try:
            channel = zygote.spawn()
        except ZygoteError as err:
            self._drop_zygote()
            return Result(unit.exercise, "error", f"the grader could not start a worker: {err}")
        session = Session(socket_exchange(channel, deadline))
        try:
            result = self._check(session, unit)
        finally:
            channel.close()
            status, cpu = self._end_worker()
        return self._outcome(result, session.failure, status, cpu, unit.exercise)

    def preflight(self, unit: Unit) -> None:
        """Before the run's first unit: start its zygote and have one worker of it load an
        empty submission (sandbox.preflight); ZygoteError when that fails."""
        preflight(self._zygote(unit.lesson, unit.exercise), unit.exercise)

    def _check(self, session: Session, unit: Unit) -> Result | None:
        checks = _checks(unit.lesson)
        check = checks[unit.exercise]
        try:
            loaded = session.load(unit.statements, unit.exercise, other_references(check))
            if loaded["problem"] and SENTINEL in str(loaded["problem"]):  # at load time
                return Result(unit.exercise, "failed", "uses minitok's reference while it is "
                              "defined, which is not your work", REFERENCE_HINT)
            if loaded["problem"]:
                return Result(unit.exercise, "error", str(loaded["problem"])[:2000],
                              "run the exercise's cell after a restart: it must define the "
                              "function from imports and its own code only.")
            if not loaded["defined"]:
                return Result(unit.exercise, "not done",
                              f"no function named {unit.exercise} in the notebook.")
            if not loaded["callable"]:
                return Result(unit.exercise, "error",
                              f"expected a function, got {str(loaded['type'])[:100]}")
            return run_check(unit.exercise, check.test, RemoteObject(session))
        except WorkerGone:
            return None

    def _outcome(self, result: Result | None, failure, status: str, cpu: float,
                 name: str) -> Result:
        """The unit's verdict: the check's, unless the worker failed it (then an error)."""
        if failure is None and result is not None:
            return result
        kind, detail = failure or ("ended", "")
        if "SIGXCPU" in status or cpu >= self.plan.timeout:
            return Result(name, "error", f"timed out after {self.plan.timeout:g} s of CPU "
                          "time (an infinite loop?)", TIMEOUT_HINT)
        if kind == "timeout":
            return Result(name, "error", f"timed out: still not done after {self.wall:.0f} s "
                          f"on the clock, with {cpu:.1f} s of CPU time (a sleep, or waiting "
                          "for input?)", WAIT_HINT)
        if kind == "wire":
            return Result(name, "error", f"the grader could not read your function's answer: "
                          f"{detail}")
        return Result(name, "error", f"the process running your code ended before answering "
                      f"({status})", "run the exercise's cell after a restart: does it exit "
                      "the process or use too much memory?")

    def _zygote(self, lesson: str, exercise: str) -> ZygoteProcess:
        """This judge's zygotes, serving this exercise (started, or switched to it)."""
        if self.zygote is None:
            self.zygote = ZygoteProcess(self.plan, self.slot, lesson, exercise)
            return self.zygote
        try:
            self.zygote.serve(lesson, exercise)
        except ZygoteError:
            self._drop_zygote()
            raise
        return self.zygote

    def _end_worker(self) -> tuple[str, float]:
        try:
            return self.zygote.end()
        except ZygoteError as err:
            self._drop_zygote()
            return f"its zygote stopped: {err}", 0.0

    def _drop_zygote(self) -> None:
        if self.zygote is not None:
            self.zygote.stop()
            self.zygote = None
        kill_strays(set())

    def close(self) -> None:
        self._drop_zygote()


def _checks(lesson: str) -> dict:
    from minitok.checks import exercises_in

    return exercises_in(importlib.import_module(f"minitok.checks.{lesson}"))


def judge_main(connection, plan: Plan, slot: int, first: bool) -> None:
    """A judge process: grade the units it is sent until it is sent None; when `first`,
    preflight before the first unit, and on failure send (None, why) and stop."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the supervisor
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    torch.set_num_threads(1)
    with open("/proc/self/status") as f:
        vm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limit = vm_kib * 1024 + JUDGE_MEMORY
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    judge = Judge(plan, slot)
    try:
        while (unit := connection.recv()) is not None:
            if first:
                first = False
                try:
                    judge.preflight(unit)
                except ZygoteError as err:
                    connection.send((None, str(err)))
                    return
            connection.send((unit.number, judge.grade(unit)))
    finally:
        judge.close()


def kill_strays(keep: set[int]) -> None:
    """Kill every child of this process but `keep` (orphans a worker left behind)."""
    for pid in children_of(os.getpid()):
        if pid not in keep:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


# --------------------------------------------------------------------------- the pool


def run_units(units: list[Unit], plan: Plan, jobs: int, progress=None) -> dict[int, Result]:
    """Every unit's verdict, graded by `jobs` judge processes (see the module docstring);
    `progress(1)` is called as each unit is done. ZygoteError, and no verdict at all, when
    the first judge's preflight fails (the judges are stopped).

    The judges run under a supervisor process, a child subreaper: whatever a worker leaves
    behind ends up its child and is killed, without touching this process's other children.
    """
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    supervisor = context.Process(target=_supervise, args=(theirs, units, plan, jobs))
    supervisor.start()
    theirs.close()
    results = {}
    try:
        while (message := ours.recv()) == "done":
            if progress is not None:
                progress(1)
        results = message
    except (EOFError, OSError):
        pass
    finally:  # also on Ctrl-C: the judges, zygotes and workers die with it (PDEATHSIG)
        if supervisor.is_alive() and not ours.poll():
            supervisor.kill()
        supervisor.join()
    if isinstance(results, ZygoteError):  # the preflight failed
        raise results
    for unit in units:
        if unit.number not in results:
            results[unit.number] = Result(unit.exercise, "error", "the grader's supervisor "
                                          "process died before this exercise was graded")
    return results


def _supervise(connection, units: list[Unit], plan: Plan, jobs: int) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        connection.send(_pool(units, plan, jobs, lambda: connection.send("done")))
    except ZygoteError as err:
        connection.send(err)


def _pool(units: list[Unit], plan: Plan, jobs: int, done) -> dict[int, Result]:
    context = multiprocessing.get_context("fork")
    queue, results = _Queue(units), {}
    idle = [_start_judge(context, plan, slot, first=slot == 0)
            for slot in range(min(jobs, len(units)))]
    preflight_pid = idle[0][1].pid if idle else None  # until the first judge's first verdict
    busy: dict = {}  # connection -> (process, slot, unit)
    started: dict[int, float] = {}  # judge pid -> its CPU seconds when its unit started
    overran: set[int] = set()  # judges ended for spending too much CPU on a unit
    restarts = 0
    try:
        while busy or (queue and idle):
            while idle and queue:
                connection, process, slot = idle.pop()
                unit = queue.take(slot)
                try:
                    started[process.pid] = _cpu_seconds(process.pid)
                    connection.send(unit)
                    busy[connection] = (process, slot, unit)
                except OSError:  # it died between two units: take the unit back
                    queue.put_back(unit)
                    idle.append(_start_judge(context, plan, slot, process.pid == preflight_pid))
                    preflight_pid = _successor(preflight_pid, process, idle[-1])
            ready = wait([*busy, *(process.sentinel for process, _, _ in busy.values())],
                         POLL_SECONDS)
            for process, _, _ in busy.values():
                if _cpu_seconds(process.pid) - started[process.pid] > judge_cpu_limit(
                        plan.timeout) and process.pid not in overran:
                    overran.add(process.pid)
                    process.kill()
            for connection, (process, slot, unit) in list(busy.items()):
                if connection not in ready and process.sentinel not in ready:
                    continue
                del busy[connection]
                done()
                try:
                    number, result = connection.recv()
                    if number is None:  # the preflight failed: the run stops
                        raise ZygoteError(result)
                    results[number] = result
                    idle.append((connection, process, slot))
                    if process.pid == preflight_pid:
                        preflight_pid = None
                    continue
                except (EOFError, OSError):  # the judge died with this unit
                    results[unit.number] = _judge_died(unit, process.pid in overran,
                                                       plan.timeout)
                kill_strays({p.pid for p, _, _ in busy.values()} | {p.pid for _, p, _ in idle})
                restarts += 1
                if restarts <= MAX_JUDGE_RESTARTS:  # a new judge preflights if this one had not
                    idle.append(_start_judge(context, plan, slot, process.pid == preflight_pid))
                    preflight_pid = _successor(preflight_pid, process, idle[-1])
        for connection, process, _ in idle:
            connection.send(None)
            process.join()
    finally:
        _stop_everything([p for p, _, _ in busy.values()] + [p for _, p, _ in idle], jobs,
                         plan.uid_base)
    for unit in queue.left():
        results[unit.number] = Result(unit.exercise, "error", "the grader gave up: its judges "
                                      "kept dying")
    return results


def _successor(preflight_pid: int | None, dead, new: tuple) -> int | None:
    """Whose preflight the run waits for once judge `dead` is replaced by `new`."""
    return new[1].pid if dead.pid == preflight_pid else preflight_pid


def _judge_died(unit: Unit, overran: bool, timeout: float) -> Result:
    if overran:
        return Result(unit.exercise, "error", f"the grader spent more than "
                      f"{judge_cpu_limit(timeout):g} s of CPU time judging your function's "
                      "answers: an answer far larger than asked for?")
    return Result(unit.exercise, "error", "the grader's judge process died while grading "
                  "this exercise (did your code kill it, or answer with too much data?)")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process `pid` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Queue:
    """Units grouped by exercise. A judge keeps getting units of its exercise while there
    are some, then starts an exercise nobody grades yet, else helps with the longest one:
    each judge starts few zygotes (a zygote's start, importing the lesson's checks, costs
    a fraction of a second; the judge's first, importing torch, seconds)."""

    def __init__(self, units: list[Unit]):
        self.groups: dict[tuple, deque] = {}
        for unit in units:
            self.groups.setdefault((unit.lesson, unit.exercise), deque()).append(unit)
        self.current: dict[int, tuple] = {}  # judge slot -> the exercise it last graded

    def __bool__(self) -> bool:
        return bool(self.groups)

    def take(self, slot: int) -> Unit:
        key = self.current.get(slot)
        if key not in self.groups:
            taken = set(self.current.values())
            fresh = [k for k in self.groups if k not in taken]
            key = fresh[0] if fresh else max(self.groups, key=lambda k: len(self.groups[k]))
        self.current[slot] = key
        unit = self.groups[key].popleft()
        if not self.groups[key]:
            del self.groups[key]
        return unit

    def put_back(self, unit: Unit) -> None:
        self.groups.setdefault((unit.lesson, unit.exercise), deque()).appendleft(unit)

    def left(self) -> list[Unit]:
        return [unit for group in self.groups.values() for unit in group]


def _stop_everything(processes: list, jobs: int, uid_base: int | None) -> None:
    """Kill the judges still running and anything any worker left anywhere."""
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()
    kill_strays(set())
    if uid_base is not None:  # this run's uids only: no other run's workers share them
        for slot in range(jobs):
            _kill_uid(uid_base + slot)


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` (a worker's own uid), from a child that becomes it."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _start_judge(context, plan: Plan, slot: int, first: bool = False) -> tuple:
    """(connection, process, slot) of a new judge process; `first`: it preflights."""
    ours, theirs = context.Pipe()
    process = context.Process(target=judge_main, args=(theirs, plan, slot, first), daemon=True)
    process.start()
    theirs.close()
    return ours, process, slot
