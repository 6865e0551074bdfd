"""The digit classifier: trained on training digits only, ~97% on held-out digits at every size."""

from __future__ import annotations

import pytest
import torch
from repo_scripts import load_script

import minitok.data
from minitok import checkpoints
from minitok import classifier as classifier_module
from minitok.classifier import load_classifier, to_features, train_classifier
from minitok.data import load_digits


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


@pytest.mark.slow
@pytest.mark.parametrize("size", [8, 16, 32])
def test_held_out_accuracy_is_about_97_percent(clf, size):
    images, labels = load_digits("test", size=size)
    accuracy = clf.accuracy(images, labels)
    assert 0.96 <= accuracy <= 1.0, f"accuracy at {size}x{size}: {accuracy:.3f}"


@pytest.mark.slow
def test_accuracy_counts_correct_predictions(clf):
    images, labels = load_digits("test", size=16)
    predicted = clf.predict(images)
    assert predicted.dtype == torch.int64 and predicted.shape == labels.shape
    manual = sum(int(p == y) for p, y in zip(predicted.tolist(), labels.tolist(), strict=True))
    assert clf.accuracy(images, labels) == manual / len(labels)
    wrong_labels = (labels + 1) % 10
    assert clf.accuracy(images, wrong_labels) < 0.05


def test_trained_on_training_digits_only(monkeypatch):
    asked = []

    def spy(split="train", size=8, **kwargs):
        asked.append(split)
        return original(split, size, **kwargs)

    original = minitok.data.load_digits
    monkeypatch.setattr(minitok.data, "load_digits", spy)
    train_classifier(max_iter=5)
    assert asked and set(asked) == {"train"}


def test_training_is_deterministic():
    a = train_classifier(max_iter=30)
    b = train_classifier(max_iter=30)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.slow
def test_the_shipped_classifier_is_what_its_script_trains(clf, tmp_path):
    """scripts/train_classifier.py, run here, rebuilds the shipped classifier: the same weights
    on the CPU that made it; elsewhere (another CPU's float64 kernels may round differently
    over 500 L-BFGS steps) the same reading of all but a few held-out digits, and the same
    accuracy to within half a point."""
    assert clf.meta["script"] == "scripts/train_classifier.py"
    load_script("scripts/train_classifier.py").main(["--out", str(tmp_path / "c.pt")])
    trained = checkpoints.load("classifier", tmp_path / "c.pt")
    assert trained.meta["recipe"] == clf.meta["recipe"]
    images, labels = load_digits("test", size=16)
    agree = (trained.predict(images) == clf.predict(images)).double().mean().item()
    assert agree >= 0.99, f"the shipped classifier reads {1 - agree:.1%} of the digits otherwise"
    assert abs(trained.accuracy(images, labels) - clf.accuracy(images, labels)) <= 0.005
    assert clf.meta["results"]["test_accuracy_16"] == round(clf.accuracy(images, labels), 4)


@pytest.mark.slow
def test_load_classifier_is_cached_and_returns_copies():
    first, second = load_classifier(), load_classifier()
    assert first is not second
    assert classifier_module._cached_classifier.cache_info().hits >= 1
    with torch.no_grad():
        first.net[0].weight.zero_()
    assert second.net[0].weight.abs().sum() > 0


def test_features_are_8x8_block_means(gen):
    images = torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1
    blocks = images.reshape(3, 1, 8, 2, 8, 2).mean(dim=(3, 5))  # (3, 1, 8, 8)
    torch.testing.assert_close(to_features(images), blocks.reshape(3, 64))
    eight = images[:, :, ::2, ::2]
    assert torch.equal(to_features(eight), eight.reshape(3, 64))


@pytest.mark.slow
def test_same_predictions_on_every_device(clf, device):
    images, _ = load_digits("test", size=16)
    on_device = load_classifier(device)
    assert torch.equal(on_device.predict(images.to(device)), clf.predict(images))


@pytest.mark.slow
def test_bad_input(clf):
    images, labels = load_digits("test", size=16)
    with pytest.raises(ValueError, match="grayscale"):
        clf.accuracy(images.expand(-1, 3, -1, -1), labels)
    with pytest.raises(ValueError, match="multiple of 8"):
        clf.predict(torch.zeros(2, 1, 12, 12))
    with pytest.raises(ValueError, match="one per image"):
        clf.accuracy(images, labels[:-1])
    with pytest.raises(ValueError, match="0..9"):
        clf.accuracy(images[:2], torch.tensor([3, 10]))
    with pytest.raises(TypeError, match="floating-point"):
        clf.predict(torch.zeros(2, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):  # were compared
        clf.accuracy(images[:2], torch.tensor([3.0, 1.5]))  # as floats: 1.5 never matches
    with pytest.raises(ValueError, match="non-empty"):
        clf.accuracy(images[:0], labels[:0])


def test_hidden_features_are_what_the_last_layer_reads(clf, gen):
    images = torch.rand(7, 1, 16, 16, generator=gen) * 2 - 1
    features = clf.features(images)
    assert features.shape == (7, 64) and bool((features >= 0).all())  # after the ReLU
    torch.testing.assert_close(clf.net[2](features), clf(images))  # the logits, unchanged

