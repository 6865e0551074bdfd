"""Checks for Lesson 07: the shared vocabulary, the answer-only loss, constrained decoding.

Each check runs small cases built by hand, in the order that makes the first failure name
the classic mistake: image codes not shifted past the text ids, the grid read column by
column, a missing <boi>/<eoi>/<eot>, the parts out of order; targets not shifted, the prompt
or the padding left in the loss, an off-by-one at the answer's first token; image ids
allowed in text, <eoi> not forced (or forced one code early), codes counted from the wrong
<boi>; in the generation loop, forbidden ids not masked before the draw, the mask read from
stale tokens, the generator or the sampling options ignored, top-k before the mask, no stop
(or a stop at the first finished document).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from minitok import anytoany, vocab
from minitok.checks._core import (
    CheckFailed,
    Remote,
    exercise,
    expect,
    expect_equal,
    expect_shape,
    expect_tensor,
    show_hint,
)

# A vocabulary small enough to read: text ids 0..3 ('a', 'b', ' ', 'c'), image ids 4..8
# (codes 0..4), then <boi> 9, <eoi> 10, <eot> 11, <pad> 12. Images are 2 x 2 grids.
TINY = vocab.Vocabulary(num_codes=5, grid_size=2, alphabet="ab c")


def _first_match(got: torch.Tensor, wrong: list[tuple[str, torch.Tensor]]) -> str | None:
    """The hint of the first known wrong answer that `got` equals exactly, if any."""
    for hint, value in wrong:
        if isinstance(got, torch.Tensor) and got.shape == value.shape and torch.equal(
            got.cpu().long(), value.long()
        ):
            return hint
    return None


def _expect_sequence(got, expected: torch.Tensor, what: str, wrong: list,
                     hint: str) -> None:
    expect_tensor(got, what, hint="return one 1-D tensor of ids, e.g. torch.cat(pieces).")
    expect(got.dtype == torch.long, f"{what} should have dtype torch.int64, got {got.dtype}",
           hint="token ids are int64 (torch.long), as nn.Embedding expects.")
    if torch.equal(got.cpu(), expected):
        return
    expect_equal(got, expected, what, hint=_first_match(got, wrong) or hint)


# --------------------------------------------------------------------------- build_sequence

OFFSET_HINT = ("image code c has id vocab.image_offset + c: without the offset, image codes "
               "collide with the text ids.")
RASTER_HINT = ("flatten the (G, G) grid row by row (raster order, grid.reshape(-1)), not "
               "column by column: the tokenizer's grid is read like text.")
MARKERS_HINT = "an image is vocab.boi, then its G*G codes, then vocab.eoi."
EOT_HINT = "a document ends with one vocab.eot after its last part."
ORDER_HINT = ("keep the parts in the order given (a caption before its image is text -> "
              "image, after it image -> text); do not group the texts and the images.")
IMAGE_HINT = ("an image is vocab.boi, its G*G codes + vocab.image_offset in raster order, "
              "then vocab.eoi; the document ends with vocab.eot.")
EOT_EACH_HINT = "one vocab.eot at the very end of the document, not one after every part."

BUILD_HINTS = (
    "A document is its parts in reading order, each turned into ids: text as its "
    "characters, an image as a span that opens, holds its codes and closes; then one "
    "end-of-document marker after everything.",
    "text -> vocab.encode_text(text) (len(text) ids); a (G, G) grid -> vocab.boi, its G*G "
    "codes in raster order plus vocab.image_offset, vocab.eoi (G*G + 2 ids); after the last "
    "part one vocab.eot. The total length is the sum of those plus 1.",
    "pieces = []\n"
    "for part in parts:\n"
    "    if isinstance(part, str):\n"
    "        pieces.append(...)                 # character ids\n"
    "    else:\n"
    "        pieces += [..., ..., ...]          # <boi>, shifted raster-order codes, <eoi>\n"
    "pieces.append(...)                         # <eot>\n"
    "return torch.cat(pieces)                   # (L,) int64",
)


def _piece(part, v) -> torch.Tensor:
    """One part's ids, as the reference writes them (no <eot>)."""
    if isinstance(part, str):
        return v.encode_text(part)
    return torch.cat([torch.tensor([v.boi]), part.reshape(-1) + v.image_offset,
                      torch.tensor([v.eoi])])


def _order_variants(parts, v) -> list[tuple[str, torch.Tensor]]:
    """The documents a learner who groups the parts, or ends each part, would write."""
    eot = torch.tensor([v.eot])
    texts = [p for p in parts if isinstance(p, str)]
    grids = [p for p in parts if not isinstance(p, str)]
    grouped = [texts + grids, grids + texts]
    return [(ORDER_HINT, torch.cat([_piece(p, v) for p in g] + [eot])) for g in grouped
            if [id(p) for p in g] != [id(p) for p in parts]] + [
        (EOT_EACH_HINT, torch.cat([torch.cat([_piece(p, v), eot]) for p in parts]))]


@exercise("build_sequence", reference=vocab.build_sequence, hints=BUILD_HINTS)
def build_sequence(fn):
    v = TINY
    # 1. text alone: its characters, then <eot>
    got = fn(["ab c"], v)
    _expect_sequence(got, torch.tensor([0, 1, 2, 3, 11]), 'build_sequence(["ab c"])',
                     [(EOT_HINT, torch.tensor([0, 1, 2, 3]))],
                     hint="text becomes vocab.encode_text(text); the document ends with vocab.eot.")

    # 2. an image alone: <boi>, the codes shifted and in raster order, <eoi>, <eot>
    grid = torch.tensor([[0, 1], [2, 4]])
    wrong = [
        (OFFSET_HINT, torch.tensor([9, 0, 1, 2, 4, 10, 11])),
        (RASTER_HINT, torch.tensor([9, 4, 6, 5, 8, 10, 11])),
        (MARKERS_HINT, torch.tensor([4, 5, 6, 8, 11])),
        (EOT_HINT, torch.tensor([9, 4, 5, 6, 8, 10])),
    ]
    got = fn([grid], v)
    _expect_sequence(got, torch.tensor([9, 4, 5, 6, 8, 10, 11]),
                     "build_sequence([grid]) with grid [[0, 1], [2, 4]]", wrong, IMAGE_HINT)

    # 3. both orders and several parts, with the course's vocabulary and an 8 x 8 grid
    g = torch.Generator().manual_seed(7)
    big = vocab.Vocabulary(num_codes=64, grid_size=8)
    grids = [torch.randint(0, 64, (8, 8), generator=g) for _ in range(2)]
    cases = [["the digit 7", grids[0]], [grids[0], "seven"],
             ["two", grids[0], "and", grids[1], "images"], [grids[1], grids[0]]]
    for parts in cases:
        before = [p.clone() if isinstance(p, torch.Tensor) else p for p in parts]
        expected = vocab.build_sequence(parts, big)
        variants = _order_variants(parts, big)
        got = fn(parts, big)
        kinds = ", ".join("text" if isinstance(p, str) else "grid" for p in parts)
        _expect_sequence(got, expected, f"build_sequence([{kinds}])",
                         variants,
                         hint="handle the parts in order: text as characters, each grid "
                              "as <boi> codes <eoi>, then one <eot>.")
        expect(all(torch.equal(a, b) for a, b in zip(parts, before, strict=True)
                   if isinstance(a, torch.Tensor)),
               "build_sequence changed a grid it was given",
               hint="compute the shifted codes into a new tensor (codes + offset), not in "
                    "place (+=) on the grid.")
    return ("text, a 2 x 2 image, captions before and after 8 x 8 images, two images, "
            "the grids left unchanged")


# --------------------------------------------------------------------------- masked_targets

SHIFT_HINT = ("targets are the next tokens, seqs[:, 1:], and inputs are seqs[:, :-1]: "
              "position j predicts token j + 1.")
PROMPT_HINT = ("the prompt is given, not predicted: set every target before answer_start "
               "to -100.")
OFF_BY_ONE_HINT = ("target j is the token at position j + 1 of seqs: keep it when "
                   "j + 1 >= answer_start (the answer's first token is predicted too).")
PAD_HINT = "padding is not part of the answer: set targets equal to vocab.pad to -100."
IGNORE_HINT = ("ignored targets must be -100, F.cross_entropy's ignore_index (0 or the pad "
               "id would be learned as real tokens).")
EOT_TARGET_HINT = ("<eot> is part of the answer: the model must learn where a document ends, so "
                   "keep the targets equal to vocab.eot (ignore only the prompt and the "
                   "padding).")
PAD_INPUTS_HINT = ("find the padding in the targets (seqs[:, 1:] == vocab.pad), not in the "
                   "inputs: the inputs are one position behind, so the target right after "
                   "<eot>'s is kept and <eot> itself is lost.")
ONE_START_HINT = ("answer_start holds one start per document: compare every row with its own "
                  "start, answer_start[:, None] (B, 1), not with the first row's.")
TARGETS_HINT = ("ignore (-100) exactly the targets of the prompt (positions before "
                "answer_start) and of the padding; keep every other next token.")


def _targets_variants(seqs, starts, v) -> list[tuple[str, torch.Tensor]]:
    """Each classic mistake's targets, with its hint."""
    L = seqs.shape[1]
    shifted = seqs[:, 1:]  # (B, L-1) the right targets before masking
    j = torch.arange(L - 1)[None, :]  # (1, L-1) target index
    pad = shifted == v.pad
    prompt = j + 1 < starts[:, None]  # the right mask of the prompt
    eot = shifted == v.eot
    return [
        (EOT_TARGET_HINT, shifted.masked_fill(prompt | pad | eot, -100)),
        (PAD_INPUTS_HINT, shifted.masked_fill(prompt | (seqs[:, :-1] == v.pad), -100)),
        (ONE_START_HINT, shifted.masked_fill((j + 1 < starts[0]) | pad, -100)),
        (PROMPT_HINT, shifted.masked_fill(pad, -100)),
        (OFF_BY_ONE_HINT, shifted.masked_fill(pad | (j < starts[:, None]), -100)),
        (OFF_BY_ONE_HINT, shifted.masked_fill(pad | (j + 2 < starts[:, None]), -100)),
        (PAD_HINT, shifted.masked_fill(prompt, -100)),
        (IGNORE_HINT, shifted.masked_fill(prompt | pad, 0)),
        (IGNORE_HINT, shifted.masked_fill(prompt | pad, v.pad)),
    ]


TARGETS_HINTS = (
    "Position j of the input predicts the token at position j + 1. A target that belongs to "
    "the prompt (it was given) or to the padding (not part of the document) must not count "
    "in the loss.",
    "inputs: seqs without its last token; targets: seqs without its first, both (B, L-1). "
    "Target j sits at position j + 1 of seqs: ignore it when that position comes before "
    "answer_start[b], or when it is vocab.pad. Ignored means F.cross_entropy's "
    "ignore_index, -100.",
    "targets = seqs[:, 1:].clone()               # never write into seqs\n"
    "position = torch.arange(1, L)              # where each target sits in seqs\n"
    "in_prompt = position[None, :] < ...        # (B, L-1)\n"
    "targets[in_prompt | (targets == ...)] = -100",
)


@exercise("masked_targets", reference=anytoany.masked_targets, hints=TARGETS_HINTS)
def masked_targets(fn):
    v = TINY
    # Two documents: "ab" -> image (answer = the codes onwards, starts at 3), and
    # image -> "ca b" (answer starts at 6, after <eoi>); the first one is padded.
    seqs = torch.tensor([
        [0, 1, 9, 4, 5, 6, 7, 10, 11, 12, 12],
        [9, 8, 7, 6, 5, 10, 3, 0, 2, 1, 11],
    ])
    starts = torch.tensor([3, 6])
    before = seqs.clone()
    out = fn(seqs, starts, v)
    expect(isinstance(out, tuple) and len(out) == 2,
           f"masked_targets should return (inputs, targets), got {type(out).__name__}",
           hint="return inputs, targets")
    inputs, targets = out
    expect_shape(targets, (2, 10), "targets", hint=SHIFT_HINT)
    expect_equal(inputs, seqs[:, :-1], "inputs", hint=SHIFT_HINT)
    expect(torch.equal(seqs, before), "masked_targets changed seqs in place",
           hint="clone seqs[:, 1:] before writing -100 into it: slicing shares memory.")
    expected = anytoany.masked_targets(seqs, starts, v)[1]
    if not torch.equal(targets.cpu(), expected):
        hint = _first_match(targets, _targets_variants(seqs, starts, v))
        expect_equal(targets, expected, "targets", hint=hint or TARGETS_HINT)

    # A random batch from the course's data stream (both directions, padding, all lengths).
    g = torch.Generator().manual_seed(3)
    big = vocab.Vocabulary(num_codes=64, grid_size=8)
    data = anytoany.CaptionedDigits(torch.randint(0, 64, (20, 8, 8), generator=g),
                                    torch.arange(20) % 10, big)
    seqs, starts = data.batch(16, g)
    expected_inputs, expected = anytoany.masked_targets(seqs, starts, big)
    inputs, targets = fn(seqs, starts, big)
    expect_equal(inputs, expected_inputs, "inputs (a batch of the course's data)", hint=SHIFT_HINT)
    hint = _first_match(targets, _targets_variants(seqs, starts, big))
    expect_equal(targets, expected, "targets (a batch of the course's data)",
                 hint=hint or TARGETS_HINT)
    return "both directions, padding, the answer's first token, seqs left unchanged"


# --------------------------------------------------------------------------- allowed_next

def _ids(v, which: str) -> torch.Tensor:
    """The (V,) row that the grammar allows in a given state."""
    ids = torch.arange(v.size)
    if which == "text":
        return v.is_text(ids) | (ids == v.eot) | (ids == v.boi)
    if which == "image":
        return v.is_image(ids)
    return ids == {"eoi": v.eoi, "pad": v.pad}[which]


def _expect_allowed(fn, v, prefix: list[int], state: str, what: str, hints: dict) -> None:
    """Run fn on one prefix and compare with the allowed row of `state`."""
    got = fn(torch.tensor([prefix]), v)
    expect_tensor(got, what, dtype=torch.bool,
                  hint="return a (B, V) bool tensor, True where the id may come next.")
    expect_shape(got, (1, v.size), what, hint="one row of V booleans per prefix.")
    expected = _ids(v, state)[None, :]
    if torch.equal(got.cpu(), expected):
        return
    row = got[0].cpu()
    ids = torch.arange(v.size)
    hint = hints.get("default")
    if (row & v.is_image(ids)).any() and state != "image":
        hint = hints.get("image", hint)
    elif (row & v.is_text(ids)).any() and state != "text":
        hint = hints.get("text", hint)
    elif bool(row[v.eoi]) != bool(expected[0, v.eoi]):
        hint = hints.get("eoi", hint)
    expect_equal(got, expected, what, hint=hint)


ALLOWED_HINTS = (
    "Read each row's state from its own tokens: finished (it holds an <eot>), inside an "
    "image (its last <boi> comes after its last <eoi>) and how many codes that image holds "
    "so far, or in text. Each state allows one fixed set of ids.",
    "last_boi, last_eoi: the largest position holding each (-1 if none); in an image: "
    "last_boi > last_eoi and not finished; codes so far: T - 1 - last_boi. Allowed: "
    "finished -> {<pad>}; an image with fewer than G*G codes -> the image ids; with G*G -> "
    "{<eoi>}; text -> the text ids, <eot> and <boi>.",
    "position = torch.arange(T)\n"
    "last_boi = torch.where(tokens == vocab.boi, position, -1).max(dim=1).values   # (B,)\n"
    "...\n"
    "allowed = torch.zeros(B, vocab.size, dtype=torch.bool)\n"
    "allowed[ended] = ids == vocab.pad            # ids = torch.arange(vocab.size)\n"
    "allowed[in_image & (n_codes < ...)] = vocab.is_image(ids)\n"
    "...",
)


@exercise("allowed_next", reference=anytoany.allowed_next, hints=ALLOWED_HINTS)
def allowed_next(fn):
    v = TINY  # text 0..3, image 4..8, <boi> 9, <eoi> 10, <eot> 11, <pad> 12; 4 codes per image
    boi, eoi, eot, pad = v.boi, v.eoi, v.eot, v.pad
    no_image_in_text = "in text no image id may come next (only text ids, <eot> or <boi>)."
    _expect_allowed(fn, v, [0, 1], "text", 'allowed after the text "ab"', {
        "image": no_image_in_text,
        "default": "in text: every text id, <eot> (finish) and <boi> (start an image).",
    })
    _expect_allowed(fn, v, [0, boi], "image", "allowed right after <boi>", {
        "text": "inside an image span only image ids may come next.",
        "eoi": "<eoi> comes only after exactly grid_size**2 codes.",
        "default": "right after <boi> only image ids are allowed.",
    })
    _expect_allowed(fn, v, [0, boi, 4, 5, 6], "image", "allowed after <boi> and 3 of 4 codes", {
        "text": "inside an image span only image ids may come next.",
        "eoi": "count the codes after <boi> (not <boi> itself): with 3 of 4 codes written, "
               "<eoi> is one code too early.",
    })
    _expect_allowed(fn, v, [0, boi, 4, 5, 6, 7], "eoi", "allowed after <boi> and 4 of 4 codes", {
        "image": "force <eoi> after exactly grid_size**2 codes: only <eoi> may come next.",
        "text": "force <eoi> after exactly grid_size**2 codes: only <eoi> may come next.",
        "default": "force <eoi> after exactly grid_size**2 codes: only <eoi> may come next.",
    })
    _expect_allowed(fn, v, [boi, 4, 5, 6, 7, eoi], "text", "allowed after a closed image", {
        "image": "after <eoi> the image is closed and we are back in text: no image ids.",
        "default": "after <eoi> the image is closed and we are back in text.",
    })
    _expect_allowed(fn, v, [boi, 4, 5, 6, 7, eoi, 0, boi, 8], "image",
                    "allowed in a second image holding 1 code", {
        "eoi": "count the codes after the LAST <boi>, not the first one.",
        "text": "a second <boi> opens a new image span: read the state from the LAST <boi> "
                "(is it after the last <eoi>?), then only image ids.",
        "default": "count the codes after the LAST <boi>, not the first one.",
    })
    _expect_allowed(fn, v, [0, 1, eot], "pad", "allowed after <eot>", {
        "default": "after <eot> the document is over: only <pad> may follow.",
        "text": "after <eot> the document is over: only <pad> may follow.",
        "image": "after <eot> the document is over: only <pad> may follow.",
    })
    _expect_allowed(fn, v, [boi, 4, 5, 6, 7, eoi, eot, pad], "pad", "allowed after <eot> <pad>", {
        "default": "after <eot> the document is over: only <pad> may follow.",
    })

    # A batch of prefixes in different states, and the course's vocabulary: every row is
    # 72 tokens long, text filling the front where a row needs it.
    g = torch.Generator().manual_seed(5)
    big = vocab.Vocabulary(num_codes=64, grid_size=8)

    def text(n: int) -> torch.Tensor:
        return big.encode_text(("a handwritten seven " * 4)[:n])

    def codes(n: int) -> torch.Tensor:
        return torch.randint(0, 64, (n,), generator=g) + big.image_offset

    boi, eoi, eot, pad = (torch.tensor([t]) for t in (big.boi, big.eoi, big.eot, big.pad))
    rows = [torch.cat([text(71 - n), boi, codes(n)]) for n in (0, 1, 37, 63, 64)]
    rows.append(torch.cat([boi, codes(64), eoi, text(6)]))  # a caption being written
    rows.append(torch.cat([boi, codes(64), eoi, text(3), eot, pad, pad]))  # finished
    batch = torch.stack(rows)  # (7, 72)
    before = batch.clone()
    expect_equal(fn(batch, big), anytoany.allowed_next(batch, big),
                 "allowed (a batch of 7 prefixes, 8 x 8 grids)",
                 hint="decide each row from its own tokens: rows are independent documents.")
    expect(torch.equal(batch, before), "allowed_next changed the tokens it was given",
           hint="read tokens, never write into them.")
    return "text, every count of codes in a span, forced <eoi>, a second image, after <eot>, a batch"


# --------------------------------------------------------------------------- constrained_generate

NOT_MASKED_HINT = ("forbid before you draw: set the logits of every id that allowed_next(tokens, "
                   "vocab) rules out to -inf, then sample from those logits. Zeroing "
                   "probabilities after a softmax and then treating them as logits (or "
                   "masking after the draw) still lets a forbidden id through.")
STALE_MASK_HINT = ("the mask must come from every token so far, the prompt and the token drawn "
                   "last step included: with a prefix one token short, a forbidden id slips "
                   "through (an image gets one code too many, text follows <boi>, ...).")
STEP_HINT = ("with greedy=True there is no randomness, so the tokens must be the reference's: "
             "use the logits of the LAST position (model(...)[:, -1]); with the cache, feed "
             "the prompt once, then only the newest token (B, 1) each step.")
GENERATOR_HINT = ("draw with the `generator` you are given (sample_logits(..., "
                  "generator=generator)), never the global RNG: the same seed must give the "
                  "same tokens.")
SAMPLE_HINT = ("draw once per step with sample_logits(logits, temperature=temperature, "
               "top_k=top_k, generator=generator, greedy=greedy) on the masked logits of the "
               "last position, so that the same seed gives the same tokens.")
TEMPERATURE_HINT = "pass temperature on to sample_logits: the draws at temperature 0.5 differ."
TOPK_HINT = ("mask first, then let sample_logits apply top_k: the top-k of the unmasked "
             "logits can be all forbidden ids, leaving nothing to draw.")
FREE_HINT = "with constrained=False draw from the model's raw logits: no mask at all."
NO_STOP_HINT = ("stop as soon as every row holds <eot> (the documents are over): your output "
                "runs on to max_new_tokens.")
ANY_STOP_HINT = ("stop only once EVERY row holds <eot>: rows that finished early keep "
                 "getting <pad> while the others write on.")

GENERATE_HINTS = (
    "Generation is a loop: run the model, take the last position's logits, forbid what the "
    "grammar forbids, draw one token, append it, repeat. With a KV cache the model reads the "
    "prompt once and then only the newest token.",
    "Each step: logits (B, V) of the last position; forbidden ids (allowed_next of all the "
    "tokens so far is False) get -inf, so the softmax gives them probability exactly 0; one "
    "token per row from sample_logits(logits, temperature, top_k, generator, greedy); the "
    "tokens grow by one column. Stop when every row holds <eot>; return prompt + new tokens.",
    "cache = model.new_cache(B, max_len=T0 + max_new_tokens)\n"
    "tokens, step_input = prompt, prompt\n"
    "for _ in range(max_new_tokens):\n"
    "    logits = model(step_input, cache)[:, -1, :]\n"
    "    if constrained:\n"
    "        logits = logits.masked_fill(..., float('-inf'))\n"
    "    next_token = sample_logits(logits, ...)         # (B,)\n"
    "    step_input = next_token[:, None]\n"
    "    tokens = torch.cat([tokens, step_input], dim=1)\n"
    "    if ...: break",
)


class Tilted(nn.Module):
    """A small any-to-any model whose logits get a fixed `bias`: a model that prefers the ids
    the grammar forbids (so an unmasked draw shows at once)."""

    def __init__(self, model: anytoany.AnyToAny, bias: torch.Tensor):
        super().__init__()
        self.model = model
        self.vocab = model.vocab
        self.register_buffer("bias", bias)

    def new_cache(self, batch_size: int, max_len: int | None = None):
        return self.model.new_cache(batch_size, max_len)

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        return self.model(idx, cache) + self.bias

    @property
    def block_size(self) -> int:
        return self.model.block_size

    @property
    def device(self) -> torch.device:
        return self.model.device


def _tilted_model(favoured: dict[int, float], seed: int) -> Tilted:
    """An untrained 1-layer model over TINY, its weights drawn large (so that logits are far
    apart and greedy choices are clear), plus a bias on the `favoured` ids."""
    config = anytoany.AnyToAnyConfig(num_codes=TINY.num_codes, grid_size=TINY.grid_size,
                                     alphabet=TINY.alphabet, n_layer=1, n_head=2, n_embd=12,
                                     dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # the global RNG stays untouched
        model = anytoany.AnyToAny(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    bias = torch.zeros(TINY.size)
    for token, value in favoured.items():
        bias[token] = value
    return Tilted(model, bias).eval()


def _violation(out: torch.Tensor, T0: int, v) -> tuple[int, int, str] | None:
    """The first generated token the grammar forbids: (row, step, hint), or None."""
    out = out.cpu().long()
    for j in range(T0, out.shape[1]):
        allowed = anytoany.allowed_next(out[:, :j], v)  # (B, V)
        bad = ~allowed.gather(1, out[:, j : j + 1].clamp(0, v.size - 1))[:, 0]
        bad |= (out[:, j] < 0) | (out[:, j] >= v.size)
        if bad.any():
            row = int(bad.nonzero()[0])
            token = int(out[row, j])
            # allowed one step earlier: the mask was read from a prefix one token short
            stale = j > T0 and 0 <= token < v.size and bool(
                anytoany.allowed_next(out[row : row + 1, : j - 1], v)[0, token])
            return row, j - T0, STALE_MASK_HINT if stale else NOT_MASKED_HINT
    return None


def _generate(fn, model, prompt, n, **options):
    """fn's output, type-checked; the prompt must come back unchanged and first."""
    before = prompt.clone()
    out = fn(model, prompt, n, **options)
    expect_tensor(out, "constrained_generate's output", dtype=torch.long,
                  hint="return the (B, T0 + new) int64 tokens: the prompt, then the new ones.")
    expect(out.dim() == 2 and out.shape[0] == prompt.shape[0]
           and prompt.shape[1] < out.shape[1] <= prompt.shape[1] + n,
           f"the output should have shape ({prompt.shape[0]}, T0 + new) with T0 = "
           f"{prompt.shape[1]} and 1 <= new <= {n}, got {tuple(out.shape)}",
           hint="return torch.cat([prompt, new tokens], dim=1), one column per step.")
    expect(torch.equal(out[:, : prompt.shape[1]].cpu(), before),
           "the output does not start with the prompt",
           hint="return the prompt followed by the new tokens.")
    expect(torch.equal(prompt, before), "constrained_generate changed the prompt in place",
           hint="build a new tensor of tokens (torch.cat); never write into the prompt.")
    return out


def _compare(out, expected, T0: int, what: str, hint: str) -> None:
    """Same tokens as the reference, or the hint that names why not."""
    if out.shape == expected.shape and torch.equal(out.cpu(), expected):
        return
    found = _violation(out, T0, TINY)
    if found is not None and "constrained=False" not in what:
        row, step, why = found
        raise CheckFailed(f"{what}: row {row} drew {TINY.name(int(out[row, T0 + step]))} at "
                          f"step {step}, which the grammar forbids there", why)
    ended = (out.cpu() == TINY.eot).cumsum(dim=1) > 0  # (B, T): <eot> at or before
    if out.shape[1] < expected.shape[1] and ended[:, -1].any():
        hint = ANY_STOP_HINT
    elif out.shape[1] > expected.shape[1] and ended[:, expected.shape[1] - 1].all():
        hint = NO_STOP_HINT
    expect_equal(out, expected, what, hint=hint)


@exercise("constrained_generate", reference=anytoany.constrained_generate, hints=GENERATE_HINTS)
def constrained_generate(fn):
    v = TINY  # text 0..3, image 4..8, <boi> 9, <eoi> 10, <eot> 11, <pad> 12; 4 codes per image
    # three documents in different states: two captions asking for an image, one image
    # asking for a caption; the model prefers <pad> and <eoi>, forbidden almost everywhere
    prompt = torch.tensor([[0, 1, 2, 3, 0, v.boi],
                           [v.boi, 4, 5, 6, 8, v.eoi],
                           [3, 2, 0, 2, 1, v.boi]])  # (3, 6)
    T0 = prompt.shape[1]
    model = _tilted_model({v.pad: 3.0, v.eoi: 2.0}, seed=1)

    # 1. greedy: no randomness, so every token must be the reference's
    out = _generate(fn, model, prompt, 8, greedy=True)
    expected = anytoany.constrained_generate(model, prompt, 8, greedy=True)
    _compare(out, expected, T0, "greedy, 8 new tokens", STEP_HINT)

    # 2. sampling with a generator: the same seed gives the reference's tokens, and the
    # generator (not the global RNG) is what was drawn from
    g, g_ref = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    rng = torch.get_rng_state()
    out = _generate(fn, model, prompt, 10, generator=g)
    expected = anytoany.constrained_generate(model, prompt, 10, generator=g_ref)
    if not isinstance(fn, Remote):  # the grader's worker has its own global RNG
        expect(torch.equal(rng, torch.get_rng_state()),
               "constrained_generate drew from the global RNG", hint=GENERATOR_HINT)
    # never drawn from: the draws came from elsewhere (in the grader's worker, its own global
    # RNG), so the tokens, and where the rows stop, are chance; say so before comparing them
    expect(not torch.equal(g.get_state(), torch.Generator().manual_seed(11).get_state()),
           "sampled with a seeded generator: the generator passed in was never drawn from",
           hint=GENERATOR_HINT)
    _compare(out, expected, T0, "sampled with a seeded generator, 10 new tokens", SAMPLE_HINT)
    expect(torch.equal(g.get_state(), g_ref.get_state()),
           "the generator was drawn from a different number of times than one draw per "
           "step", hint=SAMPLE_HINT)

    # 3. the options, one at a time: temperature, then top-k (the top 2 unmasked logits are
    # <pad> and <eoi>, both forbidden right after <boi>)
    out = _generate(fn, model, prompt, 10, temperature=0.5,
                    generator=torch.Generator().manual_seed(12))
    expected = anytoany.constrained_generate(model, prompt, 10, temperature=0.5,
                                             generator=torch.Generator().manual_seed(12))
    _compare(out, expected, T0, "sampled at temperature 0.5", TEMPERATURE_HINT)
    try:
        out = _generate(fn, model, prompt, 10, top_k=2,
                        generator=torch.Generator().manual_seed(13))
    except CheckFailed:
        raise
    except Exception as err:
        raise CheckFailed(f"with top_k=2 your code raised {type(err).__name__}: {err}",
                          TOPK_HINT) from err
    expected = anytoany.constrained_generate(model, prompt, 10, top_k=2,
                                             generator=torch.Generator().manual_seed(13))
    _compare(out, expected, T0, "sampled with top_k=2", TOPK_HINT)

    # 4. constrained=False: the same loop without the mask
    out = _generate(fn, model, prompt, 5, generator=torch.Generator().manual_seed(14),
                    constrained=False)
    expected = anytoany.constrained_generate(model, prompt, 5, constrained=False,
                                             generator=torch.Generator().manual_seed(14))
    _compare(out, expected, T0, "constrained=False, 5 new tokens", FREE_HINT)

    # 5. stopping: a model that prefers <eot>; the captioning row ends at step 1, the
    # drawing rows after 4 codes, the forced <eoi> and <eot> (step 6); prompts expanded
    # from one row, as text_to_image passes them
    model = _tilted_model({v.eot: 8.0}, seed=2)
    both = torch.stack([prompt[1], prompt[0], prompt[0].clone()])  # (3, 6)
    out = _generate(fn, model, both, 12, greedy=True)
    expected = anytoany.constrained_generate(model, both, 12, greedy=True)  # (3, 12)
    _compare(out, expected, T0, "a model that prefers <eot>", STEP_HINT)
    wide = prompt[0].expand(4, -1)  # (4, 6), a view with stride 0
    out = _generate(fn, model, wide, 12, generator=torch.Generator().manual_seed(15))
    expected = anytoany.constrained_generate(model, wide, 12,
                                             generator=torch.Generator().manual_seed(15))
    _compare(out, expected, T0, "an expanded prompt (4 copies of one row)", SAMPLE_HINT)
    return ("greedy, a seeded generator (global RNG untouched), temperature, top-k after the "
            "mask, unconstrained, stopping when every row has ended, an expanded prompt")



def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
