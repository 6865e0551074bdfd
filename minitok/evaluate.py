"""Judging what the course's models make, with referees that never saw the models.

The lessons, the demo and the benchmarks measure the same things the same way:

    encode_digits         the bundled digits as token grids, through a tokenizer
    reconstruct           a tokenizer's reconstructions of a set of images, in batches
    tokenizer_quality     reconstruction error, codebook use and the classifier's verdict
    count_forward         how many forward passes (and token positions) generation costs
    spread / diversity    how different the images of one class are (absolute / vs real)
    sample_quality        the classifier reads generated digits; spread; memorised copies
    frechet_distance      the Fréchet distance between two Gaussians (FID's formula), float64
    digit_fd              generated vs real test digits, on the classifier's hidden features
    fd_floor              the same for real training digits: the score of a perfect generator
    sharpness             how much neighbouring pixels differ (blur lowers it)
    decoder_comparison    the tokenizer's decoder against a diffusion decoder, same tokens
    race                  AR, MaskGIT, diffusion and the hybrid on the same digits: passes,
                          latency, throughput, accuracy, Fréchet distance, diversity
    text_to_image_accuracy, image_to_text_accuracy   the any-to-any model's held-out goals

The referee for digits is Lesson 03's classifier, trained on real digits only: an image it
reads as the intended class has kept (or drawn) a recognisable digit.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minitok import validate
from minitok.data import load_digits

# --------------------------------------------------------------------------- tokenizers


@torch.no_grad()
def encode_digits(tokenizer, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled digits of `split` as token grids (N, G, G) and labels (N,), on the CPU."""
    images, labels = load_digits(split, size=tokenizer.config.image_size)
    return tokenizer.encode(images.to(tokenizer.device)).cpu(), labels


@torch.no_grad()
def reconstruct(tokenizer, images: torch.Tensor, batch_size: int = 512
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions, indices) of a set of images, in batches, in eval mode, on the CPU."""
    validate.positive_int(batch_size, "batch_size")
    was_training = tokenizer.training
    tokenizer.eval()
    recons, indices = [], []
    for start in range(0, images.shape[0], batch_size):
        x_hat, vq = tokenizer(images[start : start + batch_size].to(tokenizer.device))
        recons.append(x_hat.cpu())
        indices.append(vq.indices.cpu())
    tokenizer.train(was_training)
    return torch.cat(recons), torch.cat(indices)


def tokenizer_quality(tokenizer, classifier=None) -> dict[str, float]:
    """The tokenizer on the held-out test digits (never seen in training).

    mse: reconstruction MSE in the [-1, 1] pixel range; usage: fraction of the K codes that
    appear in the test set's token grids; perplexity: exp(entropy) of the codes' frequencies;
    acc_real / acc_recon: the digit classifier's accuracy on the real test images and on
    their reconstructions (a reconstruction that keeps the digit keeps its class).
    """
    from minitok.classifier import load_classifier
    from minitok.vq import usage_stats

    images, labels = load_digits("test", size=tokenizer.config.image_size)
    recons, indices = reconstruct(tokenizer, images)
    perplexity, usage = usage_stats(indices, tokenizer.num_codes)
    classifier = load_classifier() if classifier is None else classifier
    return {
        "mse": F.mse_loss(recons, images).item(),
        "usage": usage.item(),
        "perplexity": perplexity.item(),
        "acc_real": classifier.accuracy(images, labels),
        "acc_recon": classifier.accuracy(recons, labels),
    }


def quality_lines(quality: dict[str, float], num_codes: int) -> list[str]:
    """`tokenizer_quality` as the lines the notebook, the script and the benchmark print."""
    gap = 100 * (quality["acc_real"] - quality["acc_recon"])
    used = round(quality["usage"] * num_codes)
    return [
        f"reconstruction MSE (test, [-1, 1] pixels): {quality['mse']:.4f}",
        f"codebook usage (test): {used}/{num_codes} codes = {100 * quality['usage']:.1f}% "
        f"(goal >= 95%), perplexity {quality['perplexity']:.1f}",
        f"classifier accuracy: real test images {100 * quality['acc_real']:.1f}%, "
        f"reconstructions {100 * quality['acc_recon']:.1f}% "
        f"(gap {gap:.1f} points, goal <= 2)",
    ]


# --------------------------------------------------------------------------- cost


@contextmanager
def count_forward(model: nn.Module):
    """Count the forward passes of `model`, the token positions they read, and the time.

        with count_forward(prior.transformer) as stats:
            ar_generate(prior, labels)
        stats["passes"], stats["positions"], stats["seconds"]

    positions = sum over passes of batch * tokens read: a cached step reads 1 token per
    sequence, an uncached step re-reads the whole prefix.
    """
    stats = {"passes": 0, "positions": 0, "seconds": 0.0}

    def hook(module, args):
        stats["passes"] += 1
        stats["positions"] += args[0].numel()  # idx: (B, T)

    handle = model.register_forward_pre_hook(hook)
    start = time.perf_counter()
    try:
        yield stats
    finally:
        stats["seconds"] = time.perf_counter() - start
        handle.remove()


# --------------------------------------------------------------------------- quality of samples


def _images(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """`x` if it is a batch of images (N, C, H, W), finite floats; with `like`, of the same
    (C, H, W) as those images (pixel distances and features compare like with like)."""
    validate.float_tensor(x, name, dim=4, finite=True)
    if like is not None and x.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} must be images of the same size as images, "
                         f"(N, {', '.join(map(str, like.shape[1:]))}), got shape "
                         f"{tuple(x.shape)}")
    return x


def pairwise_distance_per_class(images: torch.Tensor, labels) -> dict[int, float]:
    """For each class with two or more images: the mean Euclidean pixel distance over all
    pairs of its images (float64, so that thousands of pairs add up exactly enough)."""
    return _pairwise(_images(images, "images"), labels, "labels")


def _pairwise(images: torch.Tensor, labels, labels_name: str) -> dict[int, float]:
    flat = images.reshape(images.shape[0], -1).double().cpu()  # (N, pixels)
    labels = validate.int_tensor(torch.as_tensor(labels), labels_name, dim=1).cpu()
    if labels.shape[0] != flat.shape[0]:
        raise ValueError(f"{labels_name} must be ({flat.shape[0]},), one per image, got shape "
                         f"{tuple(labels.shape)}")
    per_class = {}
    for c in labels.unique().tolist():
        x = flat[labels == c]  # (n, pixels)
        n = x.shape[0]
        if n >= 2:
            per_class[c] = (torch.cdist(x, x).sum() / (n * (n - 1))).item()  # zero diagonal
    return per_class


def spread(images: torch.Tensor, labels) -> float:
    """The mean pixel distance between two images of the same class, averaged over classes.

    A model that draws the same 7 every time scores 0 however well the classifier likes that
    7; real digits of one class differ by about as much as this gives for the test set.
    """
    per_class = pairwise_distance_per_class(images, labels)
    if not per_class:
        raise ValueError("labels: need at least two images of some class to measure spread")
    return sum(per_class.values()) / len(per_class)


def diversity(images: torch.Tensor, labels, reference: torch.Tensor, reference_labels) -> float:
    """`spread` relative to real digits: for each class, the samples' mean pairwise distance
    divided by the real digits', then the mean over classes. 1.0 is as varied as real
    handwriting, 0 means every sample of a class is the same image."""
    mine = pairwise_distance_per_class(images, labels)
    real = _pairwise(_images(reference, "reference", like=images), reference_labels,
                     "reference_labels")
    ratios = [mine[c] / real[c] for c in mine if c in real]
    if not ratios:
        raise ValueError("diversity needs at least two samples of some class")
    return sum(ratios) / len(ratios)


def nearest_distance(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each image's Euclidean pixel distance to its nearest neighbour in `reference`: (N,).

    The memorisation test: a model that copies its training digits puts its samples much
    closer to the training set than held-out real digits are (exact copies of a token grid
    are a vacuous test with K^(G*G) possible grids). float64, on the CPU.
    """
    _images(images, "images")
    if _images(reference, "reference", like=images).shape[0] == 0:
        raise ValueError("reference must hold at least one image")
    flat = images.reshape(images.shape[0], -1).double().cpu()  # (N, pixels)
    ref = reference.reshape(reference.shape[0], -1).double().cpu()  # (M, pixels)
    return torch.cdist(flat, ref).min(dim=1).values  # (N,)


def sample_quality(grids: torch.Tensor, labels, tokenizer, classifier,
                   train_grids: torch.Tensor | None = None) -> dict:
    """How good and how varied a set of generated digits is, judged without the generator.

    accuracy: the digit classifier reads the intended class; per_class: the same, class by
    class; distinct: fraction of different token grids; spread: see `spread`; copies (with
    train_grids): fraction that are exactly a training digit's grid.
    """
    labels = torch.as_tensor(labels).cpu()
    images = tokenizer.decode(grids.to(tokenizer.device)).cpu()
    predicted = classifier.predict(images)  # (N,)
    per_class = {int(c): (predicted[labels == c] == c).double().mean().item()
                 for c in labels.unique()}
    flat = grids.reshape(grids.shape[0], -1).cpu()  # (N, G*G)
    report = {
        "accuracy": (predicted == labels).double().mean().item(),
        "per_class": per_class,
        "distinct": torch.unique(flat, dim=0).shape[0] / flat.shape[0],
        "spread": spread(images, labels),
    }
    if train_grids is not None:
        seen = {tuple(row) for row in train_grids.reshape(train_grids.shape[0], -1).tolist()}
        report["copies"] = sum(tuple(row) in seen for row in flat.tolist()) / flat.shape[0]
    return report


# --------------------------------------------------------------------------- Fréchet distance


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of N feature vectors (N, D), in float64.

    The covariance divides by N - 1 (numpy.cov's default, which FID's reference code uses).
    """
    x = validate.float_tensor(features, "features", finite=True).detach().double().cpu()
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {tuple(x.shape)}")
    mean = x.mean(dim=0)  # (D,)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)  # (D,), (D, D)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor,
                     cov_b: torch.Tensor) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mean_a, cov_a) and N(mean_b, cov_b):

        ||mean_a - mean_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))

    in float64. cov_a cov_b is not symmetric, but it has the eigenvalues of the symmetric
    cov_a^(1/2) cov_b cov_a^(1/2), so the trace of its square root is the sum of the square
    roots of those eigenvalues: no complex numbers, unlike the general matrix square root
    (scipy.linalg.sqrtm) that FID's reference code takes and then drops imaginary parts of.
    """
    D = validate.float_tensor(mean_a, "mean_a", dim=1, finite=True).shape[0]
    for name, x, shape in (("cov_a", cov_a, (D, D)), ("mean_b", mean_b, (D,)),
                           ("cov_b", cov_b, (D, D))):
        if validate.float_tensor(x, name, finite=True).shape != shape:
            raise ValueError(f"{name} must be {shape} for means of size {D}, got {tuple(x.shape)}")
    mean_a, mean_b = mean_a.double().cpu(), mean_b.double().cpu()
    cov_a, cov_b = cov_a.double().cpu(), cov_b.double().cpu()
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)  # symmetric up to rounding
    trace_sqrt = eigenvalues.clamp(min=0).sqrt().sum()
    diff = mean_a - mean_b
    return float(diff @ diff + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt)


def digit_fd(images: torch.Tensor, reference: torch.Tensor | None = None, classifier=None) -> float:
    """The Fréchet distance between `images` and real digits (default: the 360 test digits),
    on the classifier's hidden features (FID's recipe, with Lesson 03's classifier in place
    of an Inception network). 0 means the same mean and covariance; lower is closer.

    It compares whole distributions: a generator that draws only perfect 1s scores well on
    accuracy for the label 1 but badly here. Like FID it is biased upwards for small sets,
    so compare sets of the same size, against `fd_floor` at that size.
    """
    from minitok.classifier import load_classifier

    if _images(images, "images").shape[0] < 2:
        raise ValueError(f"images: need at least two to measure a covariance, got shape "
                         f"{tuple(images.shape)}")
    if reference is None:
        reference = load_digits("test", size=images.shape[-1])[0]
    if _images(reference, "reference", like=images).shape[0] < 2:
        raise ValueError(f"reference: need at least two images, got shape "
                         f"{tuple(reference.shape)}")
    classifier = load_classifier() if classifier is None else classifier
    stats_a = feature_statistics(classifier.features(images))
    stats_b = feature_statistics(classifier.features(reference))
    return frechet_distance(*stats_a, *stats_b)


def real_sample(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n real training digits (images, labels), drawn without replacement with `seed`."""
    validate.non_negative_int(seed, "seed")
    images, labels = load_digits("train", size=size)
    if not 2 <= validate.positive_int(n, "n") <= images.shape[0]:
        raise ValueError(f"n must be in [2, {images.shape[0]}] (the training digits), got {n}")
    rows = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return images[rows], labels[rows]


def fd_floor(n: int, classifier=None, size: int = 16, seed: int = 0) -> float:
    """`digit_fd` of n real training digits against the test digits: what a generator that
    draws exactly like real handwriting scores with n samples (the noise floor)."""
    return digit_fd(real_sample(n, size, seed)[0], None, classifier)


def sharpness(images: torch.Tensor) -> float:
    """The mean absolute difference between neighbouring pixels (across and down), in
    [-1, 1] pixel units: edges make it large, blur makes it small, speckle makes it larger.
    images: (N, C, H, W) with H, W >= 2."""
    if min(_images(images, "images").shape[-2:]) < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1 and H, W >= 2, got shape "
                         f"{tuple(images.shape)}")
    x = images.double()
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return float((across + down) / 2)


@torch.no_grad()
def decoder_comparison(tokenizer, decoder, classifier, steps: int = 10, seed: int = 0,
                       images: torch.Tensor | None = None, labels=None) -> dict[str, dict]:
    """The tokenizer's decoder against a DiffusionDecoder on the same tokens of real digits.

    images default to the 360 test digits. Both decoders get the tokenizer's grids of them;
    for each: mse (against the originals, [-1, 1] pixels), accuracy (the classifier reads the
    true class), fd (`digit_fd` against the originals: rFID's recipe), sharpness (relative to
    the originals', 1.0 = as sharp), ms/image (one batch, wall clock). A diffusion decoder
    draws *a* digit that fits the tokens, not the one that was encoded: it trades
    reconstruction error for realism.
    """
    from minitok.diffusion import render

    if images is None:
        images, labels = load_digits("test", size=tokenizer.config.image_size)
    grids = tokenizer.encode(images.to(tokenizer.device))
    real_sharpness = sharpness(images)
    out = {}
    for name in ("VQ decoder", f"diffusion decoder, DDIM {steps}"):
        start = time.perf_counter()
        if name == "VQ decoder":
            recons = tokenizer.decode(grids).cpu()
        else:
            generator = torch.Generator(device=decoder.device).manual_seed(seed)
            recons = render(decoder, grids.to(decoder.device), steps, generator=generator).cpu()
        seconds = time.perf_counter() - start
        out[name] = {"mse": F.mse_loss(recons, images).item(),
                     "accuracy": classifier.accuracy(recons, labels),
                     "fd": digit_fd(recons, images, classifier),
                     "sharpness": sharpness(recons) / real_sharpness,
                     "ms/image": 1000 * seconds / images.shape[0], "images": recons}
    return out


# --------------------------------------------------------------------------- AR vs MaskGIT


@dataclass
class RaceSetting:
    """One row of the race: how a generator makes its images.

    method: "AR" (Lesson 05's prior, KV cache), "MaskGIT" (Lesson 06), "diffusion" (Lesson
    08's class-conditional model), "hybrid" (the AR prior's tokens, rendered by Lesson 08's
    diffusion decoder instead of the tokenizer's decoder) or "VAR" (Lesson 09's next-scale
    model, one pass per scale, decoded by its multi-scale tokenizer). steps: MaskGIT's decoding steps,
    or the diffusion sampler's (for the hybrid, the decoder's). schedule: MaskGIT's mask
    schedule. sampler: "ddim" or "ddpm". cfg_scale: guidance (1 = none); for the hybrid it
    guides the AR prior, the decoder runs unguided.
    """

    method: str  # "AR", "MaskGIT", "diffusion", "hybrid" or "VAR"
    steps: int = 0
    schedule: str = "cosine"
    cfg_scale: float = 1.0
    sampler: str = "ddim"

    def __post_init__(self):
        validate.one_of(self.method, "method", ("AR", "MaskGIT", "diffusion", "hybrid", "VAR"))
        if self.method in ("AR", "VAR"):  # no steps to take
            validate.non_negative_int(self.steps, "steps")
        else:  # decoding or sampling steps: at least one
            validate.positive_int(self.steps, "steps")
        _schedule(self.schedule, "schedule")
        validate.number(self.cfg_scale, "cfg_scale", low=0)
        validate.one_of(self.sampler, "sampler", ("ddim", "ddpm"))

    @property
    def name(self) -> str:
        guided = "" if self.cfg_scale == 1.0 else f", s={self.cfg_scale:g}"
        if self.method == "AR":
            return f"AR (KV cache){guided}"
        if self.method == "MaskGIT":
            return f"MaskGIT {self.steps} {self.schedule}{guided}"
        if self.method == "diffusion":
            return f"diffusion {self.sampler.upper()} {self.steps}{guided}"
        if self.method == "VAR":
            return f"VAR (scales){guided}"
        return f"hybrid: AR{guided} + diffusion decoder {self.sampler.upper()} {self.steps}"


def _schedule(value, name: str) -> str:
    """`value` if it is a MaskGIT mask schedule (`maskgit.gamma`'s), else an error naming
    `name`."""
    from minitok.maskgit import SCHEDULES, gamma

    try:
        gamma(value, 0.0)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a mask schedule ({', '.join(SCHEDULES)}, or "
                         f"'pow<k>' with k > 0), got {value!r}") from None
    return value


def race_settings(steps=(4, 8, 12), schedules=("cosine", "linear", "square")) -> list[RaceSetting]:
    """AR, then MaskGIT at every number of steps with cosine, then the other schedules at 8.
    steps: a tuple of positive ints; schedules: a tuple of mask schedules."""
    for value, name in ((steps, "steps"), (schedules, "schedules")):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must be a tuple, got {type(value).__name__} {value!r}")
    for s in steps:
        validate.positive_int(s, "steps")
    for name in schedules:
        _schedule(name, "schedules")
    rows = [RaceSetting("AR")]
    rows += [RaceSetting("MaskGIT", s, "cosine") for s in steps]
    rows += [RaceSetting("MaskGIT", 8, name) for name in schedules if name != "cosine"]
    return rows


@dataclass
class Racers:
    """The models a race may call on (a setting whose model is None cannot run)."""

    tokenizer: nn.Module
    prior: nn.Module | None = None
    maskgit: nn.Module | None = None
    diffusion: nn.Module | None = None
    decoder: nn.Module | None = None
    generators: dict | None = None  # method -> a stand-in for the package's sampler (race)
    var: nn.Module | None = None
    var_tokenizer: nn.Module | None = None

    def networks(self, setting: RaceSetting) -> list[nn.Module]:
        """The networks whose forward passes make an image in this setting (counted)."""
        if setting.method == "AR":
            return [self.prior.transformer]
        if setting.method == "MaskGIT":
            return [self.maskgit.transformer]
        if setting.method == "diffusion":
            return [self.diffusion]
        if setting.method == "VAR":
            return [self.var]
        return [self.prior.transformer, self.decoder]


def generate_images(setting: RaceSetting, racers: Racers, labels: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (B, 1, S, S) on the CPU, token grids (B, G, G) or None) for `labels`.

    Token models end with the tokenizer's decoder (one pass), so that every row of the race
    times the same thing: pixels out.
    """
    from minitok.diffusion import sample
    from minitok.maskgit import decode
    from minitok.prior import ar_generate

    chosen = racers.generators or {}
    sample = chosen.get("diffusion", sample)
    if setting.method == "diffusion":
        return sample(racers.diffusion, labels, setting.steps, setting.sampler,
                      setting.cfg_scale, generator).cpu(), None
    if setting.method == "VAR":
        from minitok.var import var_generate

        ids = chosen.get("VAR", var_generate)(racers.var, racers.var_tokenizer.quantizer, labels,
                                              cfg_scale=setting.cfg_scale, generator=generator)
        return racers.var_tokenizer.decode(ids).cpu(), torch.cat(ids, dim=1).cpu()
    if setting.method == "MaskGIT":
        grids = chosen.get("MaskGIT", decode)(racers.maskgit, labels, steps=setting.steps,
                                              schedule=setting.schedule, generator=generator,
                                              cfg_scale=setting.cfg_scale)
    else:
        grids = chosen.get("AR", ar_generate)(racers.prior, labels, cfg_scale=setting.cfg_scale,
                                              generator=generator)
    if setting.method == "hybrid":  # the decoder's sampler: `render` is `sample` with grids
        images = sample(racers.decoder, grids.to(racers.decoder.device), setting.steps,
                        setting.sampler, 1.0, generator)
    else:
        images = racers.tokenizer.decode(grids.to(racers.tokenizer.device))
    return images.cpu(), grids.cpu()


def seconds_per_image(generate, batch: int, repeats: int, device) -> float:
    """Median wall-clock seconds per image of `generate(labels)` over `repeats` batches of
    `batch` images, after one warm-up batch."""
    validate.positive_int(batch, "batch")
    validate.positive_int(repeats, "repeats")
    labels = (torch.arange(batch) % 10).to(device)
    generate(labels)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate(labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / batch)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def race(maskgit_model, prior, tokenizer, classifier, settings=None, samples_per_class: int = 50,
         latency_repeats: int = 5, throughput_repeats: int = 2, seed: int = 0,
         diffusion_model=None, decoder=None, timing: bool = True,
         generators: dict | None = None, var_model=None, var_tokenizer=None) -> list[dict]:
    """The generators against each other on the same digits: one dict per setting.

    generators: stand-ins for the package's samplers, so that a lesson races the learner's
        code. {"AR": f} draws the AR prior's grids (the hybrid's too), called as
        `prior.ar_generate` is; {"MaskGIT": f} MaskGIT's, called as `maskgit.decode` is (a
        learner's loop: `functools.partial(maskgit.decode, loop=decode_loop)`);
        {"diffusion": f} the diffusion model's images and the hybrid decoder's, called as
        `diffusion.sample` is (`functools.partial(diffusion.sample, loop=sample_loop)`);
        {"VAR": f} VAR's token maps, called as `var.var_generate` is.
    var_model, var_tokenizer: Lesson 09's next-scale model and its multi-scale tokenizer (for
    the "VAR" settings).

    passes/image: forward passes to make one image (a batch shares them; guidance's doubled
        batch is one pass); for the hybrid, the AR prior's plus the decoder's;
    positions/image: token positions those passes compute (a cached AR pass computes 1, a
        MaskGIT pass all 1 + G*G): the work, as opposed to the number of waits; None for
        the diffusion model, whose passes compute pixels;
    ms/image @1, @64: median wall-clock milliseconds per image at batch 1 and at batch 64,
        pixels out (token models include the tokenizer's decoder); None with timing=False;
    accuracy: the digit classifier reads the requested class, over 10 * samples_per_class
        samples; fd: `digit_fd` of those samples against the test digits (compare with
        `fd_floor(10 * samples_per_class)`); diversity: see `diversity` (1.0 = as varied as
        real test digits); grids: the token grids drawn (None for the diffusion model).
    """
    validate.positive_int(samples_per_class, "samples_per_class")
    validate.positive_int(latency_repeats, "latency_repeats")
    validate.positive_int(throughput_repeats, "throughput_repeats")
    settings = race_settings() if settings is None else settings
    racers = Racers(tokenizer, prior, maskgit_model, diffusion_model, decoder, generators,
                    var_model, var_tokenizer)
    device = tokenizer.device
    real, real_labels = load_digits("test", size=tokenizer.config.image_size)
    labels = (torch.arange(10 * samples_per_class) % 10).to(device)
    rows = []
    for setting in settings:
        generator = torch.Generator(device=device).manual_seed(seed)
        counters = [count_forward(net) for net in racers.networks(setting)]
        stats = [c.__enter__() for c in counters]
        try:
            images, grids = generate_images(setting, racers, labels, generator)
        finally:
            for c in counters:
                c.__exit__(None, None, None)
        timing_generator = torch.Generator(device=device).manual_seed(seed)

        def generate(batch_labels, setting=setting, g=timing_generator):
            return generate_images(setting, racers, batch_labels, g)

        token_model = setting.method in ("AR", "MaskGIT")
        positions = stats[0]["positions"] / labels.shape[0] if token_model else None
        if setting.method == "VAR":  # VAR's passes read embedded vectors (B, T, n_embd)
            positions = stats[0]["positions"] / labels.shape[0] / var_model.config.n_embd
        rows.append({
            "setting": setting.name,
            "method": setting.method,
            "passes/image": sum(s["passes"] for s in stats),
            "positions/image": positions,
            "ms/image @1": 1000 * seconds_per_image(generate, 1, latency_repeats, device)
            if timing else None,
            "ms/image @64": 1000 * seconds_per_image(generate, 64, throughput_repeats, device)
            if timing else None,
            "accuracy": classifier.accuracy(images, labels.cpu()),
            "fd": digit_fd(images, real, classifier),
            "diversity": diversity(images, labels.cpu(), real, real_labels),
            "grids": grids,
        })
    return rows


def whose_code(parts: dict[str, bool]) -> str:
    """Whose code made a row, from {part: True if it is the learner's}: "yours", "minitok's",
    or "yours, minitok's <the parts that are not>"."""
    if not parts:
        raise ValueError("parts must name at least one part")
    if all(parts.values()):
        return "yours"
    if not any(parts.values()):
        return "minitok's"
    return "yours, minitok's " + " + ".join(name for name, mine in parts.items() if not mine)


def race_table(rows: list[dict], whose: dict[str, str] | None = None) -> str:
    """The rows of `race` as an aligned text table, with speed-ups relative to AR.
    whose: {method ("AR", "MaskGIT", ...): whose code made it}, a last column "code"."""
    ar = next((r for r in rows if r["setting"].startswith("AR")), rows[0])

    def number(value, fmt: str, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

    def speedup(key: str, r: dict) -> str:
        if ar[key] is None or r[key] is None:
            return f"{'-':>8}"
        return f"{ar[key] / r[key]:>7.1f}x"

    width = max(20, *(len(r["setting"]) for r in rows))
    head = (f"{'setting':<{width}} {'passes/img':>10} {'positions/img':>13} {'ms/img @1':>10} "
            f"{'x AR @1':>8} {'ms/img @64':>10} {'x AR @64':>8} {'accuracy':>9} {'FD':>6} "
            f"{'diversity':>9}") + ("  code" if whose else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['setting']:<{width}} {r['passes/image']:>10d} "
            f"{number(r['positions/image'], '.0f', 13)} "
            f"{number(r['ms/image @1'], '.2f', 10)} {speedup('ms/image @1', r)} "
            f"{number(r['ms/image @64'], '.3f', 10)} {speedup('ms/image @64', r)} "
            f"{100 * r['accuracy']:>8.1f}% {number(r.get('fd'), '.2f', 6)} "
            f"{r['diversity']:>9.2f}" + (f"  {whose.get(r['method'], '?')}" if whose else "")
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- any-to-any


@torch.no_grad()
def text_to_image_accuracy(model, tokenizer, classifier, per_caption: int = 20,
                           pairs: list[tuple[int, int]] | None = None, temperature: float = 1.0,
                           top_k: int | None = None, generator: torch.Generator | None = None,
                           cfg_scale: float = 1.0) -> dict:
    """Draw `per_caption` images for each caption of `pairs` (default: the held-out ones).

    Each drawn grid is decoded by the tokenizer and read by the digit classifier; an image
    matches its caption when the classifier reads the digit the caption names.
    Returns {"accuracy": fraction matching, "per_digit": {digit: fraction}, "n": count}.
    """
    from minitok.anytoany import caption, held_out_pairs, text_to_image

    validate.positive_int(per_caption, "per_caption")
    pairs = held_out_pairs() if pairs is None else pairs
    right, drawn = [0] * 10, [0] * 10  # per digit
    for template, digit in pairs:
        grids = text_to_image(model, caption(template, digit), per_caption,
                              temperature=temperature, top_k=top_k, generator=generator,
                              cfg_scale=cfg_scale)
        images = tokenizer.decode(grids.to(tokenizer.device)).cpu()  # (n, 1, S, S)
        right[digit] += int((classifier.predict(images) == digit).sum())
        drawn[digit] += per_caption
    per_digit = {d: right[d] / drawn[d] for d in range(10) if drawn[d]}
    n = sum(drawn)
    return {"accuracy": sum(right) / n, "per_digit": per_digit, "n": n}


@torch.no_grad()
def image_to_text_accuracy(model, grids: torch.Tensor, labels: torch.Tensor,
                           batch_size: int = 128) -> dict:
    """Caption every grid (greedy) and count the captions that name the image's digit.

    Returns {"accuracy": fraction naming the right digit, "known_wording": fraction that are
    exactly one of the course's captions, "n": count, "captions": the captions}.
    """
    from minitok.anytoany import image_to_text, is_known_wording, read_digit

    validate.positive_int(batch_size, "batch_size")
    if validate.int_tensor(labels, "labels", dim=1).shape[0] != grids.shape[0]:
        raise ValueError(f"labels must be ({grids.shape[0]},), one per grid, got shape "
                         f"{tuple(labels.shape)}")
    captions = []
    for start in range(0, grids.shape[0], batch_size):
        captions += image_to_text(model, grids[start : start + batch_size])
    right = sum(read_digit(c) == int(d) for c, d in zip(captions, labels.tolist(), strict=True))
    known = sum(is_known_wording(c) for c in captions)
    n = len(captions)
    return {"accuracy": right / n, "known_wording": known / n, "n": n, "captions": captions}
