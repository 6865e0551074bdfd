"""`make demo` / `minitok demo`: the whole course on the bundled digits, as one picture and one table.

    digits --tokenizer (L03)--> 8 x 8 token grids --decoder--> reconstructions
    class  --AR prior (L05), with and without guidance--> token grids --decoder--> digits
    class  --MaskGIT (L06), 8 parallel steps-->           token grids --decoder--> digits
    text   --any-to-any (L07), when its checkpoint exists--> token grids --decoder--> digits
    class  --diffusion (L08), DDIM, when its checkpoint exists-----------------> digits
    class  --VAR (L09), one pass per scale--> token maps 1x1..8x8 --its own decoder--> digits

Every generated digit is judged by the Lesson 03 classifier, which was trained on real
digits only: accuracy is "the classifier reads the requested class", diversity is the
within-class spread relative to real test digits (`minitok.evaluate.diversity`, 1.0 = as
varied as real handwriting). Each method also reports its wall time and the sequential
forward passes it needs per image.

By default the shipped checkpoints (minitok/checkpoints/) are used. `--train DIR` trains
the tokenizer, classifier, prior and MaskGIT from scratch with the same training functions
as scripts/ (shorter: a few minutes on a laptop CPU), writes them into DIR and uses those.

Outputs in the --out folder: demo.png (the picture) and demo_samples.pt (the token grids
behind the table, VAR's token maps of every scale concatenated coarse to fine (N, 85), and
the diffusion model's images, which have no tokens; a weights-only file:
`torch.load(path, weights_only=True)`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from minitok.classifier import train_classifier
from minitok.course import one_thread, seed_everything
from minitok.data import load_digits, to_unit_range
from minitok.evaluate import count_forward, diversity, encode_digits

AR_SCALE = 2.0  # the guidance scale of Lesson 05
MASKGIT_STEPS = 8
DIFFUSION_STEPS = 20  # DDIM steps of the diffusion row (Lesson 08)
# Training steps of `--train` (the shipped checkpoints: 2000 steps each).
TRAIN_STEPS = {"tokenizer": 600, "prior": 500, "maskgit": 500}
QUICK_TRAIN_STEPS = {"tokenizer": 10, "prior": 10, "maskgit": 10}


# --------------------------------------------------------------------------- the models


@dataclass
class Models:
    """Everything the demo runs, and where it came from (printed under the table)."""

    tokenizer: object
    classifier: object
    prior: object | None  # None when there is no checkpoint
    maskgit: object | None
    anytoany: object | None
    notes: list[str] = field(default_factory=list)
    diffusion: object | None = None  # pixels, no tokens: independent of the tokenizer
    var: object | None = None  # its own tokenizer: token maps of every scale
    var_tokenizer: object | None = None


def load_shipped(device: str) -> Models:
    """The checkpoints that ship in minitok/checkpoints/; a generator whose file is missing
    (a lesson still being written) is left out, and a note says so."""
    from minitok import checkpoints
    from minitok.classifier import load_classifier

    notes = ["models: the shipped checkpoints in minitok/checkpoints/"]
    loaded = {}
    for name, lesson in (("prior", "05"), ("maskgit", "06"), ("anytoany", "07"),
                         ("diffusion", "08"), ("var_tokenizer", "09"), ("var", "09")):
        if checkpoints.checkpoint_path(name).is_file():
            loaded[name] = _load_generator(name, device)
        else:
            notes.append(f"no minitok/checkpoints/{name}.pt (Lesson {lesson}), so no {name} "
                         f"row: scripts/train_{name}.py builds it")
    tokenizer = checkpoints.load("tokenizer", device=device)
    anytoany = loaded.get("anytoany")
    if anytoany is not None:
        try:
            checkpoints.check_tokenizer(anytoany, tokenizer)
        except ValueError as err:  # trained on another tokenizer: its ids mean other codes
            print(f"minitok demo: skipping any-to-any: {err}", file=sys.stderr)
            notes.append("minitok/checkpoints/anytoany.pt does not match the shipped "
                         "tokenizer, so no anytoany row: scripts/train_anytoany.py rebuilds it")
            anytoany = None
    var = loaded.get("var") if "var_tokenizer" in loaded else None
    if var is not None:
        checkpoints.check_tokenizer(var, loaded["var_tokenizer"])  # its ids: that tokenizer's
    return Models(tokenizer, load_classifier(device), loaded.get("prior"), loaded.get("maskgit"),
                  anytoany, notes, loaded.get("diffusion"), var, loaded.get("var_tokenizer"))


def _load_generator(name: str, device: str):
    from minitok import checkpoints

    return checkpoints.load(name, device=device)


def train_from_scratch(folder: Path, device: str, seed: int, quick: bool) -> Models:
    """Train every model with the course's own training functions; save into `folder`.

    The models have their default sizes and train for TRAIN_STEPS, fewer steps than the
    shipped checkpoints: the notes printed under the table compare steps and sizes.
    """
    steps = QUICK_TRAIN_STEPS if quick else TRAIN_STEPS
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer = _train_tokenizer(folder / "tokenizer.pt", steps["tokenizer"], device, seed)
    classifier = train_classifier(seed).to(device)
    grids, labels = encode_digits(tokenizer, "train")
    prior = _train_prior(folder / "prior.pt", tokenizer, grids, labels, steps["prior"], device,
                         seed)
    maskgit = _train_maskgit(folder / "maskgit.pt", tokenizer, grids, labels, steps["maskgit"],
                             device, seed)
    notes = [f"models: trained from scratch into {folder} in "
             f"{time.perf_counter() - start:.0f} s (seed {seed}); against the shipped ones:"]
    notes += [f"  {line}" for line in compare_to_shipped(tokenizer, prior, maskgit)]
    notes.append("any-to-any: not retrained by --train (its image ids belong to the shipped "
                 "tokenizer), so no text -> image row")
    notes.append("diffusion: not retrained by --train (python scripts/train_diffusion.py "
                 "rebuilds it, in about an hour on one busy CPU thread), so no diffusion row")
    notes.append("VAR: not retrained by --train (scripts/train_var_tokenizer.py and "
                 "scripts/train_var.py rebuild its tokenizer and model), so no VAR row")
    return Models(tokenizer, classifier, prior, maskgit, None, notes)


def compare_to_shipped(tokenizer, prior, maskgit) -> list[str]:
    """One line per model: its training steps and size against the shipped checkpoint's."""
    from minitok import checkpoints

    lines = []
    for name, model in (("tokenizer", tokenizer), ("prior", prior), ("maskgit", maskgit)):
        if not checkpoints.checkpoint_path(name).is_file():
            lines.append(f"{name}: {model.meta['recipe']['steps']} training steps (no shipped checkpoint)")
            continue
        shipped = checkpoints.load_payload(checkpoints.checkpoint_path(name), name)
        size = sum(v.numel() for v in shipped["state_dict"].values())
        mine = sum(v.numel() for v in model.state_dict().values())
        steps = shipped["meta"].get("recipe", {}).get("steps", "?")
        lines.append(f"{name}: {model.meta['recipe']['steps']} training steps (shipped: {steps}), "
                     f"{mine:,} weights (shipped: {size:,})")
    return lines


def _train_tokenizer(path: Path, steps: int, device: str, seed: int):
    from minitok.tokenizer import TrainConfig, train_tokenizer

    tokenizer, _ = train_tokenizer(train=TrainConfig(steps=steps, seed=seed), device=device)
    return _saved(tokenizer, path, steps, seed, device)


def _train_prior(path: Path, tokenizer, grids, labels, steps: int, device: str, seed: int):
    from minitok.prior import ARPrior, PriorConfig, train_prior

    torch.manual_seed(seed)  # the initial weights
    prior = ARPrior(PriorConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size))
    train_prior(prior.to(device), grids, labels, steps, seed=seed)
    return _saved(prior, path, steps, seed, device)


def _train_maskgit(path: Path, tokenizer, grids, labels, steps: int, device: str, seed: int):
    from minitok.maskgit import MaskGIT, MaskGITConfig, train_maskgit

    torch.manual_seed(seed)  # the initial weights
    model = MaskGIT(MaskGITConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size))
    train_maskgit(model.to(device), grids, labels, steps, seed=seed)
    return _saved(model, path, steps, seed, device)


def _saved(model, path: Path, steps: int, seed: int, device: str):
    """Save `model` to `path` and load it back, as a checkpoint of the demo's run."""
    from minitok import checkpoints

    meta = checkpoints.training_meta("minitok demo --train", {"steps": steps, "seed": seed}, 0)
    checkpoints.save(model, path, meta)
    return checkpoints.load(model.kind, path, device=device)


# --------------------------------------------------------------------------- the methods


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_counted(module: torch.nn.Module, fn, n_images: int, device) -> tuple[object, dict]:
    """Call fn(); count module's forward passes; seconds and passes per image."""
    _sync(device)
    start = time.perf_counter()
    with count_forward(module) as stats:
        out = fn()
        _sync(device)
    seconds = time.perf_counter() - start
    return out, {"ms/image": 1000 * seconds / n_images, "passes/image": stats["passes"]}


def reconstruct_test(models: Models, device) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Tokenize and rebuild every held-out test digit: (row, images, reconstructions)."""
    tokenizer = models.tokenizer
    images, labels = load_digits("test", size=tokenizer.config.image_size)  # (360, 1, 16, 16)
    _sync(device)
    start = time.perf_counter()
    grids = tokenizer.encode(images.to(device))  # (360, 8, 8)
    recons = tokenizer.decode(grids).cpu()  # (360, 1, 16, 16)
    _sync(device)
    seconds = time.perf_counter() - start
    row = {"method": "tokenizer: encode + decode (test digits)",
           "ms/image": 1000 * seconds / len(images), "passes/image": 2}
    return row, images, recons


def generate_all(models: Models, labels: torch.Tensor, seed: int, device) -> dict:
    """Token grids (N, G, G) for `labels` by every method; with cost per image and traces."""
    from minitok.maskgit import decode
    from minitok.prior import ar_generate

    prior, maskgit = models.prior, models.maskgit
    on_device = labels.to(device)
    n = len(labels)
    results = {}
    scales = [] if prior is None else [("no guidance (s=1)", 1.0),
                                        (f"guidance s={AR_SCALE:g}", AR_SCALE)]
    for name, scale in scales:
        grids, cost = run_counted(prior.transformer, lambda s=scale: ar_generate(
            prior, on_device, cfg_scale=s,
            generator=torch.Generator(device=device).manual_seed(seed)), n, device)
        results[f"AR prior, {name}"] = {"grids": grids.cpu(), **cost}
    if maskgit is not None:
        gen = torch.Generator(device=device).manual_seed(seed)
        (grids, trace), cost = run_counted(maskgit.transformer, lambda: decode(
            maskgit, on_device, steps=MASKGIT_STEPS, generator=gen, return_steps=True), n,
            device)
        results[f"MaskGIT, {MASKGIT_STEPS} steps"] = {"grids": grids.cpu(), "trace": trace,
                                                      **cost}
    if models.anytoany is not None:
        try:
            results[f"any-to-any: text -> image, guidance s={AR_SCALE:g}"] = text_to_image_all(
                models, labels, seed, device)
        except ValueError as err:  # a checkpoint that does not fit the code: say so, go on
            models.notes.append(f"any-to-any: text -> image failed, so no row: {err}")
    if models.diffusion is not None:
        results[f"diffusion, DDIM {DIFFUSION_STEPS} steps"] = diffuse_all(models, labels,
                                                                         seed, device)
    if models.var is not None:
        scales = len(models.var.config.scales)
        results[f"VAR, {scales} scales, guidance s={AR_SCALE:g}"] = var_all(models, labels,
                                                                            seed, device)
    return results


def diffuse_all(models: Models, labels: torch.Tensor, seed: int, device) -> dict:
    """Draw every label's digit with the diffusion model: pixels directly, no tokens."""
    from minitok.diffusion import sample

    gen = torch.Generator(device=device).manual_seed(seed)
    images, cost = run_counted(models.diffusion, lambda: sample(
        models.diffusion, labels.to(device), DIFFUSION_STEPS, generator=gen), len(labels),
        device)
    return {"images": images.cpu(), **cost}


def var_all(models: Models, labels: torch.Tensor, seed: int, device) -> dict:
    """Draw every label's digit with VAR, coarse to fine, one pass per scale, with guidance
    ramped up to Lesson 05's scale; its own tokenizer decodes the token maps."""
    from minitok.var import var_generate

    gen = torch.Generator(device=device).manual_seed(seed)
    ids, cost = run_counted(models.var, lambda: var_generate(
        models.var, models.var_tokenizer.quantizer, labels.to(device), cfg_scale=AR_SCALE,
        generator=gen), len(labels), device)
    return {"tokens": torch.cat(ids, dim=1).cpu(),  # (N, 85): every scale, coarse to fine
            "images": models.var_tokenizer.decode(ids).cpu(), **cost}


def samples_of(result: dict) -> torch.Tensor:
    """What demo_samples.pt keeps of a method: its tokens where it has any, else its images."""
    return next(result[key] for key in ("grids", "tokens", "images") if key in result)


def images_of(models: Models, result: dict) -> torch.Tensor:
    """A method's images: the diffusion model's and VAR's as drawn (VAR's decoded by its own
    tokenizer), the other token models' decoded by the shipped tokenizer."""
    if "images" in result:
        return result["images"]
    return models.tokenizer.decode(result["grids"].to(models.tokenizer.device)).cpu()


def held_out_caption(digit: int) -> str:
    """The wording of `digit` that the any-to-any model never saw in training."""
    from minitok.anytoany import caption, held_out_pairs

    template = dict((d, t) for t, d in held_out_pairs())[digit]
    return caption(template, digit)


def text_to_image_all(models: Models, labels: torch.Tensor, seed: int, device) -> dict:
    """Draw every label's digit from its held-out caption with the any-to-any model, with
    classifier-free guidance on the caption at Lesson 05's scale."""
    from minitok.anytoany import text_to_image

    model = models.anytoany
    gen = torch.Generator(device=device).manual_seed(seed)
    G = model.vocab.grid_size
    grids = torch.zeros(len(labels), G, G, dtype=torch.long)

    def draw_all():
        for digit in labels.unique().tolist():
            where = (labels == digit).nonzero()[:, 0]  # (n,)
            grids[where] = text_to_image(model, held_out_caption(digit), len(where),
                                         generator=gen, cfg_scale=AR_SCALE)
        return grids

    grids, cost = run_counted(model.transformer, draw_all, len(labels), device)
    cost["passes/image"] /= len(labels.unique())  # one batch per digit: passes per batch
    return {"grids": grids, **cost}


# --------------------------------------------------------------------------- the table


def score(models: Models, results: dict, labels: torch.Tensor, recon: tuple) -> list[dict]:
    """One table row per method: classifier accuracy, diversity, ms and passes per image."""
    recon_row, real, recons = recon
    _, real_labels = load_digits("test", size=models.tokenizer.config.image_size)
    classifier = models.classifier
    rows = [{"method": "real test digits (reference)", "accuracy": classifier.accuracy(
                real, real_labels), "diversity": 1.0, "ms/image": None, "passes/image": None},
            {**recon_row, "accuracy": classifier.accuracy(recons, real_labels),
             "diversity": diversity(recons, real_labels, real, real_labels)}]
    for name, result in results.items():
        images = images_of(models, result)
        rows.append({"method": name, "accuracy": classifier.accuracy(images, labels),
                     "diversity": diversity(images, labels, real, real_labels),
                     "ms/image": result["ms/image"], "passes/image": result["passes/image"]})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    head = f"{'method':<42} {'accuracy':>8} {'diversity':>9} {'ms/image':>9} {'passes/image':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = "" if r["ms/image"] is None else f"{r['ms/image']:.2f}"
        passes = "" if r["passes/image"] is None else f"{r['passes/image']:g}"
        lines.append(f"{r['method']:<42} {100 * r['accuracy']:>7.1f}% {r['diversity']:>9.2f} "
                     f"{ms:>9} {passes:>12}")
    return "\n".join(lines)


TABLE_NOTES = (
    "accuracy: the Lesson 03 classifier (trained on real digits only) reads the intended class",
    "diversity: within-class pixel spread / that of real test digits (1.00 = as varied as real)",
    "passes/image: sequential forward passes (a batch shares them; the AR prior's guidance "
    "runs a doubled batch in the same passes, the any-to-any model's runs a second pass per "
    "token, since its two prompts differ in length; the diffusion model's are its denoising "
    "steps, each over all 16 x 16 pixels, with no tokens; VAR's are its scales, each pass "
    "drawing a whole token map)",
)


# --------------------------------------------------------------------------- the picture

SCALE = 4  # screen pixels per image pixel
PAD = 4  # between cells
GAP = 28  # between groups
TOP, LEFT, BOTTOM = 64, 36, 26  # title band, class-label band, footer
MASKED = (150, 190, 255)  # a token still masked in a MaskGIT step: light blue


def render(image: torch.Tensor) -> np.ndarray:
    """(1, S, S) image in [-1, 1] -> (S*SCALE, S*SCALE, 3) uint8, ink dark on white."""
    gray = 255 * (1 - to_unit_range(image[0]).clamp(0, 1).numpy())  # (S, S)
    rgb = np.repeat(gray.round().astype(np.uint8)[:, :, None], 3, axis=2)
    return rgb.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def render_step(image: torch.Tensor, masked: torch.Tensor) -> np.ndarray:
    """Like render, with the pixels of still-masked tokens (G, G) bool painted MASKED."""
    rgb = render(image)
    cell = rgb.shape[0] // masked.shape[0]  # screen pixels per token
    pixel_mask = masked.numpy().repeat(cell, axis=0).repeat(cell, axis=1)
    rgb[pixel_mask] = MASKED
    return rgb


def layout(groups: list[tuple[str, int]], rows: int, size: int) -> dict:
    """Where each cell goes: {"width", "height", "cells": {(group, row, col): (x, y)}}."""
    cell = size * SCALE
    x, cells, starts = LEFT, {}, []
    for g, (_, cols) in enumerate(groups):
        starts.append(x)
        for col in range(cols):
            for row in range(rows):
                cells[(g, row, col)] = (x + col * (cell + PAD), TOP + row * (cell + PAD))
        x += cols * (cell + PAD) - PAD + GAP
    return {"width": x - GAP + PAD, "height": TOP + rows * (cell + PAD) + BOTTOM,
            "cells": cells, "starts": starts, "cell": cell}


def picture_groups(models: Models, results: dict, real, recons, real_labels, labels,
                   show: int) -> list[tuple[str, list[list[np.ndarray]]]]:
    """The picture's column groups: (title, one list of rendered cells per class)."""
    first = [int((real_labels == c).nonzero()[0]) for c in range(10)]  # a test digit per class
    groups = [("held-out digit,\nrebuilt from tokens",
               [[render(real[i]), render(recons[i])] for i in first])]
    for name, result in results.items():
        images = images_of(models, result)
        picks = [(labels == c).nonzero()[:show, 0] for c in range(10)]
        title = name.replace(", ", ",\n", 1)
        if name.startswith("any-to-any"):
            title += "\n(wordings held out of training)"
        groups.append((title, [[render(images[i]) for i in p] for p in picks]))
        if "trace" in result:
            groups.append((f"MaskGIT decoding, steps 1 .. {MASKGIT_STEPS}\n"
                           "(blue: tokens still masked)",
                           [trace_cells(models, result["trace"], int(p[0])) for p in picks]))
    return groups


def trace_cells(models: Models, trace, index: int) -> list[np.ndarray]:
    """One sample's MaskGIT steps: each step's prediction with its still-masked tokens blue."""
    predicted = trace.predicted[:, index]  # (steps, G, G)
    masked = (trace.revealed[:, index] == models.maskgit.mask_id).cpu()  # (steps, G, G)
    images = models.tokenizer.decode(predicted.to(models.tokenizer.device)).cpu()
    return [render_step(images[t], masked[t]) for t in range(len(images))]


def draw(groups, path: Path, footer: str) -> dict:
    """Paint the groups into one PNG at `path`; returns its layout (for tests)."""
    from PIL import Image, ImageDraw

    size = groups[0][1][0][0].shape[0] // SCALE
    plan = layout([(title, len(cells[0])) for title, cells in groups], 10, size)
    canvas = np.full((plan["height"], plan["width"], 3), 255, dtype=np.uint8)
    for g, (_, per_class) in enumerate(groups):
        for row, cells in enumerate(per_class):
            for col, cell in enumerate(cells):
                x, y = plan["cells"][(g, row, col)]
                canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    img = Image.fromarray(canvas)
    pen, font = ImageDraw.Draw(img), _font(13)
    for (title, _), x in zip(groups, plan["starts"], strict=True):
        pen.multiline_text((x, 6), title, fill=(0, 0, 0), font=font, spacing=3)
    for row in range(10):
        x, y = plan["cells"][(0, row, 0)]
        pen.text((10, y + plan["cell"] // 2 - 8), str(row), fill=(0, 0, 0), font=_font(16))
    pen.text((LEFT, plan["height"] - BOTTOM + 6), footer, fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return plan


def _font(size: int):
    """matplotlib's DejaVu Sans (always installed with it), else PIL's built-in font."""
    from PIL import ImageFont

    try:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(ttf), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


# --------------------------------------------------------------------------- the main job


@dataclass
class DemoResult:
    rows: list[dict]
    picture: Path
    samples: Path
    layout: dict
    notes: list[str]


def check_args(out, seed, device, train) -> None:
    """Fail early, naming the bad argument."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() "
                         "is False); use --device cpu")
    for name, folder in (("--out", out), ("--train", train)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"{name} must be a folder, but {str(folder)!r} is a file")


def demo(out: Path, seed: int = 0, device: str = "cpu", quick: bool = False,
         train: Path | None = None) -> DemoResult:
    """Run the pipeline; write demo.png and demo_samples.pt into `out`; return the rows."""
    check_args(out, seed, device, train)
    with one_thread():  # tiny models: one thread is faster on a shared CPU, and repeatable
        return _demo(Path(out), seed, device, quick, train)


def _demo(out: Path, seed: int, device: str, quick: bool, train: Path | None) -> DemoResult:
    seed_everything(seed)
    if train is None:
        models = load_shipped(device)
    else:
        models = train_from_scratch(Path(train), device, seed, quick)
    per_class = 3 if quick else 20
    labels = torch.arange(10).repeat_interleave(per_class)  # (N,), every class equally
    recon = reconstruct_test(models, device)
    results = generate_all(models, labels, seed, device)
    rows = score(models, results, labels, recon)
    _, real_labels = load_digits("test", size=models.tokenizer.config.image_size)
    groups = picture_groups(models, results, recon[1], recon[2], real_labels, labels,
                            show=min(4, per_class))
    footer = (f"seed {seed}, {device}; accuracy and diversity in the table printed with this "
              f"picture (minitok demo)")
    picture = out / "demo.png"
    plan = draw(groups, picture, footer)
    samples = out / "demo_samples.pt"
    torch.save({"labels": labels, **{name: samples_of(r) for name, r in results.items()}},
               samples)
    return DemoResult(rows, picture, samples, plan, models.notes)


def run_demo(out: Path, seed: int = 0, device: str = "cpu", quick: bool = False,
             train: Path | None = None) -> int:
    """`minitok demo`: run, print the table and notes, return 0 (2 for a bad argument)."""
    try:
        result = demo(out, seed, device, quick, train)
    except ValueError as err:
        if not str(err).startswith("--"):
            raise
        print(f"minitok demo: {err}", file=sys.stderr)
        return 2
    n = len(torch.load(result.samples, weights_only=True)["labels"])
    print(f"\nminitok demo: {n // 10} samples per class{' (--quick)' if quick else ''}, "
          f"seed {seed}, device {device}")
    print(format_table(result.rows))
    timing = (f"ms/image: wall time of one batch of {n} samples / {n} (the tokenizer: all 360 "
              "test digits); a throughput, not a latency")
    for line in (*TABLE_NOTES, timing, *result.notes):
        print(f"  {line}")
    print(f"wrote {result.picture} and {result.samples}")
    return 0
