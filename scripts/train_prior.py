"""Rebuild the shipped class-conditional prior, minitok/checkpoints/prior.pt (Lesson 05).

    .venv/bin/python scripts/train_prior.py            # the shipped checkpoint
    .venv/bin/python scripts/train_prior.py --steps 200 --out /tmp/prior.pt   # a quick try

It encodes the training digits with the shipped tokenizer (minitok/checkpoints/tokenizer.pt),
trains the prior with teacher forcing and 10% condition dropout, and writes a weights-only
checkpoint. The shipped checkpoint was trained on 2 CPU threads (the default here); the
thread count changes the order of float sums, so other counts give slightly different weights.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict

import torch

from minitok.checkpoints import checkpoint_path
from minitok.course import seed_everything
from minitok.prior import (
    ARPrior,
    PriorConfig,
    encode_digits,
    make_sequences,
    prior_loss,
    save_prior,
    train_prior,
)
from minitok.tokenizer import load_tokenizer

DEFAULTS = {"steps": 2000, "batch_size": 64, "lr": 3e-3, "p_uncond": 0.1, "seed": 0,
            "threads": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--p-uncond", type=float, default=DEFAULTS["p_uncond"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                        help="torch CPU threads (the shipped checkpoint: 2)")
    parser.add_argument("--out", default=str(checkpoint_path("prior")))
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    torch.set_num_threads(args.threads)

    seed_everything(args.seed)  # the prior's initial weights come from the global RNG
    tokenizer = load_tokenizer()
    codes, labels = encode_digits(tokenizer, "train")  # (1437, 8, 8), (1437,)
    seqs = make_sequences(codes, labels, tokenizer.num_codes)  # (1437, 65)
    test_codes, test_labels = encode_digits(tokenizer, "test")
    test_seqs = make_sequences(test_codes, test_labels, tokenizer.num_codes)

    config = PriorConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size)
    prior = ARPrior(config)
    start = time.perf_counter()
    losses = train_prior(prior, seqs, args.steps, batch_size=args.batch_size, lr=args.lr,
                         p_uncond=args.p_uncond, seed=args.seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        test_loss = prior_loss(prior.eval(), test_seqs, config.num_codes).item()
    meta = {
        "script": "scripts/train_prior.py",
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                  "p_uncond": args.p_uncond, "seed": args.seed},
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "test_loss": test_loss,
        "train_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": str(torch.__version__),
        "config": asdict(config),
    }
    path = save_prior(prior, args.out, meta)
    print(f"trained {args.steps} steps in {seconds:.0f} s: train loss {meta['final_train_loss']:.3f}, "
          f"test loss {test_loss:.3f} (nats per token; uniform over {config.num_codes} codes "
          f"would be {torch.log(torch.tensor(float(config.num_codes))).item():.3f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
