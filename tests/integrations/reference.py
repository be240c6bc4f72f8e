"""The plain-loop probe that the callback tests compare with: same model, batches and seed."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import varprobe


def capture_batches(model: nn.Module) -> tuple[list, object]:
    """A forward pre-hook that keeps a copy of every training-forward input (first positional
    argument or ``pixel_values``), to replay the trainer's exact micro-batches."""
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        if module.training and torch.is_grad_enabled():
            x = args[0] if args else kwargs.get("pixel_values")
            seen.append(x.detach().clone())
    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def plain_loop_first_step(model: nn.Module, micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
                          loss_fn, lr: float, tmp_path, backward_scale: float | None = None,
                          **probe_kwargs) -> pd.DataFrame:
    """The train rows of step 0 of a plain loop: each micro-batch's loss times ``backward_scale``
    (default 1 / len(micro_batches)) backpropagated, then
    ``probe.step(loss=mean micro-batch loss, lr=lr)``."""
    w = 1.0 / len(micro_batches) if backward_scale is None else backward_scale
    model.train()
    probe = varprobe.Probe(model, out=tmp_path / "plain", **probe_kwargs).attach()
    total = 0.0
    for x, y in micro_batches:
        loss = loss_fn(model, x, y)
        (loss * w).backward()
        total = total + loss.detach() / len(micro_batches)
    probe.step(loss=total, lr=lr)
    probe.close()
    frame = varprobe.load_run(tmp_path / "plain").frame
    return frame[(frame["step"] == 0) & (frame["mode"] == "train")]


def assert_same_records(got: pd.DataFrame, want: pd.DataFrame, rel: float = 1e-6) -> None:
    """Same (layer, quantity) rows with values equal up to float rounding of a different
    reduction order (both float32 models; moments accumulate in float64)."""
    key = ["layer", "quantity"]
    g = got.set_index(key)["value"].sort_index()
    w = want.set_index(key)["value"].sort_index()
    assert list(g.index) == list(w.index)
    bad = [(k, g[k], w[k]) for k in w.index if g[k] != pytest.approx(w[k], rel=rel, abs=1e-12, nan_ok=True)]
    assert not bad, f"{len(bad)} of {len(w)} rows differ: {bad[:6]}"
