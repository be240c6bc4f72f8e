"""CIFAR-10 from a local copy of the official python-pickle batches, with MD5 checks and a safe unpickler."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .split import Split, standardize

__all__ = ["cifar10", "RestrictedUnpickler", "MD5"]

try:  # numpy >= 2 (numpy 1.26 also ships this alias)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct

TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
# Official per-file MD5 sums of cifar-10-python.tar.gz's contents (the list torchvision's CIFAR10 uses).
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
NUM_CLASSES = 10


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how protocol-2 pickles made by Python 3 store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed on str with latin-1, got "
                                     f"{type(text).__name__} with {encoding!r}")
    return text.encode("latin-1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a pickled numpy array needs.

    Admitted: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
    (old and new module name), ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` limited to
    latin-1 (protocol-2 pickles written by Python 3 encode bytes that way; the official Python 2
    files do not need it). The objects are returned directly, never imported by name. Any other
    global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` naming it.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 "
                                         f"batch (only numpy array reconstruction is)") from None


def cifar10(root: str | Path = "data/cifar-10-batches-py", verify: bool = True,
            limit: int | None = None) -> Split:
    """CIFAR-10 (50000 train / 10000 test 32x32 RGB images, 10 classes) from a local folder.

    ``root`` must hold the extracted official ``cifar-10-python.tar.gz``: data_batch_1..5,
    test_batch, batches.meta (``tar -xzf cifar-10-python.tar.gz -C data`` gives the default
    folder). Nothing is ever downloaded. With ``verify`` every file's MD5 is checked against the
    official sums (:data:`MD5`) before anything is unpickled; the batches are always read with
    :class:`RestrictedUnpickler` (``encoding="bytes"``: the official files are Python 2 pickles
    with keys b"data", b"labels"; str keys are accepted too).

    Preprocessing: uint8 rows (N, 3072) -> (N, 3, 32, 32) float32 / 255, then per-channel
    standardization of both parts with the *training* mean and biased std (of the kept training
    samples; see :func:`varprobe.data.split.standardize`).

    Args:
        root: Folder with the extracted batches.
        verify: Check the MD5 of all seven files first (turn off only for trusted, non-official
            files such as test fixtures).
        limit: Keep only the first ``limit`` training samples (in batch order) and the first
            ``limit`` test samples, for quick experiments (only the training batches needed are
            unpickled); ``None`` keeps all.

    Returns:
        A :class:`Split` named ``"cifar10"``: x_train (N, 3, 32, 32), x_test (M, 3, 32, 32)
        float32, labels int64 in [0, 10).

    Raises:
        FileNotFoundError: The folder or one of the files is missing (the message names them and
            says where to put the archive's contents).
        ValueError: A file's MD5 differs from the official one (the message names the file and
            both sums), a file does not have the expected content, or ``limit`` < 1.
        pickle.UnpicklingError: A file references a global outside the allowed numpy ones.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"cifar10: limit must be None or an int >= 1, got {limit!r}")
    root = Path(root)
    _check_present(root)
    if verify:
        for filename, expected in MD5.items():
            actual = _md5(root / filename)
            if actual != expected:
                raise ValueError(f"cifar10: MD5 mismatch for {root / filename}: expected {expected}, "
                                 f"got {actual} (not the official file, or corrupted)")

    meta = _load(root / META_FILE)
    names = _get(meta, "label_names", root / META_FILE)
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise ValueError(f"cifar10: {root / META_FILE} must list {NUM_CLASSES} label_names, got {names!r}")

    train_x, train_y, kept = [], [], 0
    for filename in TRAIN_FILES:
        if limit is not None and kept >= limit:
            break
        x, y = _read_batch(root / filename)
        train_x.append(x)
        train_y.append(y)
        kept += len(y)
    x_train, y_train = np.concatenate(train_x)[:limit], np.concatenate(train_y)[:limit]
    x_test, y_test = _read_batch(root / TEST_FILE)
    x_test, y_test = x_test[:limit], y_test[:limit]

    x_train, x_test = standardize(_to_images(x_train), _to_images(x_test))
    return Split(name="cifar10", x_train=x_train, y_train=torch.from_numpy(y_train), x_test=x_test,
                 y_test=torch.from_numpy(y_test), num_classes=NUM_CLASSES)


def _check_present(root: Path) -> None:
    how = (f"`tar -xzf cifar-10-python.tar.gz -C {root.parent}`" if root.name == "cifar-10-batches-py"
           else f"extract it and move the files of its cifar-10-batches-py folder into {root}")
    hint = (f"Get the official cifar-10-python.tar.gz (python version, {SOURCE}) and extract it so "
            f"that {root / TRAIN_FILES[0]} exists: {how}.")
    if not root.is_dir():
        raise FileNotFoundError(f"cifar10: folder {root} not found. {hint}")
    missing = [name for name in MD5 if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"cifar10: missing {', '.join(missing)} in {root}. {hint}")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = RestrictedUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"cifar10: {path} must hold a dict, got {type(obj).__name__}")
    return obj


def _get(entry: dict, key: str, path: Path) -> Any:
    for candidate in (key.encode("ascii"), key):
        if candidate in entry:
            return entry[candidate]
    raise ValueError(f"cifar10: {path} has no key {key!r} (keys: {sorted(map(repr, entry))})")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (data uint8 (N, 3072), labels int64 (N,)), with shape/range checks."""
    entry = _load(path)
    data, labels = _get(entry, "data", path), _get(entry, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise ValueError(f"cifar10: {path} data must be a uint8 array of shape (N, 3072), got {got}")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu" \
            or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"cifar10: {path} labels must be {data.shape[0]} ints in [0, {NUM_CLASSES})")
    return data, labels.astype(np.int64)


def _to_images(data: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3072) rows (R plane, G plane, B plane, each row-major 32x32) -> float32 (N, 3, 32, 32) / 255."""
    return torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32).float().div_(255.0)
