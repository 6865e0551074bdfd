"""Checks for Lesson 02: the straight-through estimator, the VQ losses, EMA updates, FSQ.

Each check runs the learner's function on small seeded cases. The cases come in the order
that makes the first failure name the likely mistake: the wrong side detached in the STE,
beta on the codebook term, the loss computed on q_st, EMA statistics gathered with the
updated codebook's assignments, rounding without a straight-through gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitok import fsq, vq
from minitok.checks import expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, probe, show_hint
from minitok.quantize import nearest_code


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# --------------------------------------------------------------------------- straight_through

WRONG_SIDE = (
    "the wrong side is detached: q + (z - q).detach() has z's value and sends the gradient "
    "to q. The output must carry q's value forward and send the gradient back to z."
)


STE_HINTS = (
    "You want a tensor whose value is q but whose gradient is z's. Autograd differentiates "
    "what it sees; anything wrapped in .detach() is a constant to it. Start from z and add a "
    "correction that autograd cannot see.",
    "z + c has the gradient of z whatever the constant c is. Pick c so that the value of "
    "z + c is q.",
    "return z + (...).detach()  # the bracket is the correction that turns z's value into q's",
)


@exercise("straight_through", reference=vq.straight_through, hints=STE_HINTS)
def straight_through(fn):
    g = torch.Generator().manual_seed(0)
    codebook = _randn(g, 8, 4).requires_grad_()  # (K, D)
    z = _randn(g, 2, 3, 4).requires_grad_()  # (B, N, D)
    q = codebook[nearest_code(z.detach(), codebook.detach())]  # (B, N, D), from the codebook
    upstream = _randn(g, 2, 3, 4)

    q_st = fn(z, q)
    expect_shape(q_st, (2, 3, 4), "q_st")
    expect_close(q_st, q.detach(), "the forward value of q_st", hint=WRONG_SIDE)
    expect(
        q_st.requires_grad,
        "q_st has no gradient at all",
        hint="do not detach everything: only (q - z).",
    )

    (q_st * upstream).sum().backward()
    expect(
        z.grad is not None and z.grad.abs().sum() > 0,
        "no gradient reached z",
        hint="returning q (or z + (q - z) without .detach()) gives z no gradient: argmin is "
        "flat. Detach (q - z) so the identity's gradient flows to z.",
    )
    expect_close(
        z.grad, upstream, "dL/dz", atol=0, rtol=0, hint="dL/dz must equal dL/dq_st exactly."
    )
    leaked = codebook.grad is not None and codebook.grad.abs().sum() > 0
    expect(
        not leaked,
        "a gradient reached the codebook through q_st",
        hint="nothing should flow into q through q_st: wrap (q - z) in .detach(). "
        "The codebook learns from the codebook loss (or EMA) instead.",
    )
    return "value, dL/dz = upstream gradient, no gradient into the codebook"


# --------------------------------------------------------------------------- vq_loss

BETA_SWAPPED = (
    "beta is on the codebook term (taming's legacy orientation). The value is the same "
    "(1 + beta) * mse either way; only the gradients differ. Write "
    "mse(q, z.detach()) + beta * mse(z, q.detach())."
)


VQ_LOSS_HINTS = (
    "Two mean squared errors between z and q, each moving ONE side: the codebook term moves "
    "the codes (the encoder output is a constant there), the commitment term moves z (the "
    "code is a constant there). beta weights the commitment term.",
    "L = mse(q, sg[z]) + beta * mse(z, sg[q]), sg = stop-gradient (.detach()); F.mse_loss "
    "takes means. Its value is (1 + beta) mse(z, q) whichever term carries beta.",
    "codebook_term = F.mse_loss(q, z.detach())\n"
    "commitment_term = F.mse_loss(z, ...)\n"
    "return codebook_term + beta * ...",
)


@exercise("vq_loss", reference=vq.vq_loss, hints=VQ_LOSS_HINTS)
def vq_loss(fn):
    g = torch.Generator().manual_seed(1)
    beta = 0.4  # not the default: a beta written into the code shows
    codebook = _randn(g, 16, 3).requires_grad_()  # (K, D)
    z = _randn(g, 10, 3).requires_grad_()  # (N, D)
    indices = nearest_code(z.detach(), codebook.detach())  # (N,)
    q = codebook[indices]  # (N, D): gradient reaches the used codes
    e = q.detach()
    n = z.numel()

    loss = fn(z, q, beta)
    expect_shape(loss, (), "the loss (a scalar)")
    if torch.allclose(loss.detach(), 1.25 * F.mse_loss(e, z.detach())):
        raise CheckFailed(f"the loss uses beta = 0.25, not the argument beta = {beta}",
                          "use the beta argument, not a number written into the code.")
    expect_close(
        loss,
        (1 + beta) * F.mse_loss(e, z.detach()),
        "the loss value",
        hint="codebook loss mse(q, z.detach()) plus beta times commitment loss "
        "mse(z, q.detach()): the value is (1 + beta) * mse(z, q). Use means, not sums.",
    )
    loss.backward()
    expect(
        codebook.grad is not None and codebook.grad.abs().sum() > 0,
        "the codebook got no gradient",
        hint="the loss was computed on q_st (straight_through(z, q)) instead of q: q_st's "
        "codebook side is detached. Compute both terms from q and z.",
    )
    dz = 2 * beta * (z.detach() - e) / n  # commitment only
    de = torch.zeros_like(codebook).index_add_(0, indices, 2 * (e - z.detach()) / n)
    swapped = torch.allclose(z.grad, 2 * (z.detach() - e) / n) and torch.allclose(
        codebook.grad, beta * de
    )
    if swapped:
        raise CheckFailed(
            "dL/dz is 2 (z - q) / n and dL/dcodebook carries the factor beta: the other way round",
            BETA_SWAPPED,
        )
    expect_close(
        z.grad,
        dz,
        "dL/dz",
        hint="z should only feel the commitment term: dL/dz = 2 beta (z - q) / n. Detach q "
        "in the commitment term and z in the codebook term.",
    )
    expect_close(
        codebook.grad,
        de,
        "dL/dcodebook",
        hint="the codebook should only feel the codebook term: 2 (q - z) / n on the used "
        "codes, zero on the others.",
    )
    return "value (1 + beta) mse, dL/dz = 2 beta (z - q)/n, dL/de only on used codes"


# --------------------------------------------------------------------------- ema_update

UPDATED_ASSIGNMENTS = (
    "the EMA statistics were computed with the UPDATED codebook's assignments. Assign z to "
    "the codebook as it is before the step (those are this batch's tokens), and gather "
    "counts and sums from those assignments only."
)


EMA_DECAY_CASE = 0.8


def _ema_case():
    """A case where the update moves codes enough to change some assignments."""
    g = torch.Generator().manual_seed(2)
    K, D = 6, 2
    codebook = _randn(g, K, D)  # (K, D)
    codebook[K - 1] = 50.0  # far away: unused, and its count starts at 0
    cluster_size = torch.rand(K, generator=g) * 2  # (K,)
    cluster_size[K - 1] = 0.0
    embed_avg = codebook * cluster_size[:, None]  # (K, D)
    z = _randn(g, 40, D, scale=2.0)  # (N, D)
    return codebook, cluster_size, embed_avg, z


EMA_HINTS = (
    "Assign every z to its nearest code in the codebook you are given (before any update). "
    "Then, per code, count its vectors and sum them; blend each into its running statistic "
    "with the decay; the new code is the running sum over the (smoothed) running count.",
    "n_k = #{i: idx_i = k}, s_k = sum of z_i with idx_i = k; N <- d N + (1 - d) n, "
    "m <- d m + (1 - d) s; e_k = m_k / N~_k with N~ = (N + eps) / (sum N + K eps) * sum N.",
    "indices = nearest_code(z, codebook)                               # (N,)\n"
    "counts = torch.bincount(indices, minlength=K).to(cluster_size.dtype)  # (K,)\n"
    "sums = ...                                                        # (K, D) per-code sums\n"
    "new_size = ...                                                    # blend with decay\n"
    "new_avg = ...\n"
    "smoothed = ...                                                    # Laplace-smoothed "
    "new_size\n"
    "return indices, new_size, new_avg, new_avg / smoothed[:, None]",
)


@exercise("ema_update", reference=vq.ema_update, hints=EMA_HINTS)
def ema_update(fn):
    decay, eps = EMA_DECAY_CASE, 1e-3  # not 0.5: there d and 1 - d give the same numbers
    codebook, cluster_size, embed_avg, z = _ema_case()
    inputs = [t.clone() for t in (codebook, cluster_size, embed_avg, z)]
    expected = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
    # what the classic mistake gives: assignments from the codebook after one update (the
    # codebook argument of ema_update only decides the assignments)
    wrong = vq.ema_update(expected.codebook, cluster_size, embed_avg, z, decay, eps)

    got = fn(codebook, cluster_size, embed_avg, z, decay, eps)
    expect(
        isinstance(got, tuple) and len(got) == 4,
        "ema_update should return (indices, cluster_size, embed_avg, codebook)",
    )
    for before, after, name in zip(
        inputs,
        (codebook, cluster_size, embed_avg, z),
        ("codebook", "cluster_size", "embed_avg", "z"),
        strict=True,
    ):
        expect(
            torch.equal(before, after),
            f"ema_update changed its input {name} in place",
            hint="return new tensors (decay * x + ...) instead of x.mul_(...) on the inputs.",
        )
    indices, new_size, new_avg, new_codebook = got
    expect_tensor(indices, "indices", dtype=torch.int64)
    if torch.equal(indices, wrong.indices) or torch.allclose(new_size, wrong.cluster_size):
        raise CheckFailed("indices / counts come from the updated codebook", UPDATED_ASSIGNMENTS)
    expect_equal(indices, expected.indices, "indices", hint=UPDATED_ASSIGNMENTS)
    swapped = vq.ema_update(codebook, cluster_size, embed_avg, z, 1 - decay, eps)
    if torch.allclose(new_size, swapped.cluster_size) or torch.allclose(new_avg,
                                                                         swapped.embed_avg):
        raise CheckFailed(
            f"cluster_size / embed_avg are what decay {1 - decay:g} gives, not {decay:g}",
            "the decay multiplies the OLD statistic (it keeps the share d of the past); the "
            "new batch's counts and sums get 1 - d.",
        )
    expect_close(
        new_size,
        expected.cluster_size,
        "cluster_size",
        hint="N_k <- decay * N_k + (1 - decay) * n_k, with n_k the number of vectors assigned to k.",
    )
    expect_close(
        new_avg,
        expected.embed_avg,
        "embed_avg",
        hint="m_k <- decay * m_k + (1 - decay) * (SUM of the vectors assigned to k, not their mean).",
    )
    expect(
        bool(torch.isfinite(new_codebook).all()),
        "the new codebook has inf or NaN entries (a code nobody used divides by a zero count)",
        hint="Laplace smoothing: divide by (N_k + eps) / (sum N + K eps) * sum N, never by N_k.",
    )
    expect_close(
        new_codebook,
        expected.codebook,
        "codebook",
        hint="e_k = m_k / smoothed N_k, smoothed N_k = (N_k + eps) / (sum N + K eps) * sum N.",
    )
    return "assignments from the old codebook, counts, sums, Laplace-smoothed codes"


# --------------------------------------------------------------------------- VectorQuantizer

NAMES = (
    "build the state as minitok's VectorQuantizer does, so its state dict loads: without EMA "
    "an nn.Parameter `codebook` (K, dim) and nothing else; with EMA the buffers `codebook`, "
    "`cluster_size` (K,) and `embed_avg` (K, dim) (register_buffer)."
)
NO_STE = (
    "no gradient reaches z through `quantized`: the output skips the straight-through "
    "estimator. Return straight_through(z, q), not q."
)
LOSS_ON_Q_ST = (
    "the codebook got no gradient from the loss: it was computed on the straight-through "
    "output (or on detached codes). Compute vq_loss from z and q = codebook[indices]."
)
EMA_FULL_LOSS = (
    "with EMA the codebook is moved by ema_update, not by a loss: the loss is only beta times "
    "the commitment loss (no codebook term)."
)
EMA_DECAY = (
    "the EMA step used the decay on the wrong term (what decay 1 - d gives): pass "
    "self.decay to ema_update as it is; the old statistics keep the share d."
)
EMA_NOT_IN_TRAIN = (
    "a training forward with EMA left cluster_size, embed_avg and codebook unchanged: in "
    "train() mode call ema_update on this batch's vectors and copy its results into the "
    "three buffers."
)
EMA_IN_EVAL = (
    "an eval() forward changed the state: the EMA step runs only when self.training is True."
)
EMA_AFTER = (
    "the output's indices come from the codebook AFTER the EMA step: look up first (those "
    "are this batch's tokens), then update the buffers for the next batch."
)
LAYOUT = (
    "a (B, C, H, W) map has its channels on axis 1: move them last for the lookup "
    "(permute(0, 2, 3, 1)), and give `quantized` back as (B, C, H, W), `indices` as (B, H, W)."
)


def _vq_probe(cls, case: dict) -> dict:
    """Runs where the learner's class lives (checks.probe): build it, load the case's state
    dict, run one forward, backpropagate its two parts separately and take one SGD step.
    Returns plain data: the outputs, the gradients, and the state after the step."""
    with torch.random.fork_rng():  # the constructor's init draws from the global RNG
        module = cls(case["num_codes"], case["dim"], case["beta"], ema=case["ema"],
                     decay=case["decay"], eps=case["eps"])
    try:
        module.load_state_dict(case["state"])
    except RuntimeError as err:
        return {"load_error": str(err).split("\n")[0][:300]}
    params = [name for name, _ in module.named_parameters()]
    module.train(case["train"])
    z = case["z"].clone().requires_grad_()
    try:
        out = module(z)
    except NotImplementedError:
        raise
    except Exception as err:  # reported with a hint by the check (a layout mistake, mostly)
        return {"params": params, "forward_error": f"{type(err).__name__}: {err}"[:300]}
    facts = {"params": params, "z_unchanged": torch.equal(z.detach(), case["z"]),
             "fields": len(out) if isinstance(out, tuple) else None}
    if facts["fields"] != 5:
        return facts
    quantized, indices, loss, perplexity, usage = out
    facts.update(quantized=quantized.detach().clone(), indices=indices.detach().clone(),
                 loss=loss.detach().clone(), perplexity=torch.as_tensor(perplexity).detach(),
                 usage=torch.as_tensor(usage).detach())
    codebook = dict(module.named_parameters()).get("codebook")
    inputs = [z] if codebook is None else [z, codebook]

    def grads(value):
        if not value.requires_grad:
            return [None] * len(inputs)
        got = torch.autograd.grad(value, inputs, retain_graph=True, allow_unused=True)
        return [None if g is None else g.detach().clone() for g in got]

    facts["st_grads"] = grads((quantized * case["upstream"]).sum())  # the STE path
    facts["loss_grads"] = grads(loss)
    if params:
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        optimizer.zero_grad()
        if quantized.requires_grad or loss.requires_grad:
            ((quantized * case["upstream"]).sum() + loss).backward()
        optimizer.step()
    facts["state"] = {name: t.detach().clone() for name, t in module.state_dict().items()}
    return facts


def _vq_case(g: torch.Generator, *, ema: bool, train: bool, shape: tuple, view: bool = False,
             decay: float = 0.8, beta: float = 0.4) -> dict:
    """A quantizer's state and an input, the codes spread through the data."""
    K, C = 12, 5
    state = {"codebook": _randn(g, K, C)}
    if ema:
        state["cluster_size"] = torch.rand(K, generator=g) * 3 + 0.1
        state["embed_avg"] = state["codebook"] * state["cluster_size"][:, None]
    if view:  # a (B, N, C) sequence that arrives as a transposed view, as after a conv
        z = _randn(g, shape[0], shape[2], shape[1], scale=1.5).transpose(1, 2)
    else:
        z = _randn(g, *shape, scale=1.5)
    return {"num_codes": K, "dim": C, "beta": beta, "ema": ema, "decay": decay, "eps": 1e-3,
            "train": train, "state": state, "z": z, "upstream": _randn(g, *shape)}


def _vq_run(fn, case: dict, what: str) -> tuple[dict, dict]:
    """The learner's facts and the reference's on one case, after the structural checks."""
    expected = _vq_probe(vq.VectorQuantizer, case)
    got = probe(_vq_probe, fn, case)
    expect("load_error" not in got,
           f"{what}: minitok's state dict does not load ({got.get('load_error')})", hint=NAMES)
    if case["ema"]:
        expect("codebook" not in got["params"],
               f"{what}: with ema=True the codebook is a parameter", hint=NAMES)
    else:
        expect("codebook" in got["params"],
               f"{what}: without EMA the codebook is not a parameter (an optimizer cannot "
               "train it)", hint=NAMES)
    if "forward_error" in got:
        hint = LAYOUT if case["z"].dim() == 4 else None
        raise CheckFailed(f"{what}: the forward raised {got['forward_error']}", hint)
    expect(got["fields"] == 5,
           f"{what}: forward should return a VQOutput (5 fields), got {got['fields']} fields",
           hint="forward returns a VQOutput: quantized, indices, loss, perplexity, usage, in that "
           "order.")
    expect(got["z_unchanged"], f"{what}: the forward changed its input z", hint="do not "
           "modify z in place; permute/reshape give new views, detach() a new tensor.")
    return got, expected


def _state_after(case: dict, **change) -> dict:
    return _vq_probe(vq.VectorQuantizer, {**case, **change})["state"]


def _same(a, b) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and a.shape == b.shape
        and torch.allclose(a.double(), b.double(), atol=1e-5, rtol=1e-4))


def _judge_outputs(got: dict, expected: dict, case: dict, what: str) -> None:
    layout = LAYOUT if case["z"].dim() == 4 else None
    expect_shape(got["indices"], tuple(expected["indices"].shape), f"{what}: indices",
                 hint=layout)
    expect_equal(got["indices"], expected["indices"], f"{what}: indices",
                 hint=EMA_AFTER if case["ema"] and case["train"] else
                 "the nearest code of each vector z (channels last) in the codebook.")
    expect_shape(got["quantized"], tuple(expected["quantized"].shape), f"{what}: quantized",
                 hint=layout)
    if torch.allclose(got["quantized"], case["z"]):
        raise CheckFailed(f"{what}: quantized has z's value, not the codes'", WRONG_SIDE)
    expect_close(got["quantized"], expected["quantized"], f"{what}: quantized",
                 hint="quantized is straight_through(z, q), in z's layout.")
    dz, *dcb = got["st_grads"]
    expect(dz is not None and dz.abs().sum() > 0, f"{what}: no gradient reached z through "
           "quantized", hint=NO_STE)
    expect_close(dz, expected["st_grads"][0], f"{what}: dL/dz through quantized",
                 hint="the straight-through path passes the gradient to z unchanged.")
    leaked = dcb and dcb[0] is not None and dcb[0].abs().sum() > 0
    expect(not leaked, f"{what}: a gradient reached the codebook through quantized",
           hint="the codebook learns from the loss only: use straight_through(z, q).")
    for field in ("perplexity", "usage"):
        expect_close(got[field].reshape(()) if got[field].numel() == 1 else got[field],
                     expected[field], f"{what}: {field}",
                     hint="perplexity and usage of this batch's indices, over all "
                     "num_codes codes (vq.usage_stats gives both as tensors).")


def _judge_loss(got: dict, expected: dict, case: dict, what: str) -> None:
    beta, ema = case["beta"], case["ema"]
    loss, want = got["loss"], expected["loss"]
    expect_shape(loss, (), f"{what}: the loss (a scalar)")
    mse = want / (beta if ema else 1 + beta)
    if ema and torch.allclose(loss, (1 + beta) * mse):
        raise CheckFailed(f"{what}: the loss has a codebook term", EMA_FULL_LOSS)
    if not torch.allclose(loss, want) and torch.allclose(loss, (0.25 if ema else 1.25) * mse):
        raise CheckFailed(f"{what}: the loss uses beta = 0.25, not the module's beta = {beta}",
                          "use self.beta (the constructor's beta argument).")
    expect_close(loss, want, f"{what}: the loss value",
                 hint=EMA_FULL_LOSS if ema else "vq_loss(z, q, self.beta) on the channels-last "
                 "z and the looked-up codes q.")
    dz, *dcb = got["loss_grads"]
    want_dz, *want_dcb = expected["loss_grads"]
    if not ema:
        expect(dcb[0] is not None and dcb[0].abs().sum() > 0,
               f"{what}: the codebook got no gradient from the loss", hint=LOSS_ON_Q_ST)
        if _same(dz, want_dz / beta) and _same(dcb[0], want_dcb[0] * beta):
            raise CheckFailed(f"{what}: beta sits on the codebook term", BETA_SWAPPED)
        expect_close(dcb[0], want_dcb[0], f"{what}: dloss/dcodebook",
                     hint="the codebook feels only the codebook term: detach z there.")
    expect(dz is not None, f"{what}: the loss sends no gradient to z",
           hint="the commitment term moves z: detach q there, not z.")
    expect_close(dz, want_dz, f"{what}: dloss/dz",
                 hint="z feels only beta times the commitment term: detach q there.")


VQ_HINTS = (
    "The module strings together what you wrote: move the channels last, look up the nearest "
    "code, take the loss from z and the codes, output the straight-through codes in z's "
    "layout, measure usage, and in training with EMA, move the codebook after the output is "
    "computed.",
    "Without EMA: codebook = nn.Parameter (K, dim), loss = vq_loss(z, q, beta). With EMA: "
    "buffers codebook, cluster_size (ones) and embed_avg (a copy of the codebook), loss = "
    "beta * mse(z, q.detach()), and in train mode ema_update(codebook, cluster_size, "
    "embed_avg, z_flat, decay, eps) gives the three new buffers.",
    "z_last = z.permute(0, 2, 3, 1) if z.dim() == 4 else z\n"
    "indices = nearest_code(z_last.detach(), self.codebook.detach())\n"
    "q = self.codebook[indices]\n"
    "loss = ...  # vq_loss, or only the commitment term with EMA\n"
    "quantized = straight_through(z_last, q)  # then permute back for a 4-d z\n"
    "perplexity, usage = usage_stats(indices, self.num_codes)\n"
    "if self.training and self.ema:\n"
    "    with torch.no_grad():\n"
    "        _, size, avg, codebook = ema_update(..., z_last.detach().reshape(-1, self.dim), ...)\n"
    "        self.cluster_size.copy_(size)  # and embed_avg, codebook\n"
    "return VQOutput(quantized, indices, loss, perplexity, usage)",
)


@exercise("VectorQuantizer", reference=vq.VectorQuantizer, hints=VQ_HINTS)
def VectorQuantizer(fn):  # noqa: N802 (the exercise is a class)
    g = torch.Generator().manual_seed(4)
    # 1. plain codebook, a (B, N, C) sequence that is a transposed view, training mode
    case = _vq_case(g, ema=False, train=True, shape=(3, 7, 5), view=True)
    got, expected = _vq_run(fn, case, "(B, N, C), no EMA")
    _judge_outputs(got, expected, case, "(B, N, C), no EMA")
    _judge_loss(got, expected, case, "(B, N, C), no EMA")
    expect_close(got["state"]["codebook"], expected["state"]["codebook"],
                 "the codebook after one SGD step", hint="the codebook's gradient comes from "
                 "the loss only (its codebook term), never through quantized.")
    # 2. plain codebook, a (B, C, H, W) map
    case = _vq_case(g, ema=False, train=True, shape=(2, 5, 3, 4))
    got, expected = _vq_run(fn, case, "(B, C, H, W), no EMA")
    _judge_outputs(got, expected, case, "(B, C, H, W), no EMA")
    _judge_loss(got, expected, case, "(B, C, H, W), no EMA")
    # 3. EMA, a (B, C, H, W) map, training mode, decay 0.8 (0.5 would hide a swapped decay)
    case = _vq_case(g, ema=True, train=True, shape=(2, 5, 3, 4))
    got, expected = _vq_run(fn, case, "EMA, train()")
    _judge_outputs(got, expected, case, "EMA, train()")
    _judge_loss(got, expected, case, "EMA, train()")
    state = got["state"]
    if all(torch.equal(state[k], case["state"][k]) for k in case["state"]):
        raise CheckFailed("EMA, train(): the forward did not update the codebook",
                          EMA_NOT_IN_TRAIN)
    swapped = _state_after(case, decay=1 - case["decay"])
    if all(_same(state[k], swapped[k]) for k in swapped):
        raise CheckFailed("EMA, train(): the state is what decay 1 - d gives", EMA_DECAY)
    for name in ("cluster_size", "embed_avg", "codebook"):
        expect_close(state[name], expected["state"][name], f"EMA, train(): {name} after the "
                     "step", hint="copy ema_update's new cluster_size, embed_avg and codebook "
                     "into the buffers, computed from this batch's vectors (channels last, "
                     "flattened to (N, dim)) with self.decay and self.eps.")
    # 4. EMA in eval mode: the same outputs, the state untouched
    case = _vq_case(g, ema=True, train=False, shape=(2, 5, 3, 4))
    got, expected = _vq_run(fn, case, "EMA, eval()")
    expect(all(torch.equal(got["state"][k], case["state"][k]) for k in case["state"]),
           "EMA, eval(): the forward changed the state", hint=EMA_IN_EVAL)
    _judge_outputs(got, expected, case, "EMA, eval()")
    _judge_loss(got, expected, case, "EMA, eval()")
    return ("state dict loads, (B, N, C) views and (B, C, H, W) maps, outputs, STE and loss "
            "gradients, one SGD step, EMA at decay 0.8 in train(), none in eval()")


# --------------------------------------------------------------------------- fsq_quantize


FSQ_HINTS = (
    "Per channel: squash z into a bounded range that holds exactly L integers, round to the "
    "nearest one with a straight-through estimator (so the gradient survives), and rescale "
    "into [-1, 1].",
    "half_l = (L - 1)(1 + 1e-3) / 2, offset = 0.5 for even L else 0, shift = "
    "atanh(offset / half_l); bounded = tanh(z + shift) * half_l - offset; code = "
    "round_ste(bounded) / (L // 2).",
    "level = torch.tensor(levels, dtype=z.dtype)          # (C,)\n"
    "half_l = ...; offset = ...; shift = ...              # per channel, from hint 2\n"
    "bounded = ...                                        # tanh squashed into L integers' "
    "range\n"
    "rounded = bounded + (____).detach()                  # round, straight through\n"
    "return rounded / (level // 2)",
)


@exercise("fsq_quantize", reference=fsq.fsq_quantize, hints=FSQ_HINTS)
def fsq_quantize(fn):
    g = torch.Generator().manual_seed(3)
    odd, mixed = [5, 5, 3], [8, 6, 5]
    z = _randn(g, 200, 3, scale=2.0)

    got = fn(z, odd)
    expect_shape(got, (200, 3), "fsq_quantize(z, [5, 5, 3])")
    expect_close(
        got,
        fsq.fsq_quantize(z, odd),
        "codes for odd levels [5, 5, 3]",
        hint="bound with tanh(z) * half_l, half_l = (L - 1)(1 + 1e-3) / 2, round, then divide "
        "by L // 2 so every code lies in [-1, 1].",
    )
    got = fn(z, mixed)
    expect_close(
        got,
        fsq.fsq_quantize(z, mixed),
        "codes for levels [8, 6, 5]",
        hint="even L needs the offset: tanh(z + atanh(offset / half_l)) * half_l - offset with "
        "offset = 0.5 for even L (0 for odd), so the L levels are -L/2 .. L/2 - 1.",
    )
    for i, level in enumerate(mixed):
        values = torch.unique(got[:, i].detach()).numel()
        expect(values <= level, f"channel {i} takes {values} values, more than L = {level}")

    z_leaf = z.clone().requires_grad_()
    upstream = _randn(g, 200, 3)
    codes = fn(z_leaf, mixed)
    expect(
        codes.requires_grad,
        "the codes carry no gradient",
        hint="round() has zero gradient: round with a straight-through estimator, "
        "x + (x.round() - x).detach().",
    )
    (codes * upstream).sum().backward()
    z_ref = z.clone().requires_grad_()
    (fsq.fsq_quantize(z_ref, mixed) * upstream).sum().backward()
    expect_close(
        z_leaf.grad,
        z_ref.grad,
        "dL/dz",
        hint="round() has zero gradient: round with a straight-through estimator, "
        "x + (x.round() - x).detach(), so the gradient of the bound reaches z.",
    )
    return "odd and even levels, codes in [-1, 1], straight-through gradient"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
