"""Rebuild the digit classifier that ships in minitok/checkpoints/classifier.pt.

    python scripts/train_classifier.py                 # the shipped checkpoint
    python scripts/train_classifier.py --out /tmp/clf.pt --seed 1

Fits `minitok.classifier.train_classifier` (full-batch L-BFGS in float64 on one thread, on
the training digits only), writes a weights-only checkpoint and prints the held-out accuracy
at every size the course uses. Same seed, same weights on the same CPU (a few seconds).
"""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

from minitok import checkpoints
from minitok.classifier import SHIPPED_SEED, train_classifier
from minitok.data import load_digits

# the recipe is train_classifier's own defaults (steps: L-BFGS's max_iter), recorded in the meta
DEFAULTS = {n: p.default for n, p in inspect.signature(train_classifier).parameters.items()}
RECIPE = {"steps": DEFAULTS["max_iter"], "hidden": DEFAULTS["hidden"],
          "weight_decay": DEFAULTS["weight_decay"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path("classifier"),
                        help="where to write the checkpoint (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=SHIPPED_SEED)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = train_classifier(args.seed)
    seconds = time.perf_counter() - start
    results = {}
    for size in (8, 16, 32):
        images, labels = load_digits("test", size=size)
        results[f"test_accuracy_{size}"] = round(model.accuracy(images, labels), 4)
    meta = checkpoints.training_meta("scripts/train_classifier.py",
                                     {**RECIPE, "seed": args.seed}, seconds, results)
    path = checkpoints.save(model, args.out, meta)
    print(f"trained in {seconds:.1f} s; wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    for name, value in results.items():
        print(f"{name}: {value:.1%}")


if __name__ == "__main__":
    main()
