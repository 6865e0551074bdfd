"""A digit classifier that judges images the course makes: reconstructions and generated digits.

It is trained only on the real training digits, and later lessons use it as a referee: a
reconstruction (Lesson 03) or a generated digit (Lessons 05-07) that it reads as the
intended class has kept, or drawn, a recognisable digit.

The model is deliberately small and boring: every image is average-pooled to 8 x 8 (the
digits' native resolution, so 8 x 8, 16 x 16 and 32 x 32 images all look alike to it), then
a one-hidden-layer MLP (64 -> 64 -> 10). It trains in float64 with full-batch L-BFGS on one
CPU thread, so the same CPU gives the same weights every time, in a few seconds. It sees the
training digits at sizes 8 and 16, and scores about 97-98% on the held-out test digits.

`load_classifier` returns the shipped one (minitok/checkpoints/classifier.pt, which
scripts/train_classifier.py rebuilds with `train_classifier`): every lesson, test and tool
judges with the same weights on every machine, and none spends seconds training it again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitok import checkpoints, data, validate
from minitok.checkpoints import Checkpointable
from minitok.course import one_thread

NATIVE_SIZE = 8  # the bundled digits are 8 x 8
TRAIN_SIZES = (8, 16)  # the sizes the course uses; the classifier sees both in training


def to_features(images: Tensor) -> Tensor:
    """(N, 1, S, S) images in [-1, 1] -> (N, 64) features: average-pooled to 8 x 8, flattened.

    S must be a multiple of 8, so that the pooling averages whole S/8 x S/8 blocks.
    """
    validate.float_tensor(images, "images", dim=4)
    _, c, h, w = images.shape
    if c != 1 or h != w or w % NATIVE_SIZE:
        raise ValueError(f"images must be (N, 1, S, S) grayscale with S a multiple of "
                         f"{NATIVE_SIZE}, got shape {tuple(images.shape)}")
    pooled = F.avg_pool2d(images, kernel_size=w // NATIVE_SIZE)  # (N, 1, 8, 8)
    return pooled.flatten(1)  # (N, 64)


@dataclass(frozen=True)
class ClassifierConfig:
    """hidden: the width of the MLP's one hidden layer."""

    hidden: int = 64

    def __post_init__(self):
        validate.positive_int(self.hidden, "hidden")


class DigitClassifier(Checkpointable):
    """images (N, 1, S, S) -> logits (N, 10), for any S that is a multiple of 8."""

    kind = "classifier"
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__(ClassifierConfig() if config is None else config)  # self.config
        hidden = self.config.hidden
        self.net = nn.Sequential(
            nn.Linear(NATIVE_SIZE * NATIVE_SIZE, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, images: Tensor) -> Tensor:
        weight = self.net[0].weight
        return self.net(to_features(images).to(weight.device, weight.dtype))  # (N, 10)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """The hidden layer's activations (N, hidden): what the last layer reads to decide.

        The Fréchet distance (`minitok.evaluate.frechet_distance`) compares generated and
        real digits in this space, as FID does with an Inception network's last pool layer.
        """
        weight = self.net[0].weight
        x = to_features(images).to(weight.device, weight.dtype)  # (N, 64)
        return self.net[1](self.net[0](x)).cpu()  # (N, hidden), after the ReLU

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """The predicted class of each image: (N,) int64 in 0..9."""
        return self(images).argmax(dim=1).cpu()

    @torch.no_grad()
    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of images whose predicted class equals its label."""
        labels = validate.index_tensor(torch.as_tensor(labels), "labels", size=10, dim=1)
        if labels.shape[0] != images.shape[0] or labels.numel() == 0:  # no images: a NaN
            raise ValueError(f"labels must be ({images.shape[0]},), one per image of a non-empty "
                             f"batch, got shape {tuple(labels.shape)}")
        return (self.predict(images) == labels.cpu()).double().mean().item()


def train_classifier(
    seed: int = 0, hidden: int = 64, weight_decay: float = 1e-4, max_iter: int = 500
) -> DigitClassifier:
    """Fit the classifier on the real training digits (sizes 8 and 16) with L-BFGS in float64.

    Loss: cross-entropy + weight_decay * (sum of squared weights). Full batch and float64:
    no mini-batch noise, so the result depends only on the seed (the initial weights).
    """
    validate.non_negative_int(seed, "seed")
    config = ClassifierConfig(hidden)
    validate.number(weight_decay, "weight_decay", low=0)
    validate.positive_int(max_iter, "max_iter")
    features, labels = [], []
    for size in TRAIN_SIZES:
        images, y = data.load_digits("train", size=size)
        features.append(to_features(images))
        labels.append(y)
    x = torch.cat(features).double()  # (2 * 1437, 64)
    y = torch.cat(labels)  # (2 * 1437,)

    generator = torch.Generator().manual_seed(seed)
    model = DigitClassifier(config).double()
    with torch.no_grad():
        for layer in (model.net[0], model.net[2]):
            bound = 1.0 / layer.in_features**0.5  # nn.Linear's default range, seeded here
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)

    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    weights = [model.net[0].weight, model.net[2].weight]

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model.net(x), y)
        loss = loss + weight_decay * sum((w**2).sum() for w in weights)
        loss.backward()
        return loss

    with one_thread():  # faster for a model this small, and the same on any core count
        optimizer.step(closure)
    return model.float().eval()


SHIPPED_SEED = 0  # the seed scripts/train_classifier.py trains the shipped classifier with


@lru_cache(maxsize=2)
def _cached_classifier(seed: int) -> DigitClassifier:
    if seed == SHIPPED_SEED:
        return checkpoints.load("classifier")
    return train_classifier(seed)


def load_classifier(device: str | torch.device = "cpu", seed: int = 0) -> DigitClassifier:
    """The course's digit classifier: the shipped one (seed 0), or one trained now with
    another seed (a few seconds), cached either way.

    Returns a copy on `device`, in eval mode, so callers can move it without affecting others.
    """
    validate.non_negative_int(seed, "seed")
    return copy.deepcopy(_cached_classifier(seed)).to(device).eval()
