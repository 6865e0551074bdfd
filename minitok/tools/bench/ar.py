"""Lesson 05's goals: class-conditional digits the classifier recognises, and what they cost.

Quality: the shipped prior draws the same number of digits of every class; the digit
classifier of Lesson 03 (trained on real digits only) reads them. Printed next to it: the
same classifier on the real test digits, and diversity (distinct token grids, exact copies
of a training digit, mean pixel distance within a class against the real digits'), so that
a model drawing one perfect digit per class cannot pass.

Cost: sequential forward passes, token positions read, and wall time per image, with and
without the KV cache (the script asserts that both give the same tokens).

    python -m minitok.bench.ar            # 100 digits per class, s = 1 and s = 2, 1 thread
    python -m minitok.bench.ar --quick    # a smoke run: 10 per class, one timing
    python -m minitok.bench.ar --threads 2

Goals: at the lesson's guidance scale (s = 2), accuracy on generated digits >= 95% (real
test digits: about 97-98%), diversity reported. `run()` returns the rows, so other scripts
can import it.
"""

from __future__ import annotations

import sys
import time

import torch

from minitok import checkpoints
from minitok.classifier import load_classifier
from minitok.data import load_digits
from minitok.evaluate import count_forward, encode_digits, sample_quality, spread
from minitok.prior import ar_generate
from minitok.tools.bench import bench_parser

SETTINGS = {"temperature": 1.0, "top_k": None, "top_p": None}  # plain sampling
LESSON_SCALE = 2.0  # the guidance scale Lesson 05 uses (LlamaGen evaluates 1.65 to 2.0)
SCALES = (1.0, LESSON_SCALE)
GOAL = 0.95


def seeded(seed: int) -> torch.Generator:
    """A fresh generator seeded with `seed`: every draw starts from the same random state."""
    return torch.Generator().manual_seed(seed)


def quality_rows(per_class: int, seed: int) -> list[dict]:
    """One row per guidance scale: accuracy, per-class minimum, diversity."""
    prior, tokenizer = checkpoints.load("prior"), checkpoints.load("tokenizer")
    classifier = load_classifier()
    train_grids, _ = encode_digits(tokenizer, "train")
    test_images, test_labels = load_digits("test", size=tokenizer.config.image_size)
    real_acc = classifier.accuracy(test_images, test_labels)
    real_spread = spread(test_images, test_labels)
    labels = torch.arange(10).repeat_interleave(per_class)
    rows = []
    for scale in SCALES:
        grids = ar_generate(prior, labels, cfg_scale=scale, generator=seeded(seed), **SETTINGS)
        q = sample_quality(grids, labels, tokenizer, classifier, train_grids=train_grids)
        rows.append({
            "kind": "quality", "cfg_scale": scale, "samples": len(labels),
            "accuracy": q["accuracy"], "worst_class": min(q["per_class"].values()),
            "distinct": q["distinct"], "copies": q["copies"], "spread": q["spread"],
            "real_accuracy": real_acc, "real_spread": real_spread,
        })
    return rows


def cost_rows(batch_sizes, cfg_scale: float, repeats: int, seed: int) -> list[dict]:
    """Forward passes, token positions and time per image, with and without the cache."""
    prior = checkpoints.load("prior")
    ar_generate(prior, [0], cfg_scale=cfg_scale, generator=seeded(seed))  # warm-up
    rows = []
    for batch in batch_sizes:
        labels = torch.arange(batch) % 10
        result = {}
        for use_cache in (True, False):
            best = float("inf")
            for _ in range(repeats):
                with count_forward(prior.transformer) as stats:
                    start = time.perf_counter()
                    grids = ar_generate(prior, labels, cfg_scale=cfg_scale, use_cache=use_cache,
                                        generator=seeded(seed), **SETTINGS)
                    best = min(best, time.perf_counter() - start)
            result[use_cache] = (best, grids, dict(stats))
        assert torch.equal(result[True][1], result[False][1]), "cache changed the tokens"
        for use_cache in (True, False):
            best, _, stats = result[use_cache]
            rows.append({
                "kind": "cost", "batch": batch, "use_cache": use_cache, "cfg_scale": cfg_scale,
                "passes_per_image": stats["passes"],  # sequential: the batch shares them
                "positions_per_image": stats["positions"] / batch,
                "ms_per_image": 1e3 * best / batch,
            })
    return rows


def run(quick: bool = False, seed: int = 0, threads: int | None = None) -> list[dict]:
    if threads is not None:
        torch.set_num_threads(threads)
    per_class = 10 if quick else 100
    rows = quality_rows(per_class, seed)
    rows += cost_rows((1, 10) if quick else (1, 10, 100), cfg_scale=LESSON_SCALE,
                      repeats=1 if quick else 3, seed=seed)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__.split("\n")[0], "smoke run: 10 digits per class, one timing",
                        device=False,
                        threads="torch threads (default 1, as the lesson: the prior is tiny, and "
                                "extra threads on a shared CPU mostly add waiting)"
                        ).parse_args(argv)
    rows = run(args.quick, args.seed, args.threads)
    print(f"AR prior (minitok/checkpoints/prior.pt), CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; sampling T = 1, no top-k/top-p"
          + ("; --quick: a smoke run, too few samples to judge the goal" if args.quick else ""))
    for r in rows:
        if r["kind"] == "quality":
            if r["cfg_scale"] == LESSON_SCALE:
                met = "goal met" if r["accuracy"] >= GOAL else "BELOW GOAL"
                verdict = f"goal >= {100 * GOAL:.0f}%: {met}"
            else:
                verdict = "no guidance, for comparison"
            print(f"cfg s = {r['cfg_scale']:.1f}: classifier accuracy on {r['samples']} "
                  f"generated digits {100 * r['accuracy']:.1f}% (worst class "
                  f"{100 * r['worst_class']:.0f}%; real test digits "
                  f"{100 * r['real_accuracy']:.1f}%; {verdict})")
            print(f"           diversity: distinct grids {100 * r['distinct']:.1f}%, copies of "
                  f"a training digit {100 * r['copies']:.1f}%, spread {r['spread']:.2f} "
                  f"(real test digits {r['real_spread']:.2f})")
    for r in rows:
        if r["kind"] == "cost":
            print(f"batch {r['batch']:3d}, cfg s = {r['cfg_scale']:.1f}, "
                  f"use_cache={r['use_cache']!s:5}: {r['passes_per_image']} sequential forward "
                  f"passes, {r['positions_per_image']:,.0f} token positions per image (both CFG "
                  f"halves), "
                  f"{r['ms_per_image']:.1f} ms per image")
    cost = {(r["batch"], r["use_cache"]): r for r in rows if r["kind"] == "cost"}
    for batch in sorted({b for b, _ in cost}):
        on, off = cost[batch, True], cost[batch, False]
        print(f"batch {batch:3d}: the cache reads "
              f"{off['positions_per_image'] / on['positions_per_image']:.1f}x fewer token "
              f"positions and is {off['ms_per_image'] / on['ms_per_image']:.1f}x faster "
              "(same tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
