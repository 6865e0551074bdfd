"""`make bench` / `python -m minitok.bench`: every lesson's benchmark in one run, one table.

    python -m minitok.bench                   # full sizes, about 15-25 minutes on 2 busy cores
    python -m minitok.bench --quick           # small sizes, notebooks skipped (under a minute)
    python -m minitok.bench --out bench.md    # also write the table as Markdown

It imports the benchmark modules of this package (each also runs on its own, as
`python -m minitok.bench.<name>`) and calls their `run` functions, so all ratios come from
the same run on the same machine:

    nearest-code lookup vs torch.cdist       minitok.bench.nearest_code  (Lesson 01)
    tokenizer vs vector-quantize-pytorch     minitok.bench.tokenizer     (Lesson 03)
    KV cache vs recomputing, 64/256/1024     minitok.bench.kv_cache      (Lesson 04)
    the AR prior's quality and cache         minitok.bench.ar            (Lesson 05)
    AR vs MaskGIT                            minitok.bench.maskgit       (Lesson 06)
    any-to-any, held-out captions            minitok.bench.anytoany      (Lesson 07)
    AR vs MaskGIT vs diffusion, the hybrid   minitok.bench.diffusion     (Lesson 08)
    next-scale prediction (VAR) in the race  minitok.bench.var           (Lesson 09)
    `minitok grade` on 100 submissions       minitok.bench.grading       (instructors; needs a
                                             course checkout)
    executing every solution notebook        solutions/*.ipynb (skipped by --quick; needs a
                                             course checkout: the current folder or above)

A benchmark that fails is reported as a FAILED row (and the exit code is 1); the others
still run. Timings on a shared machine are noisy: the table records the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

NOTEBOOK_GOAL_S = 180  # a solution notebook runs in under 3 minutes on 2 CPU cores


@dataclass
class Row:
    """One line of the table. ratio: the number the goal is about (None when there is none)."""

    benchmark: str
    measured: str
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


def load_section(name: str):
    """The benchmark module minitok.tools.bench.<name> (e.g. "kv_cache")."""
    return importlib.import_module(f"minitok.tools.bench.{name}")


def bench_parser(description: str, quick: str, device: bool = True,
                 threads: str | None = None) -> argparse.ArgumentParser:
    """The flags the benchmarks share: --quick (a smoke run: `quick` says what it shrinks),
    --device (cpu or cuda), --seed, and --threads where `threads` says why its default is 1;
    a benchmark adds its own flags to the parser it gets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick)
    if device:
        parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    if threads:
        parser.add_argument("--threads", type=int, default=1, help=threads)
    return parser


def race_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The flags of the generation races (maskgit, diffusion, var): --quick, --device, --seed,
    --threads. The thread count is applied here."""
    args = bench_parser(description, "fewer samples and repeats",
                        threads="torch threads (default 1)").parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def course_root() -> Path | None:
    """The course checkout holding solutions/: the current folder or the nearest one above
    it (as `minitok assign` finds it); None where there is none (an installed package)."""
    here = Path.cwd().resolve()
    return next((folder for folder in [here, *here.parents]
                 if (folder / "solutions").is_dir()), None)


# --------------------------------------------------------------------------- the sections


def nearest_code_rows(quick: bool) -> list[Row]:
    bench = load_section("nearest_code")
    ours, ref, ratio = bench.run(quick=quick, repeats=1 if quick else 3)
    mib, size = 2**20, f"N={ratio['n']:,} K={ratio['k']:,} D={ratio['d']}"
    return [
        Row(f"nearest-code vs cdist, peak memory ({size})",
            f"{ours['peak_bytes'] / mib:,.1f} MiB vs {ref['peak_bytes'] / mib:,.1f} MiB",
            ratio["peak_bytes"], "<= 0.25", ratio["peak_bytes"] <= 0.25),
        Row(f"nearest-code vs cdist, time ({size})",
            f"{ours['seconds']:.2f} s vs {ref['seconds']:.2f} s; "
            f"{ratio['disagreements']} indices differ", ratio["seconds"], "<= 1",
            ratio["seconds"] <= 1),
    ]


def tokenizer_rows(quick: bool) -> list[Row]:
    bench = load_section("tokenizer")
    shipped = bench.quality_row()
    steps = 10 if quick else bench.TrainConfig().steps
    ours, theirs = bench.comparison_rows(steps)
    gap = 100 * (shipped["acc_real"] - shipped["acc_recon"])
    used = round(shipped["usage"] * shipped["num_codes"])
    return [
        Row("shipped tokenizer: codebook usage (test digits)",
            f"{used}/{shipped['num_codes']} codes", shipped["usage"], ">= 0.95",
            shipped["usage"] >= 0.95),
        Row("shipped tokenizer: classifier on reconstructions / on real",
            f"{100 * shipped['acc_recon']:.1f}% vs {100 * shipped['acc_real']:.1f}% "
            f"(gap {gap:.1f} points)", shipped["acc_recon"] / shipped["acc_real"],
            "gap <= 2 points", gap <= 2),
        Row(f"tokenizer test MSE, minitok / vector-quantize-pytorch ({steps} steps each)",
            f"{ours['mse']:.4f} vs {theirs['mse']:.4f}", ours["mse"] / theirs["mse"], "<= 1",
            ours["mse"] <= theirs["mse"]),
        Row(f"tokenizer code usage, minitok / vector-quantize-pytorch ({steps} steps each)",
            f"{100 * ours['usage']:.0f}% vs {100 * theirs['usage']:.0f}%",
            ours["usage"] / theirs["usage"], ">= 1", ours["usage"] >= theirs["usage"]),
    ]


def kv_cache_rows(quick: bool) -> list[Row]:
    bench = load_section("kv_cache")
    rows = []
    for r in bench.run((32, 64) if quick else bench.LENGTHS):
        goal = ">= 5 at 256" if r["tokens"] == 256 else ""
        rows.append(Row(f"KV cache speed-up, {r['tokens']} tokens, batch 1",
                        f"{r['cached_ms_per_token']:.2f} vs {r['recompute_ms_per_token']:.2f} "
                        f"ms/token", r["speedup"], goal,
                        r["speedup"] >= 5 if r["tokens"] == 256 else None))
    return rows


def ar_rows(quick: bool) -> list[Row]:
    bench = load_section("ar")
    if quick:
        rows = bench.quality_rows(per_class=2, seed=0)
        rows += bench.cost_rows((1,), cfg_scale=bench.LESSON_SCALE, repeats=1, seed=0)
    else:
        rows = bench.run(quick=False)
    out = []
    for r in (r for r in rows if r["kind"] == "quality"):
        goal = r["cfg_scale"] == bench.LESSON_SCALE
        out.append(Row(f"AR prior, s={r['cfg_scale']:g}: accuracy on {r['samples']} samples "
                       f"/ on real digits",
                       f"{100 * r['accuracy']:.1f}% vs {100 * r['real_accuracy']:.1f}%; "
                       f"spread {r['spread']:.2f} (real {r['real_spread']:.2f})",
                       r["accuracy"] / r["real_accuracy"], ">= 95% accuracy" if goal else "",
                       r["accuracy"] >= bench.GOAL if goal else None))
    cost = {(r["batch"], r["use_cache"]): r for r in rows if r["kind"] == "cost"}
    for batch in sorted({b for b, _ in cost}):
        cached, full = cost[(batch, True)], cost[(batch, False)]
        out.append(Row(f"AR prior, KV cache speed-up, batch {batch}",
                       f"{cached['ms_per_image']:.1f} vs {full['ms_per_image']:.1f} ms/image",
                       full["ms_per_image"] / cached["ms_per_image"]))
    return out


def maskgit_rows(quick: bool) -> list[Row]:
    bench = load_section("maskgit")
    if quick:
        from minitok import evaluate

        model, prior, tokenizer, classifier = _generators()
        settings = [evaluate.RaceSetting("AR"), evaluate.RaceSetting("MaskGIT", 8, "cosine")]
        rows = evaluate.race(model, prior, tokenizer, classifier, settings, samples_per_class=2,
                             latency_repeats=1, throughput_repeats=1)
    else:
        rows = bench.run(quick=False)
    measured = bench.ratios(rows)  # the same ratios as minitok.bench.maskgit's goal lines
    ar, mg, gap, fewer = measured["ar"], measured["mg"], measured["gap"], measured["fewer"]
    latency, throughput = measured["latency"], measured["throughput"]
    out = [
        Row("AR / MaskGIT 8 steps: forward passes per image",
            f"{ar['passes/image']} vs {mg['passes/image']}", fewer, ">= 4", fewer >= 4),
        Row("AR / MaskGIT 8 steps: latency, batch 1",
            f"{ar['ms/image @1']:.1f} vs {mg['ms/image @1']:.1f} ms/image", latency, "> 1",
            latency > 1),
        Row("AR / MaskGIT 8 steps: time per image, batch 64",
            f"{ar['ms/image @64']:.2f} vs {mg['ms/image @64']:.2f} ms/image", throughput),
        Row("MaskGIT 8 steps / AR: classifier accuracy",
            f"{100 * mg['accuracy']:.1f}% vs {100 * ar['accuracy']:.1f}% "
            f"({gap:+.1f} points for AR)", mg["accuracy"] / ar["accuracy"],
            "within 2 points", gap <= 2),
    ]
    for r in rows:
        if r is not ar and r is not mg:
            out.append(Row(f"{r['setting']}: accuracy, diversity (AR: "
                           f"{100 * ar['accuracy']:.1f}%, {ar['diversity']:.2f})",
                           f"{100 * r['accuracy']:.1f}%, {r['diversity']:.2f}; "
                           f"{r['passes/image']} passes"))
    return out


def _generators():
    from minitok import checkpoints
    from minitok.classifier import load_classifier

    return (checkpoints.load("maskgit"), checkpoints.load("prior"), checkpoints.load("tokenizer"),
            load_classifier())


def anytoany_rows(quick: bool) -> list[Row]:
    """minitok.bench.anytoany's run (full); a few held-out captions with --quick."""
    from minitok.checkpoints import checkpoint_path

    if not checkpoint_path("anytoany").is_file():
        return [Row("any-to-any (Lesson 07)", "not measured: no minitok/checkpoints/anytoany.pt")]
    bench = load_section("anytoany")
    scale = bench.CFG_SCALE
    if quick:
        t2i, plain, i2t, goal = _anytoany_smoke(scale), None, None, None
    else:
        result, goal = bench.run(quick=False), bench.GOAL
        t2i, plain, i2t = result["t2i"], result["t2i_plain"], result["i2t"]
    guided_goal = bench.GOAL_GUIDED if goal else None
    rows = [Row(f"any-to-any: text -> image, guidance s={scale:g}, held-out captions "
                f"(classifier reads the digit)",
                f"{100 * t2i['accuracy']:.1f}% of {t2i['n']} images", t2i["accuracy"],
                f">= {guided_goal}" if goal else "",
                t2i["accuracy"] >= guided_goal if goal else None)]
    if plain is not None:
        rows.append(Row("any-to-any: text -> image, no guidance (s=1)",
                        f"{100 * plain['accuracy']:.1f}% of {plain['n']} images",
                        plain["accuracy"], f">= {bench.GOAL_PLAIN}",
                        plain["accuracy"] >= bench.GOAL_PLAIN))
    if i2t is not None:
        rows.append(Row("any-to-any: image -> text, test digits (caption names the digit)",
                        f"{100 * i2t['accuracy']:.1f}% of {i2t['n']} captions", i2t["accuracy"],
                        f">= {goal}", i2t["accuracy"] >= goal))
    return rows


def _anytoany_smoke(cfg_scale: float) -> dict:
    """One image for each of 10 held-out captions (a smoke run, no goal)."""
    from minitok import checkpoints
    from minitok.anytoany import held_out_pairs
    from minitok.classifier import load_classifier
    from minitok.evaluate import text_to_image_accuracy

    model, tokenizer = checkpoints.load("anytoany"), checkpoints.load("tokenizer")
    checkpoints.check_tokenizer(model, tokenizer)  # its image ids must mean this tokenizer's codes
    pairs = held_out_pairs()
    return text_to_image_accuracy(model, tokenizer, load_classifier(), per_caption=1,
                                  pairs=pairs[:: max(1, len(pairs) // 10)],
                                  generator=torch.Generator().manual_seed(0), cfg_scale=cfg_scale)


def diffusion_rows(quick: bool) -> list[Row]:
    """minitok.bench.diffusion's run: the race with diffusion, the Fréchet distances, goals."""
    from minitok.checkpoints import checkpoint_path

    missing = [k for k in ("diffusion", "diffusion_decoder") if not checkpoint_path(k).is_file()]
    if missing:
        return [Row("AR vs diffusion (Lesson 08)", f"not measured: no minitok/checkpoints/"
                    f"{missing[0]}.pt")]
    bench = load_section("diffusion")
    result = bench.run(quick=quick)
    n = result["n"]
    rows = []
    for r in result["race"]:
        rows.append(Row(f"race ({n} samples): {r['setting']}",
                        f"{r['passes/image']} passes; {r['ms/image @1']:.1f} ms/image at batch "
                        f"1, {r['ms/image @64']:.2f} at batch 64; accuracy "
                        f"{100 * r['accuracy']:.1f}%, FD {r['fd']:.2f}, diversity "
                        f"{r['diversity']:.2f}", r["fd"]))
    rows.append(Row(f"FD ({n} samples): real training digits, the floor",
                    f"{result['floor']:.2f}", result["floor"]))
    rows.append(Row(f"FD ({n} samples): tokenizer reconstructions of those digits",
                    f"{result['recon']:.2f}", result["recon"]))
    others = list(result["quality"])
    if result["anytoany"] is not None:
        others.append(result["anytoany"])
    for r in others:
        rows.append(Row(f"FD ({n} samples): {r['setting']}",
                        f"{r['fd']:.2f}; accuracy {100 * r['accuracy']:.1f}%, diversity "
                        f"{r['diversity']:.2f}", r["fd"]))
    for name, r in result["decoders"].items():
        rows.append(Row(f"test digits' tokens, {name}",
                        f"MSE {r['mse']:.4f}, accuracy {100 * r['accuracy']:.1f}%, FD "
                        f"{r['fd']:.2f}, sharpness {r['sharpness']:.2f} of real, "
                        f"{r['ms/image']:.2f} ms/image", r["fd"]))
    g = bench.goals(result)
    mg, df = g["maskgit"], g["diffusion"]
    quick_note = " (--quick: not the goal's size)" if quick else ""
    rows.append(Row(f"best plain diffusion / best MaskGIT: classifier accuracy{quick_note}",
                    f"{df['setting']} {100 * df['accuracy']:.1f}% (FD {df['fd']:.2f}) vs "
                    f"{mg['setting']} {100 * mg['accuracy']:.1f}% (FD {mg['fd']:.2f})",
                    df["accuracy"] / mg["accuracy"], "within 2 points",
                    None if quick else g["accuracy_met"]))
    for h in g["hybrids"]:
        rows.append(Row(f"{h['hybrid']['setting']} / tokenizer decoder, same tokens: FD"
                        f"{quick_note}", f"{h['hybrid']['fd']:.2f} vs {h['ar']['fd']:.2f}"
                        + ("" if h["same_tokens"] else " (the tokens differ!)"),
                        h["hybrid"]["fd"] / h["ar"]["fd"], "<= 1", None if quick else h["met"]))
    return rows


def var_rows(quick: bool) -> list[Row]:
    """minitok.tools.bench.var's run: the race with VAR, its goal."""
    from minitok.checkpoints import checkpoint_path

    if not checkpoint_path("var").is_file():
        return [Row("VAR in the race (Lesson 09)", "not measured: no minitok/checkpoints/var.pt")]
    bench = load_section("var")
    result = bench.run(quick=quick)
    n = result["n"]
    rows = [Row(f"race ({n} samples): {r['setting']}",
                f"{r['passes/image']} passes; {r['ms/image @1']:.1f} ms/image at batch 1, "
                f"{r['ms/image @64']:.2f} at batch 64; accuracy {100 * r['accuracy']:.1f}%, FD "
                f"{r['fd']:.2f}, diversity {r['diversity']:.2f}", r["fd"])
            for r in result["race"] if r["setting"].startswith("VAR")]
    g = bench.goals(result)
    quick_note = " (--quick: not the goal's size)" if quick else ""
    rows.append(Row(f"best VAR (4 passes) / best MaskGIT: classifier accuracy{quick_note}",
                    f"{g['var']['setting']} {100 * g['var']['accuracy']:.1f}% (FD "
                    f"{g['var']['fd']:.2f}) vs "
                    f"{g['maskgit']['setting']} {100 * g['maskgit']['accuracy']:.1f}% (FD "
                    f"{g['maskgit']['fd']:.2f})", g["var"]["accuracy"] / g["maskgit"]["accuracy"],
                    "within 2 points", None if quick else g["met"]))
    return rows


NO_CHECKOUT = "not measured: no solutions/ folder here (run from a course checkout)"


def grading_rows(quick: bool) -> list[Row]:
    root = course_root()
    if root is None:
        return [Row("minitok grade, Lesson 01 submissions", NO_CHECKOUT)]
    bench = load_section("grading")
    r = bench.run(root, 3 if quick else 100)
    per_100 = r["seconds"] * 100 / r["submissions"]
    return [
        Row(f"minitok grade: {r['submissions']} Lesson 01 submissions, {r['jobs']} judges, "
            f"sandbox {r['mode']}", f"{r['seconds']:.1f} s ({per_100:.0f} s per 100); scores "
            f"{'right' if r['scores_right'] else 'WRONG'}", per_100 / bench.GOAL_SECONDS,
            "<= 1 (2 min per 100)", per_100 <= bench.GOAL_SECONDS and r["scores_right"]),
        Row("minitok grade: speed-up over the old way (a fresh process per exercise, "
            "measured in the same run)", f"{r['old_per_exercise']:.2f} vs "
            f"{r['seconds'] / r['exercises']:.3f} s per exercise (the issue's old figure: "
            f"{bench.OLD_SECONDS_PER_EXERCISE} s, {r['speedup_issue']:.1f}x)", r["speedup"],
            f">= {bench.GOAL_RATIO}", r["speedup"] >= bench.GOAL_RATIO),
    ]


def notebook_rows(quick: bool) -> list[Row]:
    root = course_root()
    if root is None:  # an installed package, run outside the course's folder
        return [Row("executing the solution notebooks", NO_CHECKOUT)]
    notebooks = sorted((root / "solutions").glob("*.ipynb"))
    if quick:
        return [Row("executing the solution notebooks",
                    f"skipped by --quick ({len(notebooks)} notebooks; takes minutes)")]
    rows = []
    for path in notebooks:
        name = f"execute {path.relative_to(root)} (MINITOK_STRICT=1)"
        try:
            seconds = execute_notebook(path)
        except subprocess.CalledProcessError as err:  # this notebook fails; time the others
            rows.append(Row(f"{name}: FAILED", last_error(err.stderr), met=False))
            continue
        rows.append(Row(name, f"{seconds / 60:.1f} min", seconds / NOTEBOOK_GOAL_S,
                        "<= 1 (3 min)", seconds <= NOTEBOOK_GOAL_S))
    return rows


def last_error(text: str) -> str:
    """The last 'SomeError: message' line of a traceback, without terminal colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
    return (errors or [line for line in lines if line] or ["(no output)"])[-1][:300]


def execute_notebook(path: Path) -> float:
    """Wall seconds to execute a notebook top to bottom (into a temporary copy) as CI does."""
    env = {**os.environ, "MINITOK_STRICT": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                        "--execute", "--output-dir", tmp, "--ExecutePreprocessor.timeout=1200",
                        str(path)], check=True, cwd=path.parent, env=env,
                       capture_output=True, text=True)
        return time.perf_counter() - start


SECTIONS = {  # name (for --only) -> the function that measures it
    "nearest_code": nearest_code_rows,  # Lesson 01
    "tokenizer": tokenizer_rows,  # Lesson 03
    "kv_cache": kv_cache_rows,  # Lesson 04
    "ar": ar_rows,  # Lesson 05
    "maskgit": maskgit_rows,  # Lesson 06
    "anytoany": anytoany_rows,  # Lesson 07
    "diffusion": diffusion_rows,  # Lesson 08
    "var": var_rows,  # Lesson 09
    "grading": grading_rows,  # minitok grade
    "notebooks": notebook_rows,
}

# What a section needs beyond minitok's own dependencies, and the extra that brings it: a
# section whose module is missing is skipped, and its row says what it needs.
NEEDS = {"tokenizer": ("vector_quantize_pytorch", "dev"),
         "notebooks": ("nbconvert", "lab")}


def missing_need(name: str) -> Row | None:
    """The row that says why section `name` cannot run here, or None when it can."""
    module, extra = NEEDS.get(name, (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return Row(f"{name}: skipped", f"not measured: needs {module} (pip install "
                                   f"'minitok[{extra}]', or make setup-instructor)")


# --------------------------------------------------------------------------- the report


def run_all(quick: bool, sections=None, threads: int = 1, log=print) -> tuple[list[Row], dict]:
    """Run each section; a failing one becomes a FAILED row. Returns (rows, seconds per section).

    Every section runs with `threads` torch threads (default 1: these models are small, and
    on a shared CPU extra threads mostly add waiting; both sides of each ratio get the same).
    """
    rows, seconds = [], {}
    unknown = set(sections or ()) - set(SECTIONS)
    if unknown:
        raise ValueError(f"sections: unknown {sorted(unknown)}; known: {list(SECTIONS)}")
    for name in sections or SECTIONS:
        skipped = missing_need(name)
        if skipped is not None:
            log(f"== {name}: skipped, {skipped.measured}")
            rows.append(skipped)
            continue
        log(f"== {name} ...")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        try:
            rows += SECTIONS[name](quick)
        except Exception as err:  # noqa: BLE001 -- report it and carry on with the others
            rows.append(Row(f"{name}: FAILED", f"{type(err).__name__}: {err}", met=False))
        finally:
            torch.set_num_threads(before)  # a benchmark may have changed it
        seconds[name] = time.perf_counter() - start
        log(f"   {seconds[name]:.0f} s")
    return rows, seconds


def machine(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return (f"{platform.platform()} ({cpu}, {os.cpu_count()} CPUs), Python "
            f"{platform.python_version()}, torch {torch.__version__}, {threads} torch "
            f"thread(s); load average {load:.1f} at the end (timings on a shared CPU are noisy)")


def markdown(rows: list[Row], seconds: dict, quick: bool, threads: int = 1) -> str:
    """The report: date, machine, one table, what each section cost."""
    mark = {True: "yes", False: "**no**", None: ""}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured by `python -m minitok.bench{' --quick' if quick else ''}` on {now}, "
        f"on {machine(threads)}.",
        *(["", "**--quick: small sizes, not the goals' sizes; notebooks skipped.**"] if quick
          else []),
        "",
        "| benchmark | measured | ratio | goal | met |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3g}"
        cells = [r.benchmark, r.measured, ratio, r.goal, mark[r.met]]
        lines.append("| " + " | ".join(" ".join(c.replace("|", "/").split()) for c in cells)
                     + " |")
    total = sum(seconds.values())
    lines += ["", f"Run time {total / 60:.1f} min: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minitok.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, notebooks skipped (a smoke run, for tests)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), default=None,
                        help="run only this section (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out must be a file path, but {str(args.out)!r} is a folder")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    rows, seconds = run_all(args.quick, args.only, args.threads,
                            log=lambda s: print(s, file=sys.stderr))
    report = markdown(rows, seconds, args.quick, args.threads)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"wrote {args.out}")
    return 1 if any("FAILED" in r.benchmark for r in rows) else 0
