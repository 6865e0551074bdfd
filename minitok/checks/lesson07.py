"""Checks for Lesson 07: the shared vocabulary, the answer-only loss, constrained decoding.

Each check runs small cases built by hand, in the order that makes the first failure name
the classic mistake: image codes not shifted past the text ids, the grid read column by
column, a missing <boi>/<eoi>/<eot>; targets not shifted, the prompt or the padding left in
the loss, an off-by-one at the answer's first token; image ids allowed in text, <eoi> not
forced (or forced one code early), codes counted from the wrong <boi>.
"""

from __future__ import annotations

import torch

from minitok import anytoany, vocab
from minitok.checks._core import (
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


@exercise("build_sequence", reference=vocab.build_sequence)
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
                     "build_sequence([grid]) with grid [[0, 1], [2, 4]]", wrong, MARKERS_HINT)

    # 3. both orders and several parts, with the course's vocabulary and an 8 x 8 grid
    g = torch.Generator().manual_seed(7)
    big = vocab.Vocabulary(num_codes=64, grid_size=8)
    grids = [torch.randint(0, 64, (8, 8), generator=g) for _ in range(2)]
    cases = [["the digit 7", grids[0]], [grids[0], "seven"],
             ["two", grids[0], "and", grids[1], "images"], [grids[1], grids[0]]]
    for parts in cases:
        got = fn(parts, big)
        expected = vocab.build_sequence(parts, big)
        kinds = ", ".join("text" if isinstance(p, str) else "grid" for p in parts)
        _expect_sequence(got, expected, f"build_sequence([{kinds}])", [],
                         hint="handle the parts in order: text as characters, each grid "
                              "as <boi> codes <eoi>, then one <eot>.")
    return "text, a 2 x 2 image, captions before and after 8 x 8 images, two images"


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


def _targets_variants(seqs, starts, v) -> list[tuple[str, torch.Tensor]]:
    """Each classic mistake's targets, with its hint."""
    L = seqs.shape[1]
    shifted = seqs[:, 1:]  # (B, L-1) the right targets before masking
    j = torch.arange(L - 1)[None, :]  # (1, L-1) target index
    pad = shifted == v.pad
    prompt = j + 1 < starts[:, None]  # the right mask of the prompt
    return [
        (PROMPT_HINT, shifted.masked_fill(pad, -100)),
        (OFF_BY_ONE_HINT, shifted.masked_fill(pad | (j < starts[:, None]), -100)),
        (OFF_BY_ONE_HINT, shifted.masked_fill(pad | (j + 2 < starts[:, None]), -100)),
        (PAD_HINT, shifted.masked_fill(prompt, -100)),
        (IGNORE_HINT, shifted.masked_fill(prompt | pad, 0)),
        (IGNORE_HINT, shifted.masked_fill(prompt | pad, v.pad)),
    ]


@exercise("masked_targets", reference=anytoany.masked_targets)
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
        expect_equal(targets, expected, "targets",
                     hint=hint or PROMPT_HINT)

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
                 hint=hint or "mask the prompt and the padding, nothing else.")
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


@exercise("allowed_next", reference=anytoany.allowed_next)
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
    expect_equal(fn(batch, big), anytoany.allowed_next(batch, big),
                 "allowed (a batch of 7 prefixes, 8 x 8 grids)",
                 hint="decide each row from its own tokens: rows are independent documents.")
    return "text, every count of codes in a span, forced <eoi>, a second image, after <eot>, a batch"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
