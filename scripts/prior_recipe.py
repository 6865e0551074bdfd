"""What the scripts that train at the AR prior's size share (train_maskgit.py, train_var.py).

    recipe = prior_recipe()                           # the shipped prior's size and recipe
    args, recipe = parse_recipe(recipe, "var", argv, description)   # --steps, --lr, ..., --out
    save_trained(model, args.out, "scripts/train_var.py", recipe, seconds, losses, tokenizer)

Reading the size and the recipe from prior.pt makes the lessons' races compare ways of
generating, not model sizes or ways of training; each can be overridden on the command line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from minitok import checkpoints


def prior_recipe() -> dict:
    """The shipped prior's transformer size and training recipe, from its checkpoint."""
    payload = checkpoints.load_payload(checkpoints.checkpoint_path("prior"), "prior")
    size = {k: payload["config"][k] for k in ("n_layer", "n_head", "n_embd", "dropout")}
    return {**size, **payload["meta"]["recipe"]}


def parse_recipe(recipe: dict, kind: str, argv, description: str
                 ) -> tuple[argparse.Namespace, dict]:
    """A flag per recipe entry (--n-layer, --steps, ...; its default the recipe's) and --out
    (default: the shipped checkpoint of `kind`). Returns (args, the recipe as given)."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in recipe.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--out", type=Path, default=checkpoints.checkpoint_path(kind))
    args = parser.parse_args(argv)
    return args, {name: getattr(args, name) for name in recipe}


def save_trained(model, path: Path, script: str, recipe: dict, seconds: float,
                 losses: list[float], tokenizer) -> Path:
    """Save `model` as `checkpoints.save_trained` does (final_loss: the mean of the last 100
    steps' losses; the tokenizer it was trained on) and say what was written."""
    path, results = checkpoints.save_trained(model, path, script, recipe, seconds, losses,
                                             tokenizer=tokenizer)
    K = model.config.num_codes
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {recipe['steps']} steps in "
          f"{seconds:.0f} s, mean loss of the last 100 steps {results['final_loss']:.3f} "
          f"(uniform guess: ln {K} = {math.log(K):.3f})")
    return path
