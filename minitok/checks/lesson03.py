"""Checks for Lesson 03: decoding a token grid, the hinge loss, the adaptive weight, the
tokenizer's training step that uses them, and the training loop around the step.

Each check runs the learner's function on small seeded cases (a tiny minitok Decoder with
weights drawn from the check's own generator). When the answer is wrong, the check first
compares it with what each classic mistake would give, so the hint names that mistake:
`view` instead of `permute`, a transposed grid, hinge signs swapped, the missing 0.5 or
relu, gradients taken at the wrong layer (or the last bias), no epsilon, no clamp,
no detach, `.backward()` leaving gradients behind, a freed graph; in the training step a
missing zero_grad, a missing VQ loss, the generator term's sign, a discriminator loss that
reaches the tokenizer, the two updates in the wrong order; in the loop a step never called,
batches from the global random state or another seed, no schedule (or one step off), a new
optimizer every step, the discriminator one step late, D's optimizer not taming's, a history
without the zeros before disc_start, the model left in train mode.

adaptive_weight's inputs are losses whose graphs reach a decoder's weight, tokenizer_step's
are a model with its optimisers, and fit_tokenizer's a model and a step to repeat (a spy that
records what each step is given): their checks build them next to the
learner's function with a probe (checks.probe) from plain data (state dicts, tensors), so the
same check runs in a notebook and in `minitok grade`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from minitok import tokenizer as tok
from minitok import vqgan
from minitok.checks import expect, expect_close, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, probe, show_hint
from minitok.tokenizer import Decoder, TokenizerConfig, TrainConfig, VQTokenizer
from minitok.tokenizer import tokens_to_image as reference_tokens_to_image
from minitok.training import lr_scale
from minitok.vqgan import ADAPTIVE_MAX, PatchDiscriminator, generator_loss


def _on_one_thread(test):
    """Run a check's test on one CPU thread, then restore the thread count.

    The cases are tiny: on a busy 2-core machine a second thread made a check 30x slower
    (waiting, not computing), and one thread gives the same numbers on any core count.
    """

    @functools.wraps(test)
    def run(fn):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return test(fn)
        finally:
            torch.set_num_threads(threads)

    return run


def _tiny_decoder(g: torch.Generator, code_dim: int = 3, channels: int = 8) -> Decoder:
    """A small Decoder with weights from the check's generator (the global RNG is untouched)."""
    with torch.random.fork_rng():  # nn.Module init draws from the global RNG: fork it
        decoder = Decoder(in_channels=1, channels=channels, code_dim=code_dim)
    with torch.no_grad():
        for param in decoder.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return decoder


def _close(a, b, atol=1e-6, rtol=1e-4) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol)
    )


def _name_the_mistake(got, mistakes: list[tuple[torch.Tensor, str, str]]) -> None:
    """Raise CheckFailed(message, hint) for the first mistake whose result `got` matches."""
    for value, message, hint in mistakes:
        if _close(got, value):
            raise CheckFailed(message, hint)


# --------------------------------------------------------------------------- tokens_to_image

VIEW_NOT_PERMUTE = (
    "codebook[indices] is (B, G, G, D), channels last. .view/.reshape to (B, D, G, G) keeps "
    "the numbers in memory order and mixes codes across positions; use "
    ".permute(0, 3, 1, 2) to move the code axis to position 1."
)
TRANSPOSED = (
    "the grid came out transposed: .permute(0, 3, 2, 1) swaps rows and columns. Use "
    ".permute(0, 3, 1, 2): (B, G_rows, G_cols, D) -> (B, D, G_rows, G_cols)."
)


TOKENS_TO_IMAGE_HINTS = (
    "A token is a row number of the codebook: looking the rows up gives one code vector per "
    "grid position. The decoder is convolutional and wants the code axis where image "
    "channels go.",
    "codebook[indices] is (B, G, G, D), channels last; the decoder reads (B, D, G, G), "
    "channels first. Which tensor operation moves an axis without reordering the numbers "
    "inside each position?",
    "codes = ____[indices]              # (B, G, G, D): one code vector per grid cell\n"
    "codes = codes.____(0, _, _, _)     # (B, D, G, G): the code axis where channels go\n"
    "return decoder(codes)",
)


@exercise("tokens_to_image", reference=reference_tokens_to_image, hints=TOKENS_TO_IMAGE_HINTS)
@_on_one_thread
def tokens_to_image(fn):
    g = torch.Generator().manual_seed(0)
    B, G, K, D = 2, 4, 6, 3
    codebook = torch.randn(K, D, generator=g)  # (K, D)
    decoder = _tiny_decoder(g, code_dim=D)
    indices = torch.randint(0, K, (B, G, G), generator=g)  # (B, G, G)
    codes = codebook[indices]  # (B, G, G, D)
    with torch.no_grad():
        expected = decoder(codes.permute(0, 3, 1, 2))  # (B, 1, 2G, 2G)
        got = fn(indices, codebook, decoder)
        mistakes = [
            (
                decoder(codes.reshape(B, D, G, G)),
                "codes were reshaped, not permuted",
                VIEW_NOT_PERMUTE,
            ),
            (decoder(codes.permute(0, 3, 2, 1)), "the decoded image is transposed", TRANSPOSED),
        ]
    expect_shape(
        got,
        (B, 1, 2 * G, 2 * G),
        "the decoded images",
        hint="look up codebook[indices], move the code axis first, call the decoder.",
    )
    if not _close(got, expected):
        _name_the_mistake(got, mistakes)
    expect_close(
        got,
        expected,
        "the decoded images",
        hint="decoder(codebook[indices].permute(0, 3, 1, 2)): one code per token.",
    )
    return "a random 4 x 4 grid through a tiny decoder"


# --------------------------------------------------------------------------- hinge_d_loss

SIGNS_SWAPPED = (
    "the signs are swapped: real logits must be pushed UP (relu(1 - D(x))) and fake logits "
    "DOWN (relu(1 + D(x_hat))). Yours rewards calling real images fake."
)
NO_HALF = "the two means are averaged: 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))."
NO_RELU = (
    "without relu it is a linear loss: a patch already past its margin (D(x) > 1 or "
    "D(x_hat) < -1) must cost nothing. Wrap each term in relu (F.relu)."
)
SUM_NOT_MEAN = "use means over all patch logits, not sums: the loss must not grow with the batch."
SOFTPLUS = (
    "that is the vanilla (softplus / binary cross-entropy) GAN loss, not the hinge loss: use "
    "relu(1 - D(x)) and relu(1 + D(x_hat))."
)


HINGE_HINTS = (
    "The discriminator should give real patches a high logit and reconstructed ones a low "
    "logit, but only up to a margin: a real patch at logit >= 1 and a fake one at <= -1 are "
    "right enough and cost nothing. Below the margin, the cost grows linearly.",
    "Per real logit r the cost is relu(1 - r); per fake logit f it is relu(1 + f). Average "
    "each over all its logits, then average the two: 0.5 * (mean_real + mean_fake).",
    "loss_real = F.relu(____).mean()    # zero once a real logit is >= 1\n"
    "loss_fake = ...                    # zero once a fake logit is <= -1\n"
    "return ...                         # the average of the two",
)


@exercise("hinge_d_loss", reference=vqgan.hinge_d_loss, hints=HINGE_HINTS)
@_on_one_thread
def hinge_d_loss(fn):
    g = torch.Generator().manual_seed(1)
    real = (torch.randn(4, 1, 4, 4, generator=g) * 1.5 + 0.5).requires_grad_()  # (B, 1, h, w)
    fake = (torch.randn(4, 1, 4, 4, generator=g) * 1.5 - 0.5).requires_grad_()
    r, f = real.detach(), fake.detach()
    expected = vqgan.hinge_d_loss(r, f)
    mistakes = [
        (
            0.5 * (F.relu(1 + r).mean() + F.relu(1 - f).mean()),
            "the signs are swapped",
            SIGNS_SWAPPED,
        ),
        (F.relu(1 - r).mean() + F.relu(1 + f).mean(), "the loss is twice the hinge loss", NO_HALF),
        (0.5 * ((1 - r).mean() + (1 + f).mean()), "the margins are missing", NO_RELU),
        ((1 - r).mean() + (1 + f).mean(), "the margins are missing", NO_RELU),
        (0.5 * (F.relu(1 - r).sum() + F.relu(1 + f).sum()), "the terms are sums", SUM_NOT_MEAN),
        (F.relu(1 - r).sum() + F.relu(1 + f).sum(), "the terms are sums", SUM_NOT_MEAN),
        (0.5 * (F.softplus(-r).mean() + F.softplus(f).mean()), "a softplus loss", SOFTPLUS),
        (F.softplus(-r).mean() + F.softplus(f).mean(), "a softplus loss", SOFTPLUS),
    ]

    loss = fn(real, fake)
    expect_shape(loss, (), "the loss (a scalar)", hint="average over every patch logit.")
    if not _close(loss, expected):
        _name_the_mistake(loss, mistakes)
    expect_close(
        loss,
        expected,
        "the hinge loss",
        hint="0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).",
    )

    # A discriminator that is right beyond both margins pays nothing.
    confident = fn(torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0))
    expect_close(
        confident, torch.tensor(0.0), "the loss when D(x) = 3 and D(x_hat) = -3", hint=NO_RELU
    )

    expect(
        loss.requires_grad,
        "the loss has no gradient",
        hint="do not detach the logits inside the loss: it is what trains the discriminator.",
    )
    loss.backward()
    n = r.numel()
    expect_close(
        real.grad,
        -0.5 * (r < 1).float() / n,
        "dL/dD(x)",
        hint="real logits below 1 get gradient -0.5 / n each, the others 0.",
    )
    expect_close(
        fake.grad,
        0.5 * (f > -1).float() / n,
        "dL/dD(x_hat)",
        hint="fake logits above -1 get gradient 0.5 / n each, the others 0.",
    )
    return "value, margins, gradients of both terms"


# --------------------------------------------------------------------------- adaptive_weight

WRONG_LAYER = (
    "the gradients were taken at the wrong tensor. W is the weight of the decoder's LAST "
    "convolution, decoder.conv_out.weight (list(decoder.parameters())[-1] is its bias, "
    "and conv_in is the first layer)."
)
INVERTED = "the ratio is upside down: ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4)."
NO_EPS = (
    "the denominator needs + 1e-4: ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), so a vanishing "
    "adversarial gradient cannot blow the weight up."
)
NO_CLAMP = ("clamp the weight to [0, max_weight] (torch.clamp(weight, 0.0, max_weight)); "
            "max_weight defaults to 1e4, as in taming.")
MAX_WEIGHT_IGNORED = (
    "the clamp ignored the max_weight argument: clamp to [0, max_weight], not to a fixed 1e4 "
    "(the training step passes a smaller bound)."
)
NOT_DETACHED = (
    "the weight still has a graph (create_graph=True?): return it .detach()ed, so no gradient "
    "flows through the weighting itself."
)
BACKWARD_USED = (
    "gradients were left in the parameters' .grad: .backward() accumulates into .grad, which "
    "the optimiser would then apply. Use torch.autograd.grad(loss, W, retain_graph=True)."
)
GRAPH_FREED = (
    "the losses' graph was freed: the training step still backpropagates through rec_loss and "
    "g_loss afterwards. Pass retain_graph=True to both torch.autograd.grad calls."
)


def _grad_norm(loss, tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, tensor, retain_graph=True)[0].norm()


def _case(g: torch.Generator, rec_scale: float, g_scale: float) -> dict:
    """A case as plain data: a tiny decoder's weights, its input and the loss scales that make
    the gradient norms of (rec_loss, g_loss) at W exactly rec_scale and g_scale."""
    case = {"state": _tiny_decoder(g).state_dict(),
            "codes": torch.randn(2, 3, 4, 4, generator=g),  # (B, D, G, G)
            "target": torch.randn(2, 1, 8, 8, generator=g).clamp(-1, 1),
            "fake_logits": torch.randn(2, 1, 8, 8, generator=g),  # stands for D(x_hat)
            "rec_factor": 1.0, "adv_factor": 1.0}
    decoder, rec, adv, _ = _losses(case)
    w = decoder.conv_out.weight
    case["rec_factor"] = rec_scale / _grad_norm(rec, w).item()
    case["adv_factor"] = g_scale / _grad_norm(adv, w).item()
    return case


def _losses(case: dict):
    """The case's decoder, its (rec_loss, g_loss) and the encoder before it: the losses'
    graphs reach every weight of both, as in a tokenizer (the encoder stands for the
    encoder and the quantizer, whose .grad a backward would fill too)."""
    with torch.random.fork_rng():  # nn.Module init draws from the global RNG: fork it
        decoder = Decoder(in_channels=1, channels=8, code_dim=3)
        encoder = torch.nn.Conv2d(3, 3, 1)
    decoder.load_state_dict(case["state"])
    with torch.no_grad():  # the identity: the codes reach the decoder unchanged
        encoder.weight.copy_(torch.eye(3)[:, :, None, None])
        encoder.bias.zero_()
    out = decoder(encoder(case["codes"]))  # (B, 1, 8, 8)
    rec = F.mse_loss(out, case["target"]) * case["rec_factor"]
    adv = -(out * case["fake_logits"]).mean() * case["adv_factor"]
    return decoder, rec, adv, encoder


def _adaptive_weight_probe(fn, case: dict, backward_after: bool) -> dict:
    """Runs where the learner's function lives (checks.probe): the losses' graphs are built
    there. Returns what the check judges: the weight, whether .grad was left in the decoder,
    and (with backward_after) the error of backpropagating the losses afterwards."""
    decoder, rec, adv, encoder = _losses(case)
    if case.get("max_weight") is None:
        got = fn(rec, adv, decoder)
    else:
        got = fn(rec, adv, decoder, max_weight=case["max_weight"])
    facts = {"got": got, "grads_left": any(p.grad is not None for p in decoder.parameters()),
             "grads_left_before": any(p.grad is not None for p in encoder.parameters()),
             "backward_error": None}
    if backward_after and isinstance(got, torch.Tensor):
        try:
            (rec + got * adv).backward()
        except RuntimeError as err:
            facts["backward_error"] = str(err)
    return facts


def _candidates(decoder, rec, adv, max_weight=None):
    """What the correct formula and each classic mistake give on this case."""
    top = ADAPTIVE_MAX if max_weight is None else max_weight
    names = [name for name, _ in decoder.named_parameters()]
    params = [param for _, param in decoder.named_parameters()]
    # One backward pass per loss gives the gradient at every parameter.
    rec_grads = dict(zip(names, torch.autograd.grad(rec, params, retain_graph=True), strict=True))
    adv_grads = dict(zip(names, torch.autograd.grad(adv, params, retain_graph=True), strict=True))
    r_w, a_w = rec_grads["conv_out.weight"].norm(), adv_grads["conv_out.weight"].norm()
    expected = (r_w / (a_w + 1e-4)).clamp(0, top)
    mistakes = []
    if max_weight is not None:
        mistakes.append(((r_w / (a_w + 1e-4)).clamp(0, ADAPTIVE_MAX),
                         "the weight is not clamped at max_weight", MAX_WEIGHT_IGNORED))
    for name in ("conv_out.bias", "conv_in.weight"):
        ratio = (rec_grads[name].norm() / (adv_grads[name].norm() + 1e-4)).clamp(0, top)
        mistakes.append((ratio, "the weight was computed at the wrong layer", WRONG_LAYER))
    r_all = torch.stack([g.norm() for g in rec_grads.values()]).norm()
    a_all = torch.stack([g.norm() for g in adv_grads.values()]).norm()
    mistakes += [
        ((r_all / (a_all + 1e-4)).clamp(0, top), "the norms are over every parameter", WRONG_LAYER),
        ((a_w / (r_w + 1e-4)).clamp(0, top), "the ratio is inverted", INVERTED),
        (r_w / (a_w + 1e-4), "the weight is not clamped", NO_CLAMP),
        ((r_w / a_w).clamp(0, top), "the weight ignores the 1e-4 in the denominator", NO_EPS),
        (r_w / a_w, "the weight ignores the 1e-4 in the denominator", NO_EPS),
    ]
    return expected, mistakes


def _judge(fn, case: dict, what: str, backward_after: bool = False) -> dict:
    expected, mistakes = _candidates(*_losses(case)[:3], max_weight=case.get("max_weight"))
    try:
        facts = probe(_adaptive_weight_probe, fn, case, backward_after)
    except RuntimeError as err:
        if "backward through the graph a second time" in str(err):
            raise CheckFailed(
                f"{what}: the second gradient found the graph freed", GRAPH_FREED
            ) from err
        raise
    got = facts["got"]
    expect_tensor(
        got, f"the weight ({what})", hint="return a tensor: the ratio of the two gradient norms."
    )
    expect(
        not facts["grads_left"],
        f"{what}: adaptive_weight left gradients in the decoder's .grad",
        hint=BACKWARD_USED,
    )
    expect(
        not facts["grads_left_before"],
        f"{what}: adaptive_weight left gradients in the .grad of the layers before the "
        "decoder (the losses' graph reaches the encoder and the quantizer too)",
        hint=BACKWARD_USED + " Zeroing the decoder's .grad afterwards misses the rest.",
    )
    if not _close(got.reshape(()) if got.numel() == 1 else got, expected, atol=1e-5):
        _name_the_mistake(got.reshape(()) if got.numel() == 1 else got, mistakes)
    expect_close(
        got,
        expected,
        f"the weight ({what})",
        atol=1e-5,
        hint="||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, max_weight], "
        "with W = decoder.conv_out.weight.",
    )
    return facts


ADAPTIVE_HINTS = (
    "Compare the two losses where they both act on the image: the weight W of the decoder's "
    "last convolution. lambda rescales L_G so that its gradient at W is as large (in norm) "
    "as L_rec's. A small constant in the denominator keeps lambda finite when L_G's gradient "
    "vanishes; the result is clamped to [0, max_weight] and is a plain number (no graph).",
    "With W = decoder.conv_out.weight (its weight, not its bias): "
    "lambda = ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, max_weight], "
    "detached. torch.autograd.grad(loss, W, retain_graph=True) gives a gradient without "
    "touching .grad and keeps the graph for the training step's backward.",
    "w = decoder.____.weight                               # the last layer's weight\n"
    "rec_grad = torch.autograd.grad(rec_loss, w, ____)[0]  # keep the graph for backward\n"
    "g_grad = ...\n"
    "weight = ...                                          # ratio of norms, epsilon below\n"
    "return ...                                            # clamped to [0, max_weight], no graph",
)


@exercise("adaptive_weight", reference=vqgan.adaptive_weight, hints=ADAPTIVE_HINTS)
@_on_one_thread
def adaptive_weight(fn):
    g = torch.Generator().manual_seed(2)
    # 1. norms of order 1: the ratio itself, at the right layer.
    facts = _judge(fn, _case(g, rec_scale=3.0, g_scale=0.5), "norms 3 and 0.5",
                   backward_after=True)
    expect(not facts["got"].requires_grad, "the weight carries a gradient", hint=NOT_DETACHED)
    if facts["backward_error"] is not None:
        raise CheckFailed("the losses could not be backpropagated afterwards", GRAPH_FREED)
    # 2. a tiny adversarial gradient: the epsilon matters.
    _judge(fn, _case(g, rec_scale=1e-2, g_scale=1e-4), "norms 1e-2 and 1e-4")
    # 3. a huge ratio: the clamp matters.
    _judge(fn, _case(g, rec_scale=10.0, g_scale=1e-4), "norms 10 and 1e-4")
    # 4. a ratio of 6 with max_weight=2.5: the clamp is the argument's.
    _judge(fn, {**_case(g, rec_scale=3.0, g_scale=0.5), "max_weight": 2.5},
           "norms 3 and 0.5, max_weight=2.5")
    return ("ratio at conv_out.weight, epsilon, clamp (1e4 and max_weight), detached, graph "
            "kept, no .grad left")


# --------------------------------------------------------------------------- tokenizer_step

STEP_HINTS = (
    "One step is two updates on the same batch. First the tokenizer: reconstruct, add up its "
    "losses, clear old gradients, backpropagate, step its optimizer. Then (only when a "
    "discriminator is given) the discriminator: its hinge loss on the real batch and on "
    "the reconstruction, with no gradient reaching the tokenizer, then its optimizer's step. "
    "Return the numbers to log as Python floats.",
    "model(images) gives (x_hat, vq). The tokenizer's loss is mse(x_hat, images) + vq.loss, "
    "plus disc_weight * lambda * L_G with a discriminator, where L_G = generator_loss(disc("
    "x_hat)) and lambda = adaptive_weight(rec_loss, L_G, model.decoder, max_weight). The "
    "discriminator's loss is hinge_d_loss(disc(images), disc(x_hat.detach())). "
    ".backward() adds to .grad: zero each optimizer's gradients before its backward.",
    "x_hat, vq = model(images)\n"
    "rec_loss = ...\n"
    "loss = ...                               # rec_loss + the quantizer's loss\n"
    "if disc is not None:\n"
    "    g_loss = ...                         # generator_loss on disc's view of x_hat\n"
    "    lam = ...                            # adaptive_weight(...)\n"
    "    loss = ...\n"
    "...                                      # the tokenizer's update: zero, backward, step\n"
    "stats = {\"rec\": ..., \"vq\": ..., \"usage\": ..., \"perplexity\": ...}  # Python floats\n"
    "if disc is not None:\n"
    "    d_loss = hinge_d_loss(____, ____)    # which input must not reach the tokenizer?\n"
    "    ...                                  # the discriminator's update\n"
    "    stats.update({\"g_loss\": ..., \"d_loss\": ..., \"lambda\": ...})\n"
    "return stats",
)

NO_ZERO_GRAD = (
    "the tokenizer's update used gradients left in .grad from before the step: .backward() "
    "adds to .grad, so call optimizer.zero_grad() before loss.backward()."
)
NO_VQ_LOSS = (
    "the codebook did not learn: the straight-through output sends no gradient to the codes, "
    "only the VQ loss does. Add vq.loss (from model(images)) to the reconstruction loss."
)
GENERATOR_SIGN = (
    "the adversarial term has the wrong sign: the tokenizer minimises L_G = -mean D(x_hat) "
    "(generator_loss), which is lower when D calls the reconstruction real; adding "
    "+mean D(x_hat) teaches the decoder to look fake."
)
NO_D_ZERO_GRAD = (
    "the discriminator's update used stale gradients: the tokenizer's backward passes "
    "through D too and leaves gradients in D's .grad. Call d_optimizer.zero_grad() before "
    "d_loss.backward()."
)
NO_DETACH = (
    "the discriminator's loss reached the tokenizer: its step must train D only. Score the "
    "reconstruction as disc(x_hat.detach()) in hinge_d_loss, so that backward stops there "
    "(without it, backward runs into the tokenizer's graph, freed by loss.backward())."
)
D_FIRST = (
    "the discriminator was updated before the tokenizer: take the tokenizer's step first "
    "(its L_G and lambda use D as it is at the start of the step), then D's."
)
WEIGHTS_IGNORED = (
    "the adversarial term must be disc_weight * lambda * L_G, with lambda = "
    "adaptive_weight(rec_loss, g_loss, model.decoder, max_weight): pass max_weight on and "
    "multiply by disc_weight."
)
STATS_KEYS = (
    "return a dict of Python floats: 'rec', 'vq', 'usage', 'perplexity' always, and "
    "'g_loss', 'd_loss', 'lambda' when a discriminator is given (e.g. rec_loss.item())."
)

# A tiny tokenizer whose forward draws nothing at random and changes no state: no k-means
# initialisation, no dead-code restarts. Distinct sizes: B=5, S=8, G=4, D=6, K=7.
_STEP_CONFIG = {"image_size": 8, "channels": 8, "code_dim": 6, "num_codes": 7,
                "kmeans_init": False, "dead_code_threshold": 0.0}
_LR, _D_LR = 0.05, 0.03  # plain SGD: an update is -lr * .grad, so every term shows linearly


def _step_case(g: torch.Generator, gan: bool) -> dict:
    """A case as plain data: state dicts, a batch, and stale .grad values for every weight."""
    with torch.random.fork_rng():  # nn.Module init draws from the global RNG: fork it
        model = VQTokenizer(TokenizerConfig(**_STEP_CONFIG))
        disc = PatchDiscriminator(1, 8)
    state = {name: t if "cluster_size" in name or not t.is_floating_point()
             else torch.randn(t.shape, generator=g) * 0.3  # usage counts stay as built
             for name, t in model.state_dict().items()}
    d_state = {name: torch.randn(t.shape, generator=g) * 0.3
               for name, t in disc.state_dict().items()}
    return {
        "model": state, "disc": d_state if gan else None,
        "images": torch.rand(5, 1, 8, 8, generator=g) * 2 - 1,  # (B, 1, S, S) in [-1, 1]
        "stale": {n: torch.randn(p.shape, generator=g) * 0.5 for n, p in model.named_parameters()},
        "d_stale": {n: torch.randn(p.shape, generator=g) * 0.5 for n, p in disc.named_parameters()},
        "disc_weight": 0.7, "max_weight": ADAPTIVE_MAX,
    }


def _step_probe(fn, case: dict) -> dict:
    """Runs where the learner's function lives (checks.probe): builds the model, the
    discriminator and their SGD optimizers with stale .grad, calls fn once, and returns
    plain data: the stats (type and value), the weights and .grad after, the batch."""
    with torch.random.fork_rng():
        model = VQTokenizer(TokenizerConfig(**_STEP_CONFIG))
        disc = PatchDiscriminator(1, 8)
        model.load_state_dict(case["model"])
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
        for name, param in model.named_parameters():
            param.grad = case["stale"][name].clone()
        images = case["images"].clone()
        if case["disc"] is None:
            stats = fn(model, images, optimizer)
        else:
            disc.load_state_dict(case["disc"])
            d_optimizer = torch.optim.SGD(disc.parameters(), lr=_D_LR)
            for name, param in disc.named_parameters():
                param.grad = case["d_stale"][name].clone()
            stats = fn(model, images, optimizer, disc, d_optimizer,
                       disc_weight=case["disc_weight"], max_weight=case["max_weight"])
    if isinstance(stats, dict):
        plain = {}
        for key, value in stats.items():
            try:
                number = value.detach() if isinstance(value, torch.Tensor) else value
                plain[str(key)] = [type(value).__name__, float(number)]
            except (TypeError, ValueError, RuntimeError):
                plain[str(key)] = [type(value).__name__, float("nan")]
    else:
        plain = None
    return {
        "stats": plain, "stats_type": type(stats).__name__,
        "model": {n: p.detach().clone() for n, p in model.named_parameters()},
        "disc": {} if case["disc"] is None else {n: p.detach().clone()
                                                 for n, p in disc.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.detach().clone()
                  for n, p in model.named_parameters()},
        "images": images, "training": model.training,
    }


def _variant_step(model, images, optimizer, disc=None, d_optimizer=None, disc_weight=1.0,
                  max_weight=ADAPTIVE_MAX, *, mistake=None):
    """minitok's tokenizer_step, or the step with one classic `mistake`."""
    if mistake == "d_first":
        with torch.no_grad():
            x_hat_d = model(images)[0]
        d_loss = vqgan.hinge_d_loss(disc(images), disc(x_hat_d))
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
    x_hat, vq = model(images)
    rec_loss = F.mse_loss(x_hat, images)
    loss = rec_loss if mistake == "no_vq" else rec_loss + vq.loss
    if disc is not None:
        g_loss = generator_loss(disc(x_hat))
        if mistake == "max_weight_ignored":
            lam = vqgan.adaptive_weight(rec_loss, g_loss, model.decoder)
            loss = loss + disc_weight * lam * g_loss
        elif mistake == "disc_weight_ignored":
            lam = vqgan.adaptive_weight(rec_loss, g_loss, model.decoder, max_weight)
            loss = loss + lam * g_loss
        else:
            lam = vqgan.adaptive_weight(rec_loss, g_loss, model.decoder, max_weight)
            sign = -1.0 if mistake == "sign" else 1.0
            loss = loss + sign * disc_weight * lam * g_loss
    if mistake != "no_zero_grad":
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if disc is not None and mistake != "d_first":
        d_loss = vqgan.hinge_d_loss(disc(images), disc(x_hat.detach()))
        if mistake != "no_d_zero_grad":
            d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
    return {"rec": rec_loss.item()}


_STEP_MISTAKES = [
    ("no_zero_grad", "old gradients were added to this step's", NO_ZERO_GRAD),
    ("no_vq", "the VQ loss is missing from the tokenizer's loss", NO_VQ_LOSS),
    ("sign", "the adversarial term pushes the wrong way", GENERATOR_SIGN),
    ("no_d_zero_grad", "the discriminator's update used stale gradients", NO_D_ZERO_GRAD),
    ("d_first", "the discriminator was updated first", D_FIRST),
    ("max_weight_ignored", "max_weight was not passed on", WEIGHTS_IGNORED),
    ("disc_weight_ignored", "disc_weight was ignored", WEIGHTS_IGNORED),
]


def _same_weights(a: dict, b: dict) -> bool:
    return all(_close(a[name], b[name], atol=1e-6, rtol=1e-4) for name in b)


def _judge_step(fn, case: dict, what: str) -> None:
    expected = _step_probe(tok.tokenizer_step, case)
    try:
        got = probe(_step_probe, fn, case)
    except RuntimeError as err:
        # Without the detach, D's backward runs into the tokenizer's graph: freed by
        # loss.backward(), or (kept with retain_graph) made stale by optimizer.step().
        for words in ("backward through the graph a second time", "modified by an inplace"):
            if words in str(err):
                raise CheckFailed(f"{what}: D's backward ran into the tokenizer's graph",
                                  NO_DETACH) from err
        raise
    gan = case["disc"] is not None
    expect(got["stats"] is not None, f"{what}: returned {got['stats_type']}, not a dict",
           hint=STATS_KEYS)
    keys = ["rec", "vq", "usage", "perplexity"] + (["g_loss", "d_loss", "lambda"] if gan else [])
    expect(sorted(got["stats"]) == sorted(keys),
           f"{what}: returned the keys {sorted(got['stats'])}, expected {sorted(keys)}",
           hint=STATS_KEYS)
    expect(torch.equal(got["images"], case["images"]), f"{what}: the batch was modified",
           hint="do not change images in place: the reconstruction loss compares with them.")
    expect(got["training"], f"{what}: the model was left in eval mode",
           hint="a training step keeps the model in train mode (no model.eval()).")

    weights_ok = (_same_weights(got["model"], expected["model"])
                  and _same_weights(got["disc"], expected["disc"]))
    if not weights_ok:
        for mistake, message, hint in _STEP_MISTAKES:
            if mistake not in ("no_zero_grad", "no_vq") and not gan:
                continue
            wrong = _step_probe(functools.partial(_variant_step, mistake=mistake), case)
            if (_same_weights(got["model"], wrong["model"])
                    and _same_weights(got["disc"], wrong["disc"])):
                raise CheckFailed(f"{what}: {message}", hint)
    for key in keys:
        kind, value = got["stats"][key]
        expect(kind == "float", f"{what}: stats[{key!r}] is a {kind}, not a float",
               hint=STATS_KEYS)
        expect_close(torch.tensor(value), torch.tensor(expected["stats"][key][1]),
                     f"{what}: stats[{key!r}]", atol=1e-6, rtol=1e-5,
                     hint="log the values of this step's losses (before the update), e.g. "
                     "rec_loss.item(); usage and perplexity come from vq.")
    for name in expected["model"]:
        expect_close(got["model"][name], expected["model"][name],
                     f"{what}: the tokenizer's {name} after the step", atol=1e-6,
                     hint="one step: loss = mse(x_hat, images) + vq.loss (+ disc_weight * "
                     "lambda * L_G), optimizer.zero_grad(), loss.backward(), optimizer.step().")
    for name in expected["disc"]:
        expect_close(got["disc"][name], expected["disc"][name],
                     f"{what}: the discriminator's {name} after the step", atol=1e-6,
                     hint="without a discriminator, leave it alone; with one: "
                     "hinge_d_loss(disc(images), disc(x_hat.detach())), "
                     "d_optimizer.zero_grad(), backward, d_optimizer.step().")
    for name, grad in got["grads"].items():  # a D loss that reached the tokenizer's .grad
        if grad is not None and grad.abs().max() > 0 and expected["grads"][name] is not None:
            expect(_close(grad, expected["grads"][name], atol=1e-6, rtol=1e-4),
                   f"{what}: the tokenizer's {name}.grad changed after its update",
                   hint=NO_DETACH)


@exercise("tokenizer_step", reference=tok.tokenizer_step, hints=STEP_HINTS)
@_on_one_thread
def tokenizer_step(fn):
    g = torch.Generator().manual_seed(3)
    # 1. the VQ-VAE step (no discriminator), with stale gradients in every .grad.
    _judge_step(fn, _step_case(g, gan=False), "without a discriminator")
    # 2. the VQ-GAN step: disc_weight 0.7, taming's clamp.
    case = _step_case(g, gan=True)
    _judge_step(fn, case, "with a discriminator")
    # 3. the same batch with max_weight below this case's lambda: the clamp is the argument's.
    lam = _step_probe(tok.tokenizer_step, case)["stats"]["lambda"][1]
    _judge_step(fn, {**case, "disc_weight": 1.3, "max_weight": 0.5 * lam},
                "with a discriminator and max_weight below lambda")
    return ("losses, weights and .grad after one step, with stale gradients; with a "
            "discriminator, disc_weight and max_weight")


# --------------------------------------------------------------------------- fit_tokenizer

LOOP_HINTS = (
    "A training loop is the step, repeated. Build what lasts the whole run once: the "
    "optimizers (Adam keeps a running average of every gradient, which a new optimizer would "
    "forget) and the generator the batches come from. Then, for every step: set the "
    "learning rate, draw a batch, call the step you were given, keep what it returns. The "
    "discriminator joins at disc_start. The same call must train the same model, so every "
    "random draw of the loop comes from a generator seeded with train.seed.",
    "torch.Generator().manual_seed(train.seed) makes the batches' generator; "
    "torch.randint(0, N, (train.batch_size,), generator=...) draws a batch's rows. The "
    "tokenizer's optimizer is torch.optim.Adam(model.parameters(), lr=train.lr); before each "
    "step every one of its param_groups gets 'lr' = train.lr * lr_scale(step, train.steps). "
    "D's is Adam(disc.parameters(), lr=train.disc_lr, betas=(0.5, 0.9)). From step >= "
    "train.disc_start: step_fn(model, batch, optimizer, disc, d_optimizer, "
    "train.disc_weight, train.max_weight); before it step_fn(model, batch, optimizer), with "
    "'g_loss', 'd_loss' and 'lambda' added as 0.0. history.setdefault(name, []).append(v).",
    "generator = ...                          # seeded with train.seed: the batches\n"
    "optimizer = torch.optim.Adam(____, lr=train.lr)\n"
    "if disc is not None:\n"
    "    d_optimizer = ...                    # its own Adam, taming's betas\n"
    "model.train()\n"
    "history = {}\n"
    "for step in range(train.steps):\n"
    "    for group in optimizer.param_groups:\n"
    "        group[\"lr\"] = ____               # the schedule at this step\n"
    "    rows = ____                          # (B,) row numbers, from your generator\n"
    "    batch = images[rows]\n"
    "    if ____:                             # the VQ-GAN's step?\n"
    "        stats = step_fn(model, batch, optimizer, ____)\n"
    "    else:\n"
    "        stats = ...                      # the plain step (with disc: zeros logged)\n"
    "    ...                                  # one value per name and step in history\n"
    "model.eval()\n"
    "return history",
)

LOOP_GENERAL = (
    "one Adam over model.parameters() for the whole run; before step s every group's lr = "
    "train.lr * lr_scale(s, train.steps); a batch of train.batch_size rows from "
    "torch.randint with a generator seeded with train.seed; step_fn on it (the VQ-GAN step "
    "from step train.disc_start on); each returned value appended to history[name]."
)
NOT_CALLED = (
    "call the step you are given, step_fn(model, batch, optimizer, ...), once per step: the "
    "loop must train with whatever step it is handed (Lesson 03 hands it yours), not call "
    "tokenizer_step by name."
)
STEPS_COUNT = "train.steps steps, one call of step_fn each: for step in range(train.steps)."
WRONG_MODEL = "call step_fn with the model you were given, not a copy or a new one."
TRAIN_MODE = (
    "the model was in eval mode during training: call model.train() before the loop (the "
    "quantizer updates its codebook statistics only in train mode), and model.eval() after."
)
EVAL_AT_END = "return the trained model in eval mode: model.eval() after the loop."
ADAM = (
    "the tokenizer's optimizer is torch.optim.Adam(model.parameters(), lr=train.lr) (Adam's "
    "default betas), over every parameter of the model."
)
ONE_OPTIMIZER = (
    "a new optimizer was built during the run: build each optimizer once, before the loop. "
    "Adam keeps a running average of every gradient and of its square, and a new optimizer "
    "starts them from zero again."
)
GLOBAL_RNG = (
    "your batches depend on the global random state (torch.randint without generator=): "
    "draw them from your own torch.Generator().manual_seed(train.seed), so that the same "
    "call gives the same batches, and so the same model, whatever ran before it."
)
SEED = "seed the batches' generator with train.seed: torch.Generator().manual_seed(train.seed)."
BATCH_SIZE = "a batch is train.batch_size rows of images: torch.randint(0, N, (train.batch_size,), ...)."
BATCHES = (
    "the batches differ from the reference's: per step, before the step, rows = "
    "torch.randint(0, len(images), (train.batch_size,), generator=generator) with one "
    "generator seeded with train.seed for the whole run, nothing else drawn from it, and "
    "batch = images[rows]."
)
NO_SCHEDULE = (
    "the learning rate stayed at train.lr: set it before every step to train.lr * "
    "lr_scale(step, train.steps), the warm-up then cosine of Lesson 05, in every param_group."
)
SCHEDULE_SHIFTED = (
    "the schedule is one step ahead: step s (counting from 0) uses lr_scale(s, train.steps), "
    "not lr_scale(s + 1, ...)."
)
SCHEDULE_LATE = (
    "the learning rate was set after the step: set it before calling step_fn, so that step s "
    "runs at train.lr * lr_scale(s, train.steps)."
)
SCHEDULE = "step s runs at train.lr * lr_scale(s, train.steps), set in every group before the step."
GATE_NEVER = (
    "the discriminator never joined: from step train.disc_start on, call step_fn(model, batch, "
    "optimizer, disc, d_optimizer, train.disc_weight, train.max_weight)."
)
GATE_LATE = (
    "the discriminator joined one step late: the adversarial step starts *at* "
    "train.disc_start (step >= train.disc_start), as taming's adopt_weight."
)
GATE_EARLY = (
    "the discriminator joined before train.disc_start: before it, call the plain step "
    "step_fn(model, batch, optimizer) and log g_loss, d_loss and lambda as 0.0."
)
D_OPTIMIZER = (
    "the discriminator's optimizer is torch.optim.Adam(disc.parameters(), lr=train.disc_lr, "
    "betas=(0.5, 0.9)), taming's, built once; its learning rate is not scheduled."
)
D_ARGUMENTS = (
    "pass the run's weights on to the VQ-GAN's step: step_fn(model, batch, optimizer, disc, "
    "d_optimizer, train.disc_weight, train.max_weight)."
)
HISTORY = (
    "return a dict: for every name the step returns, the list of its values, one per step "
    "(history.setdefault(name, []).append(value))."
)
HISTORY_ZEROS = (
    "every list of the history holds train.steps values: with a discriminator, the steps "
    "before disc_start log 'g_loss', 'd_loss' and 'lambda' as 0.0."
)

# 6 steps of batch 4 from 11 images of the tiny tokenizer above: a warm-up of one step, then
# the cosine; with a discriminator from step 3 on. Adam at 0.02, D's at 0.01.
_LOOP_TRAIN = {"steps": 6, "batch_size": 4, "lr": 0.02, "seed": 5, "disc_start": 3,
               "disc_weight": 0.7, "max_weight": ADAPTIVE_MAX, "disc_lr": 0.01,
               "disc_channels": 8}


def _loop_case(g: torch.Generator, gan: bool) -> dict:
    """A case as plain data: the tiny tokenizer's (and D's) weights, images, the config."""
    case = _step_case(g, gan)
    return {"model": case["model"], "disc": case["disc"],
            "images": torch.rand(11, 1, 8, 8, generator=g) * 2 - 1,  # (N, 1, S, S)
            "train": {**_LOOP_TRAIN, "gan": gan}, "global_seed": 0}


def _index_of(item, seen: list) -> int:
    """Which of the objects seen so far `item` is (appended if new)."""
    for i, known in enumerate(seen):
        if known is item:
            return i
    seen.append(item)
    return len(seen) - 1


def _loop_probe(fn, case: dict) -> dict:
    """Runs where the learner's loop lives (checks.probe): builds the tiny tokenizer (in
    eval mode: the loop must switch it) and D, calls fn with a spy as step_fn that records
    what each step is given and runs minitok's tokenizer_step, and returns plain data."""
    with torch.random.fork_rng():
        torch.manual_seed(case["global_seed"])  # the loop must not depend on it
        model = VQTokenizer(TokenizerConfig(**_STEP_CONFIG))
        model.load_state_dict(case["model"])
        model.eval()
        disc = None
        if case["disc"] is not None:
            disc = PatchDiscriminator(1, 8)
            disc.load_state_dict(case["disc"])
        images = case["images"].clone()
        parameters = {id(p) for p in model.parameters()}
        calls, optimizers, d_optimizers = [], [], []

        def spy(model_, batch, optimizer, disc_=None, d_optimizer=None,
                disc_weight=1.0, max_weight=ADAPTIVE_MAX):
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            call = {"batch": batch.detach().clone(), "model": model_ is model,
                    "training": bool(model_.training), "optimizer": type(optimizer).__name__,
                    "optimizer_index": _index_of(optimizer, optimizers),
                    "all_parameters": held == parameters,
                    "lr": [float(group["lr"]) for group in optimizer.param_groups],
                    "gan": disc_ is not None}
            if disc_ is not None:
                d_group = d_optimizer.param_groups[0]
                call.update(d_optimizer=type(d_optimizer).__name__,
                            d_index=_index_of(d_optimizer, d_optimizers),
                            d_lr=float(d_group["lr"]),
                            d_betas=[float(b) for b in d_group.get("betas", (0.0, 0.0))],
                            disc=disc_ is disc, disc_weight=float(disc_weight),
                            max_weight=float(max_weight))
            calls.append(call)
            return tok.tokenizer_step(model_, batch, optimizer, disc_, d_optimizer,
                                      disc_weight, max_weight)

        history = fn(model, images, TrainConfig(**case["train"]), step_fn=spy, disc=disc,
                     progress=False)
    return {
        "calls": calls, "history": _plain_history(history),
        "history_type": type(history).__name__,
        "model": {n: p.detach().clone() for n, p in model.named_parameters()},
        "disc": {} if disc is None else {n: p.detach().clone()
                                         for n, p in disc.named_parameters()},
        "training": model.training, "images": images,
    }


def _plain_history(history) -> dict | None:
    """The history as {name: [floats]}, a name None where its values are not numbers."""
    if not isinstance(history, dict):
        return None
    plain = {}
    for name, values in history.items():
        try:
            plain[str(name)] = [float(v) for v in values]
        except (TypeError, ValueError, RuntimeError):
            plain[str(name)] = None
    return plain


def _batches_of(case: dict, seed: int, batch_size: int) -> list[torch.Tensor]:
    """The batches a loop seeded with `seed` would draw."""
    generator = torch.Generator().manual_seed(seed)
    n = case["images"].shape[0]
    return [case["images"][torch.randint(0, n, (batch_size,), generator=generator)]
            for _ in range(case["train"]["steps"])]


def _same_batches(calls: list, batches: list) -> bool:
    return all(torch.equal(call["batch"], batch) for call, batch in zip(calls, batches,
                                                                        strict=True))


def _judge_batches(fn, case: dict, got: dict, expected: dict, what: str) -> None:
    calls, train = got["calls"], case["train"]
    if _same_batches(calls, [call["batch"] for call in expected["calls"]]):
        return
    expect(all(call["batch"].shape[0] == train["batch_size"] for call in calls),
           f"{what}: batches of {sorted({c['batch'].shape[0] for c in calls})} rows, "
           f"expected train.batch_size = {train['batch_size']}", hint=BATCH_SIZE)
    again = probe(_loop_probe, fn, {**case, "global_seed": 1})["calls"]
    expect(_same_batches(calls, [call["batch"] for call in again]),
           f"{what}: other batches when the global random state differs", hint=GLOBAL_RNG)
    for seed in (0, train["seed"] + 1):
        expect(not _same_batches(calls, _batches_of(case, seed, train["batch_size"])),
               f"{what}: the batches of a generator seeded with {seed}, not train.seed = "
               f"{train['seed']}", hint=SEED)
    raise CheckFailed(f"{what}: the batches differ from the reference's", BATCHES)


def _judge_schedule(calls: list, train: dict, what: str) -> None:
    lrs = [call["lr"] for call in calls]
    steps, peak = train["steps"], train["lr"]

    def same(values):
        return all(len(lr) > 0 and all(abs(x - v) <= 1e-9 + 1e-6 * v for x in lr)
                   for lr, v in zip(lrs, values, strict=True))

    if same([peak * lr_scale(s, steps) for s in range(steps)]):
        return
    expect(not same([peak] * steps), f"{what}: the learning rate stayed at train.lr",
           hint=NO_SCHEDULE)
    expect(not same([peak * lr_scale(s + 1, steps) for s in range(steps)]),
           f"{what}: step s ran at lr_scale(s + 1)", hint=SCHEDULE_SHIFTED)
    expect(not same([peak] + [peak * lr_scale(s, steps) for s in range(steps - 1)]),
           f"{what}: step s ran at lr_scale(s - 1)", hint=SCHEDULE_LATE)
    raise CheckFailed(f"{what}: learning rates {[round(lr[0], 6) for lr in lrs]}", SCHEDULE)


def _judge_gan(calls: list, train: dict, what: str) -> None:
    joined = [s for s, call in enumerate(calls) if call["gan"]]
    start, steps = train["disc_start"], train["steps"]
    expect(joined or not train["gan"], f"{what}: step_fn never got the discriminator",
           hint=GATE_NEVER)
    expect(not joined or train["gan"], f"{what}: a discriminator appeared without one",
           hint=GATE_EARLY)
    if not joined:
        return
    expect(joined[0] != start + 1, f"{what}: the discriminator joined at step {joined[0]}, "
           f"disc_start = {start}", hint=GATE_LATE)
    expect(joined == list(range(start, steps)), f"{what}: the discriminator was given at "
           f"steps {joined}, expected {start}..{steps - 1}", hint=GATE_EARLY)
    gan_calls = [calls[s] for s in joined]
    expect(all(c["disc"] for c in gan_calls), f"{what}: step_fn got another discriminator",
           hint="pass the discriminator you were given (disc) to step_fn.")
    expect(all(c["d_optimizer"] == "Adam" and abs(c["d_lr"] - train["disc_lr"]) <= 1e-12
               and c["d_betas"] == [0.5, 0.9] for c in gan_calls),
           f"{what}: D's optimizer is {gan_calls[0]['d_optimizer']}(lr={gan_calls[0]['d_lr']}"
           f", betas={tuple(gan_calls[0]['d_betas'])})", hint=D_OPTIMIZER)
    expect(max(c["d_index"] for c in gan_calls) == 0,
           f"{what}: a new discriminator optimizer was built during the run", hint=ONE_OPTIMIZER)
    expect(all(c["disc_weight"] == train["disc_weight"]
               and c["max_weight"] == train["max_weight"] for c in gan_calls),
           f"{what}: the VQ-GAN step got disc_weight={gan_calls[0]['disc_weight']}, "
           f"max_weight={gan_calls[0]['max_weight']:g}", hint=D_ARGUMENTS)


def _judge_loop(fn, case: dict, what: str) -> None:
    expected = _loop_probe(tok.fit_tokenizer, case)
    got = probe(_loop_probe, fn, case)
    calls, train = got["calls"], case["train"]
    expect(len(calls) > 0, f"{what}: step_fn was never called", hint=NOT_CALLED)
    expect(len(calls) == train["steps"], f"{what}: step_fn was called {len(calls)} times for "
           f"train.steps = {train['steps']}", hint=STEPS_COUNT)
    expect(all(call["model"] for call in calls), f"{what}: step_fn got another model",
           hint=WRONG_MODEL)
    expect(all(call["training"] for call in calls), f"{what}: a step ran in eval mode",
           hint=TRAIN_MODE)
    expect({call["optimizer"] for call in calls} == {"Adam"} and
           all(call["all_parameters"] for call in calls),
           f"{what}: the tokenizer's optimizer is {calls[0]['optimizer']}", hint=ADAM)
    expect(max(call["optimizer_index"] for call in calls) == 0,
           f"{what}: a new optimizer was built during the run", hint=ONE_OPTIMIZER)
    _judge_batches(fn, case, got, expected, what)
    _judge_schedule(calls, train, what)
    _judge_gan(calls, train, what)
    history, want = got["history"], expected["history"]
    expect(history is not None, f"{what}: returned {got['history_type']}, not a dict",
           hint=HISTORY)
    expect(sorted(history) == sorted(want),
           f"{what}: history has the keys {sorted(history)}, expected {sorted(want)}",
           hint=HISTORY)
    for name, values in want.items():
        expect(history[name] is not None and len(history[name]) == len(values),
               f"{what}: history[{name!r}] should hold {len(values)} numbers, one per step",
               hint=HISTORY_ZEROS)
        expect_close(torch.tensor(history[name]), torch.tensor(values),
                     f"{what}: history[{name!r}]", atol=1e-6, rtol=1e-5, hint=HISTORY)
    expect(torch.equal(got["images"], case["images"]), f"{what}: the images were modified",
           hint="do not change images in place: index a batch out of them.")
    for part in ("model", "disc"):
        for name in expected[part]:
            expect_close(got[part][name], expected[part][name],
                         f"{what}: the {part}'s {name} after {train['steps']} steps",
                         atol=1e-6, rtol=1e-4, hint=LOOP_GENERAL)
    expect(not got["training"], f"{what}: the model was left in train mode", hint=EVAL_AT_END)


@exercise("fit_tokenizer", reference=tok.fit_tokenizer, hints=LOOP_HINTS)
@_on_one_thread
def fit_tokenizer(fn):
    g = torch.Generator().manual_seed(4)
    # 1. a VQ-VAE: 6 steps of batch 4, the schedule's warm-up and cosine.
    _judge_loop(fn, _loop_case(g, gan=False), "without a discriminator")
    # 2. a VQ-GAN: the discriminator from step 3 of 6, disc_weight 0.7.
    _judge_loop(fn, _loop_case(g, gan=True), "with a discriminator from step 3")
    return ("the batches, learning rates, optimizers and discriminator each step was given, "
            "the history and the weights after 6 steps, with and without a discriminator")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
