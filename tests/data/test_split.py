"""Split: validation, properties, the deterministic epoch-wise batch iterator, standardize."""
import itertools

import numpy as np
import pytest
import torch

from varprobe.data import Split
from varprobe.data.split import standardize


def make_split(n: int = 10, m: int = 4) -> Split:
    x_train = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, 3, 3).contiguous()
    return Split(name="toy", x_train=x_train, y_train=torch.arange(n) % 3,
                 x_test=torch.zeros(m, 2, 3, 3), y_test=torch.zeros(m, dtype=torch.int64), num_classes=3)


def test_properties_and_repr():
    split = make_split()
    assert split.in_channels == 2 and split.size == 3
    assert repr(split) == "Split(name='toy', train=(10, 2, 3, 3), test=(4, 2, 3, 3), num_classes=3)"
    with pytest.raises(AttributeError):
        split.name = "other"  # frozen


def test_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="y_train"):
        Split("bad", torch.zeros(5, 1, 2, 2), torch.zeros(4, dtype=torch.int64),
              torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="differ"):
        Split("bad", torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.int64),
              torch.zeros(2, 3, 2, 2), torch.zeros(2, dtype=torch.int64), 2)


def test_batches_deterministic_and_seed_dependent():
    split = make_split()
    take = lambda seed: [x[:, 0, 0, 0].tolist() for x, _ in itertools.islice(split.batches(3, seed=seed), 9)]
    assert take(5) == take(5)
    assert take(5) != take(6)


def test_batches_cover_each_epoch_once_and_drop_last():
    split = make_split(n=10)
    it = split.batches(3, seed=1)
    epochs = []
    for _ in range(4):  # 10 // 3 = 3 full batches per epoch, the 10th sample is dropped
        batches = [next(it) for _ in range(3)]
        for x, y in batches:
            assert x.shape == (3, 2, 3, 3) and y.shape == (3,)
            idx = x[:, 0, 0, 0].long()
            assert torch.equal(y, idx % 3)  # labels travel with their images
        seen = torch.cat([x[:, 0, 0, 0] for x, _ in batches]).long().tolist()
        assert len(set(seen)) == 9  # no repeat within an epoch
        epochs.append(seen)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs


def test_batches_full_epoch_when_divisible():
    split = make_split(n=10)
    it = split.batches(5, seed=0)
    for _ in range(3):
        seen = torch.cat([next(it)[0][:, 0, 0, 0] for _ in range(2)]).long()
        assert sorted(seen.tolist()) == list(range(10))


@pytest.mark.parametrize("bad", [0, -1, 11, 2.5])
def test_batches_bad_size(bad):
    with pytest.raises(ValueError, match=r"\[1, 10\]") as info:
        make_split(n=10).batches(bad)  # raised at call time, before iteration
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("chunk", [4096, 3])  # 3: the chunked float64 passes with a ragged last chunk
def test_standardize_matches_numpy(chunk, monkeypatch):
    monkeypatch.setattr("varprobe.data.split._CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    x_train = torch.randn(7, 3, 4, 5, generator=gen) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 3
    x_test = torch.randn(4, 3, 4, 5, generator=gen)
    x_test[:, 2] = 7.0
    before = (x_train.clone(), x_test.clone())
    a, b = standardize(x_train, x_test)
    assert torch.equal(x_train, before[0]) and torch.equal(x_test, before[1])  # inputs untouched
    ref = x_train.numpy().astype(np.float64)
    mean, std = ref.mean(axis=(0, 2, 3), keepdims=True), ref.std(axis=(0, 2, 3), keepdims=True)
    assert a.dtype == b.dtype == torch.float32
    np.testing.assert_allclose(a.numpy(), (ref - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), (x_test.numpy().astype(np.float64) - mean) / std, rtol=1e-5, atol=1e-6)


def test_standardize_constant_channel_is_only_centred():
    x = torch.ones(3, 1, 2, 2) * 4
    a, b = standardize(x, x + 1)
    assert torch.equal(a, torch.zeros_like(a)) and torch.equal(b, torch.ones_like(b))
