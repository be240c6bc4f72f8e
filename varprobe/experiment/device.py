"""Where a run executes: its torch device (``RunConfig.device``), resolved per worker, and the
determinism settings that go with it (recorded in ``meta.json``). The device check that
``RunConfig`` runs (:func:`check_device`) needs no torch; the rest imports it when called."""
from __future__ import annotations

import multiprocessing
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..data import Split

__all__ = ["DEVICE_CHOICES", "check_device", "resolve_device", "worker_slot", "make_deterministic",
           "split_to"]

#: What ``RunConfig.device`` accepts ("cuda:N" with N a GPU index).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
#: cuBLAS needs a fixed workspace for deterministic matmuls (CUDA >= 10.2); set before cuBLAS starts.
CUBLAS_WORKSPACE = ":4096:8"


def check_device(device: object) -> None:
    """Refuse a device string that is none of ``DEVICE_CHOICES`` (the form only: whether a GPU is
    there is checked where the run starts, by :func:`resolve_device`)."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICE_CHOICES)}")


def resolve_device(device: str, slot: int = 0) -> torch.device:
    """The torch device of a run on this machine.

    "cpu" is the CPU; "auto" is CUDA when available, else the CPU; "cuda" and "auto" (on CUDA) pick
    GPU ``slot mod n`` of the n visible GPUs, so that worker k of a parallel grid uses GPU k mod n;
    "cuda:N" is GPU N as given.

    Raises:
        ValueError: an unknown device string, CUDA requested where it is not available, or a GPU
            index beyond the visible ones (one line naming the value and what is valid here).
    """
    import torch

    check_device(device)
    if device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if device == "auto" and not available:
        return torch.device("cpu")
    if not available:
        raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}); "
                         "valid here: cpu, auto")
    n = torch.cuda.device_count()
    if device in ("auto", "cuda"):
        return torch.device("cuda", slot % n)
    index = int(device.split(":")[1])
    if index >= n:
        raise ValueError(f"device {device!r}: only {n} GPU(s) visible; valid here: cpu, auto, cuda, "
                         f"cuda:0 ... cuda:{n - 1}")
    return torch.device("cuda", index)


def worker_slot() -> int:
    """The index of this worker among its grid's workers, from 0: the k-th loky worker process
    (``LokyProcess-k``), a Dask worker named by an integer (``LocalCluster`` names them 0, 1, ...),
    else 0 (the main process, or a Dask worker with another name: give each such worker its own GPU,
    e.g. through ``CUDA_VISIBLE_DEVICES``)."""
    process = multiprocessing.current_process()
    if process.name.startswith("LokyProcess") and process._identity:
        return process._identity[0] - 1
    try:
        from distributed import get_worker
        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    return name if isinstance(name, int) else 0


def make_deterministic(device: torch.device) -> dict:
    """Make this process's torch as deterministic as it can be on ``device`` and say what holds.

    On CUDA: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op with no
    deterministic kernel warns and runs anyway), cuDNN deterministic and not benchmarking, TF32 off
    (full float32 matmuls and convolutions, as on the CPU), and ``CUBLAS_WORKSPACE_CONFIG`` set where
    it is not (it only takes effect if cuBLAS had not started in this process). These settings stay
    on for the process. On the CPU nothing is changed: torch's CPU kernels are deterministic for a
    fixed thread count.

    Returns:
        The ``determinism`` field of ``meta.json``: what was set, and under which conditions two
        runs of one config are bit-identical.
    """
    import torch

    if device.type != "cuda":
        return {"device_type": device.type, "threads": torch.get_num_threads(),
                "bitwise": "same config, torch version and thread count"}
    cublas_started = torch.cuda.is_initialized()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.cuda.set_device(device)
    return {"device_type": "cuda", "deterministic_algorithms": True, "warn_only": True,
            "cudnn_deterministic": True, "cudnn_benchmark": False, "tf32": False,
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"] if not cublas_started
            else "unknown (CUDA was initialised before the run)",
            "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bitwise": "same config, torch, CUDA and cuDNN versions and GPU model; an op without a "
                       "deterministic CUDA kernel warns (warn_only) and may differ between runs"}


def split_to(split: Split, device: torch.device) -> Split:
    """``split`` with its four tensors on ``device`` (the same object on the CPU): batches are then
    drawn on the device, with no host-to-device copy per step."""
    from ..data import Split

    if split.x_train.device == device:
        return split
    return Split(split.name, split.x_train.to(device), split.y_train.to(device), split.x_test.to(device),
                 split.y_test.to(device), split.num_classes)
