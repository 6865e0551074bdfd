"""Grading speed: `minitok grade` on 100 Lesson 01 submissions.

    python -m minitok.bench.grading             # 100 submissions, --jobs = the core count
    python -m minitok.bench.grading --quick     # 3 submissions
    python -m minitok.bench.grading --sandbox none

Goal (issue 15): 100 submissions in at most 2 minutes on a 2-core machine, at least 8x the
rate of the grader before it, which ran each exercise in a fresh Python process that imported
torch and minitok, one at a time: the issue measured about 1.6 s per exercise on this
project's 2-core machine (16 minutes for 100 submissions). A shared machine's load changes
both rates, so the old way is also measured here, beside the new one: a few fresh processes
that each import the lesson's checks and run one check (less than the old grader did per
exercise: it also imported the notebook's matplotlib), one at a time.

The submissions are a mix, as a class hands them in: a third solved (solutions/), a third
unsolved (lessons/), a third with one classic mistake in one exercise. Each is a separate file
(a copy), graded in one `minitok grade` run; the time includes starting the judges and the
zygotes. It needs a course checkout (solutions/ and lessons/ in this folder or above).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minitok.tools.grade import grade_reports

OLD_SECONDS_PER_EXERCISE = 1.6  # the grader before issue 15 (issue 15's measurement)
GOAL_SECONDS = 120  # for 100 submissions
GOAL_RATIO = 8
NOTEBOOK = "01_vector_quantization.ipynb"
MISTAKE = ("(p * p.log()).sum()", "(p * p.log2()).sum()")  # perplexity with mixed bases
OLD_WAY = ("from minitok.checks import lesson01 as c, verdict; "
           "assert verdict(c.{0}, c.{0}.reference).passed")


def old_way_seconds(exercises=("squared_distances", "nearest_code", "kmeans_step")) -> float:
    """Seconds per exercise the old way, measured now: a fresh process per check, in turn."""
    start = time.perf_counter()
    for name in exercises:
        subprocess.run([sys.executable, "-c", OLD_WAY.format(name)], check=True,
                       capture_output=True)
    return (time.perf_counter() - start) / len(exercises)


def make_submissions(root: Path, folder: Path, count: int) -> list[tuple[Path, int]]:
    """`count` submission files in `folder`, each with the score it must get."""
    solved = (root / "solutions" / NOTEBOOK).read_text()
    kinds = [(solved, 7), ((root / "lessons" / NOTEBOOK).read_text(), 0),
             (solved.replace(*MISTAKE), 6)]
    made = []
    for i in range(count):
        text, score = kinds[i % 3]
        path = folder / f"student{i:03d}.ipynb"
        path.write_text(text)
        made.append((path, score))
    return made


def run(root: Path, count: int = 100, jobs: int | None = None, sandbox: str = "auto") -> dict:
    """Grade `count` submissions once; the timing, the rate and whether every score is right."""
    folder = Path(tempfile.mkdtemp(prefix="minitok-bench-grading-"))
    try:
        submissions = make_submissions(root, folder, count)
        start = time.perf_counter()
        reports, mode = grade_reports([path for path, _ in submissions], timeout=60,
                                      jobs=jobs, sandbox=sandbox)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    exercises = sum(report.max_score for report in reports)
    correct = all(report.score == score for report, (_, score) in zip(reports, submissions,
                                                                       strict=True))
    measured = old_way_seconds()
    return {"submissions": count, "exercises": exercises, "seconds": seconds, "mode": mode,
            "jobs": jobs or os.cpu_count(), "scores_right": correct,
            "old_per_exercise": measured, "speedup": measured * exercises / seconds,
            "speedup_issue": OLD_SECONDS_PER_EXERCISE * exercises / seconds}


def main() -> None:
    from minitok.tools.bench import course_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 submissions instead of 100")
    parser.add_argument("--jobs", type=int, default=None, help="judges (default: the cores)")
    parser.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))
    args = parser.parse_args()
    root = course_root()
    if root is None:
        raise SystemExit("run this inside a course checkout (solutions/ and lessons/)")
    r = run(root, 3 if args.quick else 100, args.jobs, args.sandbox)
    per_100 = r["seconds"] * 100 / r["submissions"]
    print(f"{r['submissions']} submissions ({r['exercises']} exercises), {r['jobs']} judges, "
          f"sandbox {r['mode']}: {r['seconds']:.1f} s ({r['seconds'] / r['exercises']:.3f} s "
          f"per exercise); every score right: {r['scores_right']}")
    print(f"goal: 100 submissions in <= {GOAL_SECONDS} s: {per_100:.0f} s per 100 -> "
          f"{'met' if per_100 <= GOAL_SECONDS else 'NOT met'}")
    print(f"goal: >= {GOAL_RATIO}x the old rate, measured now ({r['old_per_exercise']:.2f} s "
          f"per exercise): {r['speedup']:.1f}x -> "
          f"{'met' if r['speedup'] >= GOAL_RATIO else 'NOT met'}")
    print(f"       against the issue's {OLD_SECONDS_PER_EXERCISE} s per exercise: "
          f"{r['speedup_issue']:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
