"""Closing a step of a Probe: the accumulated moments merged, unscaled (AMP), reduced across ranks
and turned into a Record, with the parameter statistics of ``varprobe.probe.params``."""
from __future__ import annotations

import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor

from .buffers import SUMMARY_COLUMNS, Moments, cached, on, to_device
from .params import StepRows
from .plan import TRAIN
from .table import Program, Record, Schema

__all__ = ["close_mode", "drop_skipped"]

_COL = {name: i for i, name in enumerate(SUMMARY_COLUMNS)}
_NCOL = len(SUMMARY_COLUMNS)
_F64 = torch.float64
_GRAD_ROWS = ("grad_out.", "grad_in.", "gw.")
_PER_CHANNEL = frozenset(("ch_var", "ch_sq_mean", "dead_frac"))  # need the channel axis


def _cached(probe, key: tuple, build):
    return cached(probe._cache, key, build, 128)


def _moment_rows(probe, mode: str, acc: Moments) -> tuple[list[tuple], list[int]]:
    """Rows of the site statistics that fired (cached on which sites fired)."""
    def build():
        rows, index = [], []
        for layer in probe._hooks.flow.row_order(probe._layers):  # rows in call order
            sites = layer.sites[mode]
            for slot, prefix, names in (("in", "in.", layer.in_q), ("out", layer.out_prefix, layer.out_q),
                                        ("grad_out", "grad_out.", layer.grad_out_q),
                                        ("grad_in", "grad_in.", ["var"] if layer.grad_in else [])):
                i = sites.get(slot)
                if i is None or not names or not acc.fired(i):
                    continue
                if slot in layer.whole[mode]:  # the channel axis of a tensor could not be told
                    names = [n for n in names if n not in _PER_CHANNEL]
                for name in names:
                    rows.append((layer.name, layer.depth, layer.module_type, layer.table_role, prefix + name))
                    index.append(i * _NCOL + _COL[name])
        return rows, index
    # depths change only with the dataflow's version (varprobe.probe.dataflow)
    return _cached(probe, ("rows", mode, probe._hooks.flow.version, tuple(c > 0 for c in acc.counts),
                         tuple((layer.idx, tuple(sorted(layer.whole[mode]))) for layer in probe._layers
                               if layer.whole[mode])), build)


def close_mode(probe, mode: str, *, loss=None, lr=None, scaler=None, grads_unscaled: bool = False,
               reset: bool = True) -> Record | None:
    """Statistics of the open step of ``mode`` as a Record (None if nothing fired).
    ``grads_unscaled``: ``.grad`` already holds unscaled gradients, so only the tensor-hook
    statistics are divided by the loss scale, not those computed from ``.grad``."""
    h = probe._hooks
    h.flow.fix_unplaced()  # depths of layers seen only in forwards without a graph
    if mode == TRAIN:  # and of those that did not run (warned by check_fires)
        h.flow.place_unfired(lambda p: p.view.parameter() if p.view is not None else None)
    if mode != TRAIN and mode not in h.dirty:  # no hook recorded in this mode: no rows
        if reset:
            h.reset(mode)
        return None
    acc = h.acc[mode]
    acc.merge(h.pending[mode])
    fired = any(acc.counts)
    inv_scale = found_inf = None
    if mode == TRAIN and fired:
        factor: Tensor | float | None = 1.0 / probe._world if probe._world > 1 else None
        if scaler is not None and scaler.is_enabled():
            # scaler.scale(1) is the scale as a device tensor: public API, no sync (get_scale() syncs)
            inv_scale = 1.0 / scaler.scale(torch.ones((), device=acc.device)).to(_F64)
            grads = [p.grad for p in probe.model.parameters() if p.grad is not None]
            norms = torch._foreach_norm(grads, 2, dtype=_F64) if grads else [acc.data.new_zeros(())]
            found_inf = ~torch.isfinite(torch.stack([n.to(acc.device) for n in norms]).sum())
            factor = inv_scale if factor is None else inv_scale * factor
        if factor is not None:
            acc.scale_(tuple(h.grad_sites[TRAIN]), factor)
    if mode == TRAIN and probe._world > 1 and len(acc):
        _check_layout(probe, acc)
        acc.all_reduce_(probe._group)
    out = StepRows()
    summary = acc.step_layout() if fired else None
    if summary is not None:  # the moments are kept as they are; the site statistics follow at the flush
        rows, index = _moment_rows(probe, mode, acc)
        out.put("acc", summary.parts(acc))
        out.later(("summary", summary.key), summary.k * _NCOL, summary.summary)
        out.rows, out.index = list(rows), list(index)
    probe._params.batchnorm(out, mode, acc, h.running[mode])
    host_rows: list[tuple] = []
    host_values: list[float] = []
    if mode == TRAIN:
        probe._params.train(out, acc, summary, None if grads_unscaled else inv_scale, found_inf, probe._t)
        if loss is not None and probe._world > 1 and "loss" in probe._quantities:
            loss = torch.as_tensor(loss).detach().to(acc.device or "cpu", _F64).mean()
            dist.all_reduce(loss, op=dist.ReduceOp.SUM, group=probe._group)
            loss = loss / probe._world  # the global loss: mean of the rank losses
        for name, v in (("loss", loss), ("lr", lr)):
            if v is None or name not in probe._quantities:
                continue
            if isinstance(v, Tensor):
                out.add(None, name, out.block(on(v.detach(), None, _F64).mean()))
            else:
                host_rows.append(("", -1, "", "", name))
                host_values.append(float(v))
        if found_inf is not None and "amp.skipped" in probe._quantities:
            out.add(None, "amp.skipped", out.block(found_inf.to(_F64)))
    record = _record(probe, mode, acc, out, host_rows, host_values) if out.rows or host_rows else None
    if mode == TRAIN:  # only now that nothing can fail: the step's state (its g_i) moves on, rows or not
        probe._params.commit()
    if reset:
        h.reset(mode)
    return record


def _record(probe, mode: str, acc: Moments, out: StepRows, host_rows: list[tuple],
            host_values: list[float]) -> Record:
    """The Record of the closing step: what the step kept, laid end to end in one float64 tensor
    (one copy, no transfer), and the :class:`~varprobe.probe.table.Program` that derives its rows
    from it at the flush (cached per layout)."""
    raw = program = None
    if out.rows:
        first = next(iter(out.inputs.values()))
        device = acc.device or (first[0] if isinstance(first, list) else first).device
        parts, inputs, at = [], {}, 0
        for name, v in out.inputs.items():
            ts = v if isinstance(v, list) else [v]
            n = sum(t.numel() for t in ts)
            inputs[name] = (at, n, tuple(v.shape) if isinstance(v, Tensor) else (n,))
            at += n
            parts += [on(t, device) if t.ndim == 1 else on(t, device).reshape(-1) for t in ts]
        raw = torch.cat(parts)
        if raw.dtype != _F64:
            raw = raw.to(_F64)
        key = ("program", tuple(inputs.items()), tuple((k, size) for k, size, _ in out.blocks),
               tuple(out.index), device)

        def build() -> Program:
            idx = to_device(torch.tensor(out.index, dtype=torch.long), device)
            return Program(inputs, [(size, finish) for _, size, finish in out.blocks], idx)
        program = _cached(probe, key, build)
    schema = _cached(probe, ("schema", tuple(out.rows)), lambda: Schema(tuple(out.rows)))
    host = _cached(probe, ("schema", tuple(host_rows)), lambda: Schema(tuple(host_rows))) if host_rows else None
    return Record(probe._t, mode, schema, None, host, host_values, raw=raw, program=program)


def _check_layout(probe, acc: Moments) -> None:
    signature = acc.signature()
    if probe._layout_checked == signature:  # checked once per layout (new sites: again)
        return
    mine = torch.tensor(signature, dtype=torch.long)
    if acc.device is not None and acc.device.type != "cpu" and dist.get_backend(probe._group) == "nccl":
        mine = mine.to(acc.device)
    everyone = [torch.zeros_like(mine) for _ in range(probe._world)]
    dist.all_gather(everyone, mine, group=probe._group)
    sigs = [tuple(e.tolist()) for e in everyone]
    if len(set(sigs)) > 1:
        raise RuntimeError(f"Probe: ranks recorded different layers (sites, channels, layout hash per "
                           f"rank: {sigs}); every rank must run the same probed layers in the same order")
    probe._layout_checked = signature


def drop_skipped(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the gradient rows of the steps a GradScaler skipped (``amp.skipped`` == 1)."""
    flags = frame[frame["quantity"] == "amp.skipped"]
    skipped = set(flags.loc[flags["value"] > 0, "step"])
    if not skipped:
        return frame
    drop = frame["step"].isin(skipped) & (frame["mode"] == TRAIN) & frame["quantity"].str.startswith(_GRAD_ROWS)
    return frame[~drop].reset_index(drop=True)
