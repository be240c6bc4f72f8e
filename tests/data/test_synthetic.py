"""synthetic(): shapes, balance, determinism, standardization, learnability, arguments."""
import numpy as np
import pytest
import torch

from varprobe.data import synthetic


def nearest_class_mean_accuracy(split) -> float:
    x_train, x_test = split.x_train.flatten(1).double(), split.x_test.flatten(1).double()
    means = torch.stack([x_train[split.y_train == k].mean(0) for k in range(split.num_classes)])
    return (torch.cdist(x_test, means).argmin(1) == split.y_test).double().mean().item()


def test_shapes_balance_and_split():
    split = synthetic(n=1000, size=16, channels=3, classes=10, seed=0)
    assert split.name == "synthetic" and split.num_classes == 10
    assert split.x_train.shape == (800, 3, 16, 16) and split.x_test.shape == (200, 3, 16, 16)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert np.bincount(split.y_train.numpy()).tolist() == [80] * 10
    assert np.bincount(split.y_test.numpy()).tolist() == [20] * 10
    assert split.y_train[:10].tolist() != sorted(split.y_train[:10].tolist())  # shuffled


def test_uneven_classes_stay_balanced():
    split = synthetic(n=103, size=4, channels=1, classes=4, seed=0)
    counts = np.bincount(split.y_train.numpy()) + np.bincount(split.y_test.numpy())
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1
    assert np.all(np.bincount(split.y_test.numpy()) >= 1)


def test_deterministic_by_seed():
    a = synthetic(n=200, size=8, channels=1, classes=4, seed=3)
    b = synthetic(n=200, size=8, channels=1, classes=4, seed=3)
    c = synthetic(n=200, size=8, channels=1, classes=4, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_standardized_with_training_statistics():
    split = synthetic(n=500, size=8, channels=2, classes=5, seed=0)
    x = split.x_train.double()
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-5)


@pytest.mark.parametrize("size, channels, classes", [(8, 1, 10), (16, 3, 10), (32, 1, 2)])
def test_learnable_but_not_trivial(size, channels, classes):
    split = synthetic(n=1000, size=size, channels=channels, classes=classes, seed=0)
    accuracy = nearest_class_mean_accuracy(split)
    assert accuracy > 0.6 + 0.4 / classes  # well above chance (1 / classes)
    if classes == 10:
        assert accuracy < 0.99  # the classes overlap


def test_noise_controls_difficulty():
    clean = synthetic(n=200, size=8, channels=1, classes=10, seed=0, noise=0.0)
    assert nearest_class_mean_accuracy(clean) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 49}, "n must be an int >= 50"),
    ({"size": 0}, "size must be an int >= 1"),
    ({"channels": 0}, "channels must be an int >= 1"),
    ({"classes": 1}, "classes must be an int >= 2"),
    ({"noise": -1.0}, "noise must be >= 0"),
])
def test_bad_arguments(kwargs, message):
    args = {"n": 100, "size": 8, "channels": 1, "classes": 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic(**args)
