"""AR against diffusion, measured (Lesson 08): one race, the Fréchet distances, two goals.

    python -m minitok.bench.diffusion            # 100 samples per class, 10 latency repeats
    python -m minitok.bench.diffusion --quick    # a smoke run: 2 samples per class, 1 repeat
    python -m minitok.bench.diffusion --device cuda

The race (`minitok.evaluate.race`, pixels out, the same 10 x 100 labels for every row):
Lesson 05's AR prior, Lesson 06's MaskGIT, Lesson 08's class-conditional diffusion model
with DDIM at several step counts (and DDPM ancestral sampling, and guidance), and the hybrid:
the AR prior's tokens rendered by Lesson 08's diffusion decoder instead of the tokenizer's
decoder. Columns: forward passes per image, median ms per image at batch 1 and at batch 64,
the classifier's accuracy, the Fréchet distance to the test digits on the classifier's
features (`digit_fd`), diversity.

The quality table (untimed, same sizes): the noise floor (1,000 real training digits), the
tokenizer's reconstructions of those digits, the AR prior at s = 1 and 2, MaskGIT at 1, 2,
4, 8, 12 and 16 steps, any-to-any (held-out captions, s = 2). The decoders: the tokenizer's
decoder against the diffusion decoder on the 360 test digits' own tokens.

Goals (issue 18):
- the diffusion model's accuracy (plain sampling, its best step count) within 2 points of
  MaskGIT's at MaskGIT's best step count (plain, as in Lesson 06), Fréchet distances beside;
- the hybrid's Fréchet distance no worse than the tokenizer decoder's on the same tokens (the
  AR prior's, same seed: the race checks that the grids are identical), judged for the AR
  prior's plain tokens (s = 1) and for its guided ones (s = 2, Lesson 05's scale) alike.
`run(...)` returns everything measured, for `python -m minitok.bench` and the tests.
"""

from __future__ import annotations

import time

import torch

from minitok import checkpoints, evaluate
from minitok.classifier import load_classifier
from minitok.data import load_digits
from minitok.evaluate import RaceSetting
from minitok.tools.bench import race_args
from minitok.tools.bench.maskgit import machine  # the same machine line in both races

FULL = {"samples_per_class": 100, "latency_repeats": 10, "throughput_repeats": 2}
QUICK = {"samples_per_class": 2, "latency_repeats": 1, "throughput_repeats": 1}
DIFFUSION_STEPS = (5, 10, 20, 50)  # DDIM
DDPM_STEPS = 50
GUIDED_STEPS, GUIDED_SCALE = 20, 2.0
HYBRID_STEPS = 10  # the diffusion decoder's DDIM steps
MASKGIT_STEPS = (1, 2, 4, 8, 12, 16)
RACED_MASKGIT = (4, 8)  # MaskGIT rows that are also timed
AR_SCALE = 2.0  # Lesson 05's scale
GOAL_POINTS = 2.0


def race_settings(quick: bool = False) -> list[RaceSetting]:
    """The timed rows: AR, MaskGIT, diffusion at each step count, guided, and the hybrid
    (with --quick: one of each, the fewest steps)."""
    if quick:
        return [RaceSetting("AR"), RaceSetting("MaskGIT", RACED_MASKGIT[0]),
                RaceSetting("diffusion", DIFFUSION_STEPS[0]), RaceSetting("hybrid", 2)]
    rows = [RaceSetting("AR")]
    rows += [RaceSetting("MaskGIT", s) for s in RACED_MASKGIT]
    rows += [RaceSetting("diffusion", s) for s in DIFFUSION_STEPS]
    rows += [RaceSetting("diffusion", DDPM_STEPS, sampler="ddpm"),
             RaceSetting("diffusion", GUIDED_STEPS, cfg_scale=GUIDED_SCALE),
             RaceSetting("hybrid", HYBRID_STEPS)]
    return rows


def quality_settings(quick: bool = False) -> list[RaceSetting]:
    """Untimed rows for the Fréchet-distance table (the rest comes from the race)."""
    if quick:
        return [RaceSetting("MaskGIT", MASKGIT_STEPS[0])]
    rows = [RaceSetting("AR", cfg_scale=AR_SCALE)]
    rows += [RaceSetting("MaskGIT", s) for s in MASKGIT_STEPS if s not in RACED_MASKGIT]
    rows.append(RaceSetting("hybrid", HYBRID_STEPS, cfg_scale=AR_SCALE))
    return rows


def load_models(device: str = "cpu") -> dict:
    """The shipped models the race needs (each checked against the shipped tokenizer)."""
    tokenizer = checkpoints.load("tokenizer", device=device)
    models = {"tokenizer": tokenizer, "classifier": load_classifier(device)}
    for kind in ("prior", "maskgit", "diffusion", "diffusion_decoder", "anytoany"):
        if checkpoints.checkpoint_path(kind).is_file():
            models[kind] = checkpoints.load(kind, device=device)
            checkpoints.check_tokenizer(models[kind], tokenizer)
    return models


def anytoany_row(models: dict, samples_per_class: int, seed: int) -> dict | None:
    """Any-to-any (Lesson 07): each digit drawn from its held-out caption, guidance s = 2."""
    from minitok.anytoany import text_to_image
    from minitok.tools.demo import held_out_caption

    model = models.get("anytoany")
    if model is None:
        return None
    tokenizer, classifier = models["tokenizer"], models["classifier"]
    generator = torch.Generator(device=model.device).manual_seed(seed)
    grids = torch.cat([text_to_image(model, held_out_caption(d), samples_per_class,
                                     generator=generator, cfg_scale=AR_SCALE).cpu()
                       for d in range(10)])
    labels = torch.arange(10).repeat_interleave(samples_per_class)
    images = tokenizer.decode(grids.to(tokenizer.device)).cpu()
    real, real_labels = load_digits("test", size=images.shape[-1])
    return {"setting": f"any-to-any, held-out captions, s={AR_SCALE:g}",
            "accuracy": classifier.accuracy(images, labels),
            "fd": evaluate.digit_fd(images, real, classifier),
            "diversity": evaluate.diversity(images, labels, real, real_labels)}


def run(quick: bool = False, device: str = "cpu", seed: int = 0) -> dict:
    """Measure everything; returns {"race", "quality", "floor", "recon", "decoders",
    "anytoany", "n", "seconds"}."""
    sizes = QUICK if quick else FULL
    n = 10 * sizes["samples_per_class"]
    models = load_models(device)
    tokenizer, classifier = models["tokenizer"], models["classifier"]
    racers = {"maskgit_model": models["maskgit"], "prior": models["prior"],
              "tokenizer": tokenizer, "classifier": classifier,
              "diffusion_model": models["diffusion"], "decoder": models["diffusion_decoder"]}
    start = time.perf_counter()
    race = evaluate.race(settings=race_settings(quick), seed=seed, **racers, **sizes)
    quality = evaluate.race(settings=quality_settings(quick), seed=seed, timing=False,
                            samples_per_class=sizes["samples_per_class"], **racers)
    real, _ = evaluate.real_sample(max(n, 2), seed=seed)
    recons, _ = evaluate.reconstruct(tokenizer, real.to(tokenizer.device))
    test_images, test_labels = load_digits("test", size=tokenizer.config.image_size)
    shown = slice(0, 40) if quick else slice(None)
    decoders = evaluate.decoder_comparison(tokenizer, models["diffusion_decoder"], classifier,
                                           2 if quick else HYBRID_STEPS, seed,
                                           test_images[shown], test_labels[shown])
    for row in decoders.values():
        row.pop("images")
    return {"race": race, "quality": quality, "n": n,
            "floor": evaluate.digit_fd(real, None, classifier),
            "recon": evaluate.digit_fd(recons, None, classifier),
            "decoders": decoders,
            "anytoany": anytoany_row(models, sizes["samples_per_class"], seed),
            "seconds": time.perf_counter() - start, "quick": quick}


def _rows(result: dict) -> dict[str, dict]:
    return {r["setting"]: r for r in result["race"] + result["quality"]}


def _steps(row: dict) -> int:
    """The step count in a row's name ("MaskGIT 8 cosine", "diffusion DDIM 20, s=2")."""
    return int(next(w for w in row["setting"].replace(",", " ").split() if w.isdigit()))


def goals(result: dict) -> dict:
    """The two goals, measured: which rows they compare and whether they are met."""
    rows = _rows(result)
    maskgit = sorted((r for name, r in rows.items() if name.startswith("MaskGIT")), key=_steps)
    plain = sorted((r for name, r in rows.items()
                    if name.startswith("diffusion") and ", s=" not in name), key=_steps)
    best_mg = max(maskgit, key=lambda r: r["accuracy"])  # the first of equals: fewest steps
    best_diff = max(plain, key=lambda r: r["accuracy"])
    gap = 100 * (best_mg["accuracy"] - best_diff["accuracy"])
    hybrids = []
    for name, hybrid in rows.items():
        if not name.startswith("hybrid: AR"):
            continue
        guided = name[len("hybrid: AR"):].split(" + ")[0]  # "" or ", s=2"
        ar = rows[f"AR (KV cache){guided}"]
        same = ar["grids"] is not None and torch.equal(ar["grids"], hybrid["grids"])
        hybrids.append({"ar": ar, "hybrid": hybrid, "same_tokens": same,
                        "met": same and hybrid["fd"] <= ar["fd"]})
    return {"maskgit": best_mg, "diffusion": best_diff, "gap": gap,
            "accuracy_met": gap <= GOAL_POINTS, "hybrids": hybrids}


def goal_lines(result: dict) -> list[str]:
    g = goals(result)
    mg, df = g["maskgit"], g["diffusion"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"accuracy: best plain diffusion ({df['setting']}) {100 * df['accuracy']:.1f}% (FD "
        f"{df['fd']:.2f}) vs best MaskGIT ({mg['setting']}) {100 * mg['accuracy']:.1f}% (FD "
        f"{mg['fd']:.2f}): {abs(g['gap']):.1f} points {'below' if g['gap'] > 0 else 'above'}"
        f" (goal: at most {GOAL_POINTS:g} below) -> {verdict(g['accuracy_met'])}",
    ] + [
        f"hybrid: FD {h['hybrid']['fd']:.2f} ({h['hybrid']['setting']}) vs {h['ar']['fd']:.2f} "
        f"for the tokenizer's decoder on the same "
        f"{'tokens' if h['same_tokens'] else 'SEEDS (the tokens differ!)'} (goal: no worse) "
        f"-> {verdict(h['met'])}" for h in g["hybrids"]
    ]


def quality_lines(result: dict) -> list[str]:
    """The Fréchet distance of every generator, best first, with the floor."""
    n = result["n"]
    lines = [f"Fréchet distance to the 360 test digits on the classifier's features, "
             f"{n} samples each (lower is closer; the floor is real digits):",
             f"  {'real training digits (the floor)':<44} FD {result['floor']:6.2f}",
             f"  {'tokenizer: reconstructions of those digits':<44} FD {result['recon']:6.2f}"]
    rows = list(_rows(result).values())
    if result["anytoany"] is not None:
        rows.append(result["anytoany"])
    for r in sorted(rows, key=lambda r: r["fd"]):
        lines.append(f"  {r['setting']:<44} FD {r['fd']:6.2f}   accuracy "
                     f"{100 * r['accuracy']:5.1f}%   diversity {r['diversity']:.2f}")
    return lines


def decoder_lines(result: dict) -> list[str]:
    lines = ["the test digits' own tokens, two decoders (sharpness relative to the originals):"]
    for name, r in result["decoders"].items():
        lines.append(f"  {name:<28} MSE {r['mse']:.4f}  accuracy {100 * r['accuracy']:5.1f}%  "
                     f"FD {r['fd']:.2f}  sharpness {r['sharpness']:.2f}  "
                     f"{r['ms/image']:.2f} ms/image")
    return lines


def main(argv=None) -> None:
    args = race_args("AR against diffusion, and the hybrid", argv)
    result = run(args.quick, args.device, args.seed)
    print(evaluate.race_table(result["race"]))
    print()
    for line in quality_lines(result) + [""] + decoder_lines(result) + [""] + goal_lines(result):
        print(line)
    if result["quick"]:
        print("(a smoke run: the goals are judged on the full run)")
    print(f"device: {args.device}; {machine()}; {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
