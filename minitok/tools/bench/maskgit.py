"""MaskGIT against autoregressive generation: passes, wall-clock time, quality (issue 6).

    python -m minitok.bench.maskgit            # 100 samples per class, 20 latency repeats
    python -m minitok.bench.maskgit --quick    # smoke run: 2 samples per class, 1 repeat
    python -m minitok.bench.maskgit --device cuda

Both generators use the shipped tokenizer and models of the same size, trained with the same
recipe (4 layers, 4 heads, 64 channels; 2,000 steps of batch 64): Lesson 05's AR prior with
its KV cache (minitok/checkpoints/prior.pt) and Lesson 06's MaskGIT
(minitok/checkpoints/maskgit.pt). Both sample plainly: temperature 1, no guidance, no top-k.
Rows: AR, MaskGIT at 4, 8 and 12 steps with the cosine schedule, and at 8 steps with the
linear and square schedules.

Columns: forward passes per image (a batch shares them); token positions those passes
compute per image (the work); median milliseconds per image at batch 1 (latency) and at
batch 64 (throughput), each after one warm-up batch; the digit classifier's accuracy on the
requested class; diversity (mean within-class pairwise distance relative to real test digits,
1.0 = as varied as real handwriting).

Goals: MaskGIT at 8 steps within 2 accuracy points of AR, with >= 4x fewer forward passes,
and lower latency at batch 1. The script prints each goal with its measured numbers, and
says where MaskGIT is not faster. `run(...)` returns the rows for other tools. Timings use one
torch thread by default (`--threads`), like the training scripts: on a small shared CPU a
second thread mostly waits, and one thread makes runs comparable across machines.
"""

from __future__ import annotations

import os
import platform

import torch

from minitok import checkpoints, evaluate
from minitok.classifier import load_classifier
from minitok.tools.bench import race_args

FULL = {"samples_per_class": 100, "latency_repeats": 20, "throughput_repeats": 3}
QUICK = {"samples_per_class": 2, "latency_repeats": 1, "throughput_repeats": 1}  # smoke run


def run(quick: bool = False, device: str = "cpu", seed: int = 0) -> list[dict]:
    """Measure every setting; returns one dict per row (see minitok.evaluate.race)."""
    sizes = QUICK if quick else FULL
    model = checkpoints.load("maskgit", device=device)
    prior = checkpoints.load("prior", device=device)
    tokenizer = checkpoints.load("tokenizer", device=device)
    classifier = load_classifier(device)
    return evaluate.race(model, prior, tokenizer, classifier, seed=seed, **sizes)


def ratios(rows: list[dict]) -> dict:
    """The AR row, the MaskGIT 8-step row and the ratios the goals are about."""
    ar = next(r for r in rows if r["setting"].startswith("AR"))
    mg = next(r for r in rows if r["setting"] == "MaskGIT 8 cosine")
    return {
        "ar": ar,
        "mg": mg,
        "gap": 100 * (ar["accuracy"] - mg["accuracy"]),  # accuracy points AR is ahead
        "fewer": ar["passes/image"] / mg["passes/image"],  # x fewer forward passes
        "latency": ar["ms/image @1"] / mg["ms/image @1"],  # > 1: MaskGIT faster at batch 1
        "throughput": ar["ms/image @64"] / mg["ms/image @64"],  # > 1: faster at batch 64
        "work": mg["positions/image"] / ar["positions/image"],  # token positions computed
    }


def goal_lines(rows: list[dict]) -> list[str]:
    """Each goal of issue 6 with the measured numbers, and whether it was met."""
    r = ratios(rows)
    ar, mg, gap, fewer = r["ar"], r["mg"], r["gap"], r["fewer"]
    latency, throughput, work = r["latency"], r["throughput"], r["work"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"accuracy: MaskGIT 8 steps {100 * mg['accuracy']:.1f}% vs AR {100 * ar['accuracy']:.1f}% "
        f"(MaskGIT {abs(gap):.1f} points {'below' if gap > 0 else 'above'} AR; goal: at most 2 "
        f"below) -> {verdict(gap <= 2)}",
        f"forward passes per image: AR {ar['passes/image']} vs MaskGIT {mg['passes/image']} = "
        f"{fewer:.1f}x fewer (goal >= 4x) -> {verdict(fewer >= 4)}",
        f"latency at batch 1: AR {ar['ms/image @1']:.2f} ms vs MaskGIT {mg['ms/image @1']:.2f} ms "
        f"per image = {latency:.2f}x (goal > 1x) -> {verdict(latency > 1)}",
        f"throughput at batch 64 (no goal): AR {ar['ms/image @64']:.3f} ms vs MaskGIT "
        f"{mg['ms/image @64']:.3f} ms per image = {throughput:.2f}x"
        + ("" if throughput > 1 else " -> MaskGIT is NOT faster here")
        + f"; MaskGIT computes {work:.1f}x the token positions of cached AR",
    ]


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads, load average "
            f"{load:.1f} when the run ended (timings on a shared machine are noisy)")


def main(argv=None) -> None:
    args = race_args("MaskGIT against AR generation", argv)
    rows = run(args.quick, args.device, args.seed)
    print(evaluate.race_table(rows))
    print()
    for line in goal_lines(rows):
        print(line)
    print(f"device: {args.device}; {machine()}")


if __name__ == "__main__":
    main()
