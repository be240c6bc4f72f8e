"""digits(): shapes, stratified split, determinism, standardization, upsampling, channels, arguments."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from varprobe.data import Split, digits


@pytest.fixture(scope="module")
def native() -> Split:
    return digits()


def test_shapes_and_types(native):
    assert native.name == "digits" and native.num_classes == 10
    assert native.x_train.shape == (1437, 1, 8, 8) and native.x_test.shape == (360, 1, 8, 8)
    assert native.x_train.dtype == native.x_test.dtype == torch.float32
    assert native.y_train.dtype == native.y_test.dtype == torch.int64
    assert native.in_channels == 1 and native.size == 8
    assert set(native.y_train.tolist()) == set(native.y_test.tolist()) == set(range(10))


def test_stratified_split_keeps_class_proportions(native):
    total = np.bincount(load_digits().target, minlength=10)
    train = np.bincount(native.y_train.numpy(), minlength=10)
    test = np.bincount(native.y_test.numpy(), minlength=10)
    assert np.array_equal(train + test, total)
    assert np.all(np.abs(test - 0.2 * total) <= 1)


def test_deterministic_by_seed_and_different_across_seeds(native):
    again = digits(seed=0)
    assert torch.equal(again.x_train, native.x_train) and torch.equal(again.y_test, native.y_test)
    other = digits(seed=1)
    assert not torch.equal(other.y_train, native.y_train)
    assert not torch.equal(other.x_train, native.x_train)


def test_standardization_against_numpy(native):
    bunch = load_digits()
    train_idx, test_idx = train_test_split(np.arange(1797), test_size=0.2, stratify=bunch.target,
                                           random_state=0)
    x_train = bunch.images[train_idx].astype(np.float64)  # /16 does not matter after standardization
    x_test = bunch.images[test_idx].astype(np.float64)
    mean, std = x_train.mean(), x_train.std()  # one channel: over all training pixels, biased std
    np.testing.assert_allclose(native.x_train[:, 0].numpy(), (x_train - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(native.x_test[:, 0].numpy(), (x_test - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(native.y_train.numpy(), bunch.target[train_idx])
    np.testing.assert_array_equal(native.y_test.numpy(), bunch.target[test_idx])


@pytest.mark.parametrize("size", [16, 32])
def test_upsampling(size, native):
    split = digits(size=size)
    assert split.x_train.shape == (1437, 1, size, size) and split.x_test.shape == (360, 1, size, size)
    assert split.size == size
    assert torch.equal(split.y_train, native.y_train)  # same split, only resized
    x = split.x_train.double()
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-5
    # a smooth upsampling: block-averaging back to 8x8 correlates strongly with the native images
    down = torch.nn.functional.avg_pool2d(split.x_train, size // 8)
    corr = np.corrcoef(down.flatten().numpy(), native.x_train.flatten().numpy())[0, 1]
    assert corr > 0.9


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres (align_corners=False):
    output pixel d samples the input at s = (d + 0.5) * n_in / n_out - 0.5, clamped at 0, between
    floor(s) and floor(s) + 1 (clamped at the last pixel)."""
    a = np.zeros((n_out, n_in))
    for d in range(n_out):
        s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(np.floor(s))
        i1 = min(i0 + 1, n_in - 1)
        a[d, i0] += 1.0 - (s - i0)
        a[d, i1] += s - i0
    return a


@pytest.mark.parametrize("size", [16, 32])
def test_upsampled_three_channel_digits_against_numpy(size):
    """The whole pipeline in float64 numpy: /16, the same split, separable bilinear upsampling
    (x_up = A x A^T), the grey channel repeated to 3, per-channel standardization by the training
    mean and biased std."""
    split = digits(size=size, channels=3)
    bunch = load_digits()
    train_idx, test_idx = train_test_split(np.arange(1797), test_size=0.2, stratify=bunch.target,
                                           random_state=0)
    a = _bilinear_matrix(8, size)
    up = np.einsum("di,nij,ej->nde", a, bunch.images.astype(np.float64) / 16.0, a)
    x_train, x_test = up[train_idx], up[test_idx]
    mean, std = x_train.mean(), x_train.std()  # the 3 channels are equal, so per channel = overall
    for c in range(3):
        np.testing.assert_allclose(split.x_train[:, c].numpy(), (x_train - mean) / std, rtol=0, atol=2e-5)
        np.testing.assert_allclose(split.x_test[:, c].numpy(), (x_test - mean) / std, rtol=0, atol=2e-5)
    assert split.x_train.shape == (1437, 3, size, size) and split.x_test.shape == (360, 3, size, size)
    np.testing.assert_array_equal(split.y_train.numpy(), bunch.target[train_idx])
    # a genuinely interpolated image: not a nearest-neighbour (block-constant) upsampling
    assert not np.allclose(up[:, 0::2, :], up[:, 1::2, :])


def test_three_channels_repeat(native):
    split = digits(channels=3)
    assert split.x_train.shape == (1437, 3, 8, 8) and split.in_channels == 3
    for c in range(3):  # standardization per channel of identical channels changes nothing
        np.testing.assert_allclose(split.x_train[:, c:c + 1].numpy(), native.x_train.numpy(), atol=1e-6)
        np.testing.assert_allclose(split.x_test[:, c:c + 1].numpy(), native.x_test.numpy(), atol=1e-6)


@pytest.mark.parametrize("kwargs, bad, valid", [
    ({"size": 12}, "12", "(8, 16, 32)"),
    ({"size": 64}, "64", "(8, 16, 32)"),
    ({"channels": 2}, "2", "(1, 3)"),
    ({"seed": -1}, "-1", "2**32"),
])
def test_bad_arguments(kwargs, bad, valid):
    with pytest.raises(ValueError) as info:
        digits(**kwargs)
    assert bad in str(info.value) and valid in str(info.value)
