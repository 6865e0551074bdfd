"""MaskGIT against google-research/maskgit's published behaviour (docs/references.md, MaskGIT).

The official decoder (`libml/parallel_decode.py`) is transcribed below in NumPy, line by line,
with its own cut-off rule for re-masking; minitok's decode must give the same tokens at every
step when both are fed the same noise. The race against the AR prior and the diversity
measure live in minitok.evaluate (tests/test_evaluate.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from repo_scripts import load_script

from minitok import checkpoints, maskgit
from minitok.maskgit import decode, gamma, mask_counts, random_mask
from minitok.prior import ARPrior, PriorConfig
from minitok.tools.bench import maskgit as bench_maskgit

# --------------------------------------------------------------------------- schedules


def test_gamma_formulas_and_clip():
    r = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(gamma("cosine", r), torch.cos(math.pi / 2 * r).clamp(1e-6, 1))
    torch.testing.assert_close(gamma("linear", r), (1 - r).clamp(1e-6, 1))
    torch.testing.assert_close(gamma("square", r), (1 - r**2).clamp(1e-6, 1))
    torch.testing.assert_close(gamma("pow3", r), (1 - r**3).clamp(1e-6, 1))
    for name in ("cosine", "linear", "square", "pow0.5"):
        assert gamma(name, 0.0).item() == 1.0
        assert gamma(name, 1.0).item() == 1e-6  # clipped, as the reference
        at = gamma(name, 0.3)  # a float ratio gives a 0-d float64 tensor (exact floors)
        assert isinstance(at, torch.Tensor) and at.dtype == torch.float64 and at.shape == ()
    assert gamma("cosine", r.float()).dtype == torch.float64


def test_cosine_reveals_few_first_and_many_last():
    counts = mask_counts(256, 8, "cosine")
    revealed = np.diff([256, *counts[:-1]]) * -1  # tokens revealed at steps 0..6
    assert revealed[0] < revealed[-1]
    assert list(revealed) == sorted(revealed)  # cosine reveals more at every step


# --------------------------------------------------------------------------- the official formula
# The repository publishes the formula, not tables: these counts are the formula evaluated.


def test_mask_counts_cosine_256_in_8_steps_is_the_official_formula():
    assert mask_counts(256, 8, "cosine") == [251, 236, 212, 181, 142, 97, 49, 0]


def test_mask_counts_cosine_1024_in_12_steps_is_the_official_formula_in_float64():
    expected = [1015, 989, 946, 886, 812, 724, 623, 512, 391, 265, 133, 0]
    assert mask_counts(1024, 12, "cosine") == expected


def test_float32_as_the_official_jax_loop_computes_gives_511_after_step_8():
    # floor(1024 cos(pi/2 * 8/12)): cos(pi/3) is 0.49999997 in float32, JAX's default
    ratio = torch.tensor(8 / 12, dtype=torch.float32)
    assert int(torch.floor(1024 * torch.cos(math.pi / 2 * ratio))) == 511
    assert int(torch.floor(1024 * gamma("cosine", 8 / 12))) == 512  # minitok: float64


def test_inpainting_counts_from_the_initial_masked_number():
    assert mask_counts(100, 8, "cosine")[0] == 98  # floor(100 cos(pi/16)), not from 256


def test_small_n_clamp():
    # N0 = 4, T = 8, by the reference's rule max(1, min(unknown - 1, floor(N0 gamma))):
    # t=0: floor(3.92)=3 -> 3; t=1: floor(3.70)=3, unknown-1=2 -> 2; t=2: floor(3.33)=3 -> 1;
    # t=3..6: the plan would leave <= unknown - 1 = 0, max(1, .) keeps 1; the last step: 0.
    assert mask_counts(4, 8, "cosine") == [3, 2, 1, 1, 1, 1, 1, 0]


def test_mask_counts_edge_cases():
    assert mask_counts(0, 4) == [0, 0, 0, 0]  # nothing to generate
    assert mask_counts(64, 1) == [0]  # one step fills everything
    assert mask_counts(64, 8, "linear") == [56, 48, 40, 32, 24, 16, 8, 0]
    for n, steps, name in ((64, 8, "square"), (64, 12, "cosine"), (7, 20, "linear")):
        counts = mask_counts(n, steps, name)
        assert counts[-1] == 0 and len(counts) == steps
        before = [n, *counts[:-1]]  # masked before each step
        # every step reveals at least one token, except that one stays masked until the end
        assert all(b < a or a == b == 1 for a, b in zip(before, counts, strict=True))


# --------------------------------------------------------------------------- a fake model


class FakeModel:
    """A MaskGIT stand-in with controlled logits that also depend on the input tokens."""

    def __init__(self, B, side, K, seed=0, device="cpu", num_classes=10, scale=2.0):
        g = torch.Generator().manual_seed(seed)
        self.num_codes, self.num_classes, self.grid_size = K, num_classes, side
        self.null_class = num_classes
        self.mask_id = K + num_classes + 1
        self.base = (torch.randn(B, side * side, K, generator=g) * scale).to(device)
        self.calls: list[torch.Tensor] = []

    def __call__(self, tokens, labels):
        self.calls.append(tokens.clone())
        known = F.one_hot(tokens.clamp(max=self.num_codes), self.num_codes + 1)
        counts = known[..., : self.num_codes].sum(dim=1, keepdim=True).float()  # (B, 1, K)
        base = self.base[: tokens.shape[0]].repeat(tokens.shape[0] // len(self.base) or 1, 1, 1)
        return base + 0.3 * counts + 0.1 * labels[:, None, None].float()


# --------------------------------------------------------------------------- the official loop


def official_decode(inputs, tokens_to_logits, num_iter, choice_temperature, noise, mask_id,
                    method="cosine"):
    """google-research/maskgit parallel_decode.decode, transcribed to NumPy.

    `noise(step)` returns (gumbel for categorical sampling (B, N, K), gumbel for the choice
    (B, N)); jax.random.categorical samples by Gumbel-max, so the same noise gives the same
    draw. Returns final_seqs (T, B, N) and the state after every step (T, B, N).
    """
    unknown_number_in_the_beginning = np.sum(inputs == mask_id, axis=-1)
    cur_ids = inputs.copy()
    final_seqs, states = [], []
    for step in range(num_iter):
        logits = tokens_to_logits(cur_ids).astype(np.float32)
        g_sample, g_choice = noise(step)
        sampled_ids = np.argmax(logits - logits.max(-1, keepdims=True) + g_sample, axis=-1)
        unknown_map = cur_ids == mask_id
        sampled_ids = np.where(unknown_map, sampled_ids, cur_ids)
        ratio = 1.0 * (step + 1) / num_iter
        mask_ratio = float(gamma(method, ratio))
        final_seqs.append(sampled_ids)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = e / e.sum(-1, keepdims=True)
        selected_probs = np.take_along_axis(probs, sampled_ids[..., None], -1)[..., 0]
        selected_probs = np.where(unknown_map, selected_probs, np.inf)
        mask_len = np.floor(unknown_number_in_the_beginning * mask_ratio)[:, None]
        mask_len = np.maximum(1, np.minimum(np.sum(unknown_map, -1, keepdims=True) - 1, mask_len))
        # mask_by_random_topk
        temperature = choice_temperature * (1.0 - ratio)
        confidence = np.log(selected_probs) + temperature * g_choice
        sorted_confidence = np.sort(confidence, axis=-1)
        cut_off = np.take_along_axis(sorted_confidence, mask_len.astype(np.int64), axis=-1)
        masking = confidence < cut_off
        cur_ids = np.where(masking, mask_id, sampled_ids)
        states.append(cur_ids)
    return np.stack(final_seqs), np.stack(states)


def _replay_noise(B, N, K, steps, choice_temperature, seed):
    """The Gumbel noise minitok draws, in its order: per step (B, N, K), then (B, N) if used."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        sample = maskgit.gumbel_noise((B, N, K), g, "cpu")
        temperature = choice_temperature * (1 - (t + 1) / steps)
        choice = maskgit.gumbel_noise((B, N), g, "cpu") if temperature > 0 else torch.zeros(B, N)
        out.append((sample.numpy(), choice.numpy()))
    return lambda step: out[step]


@pytest.mark.parametrize("steps,choice_temperature,method,inpaint", [
    (8, 4.5, "cosine", False),
    (8, 0.0, "cosine", False),
    (12, 4.5, "cosine", True),
    (4, 1.0, "linear", True),
    (6, 2.0, "square", False),
])
def test_decode_equals_the_official_loop(device, steps, choice_temperature, method, inpaint):
    B, side, K, seed = 3, 6, 7, 11
    N = side * side
    model = FakeModel(B, side, K, seed=1, device=device)
    labels = torch.tensor([0, 3, 9], device=device)
    init_tokens = init_mask = None
    start = np.full((B, N), model.mask_id)
    if inpaint:
        g = torch.Generator().manual_seed(2)
        init_tokens = torch.randint(0, K, (B, side, side), generator=g)
        init_mask = torch.rand(B, side, side, generator=g) < torch.tensor([0.3, 0.6, 1.0])[:, None, None]
        start = init_tokens.masked_fill(init_mask, model.mask_id).view(B, N).numpy()
        init_tokens, init_mask = init_tokens.to(device), init_mask.to(device)

    def tokens_to_logits(ids):
        return model(torch.from_numpy(ids).to(device), labels).cpu().numpy()

    noise = _replay_noise(B, N, K, steps, choice_temperature, seed)
    final_seqs, states = official_decode(start, tokens_to_logits, steps, choice_temperature,
                                         noise, model.mask_id, method)
    tokens, trace = decode(model, labels, steps=steps, schedule=method,
                           choice_temperature=choice_temperature,
                           generator=torch.Generator().manual_seed(seed),
                           init_tokens=init_tokens, init_mask=init_mask, return_steps=True)
    assert tokens.shape == (B, side, side)
    np.testing.assert_array_equal(trace.predicted.view(steps, B, N).cpu().numpy(), final_seqs)
    # the reference keeps one token masked in its state after the last step, but returns
    # that step's samples; minitok's last state is the output itself
    np.testing.assert_array_equal(trace.revealed[:-1].view(steps - 1, B, N).cpu().numpy(),
                                  states[:-1])
    np.testing.assert_array_equal(tokens.view(B, N).cpu().numpy(), final_seqs[-1])


# --------------------------------------------------------------------------- decode's guarantees


def _inpainting_case(B=4, side=8, K=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    init_tokens = torch.randint(0, K, (B, side, side), generator=g)
    init_mask = torch.zeros(B, side, side, dtype=torch.bool)
    init_mask[0] = True  # everything
    init_mask[1, 2:6, 2:6] = True  # a 4x4 hole: 16 tokens
    init_mask[2, :, :3] = True  # 24 tokens
    init_mask[3, 0, 0] = True  # a single token
    return init_tokens, init_mask


@pytest.mark.parametrize("steps,method", [(8, "cosine"), (4, "linear"), (12, "square")])
def test_exactly_the_scheduled_number_is_masked_after_each_step(device, steps, method):
    init_tokens, init_mask = _inpainting_case()
    model = FakeModel(4, 8, 16, device=device)
    labels = torch.arange(4, device=device)
    _, trace = decode(model, labels, steps=steps, schedule=method,
                      generator=torch.Generator().manual_seed(0), init_tokens=init_tokens.to(device),
                      init_mask=init_mask.to(device), return_steps=True)
    still = (trace.revealed == model.mask_id).sum(dim=(2, 3)).T.cpu()  # (B, steps)
    for b in range(4):
        assert still[b].tolist() == mask_counts(int(init_mask[b].sum()), steps, method)
    assert len(model.calls) == steps  # one forward pass per step


def test_known_and_revealed_tokens_never_change(device):
    init_tokens, init_mask = _inpainting_case(seed=3)
    model = FakeModel(4, 8, 16, seed=5, device=device)
    tokens, trace = decode(model, torch.arange(4, device=device), steps=8,
                           generator=torch.Generator().manual_seed(1),
                           init_tokens=init_tokens.to(device), init_mask=init_mask.to(device),
                           return_steps=True)
    tokens, revealed = tokens.cpu(), trace.revealed.cpu()
    assert torch.equal(tokens[~init_mask], init_tokens[~init_mask])
    states = [init_tokens.masked_fill(init_mask, model.mask_id), *revealed]
    for t in range(len(states) - 1):
        known = states[t] != model.mask_id
        for later in states[t + 1:]:
            assert torch.equal(later[known], states[t][known])
    assert not (tokens == model.mask_id).any()
    assert ((tokens >= 0) & (tokens < model.num_codes)).all()
    # what the model saw: known tokens, mask ids, nothing else
    for seen in model.calls:
        assert ((seen < model.num_codes) | (seen == model.mask_id)).all()


def test_decode_is_reproducible_and_the_generator_matters():
    model = FakeModel(2, 4, 8)
    labels = torch.tensor([1, 2])
    a = decode(model, labels, generator=torch.Generator().manual_seed(0))
    b = decode(model, labels, generator=torch.Generator().manual_seed(0))
    c = decode(model, labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- the two pieces


def test_confidence_is_the_probability_of_the_sampled_token(device, gen):
    logits = (torch.randn(3, 20, 9, generator=gen) * 3).to(device)
    tokens = torch.randint(0, 9, (3, 20), generator=gen).to(device)
    unknown = (torch.rand(3, 20, generator=gen) < 0.6).to(device)
    tokens = tokens.masked_fill(unknown, 50)
    sampled, confidence = maskgit.sample_with_confidence(logits, tokens, 50, gen)
    probs = torch.softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]
    torch.testing.assert_close(confidence[unknown], probs[unknown])
    assert torch.isinf(confidence[~unknown]).all() and (confidence[~unknown] > 0).all()
    assert torch.equal(sampled[~unknown], tokens[~unknown])


def test_sampling_follows_softmax(gen):
    p = torch.tensor([0.05, 0.15, 0.3, 0.5])
    logits = p.log().expand(1, 20000, 4).clone()
    tokens = torch.full((1, 20000), 9)
    sampled, _ = maskgit.sample_with_confidence(logits, tokens, 9, gen)
    freq = torch.bincount(sampled[0], minlength=4).double() / 20000
    torch.testing.assert_close(freq, p.double(), atol=0.015, rtol=0)


def test_remask_at_choice_temperature_zero_is_the_lowest_probabilities(device, gen):
    conf = torch.rand(5, 30, generator=gen).to(device)
    conf[:, :7] = math.inf  # known
    n_mask = torch.tensor([0, 1, 5, 12, 23], device=device)
    chosen = maskgit.remask_lowest(conf, n_mask, 0.0)
    for b in range(5):
        lowest = conf[b].argsort()[: int(n_mask[b])]
        assert set(chosen[b].nonzero().flatten().tolist()) == set(lowest.tolist())


def test_remask_never_chooses_known_and_counts_exactly(device, gen):
    conf = torch.rand(64, 16, generator=gen).to(device)
    known = (torch.rand(64, 16, generator=gen) < 0.5).to(device)
    known[:, 0] = False  # at least one unknown per row
    conf = conf.masked_fill(known, math.inf)
    n_unknown = (~known).sum(dim=1)
    n_mask = torch.randint(0, 100, (64,), generator=gen).to(device) % n_unknown
    for _ in range(5):
        chosen = maskgit.remask_lowest(conf, n_mask, 4.5, gen)
        assert torch.equal(chosen.sum(dim=1), n_mask)
        assert not (chosen & known).any()


def test_remask_noise_is_on_log_confidence(gen):
    # P(re-mask the lower of c1 < c2, one of two) = sigmoid(log(c2 / c1) / T) for Gumbel noise
    pair = torch.tensor([[1e-4, 3e-4]]).expand(20000, 2).contiguous()
    chosen = maskgit.remask_lowest(pair, torch.ones(20000, dtype=torch.long), 2.0, gen)
    expected = 1 / (1 + math.exp(-math.log(3) / 2))
    assert abs(chosen[:, 0].double().mean().item() - expected) < 0.015


# --------------------------------------------------------------------------- training


def test_random_mask_counts_and_no_answers_shown(device, gen):
    tokens = torch.randint(0, 30, (6, 64), generator=gen).to(device)
    ratio = torch.tensor([0.0, 0.1, 0.5, 0.77, 0.99, 1.0], dtype=torch.float64)
    inputs, mask = random_mask(tokens, 99, "cosine", ratio.to(device), gen)
    expected = [math.ceil(max(math.cos(math.pi / 2 * r), 1e-6) * 64) for r in ratio.tolist()]
    assert mask.sum(dim=1).tolist() == expected
    assert mask.sum(dim=1).min() >= 1
    assert (inputs[mask] == 99).all()
    assert torch.equal(inputs[~mask], tokens[~mask])


def test_training_mask_fraction_is_two_over_pi(gen):
    tokens = torch.zeros(20000, 256, dtype=torch.long)
    _, mask = random_mask(tokens, 1, "cosine", None, gen)
    # E[ceil(gamma N)] / N = 2/pi + about 1/(2N) for rounding up; the mean of 20000 rows
    # has a standard deviation of about 0.3 / sqrt(20000) = 0.002
    assert abs(mask.double().mean().item() - (2 / math.pi + 0.5 / 256)) < 0.006


def test_training_mask_positions_are_uniform(gen):
    tokens = torch.zeros(20000, 16, dtype=torch.long)
    _, mask = random_mask(tokens, 1, "linear", torch.full((20000,), 0.75), gen)  # 4 of 16
    freq = mask.double().mean(dim=0)
    assert (mask.sum(dim=1) == 4).all()
    torch.testing.assert_close(freq, torch.full((16,), 0.25, dtype=torch.float64), atol=0.015,
                               rtol=0)


def test_masked_loss_counts_only_masked_positions(device, gen):
    logits = torch.randn(3, 10, 6, generator=gen).to(device).requires_grad_()
    targets = torch.randint(0, 6, (3, 10), generator=gen).to(device)
    mask = (torch.rand(3, 10, generator=gen) < 0.5).to(device)
    loss = maskgit.masked_loss(logits, targets, mask)
    torch.testing.assert_close(loss, F.cross_entropy(logits[mask], targets[mask]))
    loss.backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()
    smooth = maskgit.masked_loss(logits, targets, mask, label_smoothing=0.1)
    torch.testing.assert_close(
        smooth, F.cross_entropy(logits[mask], targets[mask], label_smoothing=0.1))


# --------------------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors():
    model = FakeModel(2, 4, 8)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        decode(model, labels, steps=0)
    with pytest.raises(ValueError, match="schedule must be one of cosine, linear, square .*got 'cosin'"):
        decode(model, labels, schedule="cosin")
    with pytest.raises(ValueError, match="schedule must be one of"):
        gamma("pow-1", 0.5)
    with pytest.raises(ValueError, match="ratio must be in"):
        gamma("cosine", 1.5)
    with pytest.raises(ValueError, match="ratio must be in"):
        gamma("cosine", torch.tensor([0.5, float("nan")]))
    tokens = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"init_tokens and init_mask must both be \(B, G, G\)"):
        decode(model, labels, init_tokens=tokens, init_mask=torch.ones(2, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"init_tokens and init_mask must both be \(B, G, G\)"):
        decode(model, labels, init_tokens=torch.zeros(2, 16, dtype=torch.long),
               init_mask=torch.ones(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs both init_tokens"):
        decode(model, labels, init_mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="init_mask must be a bool"):
        decode(model, labels, init_tokens=tokens, init_mask=torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], got values in \[0, 10\]"):
        decode(model, torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        decode(model, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"choice_temperature must lie in \[0, inf\]"):
        decode(model, labels, choice_temperature=-1.0)
    with pytest.raises(ValueError, match="cfg_scale must be a finite number"):
        decode(model, labels, cfg_scale=float("inf"))
    with pytest.raises(ValueError, match="n_masked must be a non-negative int, got -1"):
        mask_counts(-1, 8)
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        mask_counts(10, 0)
    with pytest.raises(ValueError, match="mask: no position is masked"):
        maskgit.masked_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                            torch.zeros(1, 2, dtype=torch.bool))


# --------------------------------------------------------------------------- the model


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    config = maskgit.MaskGITConfig(num_codes=12, grid_size=4, n_layer=2, n_head=2, n_embd=32,
                                   dropout=0.0, **kw)
    return maskgit.MaskGIT(config).eval()


def test_token_layout_is_the_references():
    config = maskgit.MaskGITConfig(num_codes=512)
    # codes 0..K-1, class tokens K + label, the null class, then [MASK]
    null_id = config.num_codes + config.null_class
    assert (config.null_class, null_id, config.mask_id, config.vocab_size) == (10, 522, 523, 524)
    assert config.tokens_per_image == 64
    assert config.transformer_config().causal is False
    assert config.transformer_config().block_size == 1 + 64


def test_the_layout_extends_the_ar_priors_and_each_model_takes_only_its_own_config():
    config = maskgit.MaskGITConfig(num_codes=12, grid_size=4, n_layer=1, n_head=2, n_embd=16)
    ar = PriorConfig(num_codes=12, grid_size=4, n_layer=1, n_head=2, n_embd=16)
    assert config.null_class == ar.null_class and config.vocab_size == ar.vocab_size + 1
    assert config.tokens_per_image == ar.tokens_per_image
    assert not isinstance(config, PriorConfig)  # siblings, not parent and child
    assert ar.transformer_config().causal is True  # the prior stays causal
    assert config.transformer_config().causal is False
    same = ("n_layer", "n_head", "n_embd", "block_size")
    assert ([getattr(config.transformer_config(), k) for k in same]
            == [getattr(ar.transformer_config(), k) for k in same])
    with pytest.raises(TypeError, match="config must be a PriorConfig, got MaskGITConfig"):
        ARPrior(config)  # would build a bidirectional "prior"
    with pytest.raises(TypeError, match="config must be a MaskGITConfig, got PriorConfig"):
        maskgit.MaskGIT(ar)
    with pytest.raises(ValueError, match="n_embd must be a positive int, got 0"):
        maskgit.MaskGITConfig(num_codes=12, n_embd=0)  # the prior's checks


def test_model_reads_the_class_token_first_and_returns_code_logits(device):
    model = _tiny().to(device)
    tokens = torch.randint(0, 12, (3, 16), device=device)
    labels = torch.tensor([0, 4, 10], device=device)  # 10 = the null class
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    logits = model(tokens, labels)
    hook.remove()
    assert logits.shape == (3, 16, 12)  # cut to the K codes
    assert torch.equal(seen[0][:, 0], labels + 12) and torch.equal(seen[0][:, 1:], tokens)
    full = model.transformer(seen[0])
    torch.testing.assert_close(logits, full[:, 1:, :12])


def test_model_is_bidirectional(device):
    model = _tiny().to(device)
    tokens = torch.randint(0, 12, (1, 16), device=device)
    labels = torch.tensor([3], device=device)
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 12
    # the first position's prediction depends on the last token: attention goes both ways
    assert not torch.allclose(model(tokens, labels)[0, 0], model(changed, labels)[0, 0])


def test_training_input_never_shows_the_answers(gen):
    model = _tiny()
    codes = torch.randint(0, 12, (64, 4, 4), generator=gen)
    labels = torch.randint(0, 10, (64,), generator=gen)
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    loss = maskgit.maskgit_loss(model, codes, labels, p_uncond=0.5, generator=gen)
    hook.remove()
    grid = seen[0][:, 1:]  # (B, N) what the model read after the class token
    hidden = grid == model.mask_id
    assert hidden.any(dim=1).all()  # every row hides at least one token
    assert torch.equal(grid[~hidden], codes.view(64, -1)[~hidden])  # the rest is the truth
    dropped = seen[0][:, 0] == 12 + model.config.null_class  # the null class's token
    assert 10 < int(dropped.sum()) < 54  # about half with p_uncond = 0.5
    assert torch.equal(seen[0][~dropped, 0], labels[~dropped] + 12)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.slow
def test_training_reduces_the_loss_and_is_reproducible():
    # two grids, one per class: the model can learn them by heart in a few steps
    codes = torch.randint(0, 12, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3, 5])
    a = maskgit.train_maskgit(_tiny(), codes, labels, steps=60, batch_size=8, lr=5e-3,
                              progress=False)
    b = maskgit.train_maskgit(_tiny(), codes, labels, steps=60, batch_size=8, lr=5e-3,
                              progress=False)
    assert a == b
    assert sum(a[-10:]) / 10 < 0.5 * sum(a[:10]) / 10


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = _tiny(seed=3)
    path = checkpoints.save(model, tmp_path / "m.pt", meta={"seed": 3})
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "maskgit"
    loaded = checkpoints.load("maskgit", path)
    assert loaded.config == model.config
    tokens = torch.randint(0, 12, (2, 16))
    labels = torch.tensor([1, 2])
    torch.testing.assert_close(loaded(tokens, labels), model(tokens, labels))
    assert loaded.meta == {"seed": 3} and not loaded.training


def test_decode_with_a_real_model_and_guidance(device):
    model = _tiny().to(device)
    labels = torch.tensor([1, 7], device=device)
    calls = []
    hook = model.transformer.register_forward_pre_hook(lambda m, args: calls.append(args[0]))
    grids = decode(model, labels, steps=5, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    hook.remove()
    assert grids.shape == (2, 4, 4) and ((grids >= 0) & (grids < 12)).all()
    assert len(calls) == 5 and calls[0].shape[0] == 4  # one doubled [cond; null] pass per step
    null_id = 12 + model.config.null_class
    assert torch.equal(calls[0][2:, 0], torch.full((2,), null_id, device=device))


def test_decode_hands_the_steps_to_its_loop():
    """maskgit.decode(loop=...) runs a learner's loop in its frame (Lesson 06 draws with it)."""
    model = _tiny()
    labels = torch.tensor([1, 7])
    seen = []

    def loop(*args):
        seen.append(args)
        return maskgit.decode_loop(*args)

    mine = decode(model, labels, steps=3, generator=torch.Generator().manual_seed(0), loop=loop)
    theirs = decode(model, labels, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mine, theirs) and len(seen) == 1 and seen[0][3] == 3


def test_race_draws_maskgit_with_a_given_generator():
    from minitok import evaluate

    tokenizer = checkpoints.load("tokenizer")
    model = checkpoints.load("maskgit")
    calls = []

    def mine(*args, **kwargs):
        calls.append(kwargs["steps"])
        return decode(*args, **kwargs)

    rows = evaluate.race(model, None, tokenizer, evaluate_classifier(), [
        evaluate.RaceSetting("MaskGIT", 2)], samples_per_class=2, timing=False,
        generators={"MaskGIT": mine})
    assert calls == [2] and rows[0]["passes/image"] == 2


def evaluate_classifier():
    from minitok.classifier import load_classifier

    return load_classifier()


# --------------------------------------------------------------------------- the shipped model


def test_shipped_maskgit_matches_the_shipped_tokenizer_and_prior():
    model, tokenizer = checkpoints.load("maskgit"), checkpoints.load("tokenizer")
    # trained on the shipped tokenizer's token grids (retrain it if the tokenizer changed)
    assert model.meta["tokenizer_sha256"] == tokenizer.checkpoint_sha256
    checkpoints.check_tokenizer(model, tokenizer)
    prior = checkpoints.load("prior")
    ours, theirs = model.transformer.config, prior.transformer.config
    assert (ours.n_layer, ours.n_head, ours.n_embd) == (theirs.n_layer, theirs.n_head, theirs.n_embd)
    recipe = model.meta["recipe"]
    assert {k: recipe[k] for k in prior.meta["recipe"]} == {**prior.meta["recipe"],
                                                            "seed": recipe["seed"]}
    # the script's defaults are the shipped recipe: rerunning it rebuilds this checkpoint
    script = load_script("scripts/train_maskgit.py")
    assert recipe == {**script.prior_recipe(), "label_smoothing": 0.0, "seed": recipe["seed"]}
    assert model.meta["script"] == "scripts/train_maskgit.py"
    assert model.config.num_codes == prior.config.num_codes
    # how it was made, recorded
    assert model.meta["torch"] and model.meta["machine"] and "final_loss" in model.meta["results"]
    assert "temporary" not in str(model.meta)


@pytest.mark.slow
def test_shipped_maskgit_draws_recognisable_digits():
    from minitok.classifier import load_classifier

    model, tokenizer = checkpoints.load("maskgit"), checkpoints.load("tokenizer")
    labels = torch.arange(100) % 10
    grids = decode(model, labels, steps=8, generator=torch.Generator().manual_seed(0))
    accuracy = load_classifier().accuracy(tokenizer.decode(grids), labels)
    assert accuracy > 0.9


# --------------------------------------------------------------------------- the benchmark


def _bench():
    return bench_maskgit


def _row(setting, passes, positions, ms1, ms64, accuracy):
    return {"setting": setting, "passes/image": passes, "positions/image": positions,
            "ms/image @1": ms1, "ms/image @64": ms64, "accuracy": accuracy, "diversity": 1.0}


def test_benchmark_goal_lines_say_met_and_not_met():
    bench = _bench()
    ar = _row("AR (KV cache)", 64, 64, 10.0, 0.5, 0.95)
    good = _row("MaskGIT 8 cosine", 8, 520, 2.0, 0.25, 0.94)
    lines = bench.goal_lines([ar, good])
    assert "1.0 points below AR" in lines[0] and "-> met" in lines[0]
    assert "8.0x fewer" in lines[1] and "-> met" in lines[1]
    assert "5.00x" in lines[2] and "-> met" in lines[2]
    assert "NOT faster" not in lines[3] and "8.1x the token positions" in lines[3]
    bad = _row("MaskGIT 8 cosine", 8, 520, 12.0, 1.0, 0.92)  # 3 points worse, slower
    lines = bench.goal_lines([ar, bad])
    assert "3.0 points below AR" in lines[0] and "NOT met" in lines[0] and "NOT met" in lines[2]
    assert "MaskGIT is NOT faster here" in lines[3]
    better = _row("MaskGIT 8 cosine", 8, 520, 2.0, 0.25, 0.99)
    assert "4.0 points above AR" in bench.goal_lines([ar, better])[0]
    assert "-> met" in bench.goal_lines([ar, better])[0]


@pytest.mark.slow
def test_benchmark_quick_smoke_run(capsys):
    threads = torch.get_num_threads()
    try:
        _bench().main(["--quick"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for setting in ("AR (KV cache)", "MaskGIT 4 cosine", "MaskGIT 8 cosine", "MaskGIT 12 cosine",
                    "MaskGIT 8 linear", "MaskGIT 8 square"):
        assert setting in out
    for goal in ("accuracy: MaskGIT 8 steps", "forward passes per image: AR 64 vs MaskGIT 8",
                 "latency at batch 1", "throughput at batch 64"):
        assert goal in out


def test_a_label_beyond_the_null_class_is_refused_whatever_the_random_state():
    """The labels are checked before some are dropped to the null class: checked after, a bad
    label dropped by chance (p_uncond of the time) passed without a word."""
    config = maskgit.MaskGITConfig(num_codes=12, grid_size=4, n_layer=1, n_head=2, n_embd=16)
    model = maskgit.MaskGIT(config)
    codes = torch.zeros(3, 4, 4, dtype=torch.long)
    labels = torch.tensor([0, 1, model.null_class + 1])
    for seed in range(40):  # 0.9 ** 40: a check after the drop passes at some seed
        with pytest.raises(ValueError, match="labels"):
            maskgit.maskgit_loss(model, codes, labels, p_uncond=0.9,
                                 generator=torch.Generator().manual_seed(seed))
