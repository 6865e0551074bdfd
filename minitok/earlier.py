"""Your model from an earlier lesson, carrying the shipped weights into a later one.

Lesson 05 draws its digits with the Transformer *you* wrote in Lesson 04, the way
LLMs-from-scratch loads GPT-2's weights into the reader's own class:

    prior = checkpoints.load("prior")
    prior.transformer = yours(prior.transformer, lesson="04", name="Transformer")

`yours` reads the notebook `04_*.ipynb` beside the one that calls it (Jupyter and nbval run
a notebook in its own folder: your workspace/, or solutions/), preferring the lesson's own
name over copies such as `04_transformer-Copy1.ipynb`. It runs only what the class needs of
the notebook's imports, def/class blocks and simple assignments (minitok.notebook_code: no
training cell, no plot, nothing that draws random numbers) in a fresh namespace, builds your
class with the reference's config, loads the reference's weights into it (strict: every
parameter name must match) and compares the logits on a batch of tokens, with and without
the KV cache. Anything missing (no notebook, an unfinished exercise, other names, other
logits) is said in one line that names the file and the exercise, and the reference comes
back, so the lesson still runs; under MINITOK_STRICT (the solutions, in CI) it is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from minitok.course import handoff_strict
from minitok.notebook_code import load_statements, read


def find_notebook(lesson: str, folder: str | Path = ".") -> tuple[Path, list[Path]]:
    """(the notebook read for lesson `lesson`, the other candidates beside it).

    The lesson's own file name (`04_transformer.ipynb`: letters, digits and underscores)
    wins over copies (`04_transformer-Copy1.ipynb`, `04_transformer (1).ipynb`); among
    copies only, the most recently changed one."""
    _check_lesson(lesson)
    found = sorted(Path(folder).glob(f"{lesson}_*.ipynb"))
    if not found:
        raise LookupError(f"no {lesson}_*.ipynb in {Path(folder).resolve()}")
    exact = [path for path in found if re.fullmatch(rf"{lesson}_\w+\.ipynb", path.name)]
    chosen = exact[0] if exact else max(found, key=lambda path: path.stat().st_mtime)
    return chosen, [path for path in found if path != chosen]


def _check_lesson(lesson) -> str:
    """A lesson's number as its notebooks begin: two digits, "04" (not a glob pattern)."""
    if not (isinstance(lesson, str) and re.fullmatch(r"\d\d", lesson)):
        raise ValueError(f"lesson must be two digits as the notebooks begin, e.g. '04', "
                         f"got {lesson!r}")
    return lesson


def load_class(lesson: str, name: str, folder: str | Path = ".") -> type:
    """The class `name` as notebook `{lesson}_*.ipynb` in `folder` defines it, loaded the way
    the grader's workers load a submission (what the class needs, in notebook order)."""
    path, _ = find_notebook(lesson, folder)
    namespace = {"__name__": f"lesson{lesson}"}
    problems = load_statements(read(path).kept(), namespace, {name})
    if name in problems:
        raise RuntimeError(problems[name])
    if not isinstance(namespace.get(name), type):
        raise LookupError(f"it defines no class {name}")
    return namespace[name]


@torch.no_grad()
def logit_gaps(mine: nn.Module, reference: nn.Module, seed: int = 0) -> tuple[float, float | None]:
    """The largest logit difference between two models on 4 random sequences of the
    reference's full length: (read at once, read one token at a time through a KV cache),
    the second None for a bidirectional model, which has no cache."""
    config = reference.config
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, config.vocab_size, (4, config.block_size), generator=generator)
    idx = idx.to(reference.head.weight.device)  # (4, T)
    expected = reference(idx)  # (4, T, V)
    full = (mine(idx) - expected).abs().max().item()
    if not config.causal:
        return full, None
    cache = mine.new_cache(idx.shape[0])
    stepwise = torch.cat([mine(idx[:, t : t + 1], cache) for t in range(idx.shape[1])], 1)
    return full, (stepwise - expected).abs().max().item()


def same_logits(mine: nn.Module, reference: nn.Module, seed: int = 0) -> float:
    """The largest logit difference, with or without the KV cache (see logit_gaps)."""
    return max(gap for gap in logit_gaps(mine, reference, seed) if gap is not None)


def yours(reference: nn.Module, lesson: str = "04", name: str = "Transformer",
          folder: str | Path = ".", atol: float = 1e-4,
          weights: str = "the shipped weights") -> nn.Module:
    """Your class `name` from lesson `lesson`, holding `reference`'s weights, in eval mode;
    `reference` itself, with the reason printed, when yours cannot stand in for it.

    `weights` says in the printed line what `reference` holds (a freshly initialised model,
    which yours then trains, is "minitok's initial weights")."""
    if not (isinstance(reference, nn.Module) and hasattr(reference, "config")):
        raise TypeError(f"reference must be minitok's model (an nn.Module with a config), "
                        f"got {type(reference).__name__}")
    _check_lesson(lesson)
    path = others = None
    try:
        path, others = find_notebook(lesson, folder)
        with torch.random.fork_rng(devices=[]):  # its initial weights: not the lesson's draws
            mine = load_class(lesson, name, folder)(reference.config)
        mine.load_state_dict(reference.state_dict(), strict=True)
        mine.to(reference.head.weight.device).eval()
        gaps = logit_gaps(mine, reference.eval())
        if not max(gap for gap in gaps if gap is not None) <= atol:
            raise ValueError(_differ(*gaps, atol))
    except Exception as err:  # no notebook, an unfinished exercise, other names or logits
        if handoff_strict():
            raise
        where = f"yours in {path.name}" if path else f"yours from lesson {lesson}"
        print(f"using minitok's {name}: {where} cannot stand in ({_reason(err)})"
              f"{_also(others)}")
        return reference
    how = "with and without the KV cache" if reference.config.causal else "bidirectional"
    print(f"your {name} from lesson {lesson}, with {weights}: the same logits as "
          f"minitok's (largest difference {max(g for g in gaps if g is not None):.1e}, {how})")
    if others:
        print(f"(read {path.name}{_also(others)})")
    return mine


def passed(lesson: str, name: str, folder: str | Path = ".") -> Callable:
    """Your function `name` from lesson `lesson` if it passes that lesson's check; minitok's
    reference, with the reason printed, if it does not (under MINITOK_STRICT: an error).

    It is loaded as `load_class` loads a class, with the earlier exercises it calls; each of
    those is checked too and, where it fails, replaced by minitok's, as the earlier
    notebook's own check cells did. So lesson 08 can race your `ar_generate` and lesson 09
    quantize with your `nearest_code`.
    """
    from minitok.checks import exercises_in, verdict  # the checks import the lesson modules

    module = f"minitok.checks.lesson{_check_lesson(lesson)}"
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"lesson: there is no lesson {lesson} with exercises")
    checks = exercises_in(importlib.import_module(module))
    if name not in checks:
        raise ValueError(f"name: lesson {lesson} has no exercise {name!r} (it has "
                         f"{', '.join(checks)})")
    path = others = None
    try:
        path, others = find_notebook(lesson, folder)
        namespace = {"__name__": f"lesson{lesson}"}
        problems = load_statements(read(path).kept(), namespace, {name})
        if name in problems:
            raise RuntimeError(problems[name])
        if not callable(namespace.get(name)):
            raise LookupError(f"it defines no function {name}")
        with torch.random.fork_rng(devices=[]):  # the checks draw: not the lesson's draws
            for other in sorted(set(namespace) & set(checks) - {name}):
                if not verdict(checks[other], namespace[other]).passed:
                    namespace[other] = checks[other].reference
            result = verdict(checks[name], namespace[name])
        if result.status == "not done":
            raise ValueError(f"{name} is not finished yet: it raises NotImplementedError")
        if not result.passed:
            raise ValueError(f"its check says: {result.message}")
    except Exception as err:  # no notebook, an unfinished exercise, a failing check
        if handoff_strict():
            raise
        where = f"yours in {path.name}" if path else f"yours from lesson {lesson}"
        print(f"using minitok's {name}: {where} cannot stand in ({_reason(err)})"
              f"{_also(others)}")
        return checks[name].reference
    print(f"your {name} from lesson {lesson} (it passes its check){_also(others)}")
    return namespace[name]


def _differ(full: float, cached: float | None, atol: float) -> str:
    """Which of the two readings differs from minitok's, and by how much."""
    if cached is None:
        return f"its logits differ from minitok's by up to {full:.2g}"
    if full <= atol:
        return (f"its logits differ from minitok's by up to {cached:.2g} only through the KV "
                f"cache (one token at a time); read at once they match ({full:.1e})")
    if cached <= atol:
        return (f"its logits differ from minitok's by up to {full:.2g} read at once; through "
                f"the KV cache they match ({cached:.1e})")
    return (f"its logits differ from minitok's by up to {full:.2g} read at once and "
            f"{cached:.2g} through the KV cache")


def _reason(err: Exception) -> str:
    """The error in one line, naming the learner's function where it broke."""
    why = " ".join(str(err).split())[:300]
    frames = [(frame.f_code, line) for frame, line in traceback.walk_tb(err.__traceback__)
              if frame.f_code.co_filename.startswith("<cell ")]
    if not frames:
        return f"{type(err).__name__}: {why or 'no message'}"
    code, line = frames[-1]
    function = getattr(code, "co_qualname", code.co_name)  # Python 3.11+: Class.method
    cell = code.co_filename.strip("<>")
    if isinstance(err, NotImplementedError):
        return f"{function} ({cell}) is not finished yet: it raises NotImplementedError"
    return f"{type(err).__name__}: {why or 'no message'}, in your {function} ({cell}, line {line})"


def _also(others: list[Path] | None) -> str:
    if not others:
        return ""
    return f"; also beside it, not read: {', '.join(path.name for path in others)}"
