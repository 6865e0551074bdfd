"""Checks for Lesson 03: decoding a token grid, the hinge loss, the adaptive weight.

Each check runs the learner's function on small seeded cases (a tiny minitok Decoder with
weights drawn from the check's own generator). When the answer is wrong, the check first
compares it with what each classic mistake would give, so the hint names that mistake:
`view` instead of `permute`, a transposed grid, hinge signs swapped, the missing 0.5 or
relu, gradients taken at the wrong layer (or the last bias), no epsilon, no clamp,
no detach, `.backward()` leaving gradients behind, a freed graph.

adaptive_weight's inputs are losses whose graphs reach a decoder's weight: its check builds
them next to the learner's function with a probe (checks.probe), so the same check runs in a
notebook and in `minitok grade`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from minitok import vqgan
from minitok.checks import (
    CheckFailed,
    exercise,
    expect,
    expect_close,
    expect_shape,
    expect_tensor,
    probe,
)
from minitok.checks._core import show_hint
from minitok.tokenizer import Decoder
from minitok.tokenizer import tokens_to_image as reference_tokens_to_image


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


@exercise("tokens_to_image", reference=reference_tokens_to_image)
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


@exercise("hinge_d_loss", reference=vqgan.hinge_d_loss)
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
NO_CLAMP = "clamp the weight to [0, 1e4] (torch.clamp(weight, 0.0, 1e4)), as taming does."
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


def _adaptive_weight_reference(rec_loss, g_loss, decoder):
    """The exercise's signature around minitok's vqgan.adaptive_weight (W = conv_out.weight)."""
    return vqgan.adaptive_weight(rec_loss, g_loss, decoder.conv_out.weight)


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
    decoder, rec, adv = _losses(case)
    w = decoder.conv_out.weight
    case["rec_factor"] = rec_scale / _grad_norm(rec, w).item()
    case["adv_factor"] = g_scale / _grad_norm(adv, w).item()
    return case


def _losses(case: dict):
    """The case's decoder and its (rec_loss, g_loss), with their graphs to every weight."""
    with torch.random.fork_rng():  # nn.Module init draws from the global RNG: fork it
        decoder = Decoder(in_channels=1, channels=8, code_dim=3)
    decoder.load_state_dict(case["state"])
    out = decoder(case["codes"])  # (B, 1, 8, 8)
    rec = F.mse_loss(out, case["target"]) * case["rec_factor"]
    adv = -(out * case["fake_logits"]).mean() * case["adv_factor"]
    return decoder, rec, adv


def _adaptive_weight_probe(fn, case: dict, backward_after: bool) -> dict:
    """Runs where the learner's function lives (checks.probe): the losses' graphs are built
    there. Returns what the check judges: the weight, whether .grad was left in the decoder,
    and (with backward_after) the error of backpropagating the losses afterwards."""
    decoder, rec, adv = _losses(case)
    got = fn(rec, adv, decoder)
    facts = {"got": got, "grads_left": any(p.grad is not None for p in decoder.parameters()),
             "backward_error": None}
    if backward_after and isinstance(got, torch.Tensor):
        try:
            (rec + got * adv).backward()
        except RuntimeError as err:
            facts["backward_error"] = str(err)
    return facts


def _candidates(decoder, rec, adv):
    """What the correct formula and each classic mistake give on this case."""
    names = [name for name, _ in decoder.named_parameters()]
    params = [param for _, param in decoder.named_parameters()]
    # One backward pass per loss gives the gradient at every parameter.
    rec_grads = dict(zip(names, torch.autograd.grad(rec, params, retain_graph=True), strict=True))
    adv_grads = dict(zip(names, torch.autograd.grad(adv, params, retain_graph=True), strict=True))
    r_w, a_w = rec_grads["conv_out.weight"].norm(), adv_grads["conv_out.weight"].norm()
    expected = (r_w / (a_w + 1e-4)).clamp(0, 1e4)
    mistakes = []
    for name in ("conv_out.bias", "conv_in.weight"):
        ratio = (rec_grads[name].norm() / (adv_grads[name].norm() + 1e-4)).clamp(0, 1e4)
        mistakes.append((ratio, "the weight was computed at the wrong layer", WRONG_LAYER))
    r_all = torch.stack([g.norm() for g in rec_grads.values()]).norm()
    a_all = torch.stack([g.norm() for g in adv_grads.values()]).norm()
    mistakes += [
        ((r_all / (a_all + 1e-4)).clamp(0, 1e4), "the norms are over every parameter", WRONG_LAYER),
        ((a_w / (r_w + 1e-4)).clamp(0, 1e4), "the ratio is inverted", INVERTED),
        (r_w / (a_w + 1e-4), "the weight is not clamped", NO_CLAMP),
        ((r_w / a_w).clamp(0, 1e4), "the weight ignores the 1e-4 in the denominator", NO_EPS),
        (r_w / a_w, "the weight ignores the 1e-4 in the denominator", NO_EPS),
    ]
    return expected, mistakes


def _judge(fn, case: dict, what: str, backward_after: bool = False) -> dict:
    expected, mistakes = _candidates(*_losses(case))
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
    if not _close(got.reshape(()) if got.numel() == 1 else got, expected, atol=1e-5):
        _name_the_mistake(got.reshape(()) if got.numel() == 1 else got, mistakes)
    expect_close(
        got,
        expected,
        f"the weight ({what})",
        atol=1e-5,
        hint="||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), clamped to [0, 1e4], "
        "with W = decoder.conv_out.weight.",
    )
    return facts


@exercise("adaptive_weight", reference=_adaptive_weight_reference, solution=vqgan.adaptive_weight)
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
    return "ratio at conv_out.weight, epsilon, clamp, detached, graph kept, no .grad left"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
