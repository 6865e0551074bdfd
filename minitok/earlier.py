"""Your model from an earlier lesson, carrying the shipped weights into a later one.

Lesson 05 draws its digits with the Transformer *you* wrote in Lesson 04, the way
LLMs-from-scratch loads GPT-2's weights into the reader's own class:

    prior = checkpoints.load("prior")
    prior.transformer = yours(prior.transformer, lesson="04", name="Transformer")

`yours` reads the notebook `04_*.ipynb` beside the one that calls it (Jupyter and nbval run
a notebook in its own folder: your workspace/, or solutions/), runs only its imports and its
def/class blocks in a fresh namespace (no training cell, no plot, nothing that draws random
numbers), builds your class with the reference's config, loads the reference's weights into
it (strict: every parameter name must match) and compares the logits on a batch of tokens,
with and without the KV cache. Anything missing (no notebook, an unfinished exercise, other
names, other logits) is said in one line and the reference comes back, so the lesson still
runs; under MINITOK_STRICT (the solutions, in CI) it is an error instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from minitok.course import strict_mode
from minitok.tools.grading.server import load_statements
from minitok.tools.grading.submission import read


def load_class(lesson: str, name: str, folder: str | Path = ".") -> type:
    """The class `name` as notebook `{lesson}_*.ipynb` in `folder` defines it, loaded the way
    the grader's workers load a submission (imports and def/class blocks, in order)."""
    found = sorted(Path(folder).glob(f"{lesson}_*.ipynb"))
    if not found:
        raise LookupError(f"no {lesson}_*.ipynb in {Path(folder).resolve()}")
    namespace = {"__name__": f"lesson{lesson}"}
    problems = load_statements(read(found[0]).kept(), namespace)
    if name in problems:
        raise RuntimeError(f"{found[0].name}: {problems[name]}")
    if not isinstance(namespace.get(name), type):
        raise LookupError(f"{found[0].name} defines no class {name}")
    return namespace[name]


@torch.no_grad()
def same_logits(mine: nn.Module, reference: nn.Module, seed: int = 0) -> float:
    """The largest logit difference between two models on 4 random sequences of the
    reference's full length, read at once and then one token at a time through a KV cache."""
    config = reference.config
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, config.vocab_size, (4, config.block_size), generator=generator)
    idx = idx.to(reference.head.weight.device)  # (4, T)
    expected = reference(idx)  # (4, T, V)
    full = mine(idx)
    gap = (full - expected).abs().max().item()
    if config.causal:  # a bidirectional model has no cache
        cache = mine.new_cache(idx.shape[0])
        stepwise = torch.cat([mine(idx[:, t : t + 1], cache) for t in range(idx.shape[1])], 1)
        gap = max(gap, (stepwise - expected).abs().max().item())
    return gap


def yours(reference: nn.Module, lesson: str = "04", name: str = "Transformer",
          folder: str | Path = ".", atol: float = 1e-4) -> nn.Module:
    """Your class `name` from lesson `lesson`, holding `reference`'s weights, in eval mode;
    `reference` itself, with the reason printed, when yours cannot stand in for it."""
    try:
        with torch.random.fork_rng(devices=[]):  # its initial weights: not the lesson's draws
            mine = load_class(lesson, name, folder)(reference.config)
        mine.load_state_dict(reference.state_dict(), strict=True)
        mine.to(reference.head.weight.device).eval()
        gap = same_logits(mine, reference.eval())
        if not gap <= atol:
            raise ValueError(f"its logits differ from minitok's by up to {gap:.2g}")
    except Exception as err:  # no notebook, an unfinished exercise, other names or logits
        if strict_mode():
            raise
        why = " ".join(str(err).split())[:300] or "an exercise is not finished yet"
        print(f"using minitok's {name}: yours from lesson {lesson} cannot stand in "
              f"({type(err).__name__}: {why})")
        return reference
    how = "with and without the KV cache" if reference.config.causal else "bidirectional"
    print(f"your {name} from lesson {lesson}, with the shipped weights: the same logits as "
          f"minitok's (largest difference {gap:.1e}, {how})")
    return mine
