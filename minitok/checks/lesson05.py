"""Checks for Lesson 05: token sequences, the teacher-forcing loss, sampling controls, CFG.

Each check runs the learner's function on cases drawn from its own seeded generator and
compares it with minitok's reference. The cases are ordered so that the first one to fail
names the classic mistake: a class token that collides with code ids, a loss that predicts
a token from itself, top-p that drops the token crossing p, top-k applied after the draw,
guidance with its halves swapped.
"""

from __future__ import annotations

import functools

import torch

from minitok import prior, sampling, training
from minitok.checks import expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, probe, show_hint
from minitok.course import one_thread
from minitok.transformer import Transformer, TransformerConfig


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- hints

MAKE_SEQUENCES_HINTS = (
    "Each sequence is the class token followed by the grid read row by row, like text. The "
    "class token needs an id that no code uses.",
    "class c -> the id num_codes + c, a column (N, 1); the grid (N, G, G) -> (N, G*G) in "
    "raster order (row by row); side by side along dim 1 -> (N, 1 + G*G), int64.",
    "first = ...                                  # (N, 1): each label's class token id\n"
    "rest = codes.long().____(codes.shape[0], -1) # (N, G*G), raster order\n"
    "return ...                                   # side by side: (N, 1 + G*G)",
)
TOP_K_HINTS = (
    "Find each row's k largest logits and build a row that holds them at their own positions "
    "and -inf everywhere else; k can be no larger than the row.",
    "k = min(k, V); torch.topk(logits, k, dim=-1) gives values and indices (B, k); scatter "
    "the values at the indices into a (B, V) tensor full of -inf.",
    "k = min(k, logits.shape[-1])\n"
    "values, indices = ...                         # each row's k largest, (B, k)\n"
    "out = torch.full_like(logits, float(\"-inf\"))  # (B, V)\n"
    "return out.____(-1, indices, values)          # put the values back at their indices",
)
TOP_P_HINTS = (
    "Rank the tokens by probability and keep a prefix of the ranking: a token stays while the "
    "mass ranked above it is still below p. Then put that decision back in vocabulary order.",
    "sort descending -> sorted logits and their order (B, V); probs = softmax of the sorted "
    "logits; mass above a token = cumsum(probs) - probs; keep where mass above < p; scatter "
    "the kept mask back with the order; -inf where not kept.",
    "sorted_logits, order = torch.sort(logits, dim=-1, descending=True)\n"
    "probs = ...                                # probabilities in ranked order, (B, V)\n"
    "keep_sorted = ...                          # mass ranked above each token < p\n"
    "keep = torch.zeros_like(keep_sorted).____(-1, order, keep_sorted)  # back to vocab order\n"
    "return ...                                 # -inf where not kept",
)
SAMPLE_HINTS = (
    "greedy: the most likely token. Otherwise reshape the distribution with the temperature "
    "and the two filters, all on the logits, then turn them into probabilities and draw one "
    "token per row from the generator.",
    "logits / temperature -> top_k_filter -> top_p_filter (each only when given) -> softmax "
    "over the last dim -> torch.multinomial(probs, 1, generator=generator), (B, 1) -> (B,).",
    "if greedy:\n"
    "    return ...\n"
    "logits = ...                       # the temperature\n"
    "if top_k is not None:\n"
    "    logits = ...\n"
    "if top_p is not None:\n"
    "    logits = ...\n"
    "probs = ...\n"
    "return torch.multinomial(probs, 1, generator=____).squeeze(-1)   # (B,)",
)
CFG_HINTS = (
    "Guidance is a straight line through two points in logit space: s = 0 lands on the "
    "unconditional logits u, s = 1 on the conditional ones c, and s > 1 goes on past c in "
    "the direction the class adds.",
    "the direction the class adds is c - u; start at u and move s times that direction.",
    "direction = ...                    # what the class adds to the logits\n"
    "return uncond + ____ * direction   # s = 0 gives uncond, s = 1 gives cond",
)


# --------------------------------------------------------------------------- sequences


@exercise("make_sequences", reference=prior.make_sequences, hints=MAKE_SEQUENCES_HINTS)
def make_sequences(fn):
    g = _gen(0)
    K, N, G = 32, 6, 4
    codes = torch.randint(0, K, (N, G, G), generator=g)  # (N, G, G)
    labels = torch.tensor([0, 7, 3, 10, 1, 9])  # (N,) 10: the null class
    got = fn(codes, labels, K)
    expect_equal(labels, torch.tensor([0, 7, 3, 10, 1, 9]), "the labels after make_sequences",
                 hint="do not add num_codes to labels in place: build a new tensor")
    expected = prior.make_sequences(codes, labels, K)
    expect_shape(got, (N, 1 + G * G), "make_sequences(codes, labels, K)",
                 hint="one class token in front of the G*G codes: (N, 1 + G*G)")
    expect_tensor(got, "the sequences", dtype=torch.long, hint="token ids are int64 (long)")
    if torch.equal(got[:, 0].cpu(), labels):
        raise CheckFailed(
            "the first token of each sequence is the bare label (0..9)",
            "ids 0..K-1 are already codes: class c must be the token K + c, after the codes",
        )
    expect_equal(got[:, 0], expected[:, 0], "the class tokens (first column)",
                 hint="class c has id num_codes + c (the null class 10 too: num_codes + 10)")
    expect_equal(got[:, 1:], expected[:, 1:], "the codes after the class token",
                 hint="raster order, row by row: codes.reshape(N, -1)")
    return "class tokens K + label in front (the null class too), codes in raster order"


# --------------------------------------------------------------------------- the loss


def _tiny_prior_model(num_codes: int, grid: int) -> Transformer:
    """A small random causal Transformer, built without touching the global RNG."""
    config = TransformerConfig(vocab_size=num_codes + 11, block_size=1 + grid * grid,
                               n_layer=2, n_head=2, n_embd=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Transformer(config)
    return model.eval()


def _loss_without_shift(model, seqs, num_codes):
    """The classic mistake: logits at position i scored against token i itself."""
    logits = model(seqs)[:, 1:, :num_codes]  # position i sees token i
    targets = seqs[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, num_codes), targets.reshape(-1))


GRADS_LEFT_HINT = (
    "return the loss without calling backward: the training loop calls loss.backward() "
    "itself, and a backward here adds the gradients to .grad a second time."
)
LAYOUT_HINT = (
    "F.cross_entropy wants the classes on dim 1: (B, V, T) logits with (B, T) targets, or "
    "flattened (B*T, V) logits with (B*T,) targets. Given (B, T, V) logits it reads T as "
    "the classes (it ran silently only where T happened to equal V)."
)
PRIOR_LOSS_HINTS = (
    "Teacher forcing: one forward pass over the sequence without its last token; the output "
    "at position i has seen tokens 0..i and is scored against token i + 1. Only the code "
    "logits compete: the next token is never a class.",
    "seqs (B, 1 + N) -> inputs (B, N) and targets (B, N), the same sequence shifted by one; "
    "logits (B, N, V) -> keep the first num_codes -> (B, N, K); cross-entropy wants the "
    "classes on dim 1, so flatten to (B*N, K) against (B*N,), averaged over all B*N.",
    "inputs, targets = seqs[:, ____], seqs[:, ____]   # the same sequence, shifted by one\n"
    "logits = model(inputs)[..., ____]                # (B, N, K): codes only\n"
    "return F.cross_entropy(...)                      # classes on dim 1: flatten both",
)


@exercise("prior_loss", reference=prior.prior_loss, hints=PRIOR_LOSS_HINTS)
def prior_loss(fn):
    K, G, B = 13, 3, 6  # distinct sizes: K codes, N = G*G = 9 positions, B sequences
    model = _tiny_prior_model(K, G)
    g = _gen(1)
    codes = torch.randint(0, K, (B, G, G), generator=g)
    labels = torch.randint(0, 10, (B,), generator=g)
    seqs = prior.make_sequences(codes, labels, K)  # (6, 10)
    before = seqs.clone()
    try:
        got = fn(model, seqs, K)
    except RuntimeError as err:
        if "target size" in str(err):
            raise CheckFailed(f"F.cross_entropy refused your shapes: {err}", LAYOUT_HINT) from None
        raise
    expect_tensor(got, "prior_loss(model, seqs, K)")
    expect_shape(got, (), "the loss", hint="average the cross-entropy to one number")
    expect(got.requires_grad, "the loss has no gradient",
           hint="compute it from the model's logits, without torch.no_grad() or .item()")
    expect(all(p.grad is None for p in model.parameters()),
           "prior_loss left gradients in the model's .grad", hint=GRADS_LEFT_HINT)
    expect_equal(seqs, before, "the sequences after prior_loss",
                 hint="do not modify seqs in place: slice it into new inputs and targets")
    with torch.no_grad():
        no_shift = _loss_without_shift(model, seqs, K)
        expected = prior.prior_loss(model, seqs, K)
    if torch.allclose(got.detach(), no_shift, atol=1e-5):
        raise CheckFailed(
            "your loss scores the logits at position i against token i itself",
            "shift by one: the model reads seqs[:, :-1] and is scored against seqs[:, 1:] "
            "(with the causal mask, position i sees token i, so predicting it is copying)",
        )
    expect_close(got.detach(), expected, "the loss", atol=1e-5,
                 hint="inputs seqs[:, :-1], targets seqs[:, 1:], only the first num_codes "
                      "logits, cross-entropy averaged over every position")
    return "a random tiny transformer, 6 sequences of 9 codes, K = 13: shift, code-only logits"


# --------------------------------------------------------------------------- the training step

STEP_RNG_HINT = ("draw the rows and the dropped labels from the generator you are given "
                 "(torch.randint(..., generator=generator), drop_labels(..., generator)): "
                 "the global RNG must stay untouched, and the same seed must give the same "
                 "batch")
NO_DROP_HINT = ("no label was dropped: pass the batch's labels through drop_labels(labels, "
                "p_uncond, prior.config.null_class, generator), so that the model also learns "
                "the unconditional p(image) that guidance needs")
P_FLIPPED_HINT = ("p_uncond is the probability that a label IS dropped to the null class "
                  "(drop_labels takes it as is), not the probability it is kept")
STEP_HINTS = (
    "One step's loss: pick a random mini-batch of grids, hide some of their labels behind the "
    "null class, turn them into sequences and score them with your teacher-forcing loss.",
    "rows (B,) from torch.randint(0, N, (batch_size,), generator=generator); then "
    "drop_labels(labels[rows], p_uncond, prior.config.null_class, generator) (B,); "
    "make_sequences(codes[rows], dropped, K) (B, 1 + G*G), on the prior's device; prior_loss.",
    "rows = torch.randint(____, generator=generator)   # (batch_size,) random grid indices\n"
    "dropped = drop_labels(...)                        # some labels -> the null class\n"
    "seqs = ...                                        # (B, 1 + G*G), on prior.device\n"
    "return ...                                        # your prior_loss",
)


def _step_variant(model, codes, labels, seed, batch_size, p_uncond, mistake=None):
    """minitok's step loss, or what a classic `mistake` in it gives, for the same seed."""
    generator = _gen(seed)
    rows = torch.randint(0, codes.shape[0], (batch_size,), generator=generator)
    p = {"no_drop": 0.0, "p_flipped": 1 - p_uncond}.get(mistake, p_uncond)
    dropped = sampling.drop_labels(labels[rows], p, model.config.null_class, generator)
    K = model.config.num_codes
    return prior.prior_loss(model, prior.make_sequences(codes[rows], dropped, K), K)


def _step_probe(fn, model, codes, labels, seed: int, settings: dict) -> dict:
    """Runs where the learner's function lives (checks.probe): the loss, whether it has a
    gradient, whether the global RNG moved or the inputs changed."""
    given = codes.clone(), labels.clone()
    with torch.random.fork_rng(devices=[]):
        before = torch.get_rng_state()
        loss = fn(model, codes, labels, _gen(seed), **settings)
        moved = not torch.equal(before, torch.get_rng_state())
    return {"loss": loss.detach() if isinstance(loss, torch.Tensor) else loss,
            "grad": isinstance(loss, torch.Tensor) and loss.requires_grad, "rng_moved": moved,
            "grads_left": any(p.grad is not None for p in model.parameters()),
            "changed": not (torch.equal(given[0], codes) and torch.equal(given[1], labels))}


@exercise("prior_batch_loss", reference=prior.prior_batch_loss, hints=STEP_HINTS)
def prior_batch_loss(fn):
    K, G, N = 13, 3, 40
    model = _step_prior(K, G)
    g = _gen(11)
    codes = torch.randint(0, K, (N, G, G), generator=g)  # (40, 3, 3)
    labels = torch.randint(0, 10, (N,), generator=g)  # (40,)
    for seed, settings in ((12, {"batch_size": 7, "p_uncond": 0.3}), (13, {})):
        what = f"prior_batch_loss(..., {settings or 'defaults'})"
        facts = probe(_step_probe, fn, model, codes, labels, seed, settings)
        expect_tensor(facts["loss"], what)
        expect_shape(facts["loss"], (), what, hint="return the mean loss, one number")
        expect(facts["grad"], f"{what}: the loss has no gradient",
               hint="return prior_loss's result as it is, not under torch.no_grad or .item()")
        expect(not facts["grads_left"], f"{what}: left gradients in the prior's .grad",
               hint=GRADS_LEFT_HINT)
        expect(not facts["changed"], f"{what}: codes or labels changed",
               hint="drop_labels returns new labels; leave the dataset's tensors as they are")
        expect(not facts["rng_moved"], f"{what}: your step drew from the global RNG",
               STEP_RNG_HINT)
        size, p = settings.get("batch_size", 64), settings.get("p_uncond", 0.1)
        with torch.no_grad():
            expected = _step_variant(model, codes, labels, seed, size, p)
            for mistake, hint in (("no_drop", NO_DROP_HINT), ("p_flipped", P_FLIPPED_HINT)):
                wrong = _step_variant(model, codes, labels, seed, size, p, mistake)
                if torch.allclose(facts["loss"], wrong, atol=1e-6) and not torch.allclose(
                        wrong, expected, atol=1e-6):
                    raise CheckFailed(f"{what}: the loss of a batch with the wrong labels", hint)
        expect_close(facts["loss"], expected, f"{what}: the loss", atol=1e-5,
                     hint="the reference draws the rows first, then the dropped labels, both "
                          "from generator: " + STEP_HINTS[1])
    return "the reference's batch for the same seed (batch_size 7, p_uncond 0.3; defaults)"


def _step_prior(num_codes: int, grid: int) -> prior.ARPrior:
    """A small random ARPrior without dropout, built without touching the global RNG."""
    config = prior.PriorConfig(num_codes=num_codes, grid_size=grid, n_layer=1, n_head=2,
                               n_embd=16, dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = prior.ARPrior(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(10.0)  # sharp logits: the labels a batch was given show in its loss
    return model.eval()


# --------------------------------------------------------------------------- the training loop

FIT_HINTS = (
    "Every step: set the learning rate the schedule gives this step, switch the model to "
    "train mode, take the loss of a fresh mini-batch, clear the old gradients, "
    "backpropagate, clip the gradients' total norm, take the optimizer's step. One "
    "generator, seeded once, feeds every batch. Now and then measure the held-out loss in "
    "eval mode without gradients and print it.",
    "torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, "
    "0.95)); group[\"lr\"] = lr * lr_scale(step, steps, warmup) for every group of "
    "optimizer.param_groups, step counted from 0; optimizer.zero_grad(), loss.backward(), "
    "torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP), optimizer.step(); the "
    "held-out loss when (step + 1) % eval_every == 0 or step + 1 == steps, under "
    "torch.no_grad() with model.eval(); model.eval() before returning.",
    "generator = ...                      # one, seeded with seed\n"
    "optimizer = ...                      # AdamW, betas (0.9, 0.95)\n"
    "losses = []\n"
    "for step in range(steps):\n"
    "    for group in optimizer.param_groups:\n"
    "        group[\"lr\"] = ...              # this step's learning rate\n"
    "    model.train()\n"
    "    loss = ...\n"
    "    ...                              # four lines: clear, backward, clip, step\n"
    "    losses.append(____)\n"
    "    if eval_loss is not None and ____:\n"
    "        ...                          # eval mode, no gradients, print\n"
    "model.eval()\n"
    "return losses",
)
FIT_MISTAKES = (  # (mistake, what the weights show, the hint that names it)
    ("no_schedule", "every step ran at the peak learning rate",
     "set each step's learning rate before its update: for every group of "
     "optimizer.param_groups, group[\"lr\"] = lr * lr_scale(step, steps, warmup) (a warm-up "
     "from small steps, then a cosine down to a tenth)"),
    ("schedule_ahead", "the schedule is one step ahead",
     "lr_scale counts steps from 0: the first update uses lr_scale(0, steps, warmup), the "
     "last lr_scale(steps - 1, steps, warmup)"),
    ("schedule_late", "each update used the previous step's learning rate",
     "set the learning rate before optimizer.step(), not after it: the first update then "
     "runs at the first warm-up value, not at the full lr"),
    ("warmup_ignored", "the warm-up length is not the one asked for",
     "pass warmup on to lr_scale(step, steps, warmup): None means its default, 5% of steps"),
    ("no_clip", "the gradients were not clipped",
     "clip the gradients' total norm to CLIP with torch.nn.utils.clip_grad_norm_("
     "model.parameters(), CLIP) after loss.backward() and before optimizer.step() (before "
     "backward there is nothing to clip yet)"),
    ("no_zero_grad", "the gradients of earlier steps were added in",
     "loss.backward() adds to .grad: call optimizer.zero_grad() every step, before "
     "backward, or each update carries every earlier step's gradients"),
    ("zero_grad_late", "the updates used no gradient",
     "optimizer.zero_grad() between backward and step clears the gradients just computed: "
     "clear them before loss.backward()"),
    ("adam", "the weight decay is Adam's L2 penalty",
     "use torch.optim.AdamW (weight decay applied to the weights directly, decoupled from "
     "the gradient), not torch.optim.Adam(weight_decay=...)"),
    ("betas", "Adam's default betas (0.9, 0.999)",
     "the course's AdamW uses betas=(0.9, 0.95): the second moment follows the gradients' "
     "scale sooner, the usual choice for transformers"),
    ("no_weight_decay", "no weight decay",
     "pass weight_decay on to AdamW (AdamW(..., weight_decay=weight_decay))"),
)
FIT_LR = 0.05  # large enough that every mistake moves the weights far apart


def _fit_model() -> torch.nn.Module:
    """The check's tiny regression model (big targets: the gradients' norm exceeds 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.Tanh(),
                                   torch.nn.Linear(12, 3))


def _fit_data() -> tuple[torch.Tensor, ...]:
    g = _gen(21)
    x = torch.randn(48, 4, generator=g)
    y = 4 * torch.tanh(x @ torch.randn(4, 3, generator=g))  # (48, 3)
    return x[:40], y[:40], x[40:], y[40:]


def _fit_probe(fn, case: dict) -> dict:
    """Runs where the learner's function lives (checks.probe): the tiny model handed over in
    eval mode, a batch_loss and an eval_loss that note how they are called (the generator,
    the model's mode, gradients on or off), what was printed, the weights after."""
    import contextlib
    import io

    model = _fit_model().eval()  # handed over in eval mode: each step must switch train on
    x, y, x_val, y_val = _fit_data()
    seen = {"batches": [], "evals": []}

    def batch_loss(generator):
        is_gen = isinstance(generator, torch.Generator)
        seen["batches"].append({
            "kind": type(generator).__name__, "training": model.training,
            "seed": generator.initial_seed() if is_gen else None,
            "state": generator.get_state() if is_gen else None})
        rows = torch.randint(0, x.shape[0], (8,), generator=generator)  # (8,)
        return ((model(x[rows]) - y[rows]) ** 2).mean()

    def eval_loss():
        seen["evals"].append({"after": len(seen["batches"]), "training": model.training,
                              "grad": torch.is_grad_enabled()})
        return ((model(x_val) - y_val) ** 2).mean()

    kwargs = dict(case["kwargs"])
    if case["eval"]:
        kwargs["eval_loss"] = eval_loss
    printed = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(printed):
        torch.manual_seed(0)
        losses = fn(model, batch_loss, case["steps"], **kwargs)
    if isinstance(losses, (list, tuple)):
        losses = [[type(v).__name__, float(v.detach()) if isinstance(v, torch.Tensor)
                   and v.numel() == 1 else v if isinstance(v, (int, float)) else None]
                  for v in losses]
    else:
        losses = type(losses).__name__
    return {"losses": losses, "seen": seen, "training": model.training,
            "printed": printed.getvalue(),
            "weights": {name: p.detach().clone() for name, p in model.named_parameters()}}


def _variant_fit(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
                 eval_loss=None, eval_every=100, mistake=None):
    """The reference loop, or the classic `mistake` in it: the weights each wrong loop
    leaves (`training.fit`'s steps, written out so that each mistake has its place)."""
    from minitok.training import CLIP, lr_scale

    generator = torch.Generator().manual_seed(seed)
    if mistake == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                                     betas=(0.9, 0.95))
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, betas=(0.9, 0.999) if mistake == "betas" else (0.9, 0.95),
            weight_decay=0.0 if mistake == "no_weight_decay" else weight_decay)
    shift = {"schedule_ahead": 1, "schedule_late": -1}.get(mistake, 0)
    losses = []
    for step in range(steps):
        if mistake not in ("no_schedule",) and not (mistake == "schedule_late" and step == 0):
            scale = lr_scale(step + shift, steps, None if mistake == "warmup_ignored" else warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr * scale
        model.train()
        loss = batch_loss(generator)
        if mistake not in ("no_zero_grad", "zero_grad_late"):
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if mistake == "zero_grad_late":
            optimizer.zero_grad(set_to_none=True)
        if mistake != "no_clip":
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        losses.append(loss.item())
        if eval_loss is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            model.eval()
            with torch.no_grad():
                print(f"step {step + 1}: held-out loss {float(eval_loss()):.3f}")
    model.eval()
    return losses


def _same(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5) for name in b)


FIT_CASES = (  # the lesson's call with a held-out loss; then every default
    {"steps": 12, "eval": True, "kwargs": {"lr": FIT_LR, "weight_decay": 0.1, "warmup": 3,
                                            "seed": 5, "eval_every": 5}},
    {"steps": 10, "eval": False, "kwargs": {}},
)
GENERATOR_HINT = ("make ONE torch.Generator before the loop, seeded with seed "
                  "(torch.Generator().manual_seed(seed)), and pass it to batch_loss at every "
                  "step: the same seed must give the same batches")
EVAL_HINT = ("measure the held-out loss after every eval_every-th update and after the last "
             "one, counting updates from 1 while step counts from 0 (check.hint('fit', 2) "
             "has the condition), and only when eval_loss is given")


@exercise("fit", reference=training.fit, hints=FIT_HINTS)
def fit(fn):
    with one_thread():  # tiny models: one thread is as fast and gives the same sums
        return _judge_fit(fn)


def _judge_fit(fn):
    for case in FIT_CASES:
        what = f"fit(model, batch_loss, {case['steps']}, " + (
            ", ".join(f"{k}={v}" for k, v in case["kwargs"].items()) + ", eval_loss=...)"
            if case["eval"] else "defaults)")
        got = probe(_fit_probe, fn, case)
        expected = _fit_probe(_variant_fit, case)
        batches, steps = got["seen"]["batches"], case["steps"]
        expect(len(batches) == steps, f"{what}: batch_loss was called {len(batches)} times "
               f"in {steps} steps", hint="call batch_loss(generator) once per step")
        seed = case["kwargs"].get("seed", 0)
        expect(all(b["kind"] == "Generator" for b in batches),
               f"{what}: batch_loss got a {batches[0]['kind']}, not a torch.Generator",
               GENERATOR_HINT)
        expect(all(b["seed"] == seed for b in batches),
               f"{what}: the generator was seeded with {batches[0]['seed']}, not seed={seed}",
               GENERATOR_HINT)
        expect(not any(torch.equal(b["state"], batches[0]["state"]) for b in batches[1:]),
               f"{what}: every step drew the same batch (the generator started afresh)",
               GENERATOR_HINT)
        in_eval = [step for step, b in enumerate(batches) if not b["training"]]
        expect(not in_eval, f"{what}: batch_loss ran with the model in eval mode at the "
               f"steps {in_eval}",
               hint="call model.train() at the start of every step: the model may come in "
                    "eval mode, and measuring the held-out loss switches it to eval mode")
        evals = got["seen"]["evals"]
        after = [e["after"] for e in evals]
        expect(after == [e["after"] for e in expected["seen"]["evals"]],
               f"{what}: the held-out loss was measured after the updates {after}, expected "
               f"{[e['after'] for e in expected['seen']['evals']]}", EVAL_HINT)
        expect(not any(e["training"] for e in evals),
               f"{what}: the held-out loss was measured in train mode",
               hint="call model.eval() before eval_loss(): in train mode dropout is on and "
                    "the held-out loss is noisy and too high")
        expect(not any(e["grad"] for e in evals),
               f"{what}: the held-out loss was measured with gradients on",
               hint="measure the held-out loss under torch.no_grad(): no graph is needed "
                    "there, and building one costs memory and time")
        expect(len([line for line in got["printed"].splitlines() if line.strip()])
               >= len(evals), f"{what}: {len(evals)} held-out losses, fewer lines printed",
               hint="print one line each time you measure the held-out loss (the step, the "
                    "training loss, the held-out loss)")
        expect(not got["training"], f"{what}: fit left the model in train mode",
               hint="call model.eval() before returning: the caller samples from the model, "
                    "and dropout must be off then")
        if not _same(got["weights"], expected["weights"]):
            for mistake, message, hint in FIT_MISTAKES:
                wrong = _fit_probe(functools.partial(_variant_fit, mistake=mistake), case)
                if _same(got["weights"], wrong["weights"]):
                    raise CheckFailed(f"{what}: the weights after {steps} steps: {message}",
                                      hint)
            name = next(n for n in expected["weights"]
                        if not _same({n: got["weights"][n]}, {n: expected["weights"][n]}))
            expect_close(got["weights"][name], expected["weights"][name],
                         f"{what}: the weight {name} after {steps} steps", atol=1e-6,
                         hint="the same seed must give the reference's weights: "
                              + FIT_HINTS[1] + (" The defaults: lr=3e-3, weight_decay=0.05, "
                                                "warmup=None, seed=0, eval_every=100."
                                                if not case["kwargs"] else ""))
        losses = got["losses"]
        expect(isinstance(losses, list) and len(losses) == steps,
               f"{what}: returned {losses if isinstance(losses, str) else len(losses)}, "
               f"expected a list of {steps} losses",
               hint="return a list with each step's training loss, one float per step")
        expect(all(kind == "float" for kind, _ in losses),
               f"{what}: the losses are {sorted({kind for kind, _ in losses})}, not floats",
               hint="append loss.item(), a float: a tensor keeps its whole graph alive")
        expect_close(torch.tensor([v for _, v in losses]),
                     torch.tensor([v for _, v in expected["losses"]]), f"{what}: the losses",
                     atol=1e-6, hint="append each step's loss, the one its update used")
    return ("a tiny seeded model against the reference: the same weights after 12 steps "
            "(schedule, clipping, AdamW, one seeded generator), the held-out loss after "
            "updates 5, 10, 12 in eval mode without gradients; then every default")


# --------------------------------------------------------------------------- filters


@exercise("top_k_filter", reference=sampling.top_k_filter, hints=TOP_K_HINTS)
def top_k_filter(fn):
    logits = torch.randn(4, 10, generator=_gen(2))
    given = logits.clone()
    got = fn(given, 3)
    expect_equal(given, logits, "the logits after top_k_filter",
                 hint="return a new tensor; do not write -inf into the logits you were given")
    expected = sampling.top_k_filter(logits, 3)
    expect_shape(got, tuple(logits.shape), "top_k_filter(logits, 3)")
    expect_equal(torch.isfinite(got), torch.isfinite(expected), "which logits survive",
                 hint="keep the k largest logits of each row and set the others to "
                      "-inf (not 0: exp(0) = 1 is still a chance)")
    expect_equal(got[torch.isfinite(got)], logits[torch.isfinite(expected)],
                 "the surviving logits", hint="leave the kept logits unchanged")
    try:
        big = fn(logits.clone(), 50)
    except RuntimeError as err:
        raise CheckFailed(f"k = 50 > V = 10 raised {err}",
                          "clamp k to the vocabulary size: k = min(k, V)") from None
    expect_equal(big, logits, "top_k_filter(logits, 50) with V = 10",
                 hint="a k larger than the vocabulary keeps every logit")
    ties = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    kept = int(torch.isfinite(fn(ties.clone(), 2)).sum())
    expect(kept == 2, f"with logits {ties.tolist()[0]} and k = 2, {kept} logits survive",
           hint="exactly k survive: `logits < kth_value` keeps every tie; keep the positions "
                "torch.topk returns instead (scatter them into a row of -inf)")
    return "k < V, k > V (clamped), ties at the k-th value"


@exercise("top_p_filter", reference=sampling.top_p_filter, hints=TOP_P_HINTS)
def top_p_filter(fn):
    tiny = fn(torch.randn(5, 12, generator=_gen(3)), 1e-6)
    expect_shape(tiny, (5, 12), "top_p_filter(logits, 1e-6)")
    expect_equal(torch.isfinite(tiny).sum(-1), torch.ones(5, dtype=torch.long),
                 "tokens kept per row for p = 1e-6",
                 hint="always keep at least the most likely token")
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # sorted: 0.5, 0.3 (crosses 0.6), ...
    got = fn(probs.log(), 0.6)
    expect_shape(got, (1, 4), "top_p_filter(logits, 0.6)")
    kept = torch.isfinite(got)
    if kept.tolist() == [[False, True, False, False]]:
        raise CheckFailed(
            "with probabilities [0.15, 0.5, 0.05, 0.3] and p = 0.6 you keep only 0.5",
            "0.5 alone does not reach 0.6: keep the token that crosses p (0.3) too; keep a "
            "token while the mass ranked above it is < p",
        )
    expect_equal(kept, torch.tensor([[False, True, False, True]]),
                 "which tokens survive for p = 0.6",
                 hint="the smallest set of most likely tokens whose total reaches p, in the "
                      "original (unsorted) positions")
    logits = 2.0 * torch.randn(8, 20, generator=_gen(4))
    for p in (0.3, 0.75, 0.9):
        given = logits.clone()
        got = fn(given, p)
        expect_equal(given, logits, f"the logits after top_p_filter(logits, {p})",
                     hint="return a new tensor (masked_fill, not masked_fill_)")
        expected = sampling.top_p_filter(logits, p)
        expect_equal(torch.isfinite(got), torch.isfinite(expected),
                     f"which tokens survive for p = {p}",
                     hint="sort descending, cumulative softmax, then map the kept set back "
                          "to vocabulary order (scatter with the sort's indices)")
        expect_equal(got[torch.isfinite(got)], logits[torch.isfinite(expected)],
                     f"the surviving logits for p = {p}",
                     hint="return the original logits, with -inf where a token is dropped")
    return "the crossing token, at least one token, 8 random rows at three p"


# --------------------------------------------------------------------------- sampling


def _draw(fn, logits, n, seed, **kwargs):
    got = fn(logits.expand(n, -1), generator=_gen(seed), **kwargs)
    expect_shape(got, (n,), f"sample_logits on ({n}, V) logits",
                 hint="one token id per row: squeeze the multinomial's sample dimension")
    expect_tensor(got, "the sampled tokens", dtype=torch.long)
    return got


@exercise("sample_logits", reference=sampling.sample_logits, hints=SAMPLE_HINTS)
def sample_logits(fn):
    logits = torch.randn(16, 30, generator=_gen(5))
    given = logits.clone()
    fn(given, temperature=0.5, top_k=3, generator=_gen(5))
    expect_equal(given, logits, "the logits after sample_logits",
                 hint="divide into a new tensor (logits = logits / temperature, not /=)")
    expect_equal(fn(logits, greedy=True), logits.argmax(-1), "sample_logits(greedy=True)",
                 hint="greedy means the argmax of each row, no randomness")
    flat = torch.linspace(0.0, 0.3, 30)[None]  # (1, 30) nearly uniform: filters matter
    drawn = _draw(fn, flat, 4000, 6, top_k=2)
    outside = int((drawn < 28).sum())
    expect(outside == 0,
           f"with top_k=2, {outside} of 4000 samples are outside the 2 most likely tokens",
           hint="filter the logits BEFORE softmax and the draw; a sample outside the top-k "
                "means top-k came after sampling (or not at all)")
    drawn = _draw(fn, flat, 4000, 7, top_p=0.2)
    nucleus = torch.isfinite(sampling.top_p_filter(flat, 0.2))[0]
    expect(bool(nucleus[drawn].all()),
           "with top_p=0.2 some samples are outside the nucleus",
           hint="apply top_p_filter to the logits before softmax and the draw")
    a = _draw(fn, logits[:1], 500, 8)
    b = _draw(fn, logits[:1], 500, 8)
    expect_equal(a, b, "two draws with equally seeded generators",
                 hint="pass generator=generator to torch.multinomial")
    n, settings = 40_000, {"temperature": 0.5, "top_k": 5, "top_p": 0.7}
    base = torch.tensor([[1.0, 0.5, 0.4, 0.2, 0.0, -0.2, 0.3, -1.0]])
    _expect_frequencies(fn, base, n, 9, settings)
    # top-k and top-p where their two orders differ: top-p's nucleus is taken from the
    # distribution top-k left (renormalised over 3 tokens: 0.57, 0.23, 0.20 keeps two for
    # p = 0.6), not from the full one (0.40, 0.16, 0.14, ... keeps three).
    probs = torch.tensor([[0.14, 0.10, 0.40, 0.10, 0.16, 0.10]])
    _expect_frequencies(fn, probs.log(), n, 10, {"top_k": 3, "top_p": 0.6})
    return "greedy, top-k and top-p before the draw, seeded, frequencies of all three"


def _filtered(logits, temperature=1.0, top_k=None, top_p=None, order=("t", "k", "p")):
    """The logits after the three settings, applied in `order`."""
    steps = {"t": lambda x: x / temperature,
             "k": lambda x: x if top_k is None else sampling.top_k_filter(x, top_k),
             "p": lambda x: x if top_p is None else sampling.top_p_filter(x, top_p)}
    for step in order:
        logits = steps[step](logits)
    return logits


SETTINGS_ORDERS = {
    ("t", "p", "k"): "top-k comes before top-p: top-p keeps the nucleus of the distribution "
    "that top-k left (renormalised over the k kept), not of the full one.",
    **dict.fromkeys([("k", "p", "t"), ("p", "k", "t")],
                    "divide by the temperature, then top-k, then top-p: the temperature "
                    "reshapes the distribution whose nucleus top-p keeps, so it comes first."),
}


def _expect_frequencies(fn, logits, n: int, seed: int, settings: dict) -> None:
    """The frequencies of n draws match the settings applied in minitok's order; when they
    do not, name the order they match."""
    drawn = _draw(fn, logits, n, seed, **settings)
    freq = torch.bincount(drawn, minlength=logits.shape[-1]).double() / n

    def agree(order) -> bool:
        expected = torch.softmax(_filtered(logits, **settings, order=order)[0].double(), -1)
        sigma = (expected * (1 - expected) / n).sqrt()
        return bool(((freq - expected).abs() <= 5 * sigma + 2e-3).all())

    if agree(("t", "k", "p")):
        return
    hint = ("order: divide by the temperature, then top-k, then top-p, then softmax and "
            "torch.multinomial")
    for order, text in SETTINGS_ORDERS.items():
        if agree(order):
            hint = text
            break
    expected = torch.softmax(_filtered(logits, **settings)[0].double(), -1)
    raise CheckFailed(
        f"frequencies {[round(v, 3) for v in freq.tolist()]} do not match the expected "
        f"{[round(v, 3) for v in expected.tolist()]} ({settings})", hint)


@exercise("cfg_logits", reference=sampling.cfg_logits, hints=CFG_HINTS)
def cfg_logits(fn):
    g = _gen(10)
    cond, uncond = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    swapped = "the halves are swapped: guidance starts from the unconditional logits u " \
              "and moves past the conditional ones: u + s (c - u)"
    given = cond.clone(), uncond.clone()
    got = fn(*given, 1.0)
    expect_tensor(got, "cfg_logits(cond, uncond, 1.0)")
    expect(torch.equal(given[0], cond) and torch.equal(given[1], uncond),
           "cfg_logits changed cond or uncond", hint="return a new tensor; leave both inputs as "
           "they are")
    if torch.allclose(got, uncond, atol=1e-6):
        raise CheckFailed("scale 1 gives the unconditional logits", swapped)
    expect_close(got, cond, "cfg_logits(cond, uncond, 1.0)", atol=1e-6,
                 hint="s = 1 must be plain conditional sampling (no guidance)")
    expect_close(fn(cond, uncond, 0.0), uncond, "cfg_logits(cond, uncond, 0.0)", atol=1e-6,
                 hint="s = 0 is the unconditional model")
    got = fn(cond, uncond, 2.5)
    if torch.allclose(got, cond + 2.5 * (uncond - cond), atol=1e-5):
        raise CheckFailed("scale 2.5 gives c + s (u - c)", swapped)
    expect_close(got, sampling.cfg_logits(cond, uncond, 2.5), "cfg_logits(cond, uncond, 2.5)",
                 hint="u + s (c - u)")
    return "s = 0, 1, 2.5"


# --------------------------------------------------------------------------- the generation loop

GEN_K, GEN_G, GEN_B = 13, 3, 5  # distinct sizes: codes, grid side (9 codes an image), images
GEN_LABELS = (7, 0, 3, 9, 3)

HALF_HINT = ("return the conditional half only, the G*G codes after each class token, as "
             "(B, G, G) grids: tokens[:B, 1:].reshape(B, G, G)")
CLASS_TOKEN_HINT = ("your grids hold ids >= num_codes: the class token is still in them. "
                    "Drop the first column (the class token) and keep the G*G codes after it")
RNG_HINT = ("draw every code from the generator you were given (pass it on to "
            "sample_logits): the global RNG must stay untouched, and the same seed must "
            "give the same digits")
PASSES_HINT = ("one forward pass per code: G*G passes draw the G*G codes (the first reads "
               "the class token, the last code is drawn and never read), so the loop runs "
               "range(G*G) times")
NEWEST_ONLY_HINT = ("with use_cache=True make one cache before the loop "
                    "(prior.transformer.new_cache(batch)) and feed it only the newest token, "
                    "(batch, 1), on every pass after the first; the cache holds the rest")
FRESH_CACHE_HINT = ("make the cache once, before the loop: a new cache on every pass forgets "
                    "the prefix and puts every token at position 0")
STALE_INPUT_HINT = ("feed the code you just drew back in: each pass after the first reads the "
                    "newest token (with the cache) or the whole sequence so far (without it), "
                    "not the prompt again")
NO_CACHE_HINT = ("without the cache every pass re-reads the whole sequence so far (class "
                 "token and every code drawn): call the model with cache=None on all of it")
PLAIN_HINT = "cfg_scale = 1 is plain conditional sampling: one batch of B, no null half"
DOUBLED_HINT = ("guidance needs both predictions at every step: run ONE doubled batch "
                "[cond; null] of 2B sequences (the class tokens, then B null tokens) and "
                "combine its halves with cfg_logits before the pick")
SWAPPED_HINT = ("the halves are swapped: the first B rows (the class tokens) are the "
                "conditional logits c, the last B (the null class) the unconditional u: "
                "cfg_logits(logits[:B], logits[B:], cfg_scale)")
NULL_ID_HINT = ("the null half starts with the null class's token id, num_codes + null_class "
                "(prior.config.null_class), not the bare label null_class (that id is a code)")
SETTINGS_HINT = ("pass temperature, top_k, top_p, greedy and the generator on to "
                 "sample_logits: it applies them in the right order, after the guidance")
GENERATE_HINTS = (
    "Start each sequence with its class token and repeat G*G times: run the model, keep the "
    "last position's code logits, pick one code with sample_logits, append it and feed it "
    "back. With guidance the same loop runs a doubled batch [cond; null]: cfg_logits "
    "combines its two halves before the pick, and the code drawn goes to both halves so "
    "they stay the same sequence apart from their first token.",
    "prompt (B, 1) = labels + K; guided: cat with B null tokens K + null_class -> (2B, 1). "
    "Each pass: model(step_input, cache) (rows, T_in, V) -> [:, -1, :K] (rows, K); guided: "
    "cfg_logits(logits[:B], logits[B:], cfg_scale) -> (B, K); sample_logits -> (B,), "
    "guided: cat([token, token]) -> (2B,). With the cache (made once, "
    "prior.transformer.new_cache(rows)) step_input is the new token (rows, 1); without it "
    "all tokens so far. Return tokens[:B, 1:] as (B, G, G).",
    "tokens = ...                            # (B, 1) class tokens; guided: + B null tokens\n"
    "cache = prior.transformer.new_cache(tokens.shape[0]) if use_cache else None\n"
    "step_input = tokens\n"
    "for _ in range(G * G):\n"
    "    logits = prior(step_input, cache)[____]   # last position, codes only: (rows, K)\n"
    "    if guided:\n"
    "        logits = ...                          # cfg_logits on the two halves -> (B, K)\n"
    "    token = ...                               # sample_logits(...) -> (B,)\n"
    "    if guided:\n"
    "        token = ...                           # both halves get the same code\n"
    "    tokens = ...                              # append it\n"
    "    step_input = ...                          # the cache has the past: what is new?\n"
    "return ...                                    # (B, G, G), no class token",
)


def _gen_prior() -> prior.ARPrior:
    """A small random prior with sharp logits (a fresh model's are nearly uniform, where a
    wrong loop can draw the right tokens by luck), built without touching the global RNG."""
    config = prior.PriorConfig(num_codes=GEN_K, grid_size=GEN_G, n_layer=2, n_head=2,
                               n_embd=24, dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = prior.ARPrior(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(12.0)  # std 0.02 -> 0.24: logits several nats apart
    return model.eval()


def _loop(model, labels, generator, mistake=None, temperature=1.0, top_k=None, top_p=None,
          greedy=False, cfg_scale=1.0, use_cache=True):
    """minitok's loop, or the classic `mistake` in it: what each wrong loop draws."""
    config, B = model.config, labels.shape[0]
    K = config.num_codes
    guided = cfg_scale != 1.0 and mistake != "no_guidance"
    tokens = (labels + K)[:, None]  # (B, 1)
    if guided:
        null = config.null_class if mistake == "null_id" else K + config.null_class
        tokens = torch.cat([tokens, torch.full_like(tokens, null)])  # (2B, 1)
    prompt, rows = tokens, tokens.shape[0]
    cache = model.transformer.new_cache(rows) if use_cache else None
    step_input = tokens
    with torch.no_grad():
        for _ in range(config.tokens_per_image):
            if mistake == "fresh_cache":
                cache = model.transformer.new_cache(rows)
            logits = model(step_input, cache)[:, -1, :K]
            if guided:
                cond, uncond = logits[:B], logits[B:]
                if mistake == "swapped":
                    cond, uncond = uncond, cond
                logits = sampling.cfg_logits(cond, uncond, cfg_scale)
            if mistake == "no_settings":
                token = sampling.sample_logits(logits, generator=generator)
            else:
                token = sampling.sample_logits(logits, temperature, top_k, top_p, generator,
                                               greedy)
            if guided:
                token = torch.cat([token, token])
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            if mistake == "stale_input":
                step_input = prompt
            else:
                step_input = token[:, None] if use_cache else tokens
    return tokens[:B, 1:].reshape(B, config.grid_size, config.grid_size)


def _generate_probe(fn, model, labels, seed: int, settings: dict) -> dict:
    """Runs where the learner's function lives (checks.probe): counts the model's passes
    (how many rows and tokens each reads) and whether the global RNG moved. An error the
    model itself raises (a sequence longer than it holds, a full cache) comes back as text
    with the passes so far, so that the check can name the mistake; any other error is the
    learner's, raised as is. Whether the labels changed is judged here too (a probe's
    arguments are not synced back over the grader's wire)."""
    passes = []

    def count(_module, args):
        passes.append(tuple(args[0].shape))  # (rows, tokens) this pass reads

    handle = model.transformer.register_forward_pre_hook(count)
    facts = {"got": None, "error": None, "passes": passes, "rng_moved": False}
    given = labels.clone()
    try:
        with torch.random.fork_rng(devices=[]):
            before = torch.get_rng_state()
            try:
                facts["got"] = fn(model, labels, generator=_gen(seed), **settings)
            except ValueError as err:
                if "block_size" not in str(err) and "cache" not in str(err):
                    raise
                facts["error"] = str(err)
            facts["rng_moved"] = not torch.equal(before, torch.get_rng_state())
        facts["labels_changed"] = not torch.equal(given, labels)
    finally:
        handle.remove()
    facts["passes"] = list(passes)
    return facts


def _run_loop(fn, model, labels, seed, settings, what):
    """The learner's grids for `settings`, after the checks every run must pass."""
    facts = probe(_generate_probe, fn, model, labels, seed, settings)
    passes, n = facts["passes"], model.config.tokens_per_image
    use_cache = settings.get("use_cache", True)
    if facts["error"] is not None:
        rereads = use_cache and len(passes) > 1 and passes[1][1] > 1
        hint = NEWEST_ONLY_HINT if rereads else PASSES_HINT
        raise CheckFailed(f"{what}: the model refused pass {len(passes)}: {facts['error']}",
                          hint)
    expect(not facts["labels_changed"], f"{what}: the labels changed",
           hint="do not modify labels in place: build the prompt as a new tensor")
    got = facts["got"]
    expect_tensor(got, f"{what}: the grids", dtype=torch.long,
                  hint="return the code ids as an int64 tensor")
    B, G = labels.shape[0], model.config.grid_size
    if got.dim() == 3 and got.shape[0] == 2 * B:
        raise CheckFailed(f"{what}: {tuple(got.shape)} grids for {B} labels", HALF_HINT)
    expect_shape(got, (B, G, G), f"{what}: the grids", hint=HALF_HINT)
    if bool((got >= model.config.num_codes).any()):
        raise CheckFailed(f"{what}: ids >= num_codes = {model.config.num_codes} in the grids",
                          CLASS_TOKEN_HINT)
    expect(not facts["rng_moved"], f"{what}: your loop drew from the global RNG", RNG_HINT)
    guided = settings.get("cfg_scale", 1.0) != 1.0
    expect(all(rows == (2 * B if guided else B) for rows, _ in passes),
           f"{what}: batches of {sorted({r for r, _ in passes})} rows for {B} labels",
           DOUBLED_HINT if guided else PLAIN_HINT)
    expect(len(passes) == n, f"{what}: {len(passes)} forward passes for {n} codes an image",
           PASSES_HINT)
    return got, passes


@exercise("ar_generate", reference=prior.ar_generate, hints=GENERATE_HINTS)
def ar_generate(fn):
    with one_thread():  # the model is tiny: a second thread on a busy machine is 15x slower
        return _judge_generate(fn)


def _judge_generate(fn):
    model = _gen_prior()
    labels = torch.tensor(GEN_LABELS)  # (B,)
    n = model.config.tokens_per_image  # codes an image

    # Plain sampling with the cache: B rows, the prompt then one token a pass.
    got, passes = _run_loop(fn, model, labels, 0, {}, "ar_generate(prior, labels)")
    if [t for _, t in passes] == list(range(1, n + 1)):
        raise CheckFailed("use_cache=True: pass t re-read all t tokens so far", NEWEST_ONLY_HINT)
    for mistake, hint in (("fresh_cache", FRESH_CACHE_HINT), ("stale_input", STALE_INPUT_HINT)):
        if torch.equal(got, _loop(model, labels, _gen(0), mistake)):
            raise CheckFailed("ar_generate(prior, labels): not the codes the reference draws "
                              "with the same generator", hint)
    expect_equal(got, _loop(model, labels, _gen(0)), "ar_generate(prior, labels) with seed 0",
                 hint="the same seed must draw the same codes as the reference: "
                      + GENERATE_HINTS[0])
    again, _ = _run_loop(fn, model, labels, 0, {}, "a second run with the same seed")
    expect_equal(again, got, "two runs with equally seeded generators", hint=RNG_HINT)

    # Without the cache: pass t reads the t tokens so far; the same codes.
    got, passes = _run_loop(fn, model, labels, 1, {"use_cache": False}, "use_cache=False")
    expect([t for _, t in passes] == list(range(1, n + 1)),
           f"use_cache=False: the passes read {[t for _, t in passes]} tokens",
           NO_CACHE_HINT)
    expect_equal(got, _loop(model, labels, _gen(1), use_cache=False),
                 "use_cache=False with seed 1", hint=NO_CACHE_HINT)

    # The sampling settings reach sample_logits; greedy too.
    settings = {"temperature": 0.7, "top_k": 4, "top_p": 0.9}
    got, _ = _run_loop(fn, model, labels, 2, settings, "temperature 0.7, top_k 4, top_p 0.9")
    if torch.equal(got, _loop(model, labels, _gen(2), "no_settings", **settings)):
        raise CheckFailed("temperature, top_k and top_p changed nothing", SETTINGS_HINT)
    expect_equal(got, _loop(model, labels, _gen(2), **settings),
                 "the codes at temperature 0.7, top_k 4, top_p 0.9", hint=SETTINGS_HINT)
    got, _ = _run_loop(fn, model, labels, 3, {"greedy": True}, "greedy=True")
    expect_equal(got, _loop(model, labels, _gen(3), greedy=True), "the greedy codes",
                 hint=SETTINGS_HINT)

    # Guidance: one doubled batch, the halves in their places, the null token's id.
    for scale, extra in ((2.5, {"top_k": 6}), (0.0, {})):
        settings = {"cfg_scale": scale, **extra}
        what = f"cfg_scale={scale}" + (", top_k 6" if extra else "")
        got, passes = _run_loop(fn, model, labels, 4, settings, what)
        if torch.equal(got, _loop(model, labels, _gen(4), "no_guidance", **settings)):
            raise CheckFailed(f"{what}: the same codes as without guidance", DOUBLED_HINT)
        for mistake, hint in (("swapped", SWAPPED_HINT), ("null_id", NULL_ID_HINT)):
            if torch.equal(got, _loop(model, labels, _gen(4), mistake, **settings)):
                raise CheckFailed(f"{what}: not the codes the reference draws", hint)
        expect_equal(got, _loop(model, labels, _gen(4), **settings), f"the codes at {what}",
                     hint=DOUBLED_HINT + "; the code drawn goes to both halves")
    return ("the reference's codes for the same seed (cache on and off, temperature, top-k, "
            "top-p, greedy, guidance 2.5 and 0); G*G passes, the doubled batch only with "
            "guidance, the global RNG untouched")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
