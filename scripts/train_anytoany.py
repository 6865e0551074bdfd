"""Rebuild the shipped any-to-any model, minitok/checkpoints/anytoany.pt (Lesson 07).

    python scripts/train_anytoany.py            # the shipped checkpoint
    python scripts/train_anytoany.py --steps 200 --out /tmp/anytoany.pt   # a quick try
    python scripts/train_anytoany.py --init A.pt --steps 1500 --lr 1e-3   # train A.pt longer

It encodes the training digits with the shipped tokenizer, trains one causal transformer on
the mixed stream of both directions (caption -> image and image -> caption, the loss on the
answer only), never showing a held-out (wording, digit) pair, then measures both goals on
the held-out split and writes a weights-only checkpoint whose meta pins the tokenizer's
sha256. Training runs on one thread with deterministic kernels (`training.fit`), so the same
seed gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from minitok import checkpoints
from minitok.anytoany import (
    DRAW_TEMPERATURE,
    AnyToAny,
    AnyToAnyConfig,
    CaptionedDigits,
    train_anytoany,
)
from minitok.classifier import load_classifier
from minitok.course import seed_everything
from minitok.evaluate import encode_digits, image_to_text_accuracy, text_to_image_accuracy

RECIPE = {"steps": 6000, "batch_size": 64, "lr": 3e-3, "warmup": 100, "seed": 0,
          "n_layer": 4, "n_head": 4, "n_embd": 96, "dropout": 0.1, "p_uncond": 0.1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in RECIPE.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--eval-per-caption", type=int, default=20,
                        help="images drawn per held-out caption when measuring text-to-image")
    parser.add_argument("--temperature", type=float, default=DRAW_TEMPERATURE,
                        help="the temperature images are drawn at when measuring")
    parser.add_argument("--cfg-scale", type=float, default=2.0,
                        help="the guidance scale measured beside plain sampling (scale 1)")
    parser.add_argument("--init", default=None,
                        help="continue from this any-to-any checkpoint's weights (a second "
                             "warm-up and cosine; its recipe is kept in the new meta)")
    parser.add_argument("--out", default=str(checkpoints.checkpoint_path("anytoany")))
    args = parser.parse_args(argv)
    recipe = {name: getattr(args, name) for name in RECIPE}

    tokenizer = checkpoints.load("tokenizer")
    grids, labels = encode_digits(tokenizer, "train")  # (1437, 8, 8), (1437,)
    test_grids, test_labels = encode_digits(tokenizer, "test")  # (360, 8, 8), (360,)
    config = AnyToAnyConfig(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size,
                            n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                            dropout=args.dropout)
    seed_everything(args.seed)  # initial weights and dropout come from the global RNG
    model = AnyToAny(config)
    if args.init is not None:  # train a saved model longer: same size, same tokenizer
        start_from = checkpoints.load("anytoany", args.init)
        checkpoints.check_tokenizer(start_from, tokenizer)
        model.load_state_dict(start_from.state_dict())
        recipe["init"] = {"sha256": start_from.checkpoint_sha256,
                          "recipe": start_from.meta["recipe"],
                          "seconds": start_from.meta["seconds"]}
    data = CaptionedDigits(grids, labels, model.vocab, p_uncond=args.p_uncond)
    start = time.perf_counter()
    losses = train_anytoany(model, data, args.steps, batch_size=args.batch_size, lr=args.lr,
                            warmup=args.warmup, seed=args.seed)
    seconds = time.perf_counter() - start

    classifier = load_classifier()
    t2i = {scale: text_to_image_accuracy(model, tokenizer, classifier,
                                         per_caption=args.eval_per_caption, cfg_scale=scale,
                                         temperature=args.temperature,
                                         generator=torch.Generator().manual_seed(1))
           for scale in (1.0, args.cfg_scale)}
    i2t = image_to_text_accuracy(model, test_grids, test_labels)
    results = {"params": sum(p.numel() for p in model.parameters()),
               "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
               "draw_temperature": args.temperature,
               "held_out_text_to_image": t2i[1.0]["accuracy"],
               "held_out_text_to_image_cfg": {"cfg_scale": args.cfg_scale,
                                              "accuracy": t2i[args.cfg_scale]["accuracy"]},
               "held_out_image_to_text": i2t["accuracy"]}
    meta = checkpoints.training_meta("scripts/train_anytoany.py", recipe, seconds, results,
                                     tokenizer=tokenizer)
    path = checkpoints.save(model, args.out, meta)
    print(f"trained {args.steps} steps ({results['params']:,} parameters) in {seconds:.0f} s: "
          f"train loss {results['final_train_loss']:.3f}")
    for scale, result in t2i.items():
        print(f"held out: text-to-image, guidance {scale:g}: {result['accuracy']:.1%} of "
              f"{result['n']} images match their caption, per digit {result['per_digit']}")
    print(f"held out: image-to-text {i2t['accuracy']:.1%} of {i2t['n']} captions name the "
          f"right digit ({i2t['known_wording']:.1%} in a known wording)")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
