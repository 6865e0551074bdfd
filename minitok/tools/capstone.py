"""The capstone, `minitok demo --yours mytok/`: your pipeline, trained and measured end to end.

    minitok export workspace/ --out mytok/     # your passed exercises, as a package
    minitok demo --yours mytok/                # train and run it beside the shipped pipeline

With your package, the course's pipeline is trained from scratch on the digits with your
code, and the shipped checkpoints run beside it, measured the same way:

    tokenizer   your tokenizer_step (L03) in your training loop `fit_tokenizer` (L03); your
                tokens_to_image decodes
    AR prior    your Transformer (L04) trained with your prior_batch_loss (L05) in your
                training loop `fit` (L05); drawn with your ar_generate (L05), guidance s=2
    MaskGIT     your Transformer (L04, bidirectional) trained with your random_mask and
                masked_loss (L06) in your `fit`; drawn with your decode_loop (L06)

Where an exercise is missing from the package (not passed yet), minitok's stands in and the
table says so (`tokenizer.fit_tokenizer` and `training.fit` for the loops). It runs on the
CPU, on one thread, the shipped pipeline beside yours, so that its ms/image compare. The
digits are judged by the Lesson 03 classifier (trained on real digits only): accuracy,
Fréchet distance on its features (`evaluate.digit_fd`, lower is closer), diversity (1.0 =
as varied as real digits), sequential forward passes and ms per image.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from minitok import maskgit as reference_maskgit
from minitok import prior as reference_prior
from minitok import tokenizer as reference_tokenizer
from minitok import transformer as reference_transformer
from minitok.course import one_thread, reproducible, seed_everything
from minitok.data import load_digits
from minitok.evaluate import count_forward, digit_fd, diversity, encode_digits
from minitok.sampling import drop_labels
from minitok.training import fit as reference_fit

AR_SCALE = 2.0  # Lesson 05's guidance scale, as the demo's
MASKGIT_STEPS = 8
STEPS = {"tokenizer": 600, "prior": 1000, "maskgit": 500}  # the shipped ones: 2000 each
QUICK_STEPS = {"tokenizer": 10, "prior": 10, "maskgit": 10}

# Each stage of the pipeline and the exercises it runs: (lesson module, exercise, reference).
FIT = ("lesson05", "fit", reference_fit)  # Lesson 05's training loop, for both token models
STAGES = {
    "tokenizer": [("lesson03", "tokenizer_step", reference_tokenizer.tokenizer_step),
                  ("lesson03", "fit_tokenizer", reference_tokenizer.fit_tokenizer),
                  ("lesson03", "tokens_to_image", reference_tokenizer.tokens_to_image)],
    "AR prior": [("lesson04", "Transformer", reference_transformer.Transformer),
                 ("lesson05", "prior_batch_loss", reference_prior.prior_batch_loss),
                 FIT,
                 ("lesson05", "ar_generate", reference_prior.ar_generate)],
    "MaskGIT": [("lesson04", "Transformer", reference_transformer.Transformer),
                ("lesson06", "random_mask", reference_maskgit.random_mask),
                ("lesson06", "masked_loss", reference_maskgit.masked_loss),
                FIT,
                ("lesson06", "decode_loop", reference_maskgit.decode_loop)],
}
LOOPS = {"tokenizer": "fit_tokenizer", "AR prior": "fit", "MaskGIT": "fit"}  # whose loop trains it


LESSONS = tuple(sorted({lesson[-2:] for parts in STAGES.values() for lesson, _, _ in parts}))


def stage_lines(passed: set[tuple[str, str]]) -> list[str]:
    """One line per stage: how much of it would run on your code, given the (lesson module,
    exercise) pairs that pass."""
    lines = []
    for stage, parts in STAGES.items():
        mine = [name for lesson, name, _ in parts if (lesson, name) in passed]
        theirs = [name for lesson, name, _ in parts if (lesson, name) not in passed]
        lines.append(f"{stage}: {len(mine)}/{len(parts)} yours" +
                     (f" (minitok's: {', '.join(theirs)})" if theirs else ""))
    return lines


# --------------------------------------------------------------------------- your package


def load_package(folder: Path) -> ModuleType:
    """Import the package in `folder` (written by `minitok export`) under its folder name."""
    folder = Path(folder).resolve()
    init = folder / "__init__.py"
    if not init.is_file():
        raise ValueError(f"--yours: {folder} has no __init__.py: write it with "
                         f"`minitok export workspace/ --out {folder.name}/`")
    name = folder.name
    if not name.isidentifier():
        raise ValueError(f"--yours: {folder.name!r} is not a Python package name")
    known = sys.modules.get(name)
    if known is not None and Path(getattr(known, "__file__", None) or "/").parent != folder:
        raise ValueError(f"--yours: a module named {name!r} is already imported here; "
                         "export your package under another name")
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def yours_in(package: ModuleType | None, lesson: str, name: str, reference):
    """Your `name` from the package's module `lesson`, or None where it is not yours: not
    there, minitok's own (imported in its place), or not listed in the package's YOURS."""
    mine = getattr(getattr(package, lesson, None), name, None)
    listed = getattr(package, "YOURS", None)
    if mine is None or mine is reference or (isinstance(listed, dict)
                                             and name not in listed.get(lesson, ())):
        return None
    return mine


class Parts:
    """Your function for each exercise of the pipeline, the training loops `fit_tokenizer`
    and `fit` among them, or minitok's where yours is missing (`missing` names those)."""

    def __init__(self, package: ModuleType | None):
        self.found, self.missing, self.references = {}, set(), {}
        for parts in STAGES.values():
            for lesson, name, reference in parts:
                mine = yours_in(package, lesson, name, reference)
                self.found[name] = reference if mine is None else mine
                self.references[name] = reference
                if mine is None:
                    self.missing.add(name)

    def __getattr__(self, name: str):
        found = self.__dict__.get("found", {})
        if name not in found:
            raise AttributeError(name)
        return found[name]

    def passed(self) -> set[tuple[str, str]]:
        return {(lesson, name) for parts in STAGES.values() for lesson, name, _ in parts
                if name not in self.missing}


# --------------------------------------------------------------------------- training


def train_tokenizer(parts: Parts, steps: int, seed: int):
    """The course's tokenizer, trained by your fit_tokenizer around your tokenizer_step."""
    from minitok.tokenizer import TrainConfig

    tokenizer, _ = reference_tokenizer.train_tokenizer(
        train=TrainConfig(steps=steps, seed=seed), step_fn=parts.tokenizer_step,
        loop=parts.fit_tokenizer, progress=False)
    return tokenizer


def run_fit(parts: Parts, model, batch_loss, steps: int, seed: int) -> list[float]:
    """Your `fit` (Lesson 05's signature, so no progress bar) on one thread with deterministic
    kernels, as `training.fit` runs itself."""
    with reproducible():
        return parts.fit(model, batch_loss, steps, seed=seed)


def with_your_transformer(model, parts: Parts):
    """The model with its Transformer rebuilt from your class (same config, fresh weights)."""
    model.transformer = parts.Transformer(model.transformer.config)
    return model


def train_prior(parts: Parts, grids, labels, num_codes: int, steps: int, seed: int):
    """Your Transformer as an AR prior, trained with your prior_batch_loss in your `fit`."""
    from minitok.prior import ARPrior, PriorConfig

    torch.manual_seed(seed)  # the initial weights
    prior = with_your_transformer(ARPrior(PriorConfig(num_codes=num_codes, grid_size=grids.shape[1])),
                                  parts)
    run_fit(parts, prior, lambda g: parts.prior_batch_loss(prior, grids, labels, g), steps, seed)
    return prior


def train_maskgit(parts: Parts, grids, labels, num_codes: int, steps: int, seed: int,
                  batch_size: int = 64, p_uncond: float = 0.1):
    """Your Transformer as a MaskGIT, trained with your random_mask and masked_loss in your
    `fit`."""
    from minitok.maskgit import MaskGIT, MaskGITConfig

    torch.manual_seed(seed)
    model = with_your_transformer(
        MaskGIT(MaskGITConfig(num_codes=num_codes, grid_size=grids.shape[1])), parts)
    flat = grids.reshape(grids.shape[0], -1)  # (M, N)

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, flat.shape[0], (batch_size,), generator=generator)  # (B,)
        inputs, mask = parts.random_mask(flat[rows], model.mask_id, generator=generator)
        dropped = drop_labels(labels[rows], p_uncond, model.null_class, generator)  # (B,)
        return parts.masked_loss(model(inputs, dropped), flat[rows], mask)

    run_fit(parts, model, batch_loss, steps, seed)
    return model


# --------------------------------------------------------------------------- measuring


def timed(module, fn, n: int) -> tuple[torch.Tensor, float, float]:
    """fn()'s result, ms per image and module's forward passes (all n images at once)."""
    start = time.perf_counter()
    with count_forward(module) as stats:
        out = fn()
    return out, 1000 * (time.perf_counter() - start) / n, stats["passes"]


@torch.no_grad()
def measure(pipeline: dict, classifier, labels: torch.Tensor, seed: int) -> list[dict]:
    """Rows for one pipeline: reconstruction, AR prior, MaskGIT, each on the same labels."""
    tokenizer, decode = pipeline["tokenizer"], pipeline["decode"]
    real, real_labels = load_digits("test", size=tokenizer.config.image_size)
    start = time.perf_counter()
    recons = decode(tokenizer.encode(real))  # (360, 1, S, S)
    rows = [{"method": "tokenizer: encode + decode", "images": recons, "labels": real_labels,
             "ms/image": 1000 * (time.perf_counter() - start) / len(real), "passes/image": 2}]
    gen = torch.Generator().manual_seed(seed)
    grids, ms, passes = timed(pipeline["prior"].transformer, lambda: pipeline["ar_generate"](
        pipeline["prior"], labels, cfg_scale=AR_SCALE, generator=gen), len(labels))
    rows.append({"method": f"AR prior, guidance s={AR_SCALE:g}", "images": decode(grids),
                 "labels": labels, "ms/image": ms, "passes/image": passes})
    gen = torch.Generator().manual_seed(seed)
    grids, ms, passes = timed(pipeline["maskgit"].transformer, lambda: reference_maskgit.decode(
        pipeline["maskgit"], labels, steps=MASKGIT_STEPS, generator=gen,
        loop=pipeline["decode_loop"]), len(labels))
    rows.append({"method": f"MaskGIT, {MASKGIT_STEPS} steps", "images": decode(grids),
                 "labels": labels, "ms/image": ms, "passes/image": passes})
    for row in rows:
        images = row.pop("images")
        row["accuracy"] = classifier.accuracy(images, row["labels"])
        row["fd"] = digit_fd(images, real, classifier)
        row["diversity"] = diversity(images, row.pop("labels"), real, real_labels)
        row["picture"] = images
    return rows


def shipped_pipeline() -> dict:
    from minitok import checkpoints

    tokenizer = checkpoints.load("tokenizer")
    return {"tokenizer": tokenizer, "decode": tokenizer.decode, "prior": checkpoints.load("prior"),
            "maskgit": checkpoints.load("maskgit"), "ar_generate": reference_prior.ar_generate,
            "decode_loop": reference_maskgit.decode_loop}


def your_pipeline(parts: Parts, steps: dict, seed: int) -> tuple[dict, float]:
    """Train your tokenizer, prior and MaskGIT; (the pipeline, seconds it took)."""
    start = time.perf_counter()
    tokenizer = train_tokenizer(parts, steps["tokenizer"], seed)
    grids, labels = encode_digits(tokenizer, "train")

    def decode(indices: torch.Tensor) -> torch.Tensor:
        return parts.tokens_to_image(indices.long(), tokenizer.quantizer.codebook,
                                     tokenizer.decoder)

    prior = train_prior(parts, grids, labels, tokenizer.num_codes, steps["prior"], seed)
    maskgit = train_maskgit(parts, grids, labels, tokenizer.num_codes, steps["maskgit"], seed)
    return ({"tokenizer": tokenizer, "decode": decode, "prior": prior, "maskgit": maskgit,
             "ar_generate": parts.ar_generate, "decode_loop": parts.decode_loop},
            time.perf_counter() - start)


def format_table(yours: list[dict], shipped: list[dict], parts: Parts) -> str:
    """Your row above the shipped one, for each method."""
    head = (f"{'method':<28} {'pipeline':<9} {'accuracy':>8} {'FD':>7} {'diversity':>9} "
            f"{'ms/image':>9} {'passes':>6}")
    lines = [head, "-" * len(head)]
    stages = ["tokenizer", "AR prior", "MaskGIT"]
    for stage, mine, ref in zip(stages, yours, shipped, strict=True):
        for who, row in (("yours", mine), ("shipped", ref)):
            lines.append(f"{row['method'] if who == 'yours' else '':<28} {who:<9} "
                         f"{100 * row['accuracy']:>7.1f}% {row['fd']:>7.2f} "
                         f"{row['diversity']:>9.2f} {row['ms/image']:>9.2f} "
                         f"{row['passes/image']:>6g}")
        lines.append(f"{'':<28} ran {ran_line(stage, parts)}")
    return "\n".join(lines)


def ran_line(stage: str, parts: Parts) -> str:
    """Whose code a stage ran: "your A, B; minitok's C (yours has not passed yet); the
    training loop: your fit" (or "minitok's training.fit")."""
    loop = LOOPS[stage]
    names = [name for _, name, _ in STAGES[stage] if name != loop]
    mine_names = [name for name in names if name not in parts.missing]
    missing = [name for name in names if name in parts.missing]
    ran = ([f"your {', '.join(mine_names)}"] if mine_names else []) + \
        ([f"minitok's {', '.join(missing)} (yours has not passed yet)"] if missing else [])
    reference = parts.references[loop]
    ran.append("the training loop: " + (
        f"minitok's {reference.__module__.removeprefix('minitok.')}.{reference.__name__}"
        if loop in parts.missing else f"your {loop}"))
    return "; ".join(ran)


def capstone(package: Path | None, out: Path, seed: int = 0, quick: bool = False,
             steps: dict | None = None) -> dict:
    """Train your pipeline, measure it and the shipped one; write out/capstone.png.
    With no package (nothing of yours passes yet) minitok's code runs every stage."""
    from minitok.classifier import load_classifier

    parts = Parts(None if package is None else load_package(package))
    steps = steps or (QUICK_STEPS if quick else STEPS)
    with one_thread():
        seed_everything(seed)
        pipeline, seconds = your_pipeline(parts, steps, seed)
        labels = torch.arange(10).repeat_interleave(3 if quick else 20)  # (N,)
        classifier = load_classifier()
        yours = measure(pipeline, classifier, labels, seed)
        shipped = measure(shipped_pipeline(), classifier, labels, seed)
    picture = draw(yours, shipped, labels, Path(out) / "capstone.png")
    return {"yours": yours, "shipped": shipped, "parts": parts, "train_seconds": seconds,
            "steps": steps, "picture": picture}


def draw(yours: list[dict], shipped: list[dict], labels: torch.Tensor, path: Path) -> Path:
    """Your samples beside the shipped ones: a column group per method and pipeline."""
    from minitok.tools.demo import draw as draw_groups
    from minitok.tools.demo import render

    groups = []
    for mine, ref in zip(yours[1:], shipped[1:], strict=True):
        for who, row in (("yours", mine), ("shipped", ref)):
            picks = [(labels == c).nonzero()[:3, 0] for c in range(10)]
            groups.append((f"{row['method'].split(',')[0]},\n{who}",
                           [[render(row["picture"][i]) for i in p] for p in picks]))
    draw_groups(groups, path, "your pipeline (minitok demo --yours) beside the shipped one")
    return path


def refused_options(device: str = "cpu", train: Path | None = None) -> str | None:
    """Why `demo --yours` cannot take these options, or None: it trains your pipeline itself
    (so not --train), on the CPU on one thread beside the shipped one (so not --device)."""
    if train is not None:
        return ("--train: with --yours the capstone trains your pipeline itself and compares it "
                "with the shipped checkpoints; `minitok demo --train DIR` (without --yours) "
                "trains minitok's")
    if str(device) != "cpu":
        return (f"--device {device}: with --yours the capstone runs on the CPU only (its "
                "ms/image compare your code and the shipped pipeline on one thread); drop "
                "--device")
    return None


def run_capstone(package: Path, out: Path = Path("out"), seed: int = 0,
                 quick: bool = False, device: str = "cpu", train: Path | None = None) -> int:
    """`minitok demo --yours PACKAGE`: print the side-by-side table; 2 for a bad package or an
    option the capstone does not take (--train, --device other than cpu)."""
    refused = refused_options(device, train)
    if refused:
        print(f"minitok demo: {refused}", file=sys.stderr)
        return 2
    try:
        result = capstone(package, out, seed, quick)
    except ValueError as err:
        if not str(err).startswith("--"):
            raise
        print(f"minitok demo: {err}", file=sys.stderr)
        return 2
    steps = ", ".join(f"{k} {v}" for k, v in result["steps"].items())
    print(f"\nminitok demo --yours {package}: your pipeline trained in "
          f"{result['train_seconds']:.0f} s ({steps} steps, seed {seed}), beside the shipped "
          "checkpoints (2000 steps each)")
    print(format_table(result["yours"], result["shipped"], result["parts"]))
    print("  accuracy: the Lesson 03 classifier reads the intended class; FD: Fréchet distance "
          "on its features to the test digits (lower is closer); diversity: 1.00 = as varied "
          "as real digits; passes: sequential forward passes per batch")
    print(f"wrote {result['picture']}")
    return 0
