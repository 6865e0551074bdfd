"""Next-scale prediction against everything else (Lesson 09): one race, one goal.

    python -m minitok.bench.var            # 100 samples per class, 10 latency repeats
    python -m minitok.bench.var --quick    # a smoke run: 2 samples per class, 1 repeat
    python -m minitok.bench.var --device cuda

The race (`minitok.evaluate.race`, pixels out, the same 10 x 100 labels for every row):
Lesson 05's AR prior, Lesson 06's MaskGIT at 4 and 8 steps, Lesson 08's diffusion model
(DDIM 20) and the hybrid, and Lesson 09's VAR (scales 1, 2, 4, 8: 4 passes), plain and
guided (s = 2, ramped over the scales). Columns: forward passes per image, the positions
they compute, median ms per image at batch 1 and at batch 64, the classifier's accuracy, the
Fréchet distance to the test digits (`digit_fd`; the floor of real digits printed beside),
diversity.

Goal (issue 29): VAR's best accuracy in 4 passes (plain, or guided with s = 2 as the official
VAR always samples with guidance; the row is named) within 2 points of MaskGIT's best
accuracy (plain, as in Lesson 06); the plain row and the Fréchet distances are reported
beside, whatever they are.
`run(...)` returns everything measured, for `python -m minitok.bench` and the tests.
"""

from __future__ import annotations

import time

from minitok import checkpoints, evaluate
from minitok.classifier import load_classifier
from minitok.evaluate import RaceSetting
from minitok.tools.bench import race_args
from minitok.tools.bench.maskgit import machine

FULL = {"samples_per_class": 100, "latency_repeats": 10, "throughput_repeats": 2}
QUICK = {"samples_per_class": 2, "latency_repeats": 1, "throughput_repeats": 1}
MASKGIT_STEPS = (4, 8)
VAR_SCALE = 2.0  # guided VAR, ramped from 1 at the first scale to 2 at the last
GOAL_POINTS = 2.0


def race_settings(quick: bool = False) -> list[RaceSetting]:
    """AR, MaskGIT, diffusion, the hybrid, then VAR plain and guided (--quick: no diffusion)."""
    rows = [RaceSetting("AR")] + [RaceSetting("MaskGIT", s) for s in MASKGIT_STEPS]
    if not quick:
        rows += [RaceSetting("diffusion", 20), RaceSetting("hybrid", 10)]
    return rows + [RaceSetting("VAR"), RaceSetting("VAR", cfg_scale=VAR_SCALE)]


def load_models(device: str = "cpu") -> dict:
    """The shipped models of the race, each checked against the tokenizer it was trained on."""
    tokenizer = checkpoints.load("tokenizer", device=device)
    var_tokenizer = checkpoints.load("var_tokenizer", device=device)
    models = {"tokenizer": tokenizer, "var_tokenizer": var_tokenizer,
              "classifier": load_classifier(device)}
    for kind in ("prior", "maskgit", "diffusion", "diffusion_decoder"):
        models[kind] = checkpoints.load(kind, device=device)
        if kind != "diffusion":
            checkpoints.check_tokenizer(models[kind], tokenizer)
    models["var"] = checkpoints.load("var", device=device)
    checkpoints.check_tokenizer(models["var"], var_tokenizer)
    return models


def run(quick: bool = False, device: str = "cpu", seed: int = 0) -> dict:
    """Measure the race; returns {"race", "floor", "n", "seconds", "quick"}."""
    sizes = QUICK if quick else FULL
    m = load_models(device)
    start = time.perf_counter()
    race = evaluate.race(m["maskgit"], m["prior"], m["tokenizer"], m["classifier"],
                         race_settings(quick), seed=seed, diffusion_model=m["diffusion"],
                         decoder=m["diffusion_decoder"], var_model=m["var"],
                         var_tokenizer=m["var_tokenizer"], **sizes)
    n = 10 * sizes["samples_per_class"]
    return {"race": race, "n": n, "floor": evaluate.fd_floor(max(n, 2), m["classifier"]),
            "seconds": time.perf_counter() - start, "quick": quick}


def goals(result: dict) -> dict:
    """VAR's best accuracy (plain or guided) against MaskGIT's best (plain), and its passes."""
    rows = {r["setting"]: r for r in result["race"]}
    best_mg = max((r for name, r in rows.items() if name.startswith("MaskGIT")),
                  key=lambda r: r["accuracy"])
    var = max((r for name, r in rows.items() if name.startswith("VAR")),
              key=lambda r: r["accuracy"])  # the first of equals: the plain row
    gap = 100 * (best_mg["accuracy"] - var["accuracy"])
    return {"maskgit": best_mg, "var": var, "plain": rows["VAR (scales)"], "gap": gap,
            "met": gap <= GOAL_POINTS and var["passes/image"] <= 4}


def goal_lines(result: dict) -> list[str]:
    g = goals(result)
    mg, var, plain = g["maskgit"], g["var"], g["plain"]
    return [f"accuracy: best VAR ({var['setting']}, {var['passes/image']} passes) "
            f"{100 * var['accuracy']:.1f}% (FD {var['fd']:.2f}) vs best MaskGIT ({mg['setting']}) "
            f"{100 * mg['accuracy']:.1f}% (FD {mg['fd']:.2f}): {abs(g['gap']):.1f} points "
            f"{'below' if g['gap'] > 0 else 'above'} (goal: at most {GOAL_POINTS:g} below, in "
            f"at most 4 passes) -> {'met' if g['met'] else 'NOT met'}",
            f"  plain VAR: {100 * plain['accuracy']:.1f}% (FD {plain['fd']:.2f}, diversity "
            f"{plain['diversity']:.2f})"]


def main(argv=None) -> None:
    args = race_args("VAR against AR, MaskGIT and diffusion", argv)
    result = run(args.quick, args.device, args.seed)
    smoke = ["(a smoke run: the goal is judged on the full run)"] if result["quick"] else []
    print("\n".join([evaluate.race_table(result["race"]),
                     f"FD floor ({result['n']} real training digits): {result['floor']:.2f}",
                     *goal_lines(result), *smoke,
                     f"device: {args.device}; {machine()}; {result['seconds']:.0f} s"]))


if __name__ == "__main__":
    main()
