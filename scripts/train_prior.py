"""Rebuild the shipped class-conditional prior, minitok/checkpoints/prior.pt (Lesson 05).

    python scripts/train_prior.py                     # the shipped checkpoint
    python scripts/train_prior.py --steps 200 --out /tmp/prior.pt   # a quick try

It encodes the training digits with the shipped tokenizer, trains the prior with teacher
forcing and 10% condition dropout (`training.fit`: one CPU thread, deterministic kernels, so
the same seed gives the same weights on the same CPU), and writes a weights-only checkpoint.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from minitok import checkpoints
from minitok.course import seed_everything
from minitok.evaluate import encode_digits
from minitok.prior import ARPrior, PriorConfig, make_sequences, prior_loss, train_prior

RECIPE = {"steps": 2000, "batch_size": 64, "lr": 3e-3, "p_uncond": 0.1, "seed": 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in RECIPE.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--out", default=str(checkpoints.checkpoint_path("prior")))
    args = parser.parse_args(argv)
    recipe = {name: getattr(args, name) for name in RECIPE}

    tokenizer = checkpoints.load("tokenizer")
    codes, labels = encode_digits(tokenizer, "train")  # (1437, 8, 8), (1437,)
    test_codes, test_labels = encode_digits(tokenizer, "test")
    config = PriorConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size)
    seed_everything(args.seed)  # the prior's initial weights come from the global RNG
    prior = ARPrior(config)
    start = time.perf_counter()
    losses = train_prior(prior, codes, labels, args.steps, batch_size=args.batch_size,
                         lr=args.lr, p_uncond=args.p_uncond, seed=args.seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        test_seqs = make_sequences(test_codes, test_labels, config.num_codes)
        test_loss = prior_loss(prior, test_seqs, config.num_codes).item()
    results = {"final_train_loss": sum(losses[-50:]) / len(losses[-50:]), "test_loss": test_loss}
    meta = checkpoints.training_meta("scripts/train_prior.py", recipe, seconds, results,
                                     tokenizer=tokenizer)
    path = checkpoints.save(prior, args.out, meta)
    print(f"trained {args.steps} steps in {seconds:.0f} s: train loss "
          f"{results['final_train_loss']:.3f}, test loss {test_loss:.3f} (nats per token; "
          f"uniform over {config.num_codes} codes would be {math.log(config.num_codes):.3f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
