"""cifar10(): a tiny file set in the official format, the restricted unpickler, MD5 checks, errors."""
import codecs
import hashlib
import importlib
import io
import os
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from varprobe.data import cifar10
from varprobe.data.cifar10 import MD5, RestrictedUnpickler

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (as cPickle did for the official files)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def dump(obj, path: Path, style: str = "py3") -> None:
    if style == "py3":
        path.write_bytes(pickle.dumps(obj, protocol=2))
        return
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def write_set(root: Path, sizes=(3, 2, 4, 1, 2), n_test=5, style="py3", str_keys=False, seed=0):
    """Writes a tiny CIFAR-10 folder; returns (train data, train labels, test data, test labels)."""
    rng = np.random.default_rng(seed)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    root.mkdir(parents=True, exist_ok=True)
    batches = []
    for name, n in [*zip(TRAIN, sizes), ("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        dump({key("batch_label"): b"batch", key("labels"): labels, key("data"): data,
              key("filenames"): [b"x.png"] * n}, root / name, style)
        batches.append((data, labels))
    dump({key("label_names"): NAMES, key("num_cases_per_batch"): 10000, key("num_vis"): 3072},
         root / "batches.meta", style)
    train = batches[:5]
    return (np.concatenate([d for d, _ in train]), np.concatenate([l for _, l in train]),
            batches[5][0], np.array(batches[5][1]))


def reference(train: np.ndarray, test: np.ndarray):
    x_train = train.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    x_test = test.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    return (x_train - mean) / std, (x_test - mean) / std


@pytest.mark.parametrize("style, str_keys", [("py3", False), ("py2", False), ("py3", True)])
def test_values_match_numpy(tmp_path, style, str_keys):
    train, y_train, test, y_test = write_set(tmp_path, style=style, str_keys=str_keys)
    split = cifar10(tmp_path, verify=False)
    assert split.name == "cifar10" and split.num_classes == 10
    assert split.x_train.shape == (12, 3, 32, 32) and split.x_test.shape == (5, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    ref_train, ref_test = reference(train, test)
    np.testing.assert_allclose(split.x_train.numpy(), ref_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split.x_test.numpy(), ref_test, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split.y_train.numpy(), y_train)
    np.testing.assert_array_equal(split.y_test.numpy(), y_test)


def test_py2_fixture_is_faithful(tmp_path):
    """The "py2" files use the official layout: str opcodes, no _codecs, numpy.core module name."""
    write_set(tmp_path, style="py2")
    opcodes = {(op.name, arg) for op, arg, _ in pickletools.genops((tmp_path / "data_batch_1").read_bytes())}
    globals_ = {arg for name, arg in opcodes if name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert any(name == "BINSTRING" for name, _ in opcodes)  # the 3072-byte rows, as Python 2 str
    assert any(name == "SHORT_BINSTRING" and arg == "data" for name, arg in opcodes)


def test_limit_keeps_first_samples_and_their_statistics(tmp_path):
    train, y_train, test, y_test = write_set(tmp_path)
    split = cifar10(tmp_path, verify=False, limit=4)  # spans data_batch_1 (3) and data_batch_2
    ref_train, ref_test = reference(train[:4], test[:4])
    np.testing.assert_allclose(split.x_train.numpy(), ref_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split.x_test.numpy(), ref_test, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split.y_train.numpy(), y_train[:4])
    assert split.y_test.shape == (4,)


@pytest.mark.parametrize("limit", [0, -3, 2.0])
def test_bad_limit(tmp_path, limit):
    write_set(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        cifar10(tmp_path, verify=False, limit=limit)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_rejected(tmp_path):
    write_set(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"\.system is not allowed"):
        cifar10(tmp_path, verify=False)
    assert not marker.exists()


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("payload, message", [
    (_Reduce(eval, ("1 + 1",)), r"__builtin__\.eval is not allowed"),  # protocol 2 writes builtins as __builtin__
    (_Reduce(getattr, ("", "join")), r"__builtin__\.getattr is not allowed"),
    (_Reduce(np.load, ("x.npy",)), r"numpy\.load is not allowed"),
    (_Reduce(codecs.encode, ("abc", "rot13")), "latin-1"),
])
def test_restricted_unpickler_rejects_other_globals(payload, message):
    with pytest.raises(pickle.UnpicklingError, match=message):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(payload, protocol=2)), encoding="bytes").load()


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_restricted_unpickler_reads_numpy_arrays(protocol):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    blob = pickle.dumps({b"data": array, "labels": [1, 2]}, protocol=protocol)
    out = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    np.testing.assert_array_equal(out[b"data"], array)
    assert out["labels"] == [1, 2]


def test_md5_mismatch_raises(tmp_path):
    write_set(tmp_path)
    actual = hashlib.md5((tmp_path / "data_batch_1").read_bytes()).hexdigest()
    with pytest.raises(ValueError) as info:
        cifar10(tmp_path, verify=True)
    message = str(info.value)
    assert "data_batch_1" in message and MD5["data_batch_1"] in message and actual in message


def test_md5_match_loads(tmp_path, monkeypatch):
    write_set(tmp_path)
    sums = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest() for name in MD5}
    # the package's ``cifar10`` attribute is the function; the module is reached through importlib
    monkeypatch.setattr(importlib.import_module("varprobe.data.cifar10"), "MD5", sums)
    assert cifar10(tmp_path, verify=True).x_train.shape == (12, 3, 32, 32)
    (tmp_path / "test_batch").write_bytes((tmp_path / "test_batch").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="test_batch"):
        cifar10(tmp_path, verify=True)


def test_official_checksums():
    assert MD5 == {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    }


def test_missing_folder(tmp_path):
    root = tmp_path / "nowhere" / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError) as info:
        cifar10(root)
    message = str(info.value)
    assert str(root) in message and "cifar-10-python.tar.gz" in message
    assert str(root / "data_batch_1") in message


def test_missing_file(tmp_path):
    write_set(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3") as info:
        cifar10(tmp_path, verify=False)
    assert "cifar-10-python.tar.gz" in str(info.value)


@pytest.mark.parametrize("entry, message", [
    ({b"data": np.zeros((2, 3072), dtype=np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, "3072"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 10]}, "labels"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8)}, "no key 'labels'"),
    ([1, 2, 3], "dict"),
])
def test_malformed_batch(tmp_path, entry, message):
    write_set(tmp_path)
    dump(entry, tmp_path / "data_batch_2")
    with pytest.raises(ValueError, match=message):
        cifar10(tmp_path, verify=False)
