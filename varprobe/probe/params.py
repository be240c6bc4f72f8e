"""Statistics a Probe records at ``step()``: weights, kernels, average gradients, the variance
decomposition, BatchNorm batch vs running statistics and norm affine parameters, for all layers
together.

``step()`` only launches the reductions that read tensors (per-filter sums and sums of squares
of weights and gradients, the decomposition's kernel products, the update difference) and keeps
them, with the step's accumulated moments, in the step's record (:class:`StepRows`); everything
derived from them (variances, ratios, shift ratio, sign persistence, bias correlation,
decomposition shares) is computed at the flush, for all buffered steps with the same layout at
once (``varprobe.probe.table.Program``). Each group is one batched computation over every layer
it applies to (the tensors laid end to end; ``varprobe.stats.segments``), so a step costs a fixed
number of kernels whatever the number of layers, and nothing syncs with the host. Index tensors
are built on the host when the set of layers (or an input size) changes and cached.
"""
from __future__ import annotations


import math

import torch
from torch import Tensor

from collections.abc import Callable, Hashable

from ..stats import FILTER_STATS, Segments, filter_stats_many, filter_sums, grad_shift_many
from ..stats import rounding_tolerance, run_sums, segment_correlation, segment_sum
from .buffers import SUMMARY_COLUMNS, Moments, MomentsLayout, cached, on
from .plan import LayerPlan, tap_overlap_of
from .updates import UpdateRatios

__all__ = ["StepRows", "ParamStats"]

_F64 = torch.float64
_MEAN, _VAR = SUMMARY_COLUMNS.index("mean"), SUMMARY_COLUMNS.index("var")
_NCOL = len(SUMMARY_COLUMNS)
_DEC_PRED = ("dec.pred_ch_var", "dec.pred_ch_sq_mean")
_DEC = ("dec.measured", "dec.iid", "dec.shift", "dec.rest") + _DEC_PRED


class StepRows:
    """Rows of a step being assembled: (layer, depth, module_type, role, quantity) and, per row, an
    index into the concatenation of the value blocks added so far.

    A block is computed at the flush by ``finish(env)`` from the tensors the step kept
    (:meth:`put`), ``env`` holding each of them with the buffered steps on a leading axis
    (``varprobe.probe.table.Program``). ``key`` identifies what ``finish`` does: steps whose
    blocks have the same keys (and inputs of the same shapes) are finished together by the first
    one's functions, so a finisher may use only the host values and cached layouts its key names."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.index: list[int] = []
        self.inputs: dict[str, Tensor | list[Tensor]] = {}
        self.blocks: list[tuple[Hashable, int, Callable[[dict], Tensor]]] = []
        self.size = 0

    def put(self, name: str, values: Tensor | list[Tensor]) -> None:
        """Keep ``values`` (a tensor, or 1-d tensors laid end to end) until the flush, as ``name``."""
        self.inputs.setdefault(name, values)

    def later(self, key: Hashable, size: int, finish: Callable[[dict], Tensor]) -> int:
        """Add a block of ``size`` values per step computed at the flush; returns its offset."""
        at = self.size
        self.blocks.append((key, size, finish))
        self.size += size
        return at

    def block(self, values: Tensor) -> int:
        """Add a block of values known now (any shape, flattened); returns its offset."""
        name = f"#{len(self.blocks)}"
        self.put(name, values)
        return self.later(("now", name), values.numel(), lambda env: env[name])

    def add(self, p: LayerPlan | None, quantity: str, at: int) -> None:
        if p is None:
            self.rows.append(("", -1, "", "", quantity))
        else:
            self.rows.append((p.name, p.depth, p.module_type, p.table_role, quantity))
        self.index.append(at)


class ParamStats:
    """Per-step statistics of parameters (and of moments already accumulated) of a probe's layers."""

    def __init__(self, plans: list[LayerPlan]) -> None:
        self.plans = plans
        self._cache: dict[tuple, object] = {}
        # plan idx -> previous recorded step's g_i, as (vector of every layer's g_i, start, length)
        self.prev: dict[int, tuple[Tensor, int, int]] = {}
        self.prev_ok: dict[int, Tensor] = {}  # plan idx -> 0-d: that g_i came from a step not skipped
        self._staged: dict[int, tuple[tuple[Tensor, int, int], Tensor | None]] = {}  # the closing step's, until commit()
        # w.update_ratio: raw-weight snapshots taken in step() before a recorded step (updates.py)
        self.updates = UpdateRatios()
        self.update_plans = [p for p in plans if p.update]

    def snapshot(self, step: int) -> None:
        """w.update_ratio: keep the raw weights of ``step`` (called in ``step()`` of ``step`` when
        step + 1 is recorded, before the optimizer update). No host sync."""
        if self.update_plans:
            self.updates.snapshot([p.view for p in self.update_plans], step)

    def commit(self) -> None:
        """The closing step's record is built: its g_i become the previous ones (sign persistence)."""
        for idx, (gi, ok) in self._staged.items():
            self.prev[idx] = gi
            if ok is not None:
                self.prev_ok[idx] = ok
        self._staged.clear()

    def _cached(self, key: tuple, build):
        return cached(self._cache, key, build, 256)

    def _segments(self, tag: str, tensors: list[Tensor], shapes: list[tuple[int, ...]] | None = None) -> Segments:
        """The cached layout of ``tensors`` (as ``shapes``, their own by default)."""
        shapes = shapes or [tuple(t.shape) for t in tensors]
        key = (tag, tuple((s, t.dtype) for s, t in zip(shapes, tensors)), tensors[0].device)

        def build() -> Segments:
            seg = Segments(shapes, tensors[0].device)
            seg.key = key
            return seg
        return self._cached(key, build)

    # -- training step -----------------------------------------------------------------------------
    def train(self, out: StepRows, acc: Moments, summary: MomentsLayout | None, inv_scale: Tensor | None,
              found_inf: Tensor | None, step: int) -> None:
        """Add the norm.*, w.*, k.*, dec.*, gw.* and w.update_ratio rows of the closing training
        step ``step`` (the step's g_i are kept for the next one by :meth:`commit`, once its record
        is built). ``summary``: the layout of the moments the step kept (``out.put("acc")``), None
        when none fired. ``inv_scale``: 1/S to divide the ``.grad``-based first moments (gw.avg_abs,
        gw.rms) by, or None when ``.grad`` is not scaled (no scaler, or already unscaled)."""
        self._staged.clear()
        with torch.no_grad():
            self._norms(out)
            self._updates(out, step)
            need = [p for p in self.plans if p.params]
            if not need:
                return
            raw: dict[int, Tensor] = {}  # raw weights, filters on axis 0 (varprobe.layouts)
            kern: dict[int, Tensor] = {}
            for p in need:
                raw[p.idx] = p.view.weight()
                if p.k_q or p.k_extra or p.dec_q:
                    k = p.view.effective()  # computed once: under a parametrization each access recomputes it
                    if k is not None:
                        kern[p.idx] = k
            self._filters(out, "w.", [p for p in need if p.w_q], raw)
            self._filters(out, "k.", [p for p in need if p.k_q and p.idx in kern], kern)
            for p in need:
                if p.k_extra and p.idx in kern:
                    extra = p.module.kernel_stats()
                    for name in p.k_extra:
                        if name[2:] in extra:
                            out.add(p, name, out.block(extra[name[2:]].to(_F64)))
            if summary is not None:
                self._decomposition(out, acc, summary, [p for p in need if p.dec_q], raw, kern)
            self._grads(out, acc, summary, need, raw, inv_scale, found_inf)

    def _updates(self, out: StepRows, step: int) -> None:
        """w.update_ratio of every weighted layer in one batched computation (varprobe.probe.updates);
        no row for a layer whose previous weight is unknown."""
        views = [p.view for p in self.update_plans]
        known = self.updates.known(views, step)
        if not any(known):  # the previous weights are unknown: no rows (undefined, not NaN)
            return
        at = out.block(self.updates.ratios(views, step))
        for j, p in enumerate(self.update_plans):
            if known[j]:
                out.add(p, "w.update_ratio", at + j)

    def _norms(self, out: StepRows) -> None:
        items = [(p, name) for p in self.plans for name in p.norm_q]
        if not items:
            return
        ts = [p.module.weight if name == "norm.weight_mean" else p.module.bias for p, name in items]
        seg = self._segments("norm", ts, [(1, t.numel()) for t in ts])  # one filter of C entries each
        out.put("norm.sums", run_sums(seg.flat(ts), seg.lengths))
        at = out.later(("norm", seg.key), len(items), lambda env: env["norm.sums"] / seg.n)
        for j, (p, name) in enumerate(items):
            out.add(p, name, at + seg.offsets[j])

    def _filters(self, out: StepRows, prefix: str, layers: list[LayerPlan], ws: dict[int, Tensor]) -> None:
        if not layers:
            return
        ts = [ws[p.idx] for p in layers]
        seg = self._segments(prefix, ts)
        out.put(prefix + "sums", filter_sums(ts, seg))
        n = len(layers)
        at = out.later(("filters", seg.key), 5 * n, lambda env: filter_stats_many(env[prefix + "sums"], seg))
        for j, p in enumerate(layers):
            for name in (p.w_q if prefix == "w." else p.k_q):
                out.add(p, name, at + FILTER_STATS.index(name[2:]) * n + j)

    def _decomposition(self, out: StepRows, acc: Moments, summary: MomentsLayout, layers: list[LayerPlan],
                       raw: dict[int, Tensor], kern: dict[int, Tensor]) -> None:
        """dec.*: the step's output second moment without bias, and its i.i.d., filter-sum and
        remaining parts (``varprobe.stats.second_moment_parts``), from the step's input moments."""
        todo = []
        for p in layers:
            i_in, i_out = p.sites["train"].get("in"), p.sites["train"].get("out")
            if (i_in is not None and i_out is not None and acc.fired(i_in) and acc.fired(i_out)
                    and acc.channels[i_out] == raw[p.idx].shape[0]):
                todo.append((p, i_in, i_out))
        if not todo:
            return
        ks = [kern.get(p.idx, raw[p.idx]) for p, _, _ in todo]
        dev = ks[0].device
        biases = [p.module.bias for p, _, _ in todo]
        key = ("dec", tuple((p.idx, p.in_size, tuple(k.shape), a, b, isinstance(bb, Tensor))
                            for ((p, a, b), k, bb) in zip(todo, ks, biases)), dev, acc.device)
        geo = self._cached(key, lambda: _DecGeometry([p for p, _, _ in todo], ks, dev, acc.device,
                                                     [acc.channels[a] for _, a, _ in todo],
                                                     [acc.offsets[a] for _, a, _ in todo], biases))
        # dec.pred_*: each input channel c's own mean mu_c and biased variance var_c (all channels
        # of the moments; the kernels' entries pick theirs)
        s_c, q_c, _, _ = acc.live()
        n_c = acc.channel_counts()
        mu_c = s_c / n_c
        var_c = on((q_c / n_c - mu_c * mu_c).clamp_min(0.0), dev)
        k = geo.gather(ks)  # every kernel entry, filter by filter, tap by tap, input channel innermost
        # per (filter, tap), summed over input channels c: K^2, K (s_i[t]), var_c K^2, mu_c K (r_i[t])
        y = geo.reduce(geo.products(k, var_c, on(mu_c, dev)))
        # sum_t C[t, t] of each row: tap_k2, (unused), tap_vk2, diag(C)^T r_i (varprobe.theory.channel_moments)
        out.put("dec.taps", run_sums(y * geo.diag, geo.taps_lengths, axis=1))
        sr = y[1::2]  # s_i[t], r_i[t]
        quads = []
        for lo, hi, t, overlap in geo.taps:  # the filters with the same number of taps, at once
            l2 = sr[:, lo:hi].view(2, -1, t).transpose(0, 1)
            quads.append((torch.bmm(l2, overlap) * l2).sum(2))  # s_i^T C s_i, r_i^T C r_i
        out.put("dec.quad", quads[0] if len(quads) == 1 else torch.cat(quads))  # (F, 2), filters in geo order
        out.put("dec.bias", geo.bias_values())
        idx = acc._channel_index(tuple(b for _, _, b in todo))
        ins = self._cached(("ins",) + tuple(a for _, a, _ in todo) + (acc.device,),
                           lambda: torch.tensor([a for _, a, _ in todo]).to(acc.device))
        m = len(todo)

        def finish(env: dict) -> Tensor:
            n, so, qo = summary.per_channel(env, idx)
            b = env["dec.bias"]
            # E[(y_c - b_c)^2] >= 0 per channel: clamped at 0 against the cancellation of its three terms
            measured_c = (qo / n - 2 * b * so / n + b * b).clamp_min(0.0)
            tap_k2, _, tap_vk2, dr = env["dec.taps"].unbind(-2)
            quad_s, quad_r = env["dec.quad"].unbind(-1)
            mean_f = dr + b.index_select(-1, geo.filter_order)
            # iid, shift (s_i^T C s_i >= 0), var, mean^2 per filter
            per_filter = torch.stack([tap_k2, quad_s.clamp_min(0.0), tap_vk2 + (quad_r - dr * dr).clamp_min(0.0),
                                      mean_f * mean_f], -2)
            tot = torch.cat([segment_sum(per_filter, geo.layer_of_filter, m),
                             segment_sum(measured_c, geo.layer_of_channel, m)[..., None, :]], -2) / geo.layer_o
            site = summary.summary(env).index_select(-2, ins)
            mean, var = site[..., _MEAN], site[..., _VAR]
            t_iid, t_shift, t_var, t_mean2, measured = tot.unbind(-2)
            iid, shift = t_iid * var, t_shift * mean * mean
            return torch.stack([measured, iid, shift, measured - iid - shift, t_var, t_mean2], -2)

        at = out.later(("dec", key, summary.key), 6 * m, finish)
        for j, (p, _, _) in enumerate(todo):
            for name in p.dec_q:
                if name in _DEC_PRED and not geo.in_ok[j]:
                    continue  # the input's channels are not the kernel's: no per-channel prediction
                out.add(p, name, at + _DEC.index(name) * m + j)

    def _grads(self, out: StepRows, acc: Moments, summary: MomentsLayout | None, need: list[LayerPlan],
               raw: dict[int, Tensor], inv_scale: Tensor | None, found_inf: Tensor | None) -> None:
        grads = {p.idx: p.view.grad() for p in need if p.gw_q and p.fires["train"]}
        layers = [p for p in need if grads.get(p.idx) is not None]
        if not layers:
            return
        gs = [grads[p.idx] for p in layers]
        seg = self._segments("gw", gs)
        sums = filter_sums(gs, seg)  # gradients as autograd left them, filters in group order
        out.put("gw.sums", sums)
        fans = [math.prod(g.shape[1:]) for g in gs]
        tol = self._cached(("tol",) + tuple(zip((g.dtype for g in gs), fans)) + (seg.filters, sums.device),
                           lambda: torch.tensor([rounding_tolerance(g.dtype, n) for g, n in zip(gs, fans)],
                                                dtype=_F64).to(sums.device).index_select(0, seg.layer_of))
        if inv_scale is not None:  # the loss scale of a GradScaler: avg_abs and rms are first moments
            out.put("gw.inv_scale", inv_scale)
        n = len(layers)
        # sign persistence against the previous recorded step of the same layer: the signs of the
        # per-filter sums (those of g_i) kept on the device
        has_prev = [p.idx in self.prev and self.prev[p.idx][2] == g.shape[0] for p, g in zip(layers, gs)]
        zeros = sums.new_zeros(()) if found_inf is not None else None
        prev = None
        if any(has_prev):
            prev = self._previous(layers, gs, seg, has_prev)
            out.put("gw.prev", prev)
            if found_inf is not None:
                out.put("gw.prev_ok", torch.stack([self.prev_ok.get(p.idx, zeros) if h else zeros
                                                   for p, h in zip(layers, has_prev)]))
        scaled, sign = inv_scale is not None, any(has_prev)
        amp = found_inf is not None

        def finish(env: dict) -> Tensor:
            gi, st, rms_i = grad_shift_many(env["gw.sums"], seg)
            # Average gradients that are zero up to rounding (PWS) have no sign or correlation.
            loud = (gi.abs() > tol * rms_i).to(_F64)
            signal = env["gw.signal"] = segment_sum(loud, seg.layer_of, seg.layers) > 0
            env["gw.gi"] = gi
            if scaled:
                inv = env["gw.inv_scale"]
                st = st * torch.stack([inv, inv, torch.ones_like(inv)], -1)[..., None]
            if not sign:
                return st
            agree = (torch.sign(gi) == torch.sign(env["gw.prev"])).to(_F64)
            sp = segment_sum(agree, seg.layer_of, seg.layers) / seg.layer_o
            ok = signal & (env["gw.prev_ok"] > 0) if amp else signal
            return torch.cat([st.flatten(-2), torch.where(ok, sp, torch.nan)], -1)

        at = out.later(("gw", seg.key, scaled, amp, tuple(has_prev)), (4 if sign else 3) * n, finish)
        for j, p in enumerate(layers):
            for k, name in enumerate(("gw.avg_abs", "gw.rms", "gw.shift_ratio")):
                if name in p.gw_q:
                    out.add(p, name, at + k * n + j)
            if has_prev[j] and "gw.sign_persistence" in p.gw_q:
                out.add(p, "gw.sign_persistence", at + 3 * n + j)
        keep = sums[:seg.filters]
        if found_inf is not None:  # a skipped step leaves the previous g_i in place
            keep = torch.where(found_inf, prev if prev is not None else keep.new_zeros(keep.shape), keep)
        for j, p in enumerate(layers):
            ok = None
            if found_inf is not None:
                old = self.prev_ok.get(p.idx, zeros) if has_prev[j] else zeros
                ok = torch.where(found_inf, old, 1.0)
            self._staged[p.idx] = ((keep, seg.offsets[j], seg.o[j]), ok)
        if summary is not None:
            self._bias_corr(out, acc, summary, layers, gs, seg)

    def _previous(self, layers: list[LayerPlan], gs: list[Tensor], seg: Segments, has_prev: list[bool]) -> Tensor:
        """The previous recorded step's per-filter gradient sums of ``layers`` in this step's filter
        order (zeros where a layer has none): that step's vector itself when the layout is the same
        (the usual case)."""
        v = self.prev[layers[0].idx][0] if has_prev[0] else None
        if v is not None and v.shape[0] == seg.filters and all(
                h and self.prev[p.idx][0] is v and self.prev[p.idx][1] == seg.offsets[j]
                for j, (p, h) in enumerate(zip(layers, has_prev))):
            return v
        parts = []
        for _, members in seg.groups:
            for j in members:
                if has_prev[j]:
                    w, at, n = self.prev[layers[j].idx]
                    parts.append(w[at:at + n])
                else:
                    parts.append(torch.zeros(gs[j].shape[0], dtype=_F64, device=seg.device))
        return torch.cat(parts)

    def _bias_corr(self, out: StepRows, acc: Moments, summary: MomentsLayout, layers: list[LayerPlan],
                   gs: list[Tensor], seg: Segments) -> None:
        """gw.bias_corr at the flush, from the step's g_i and grad_out sums (block ``gw`` first)."""
        todo = []
        for j, (p, g) in enumerate(zip(layers, gs)):
            i_in, i_g = p.sites["train"].get("in"), p.sites["train"].get("grad_out")
            if (p.bias_corr and i_in is not None and i_g is not None and acc.fired(i_in) and acc.fired(i_g)
                    and acc.channels[i_g] == g.shape[0]):
                todo.append((j, p, i_in, i_g))
        if not todo:
            return
        key = ("corr", seg.filters, tuple((j, a, b) for j, _, a, b in todo), acc.device)

        def build():
            pick = torch.cat([torch.arange(seg.offsets[j], seg.offsets[j] + seg.o[j]) for j, _, _, _ in todo])
            lid = torch.repeat_interleave(torch.arange(len(todo)), torch.tensor([seg.o[j] for j, *_ in todo]))
            tol = torch.cat([torch.full((gs[j].shape[0],), rounding_tolerance(gs[j].dtype), dtype=_F64)
                             for j, *_ in todo])
            return (pick.to(acc.device), lid.to(acc.device), torch.bincount(lid).to(_F64).to(acc.device),
                    torch.tensor([j for j, *_ in todo]).to(acc.device), torch.tensor([a for _, _, a, _ in todo]).to(
                        acc.device), tol.to(acc.device))

        pick, lid, count, which, ins, tol = self._cached(key, build)
        idx = acc._channel_index(tuple(b for *_, b in todo))
        m = len(todo)

        def finish(env: dict) -> Tensor:
            n, db, q = summary.per_channel(env, idx)
            mu = summary.summary(env).index_select(-2, ins)[..., _MEAN]
            # A channel sum within rounding of zero carries no signal (a conv followed by BatchNorm in
            # training mode has sum dL/dy_i = 0 exactly).
            loud = (db.abs() > tol * (n * q).sqrt()).to(_F64)
            ok = env["gw.signal"].index_select(-1, which) & (segment_sum(loud, lid, m) > 0)
            corr = segment_correlation(env["gw.gi"].index_select(-1, pick), mu.index_select(-1, lid) * db, lid,
                                       m, count)
            return torch.where(ok, corr, torch.nan)

        at = out.later(("corr", key, seg.key, summary.key), m, finish)
        for k, (_, p, _, _) in enumerate(todo):
            out.add(p, "gw.bias_corr", at + k)

    # -- BatchNorm ---------------------------------------------------------------------------------
    def batchnorm(self, out: StepRows, mode: str, acc: Moments, running: Tensor | None) -> None:
        """bn.mean_gap, bn.var_ratio of the BatchNorm layers that ran in ``mode`` this step (at the
        flush, from the step's kept moments ``out.put("acc")`` and running statistics)."""
        bns = [p for p in self.plans if p.bn_q]
        if running is None or not bns or not len(acc):
            return
        todo, offset = [], 0
        for p in bns:
            c = p.module.running_mean.shape[0]
            i = p.sites[mode].get("in")
            if i is not None and acc.fired(i) and acc.channels[i] == c and "in" not in p.whole[mode]:
                todo.append((p, i, offset, c))
            offset += 2 * c
        if not todo:
            return
        key = ("bn", mode, tuple((i, o) for _, i, o, _ in todo), acc.device)

        def build():
            rm = torch.cat([torch.arange(o, o + c) for _, _, o, c in todo])
            lid = torch.repeat_interleave(torch.arange(len(todo)), torch.tensor([c for *_, c in todo]))
            eps = torch.cat([torch.full((c,), float(p.module.eps), dtype=_F64) for p, _, _, c in todo])
            cnt = torch.tensor([float(c) for *_, c in todo], dtype=_F64)
            c_tot = torch.tensor([c for *_, c in todo])
            rv = rm + torch.repeat_interleave(c_tot, c_tot)
            return tuple(t.to(acc.device) for t in (rm, rv, lid, eps, cnt))

        rm_i, rv_i, lid, eps, cnt = self._cached(key, build)
        idx = acc._channel_index(tuple(i for _, i, _, _ in todo))
        lay = acc.step_layout()
        out.put("bn.running", running)
        m = len(todo)

        def finish(env: dict) -> Tensor:
            n, s, q = lay.per_channel(env, idx)
            mu = s / n
            var = (q / n - mu * mu).clamp_min(0.0)
            running_ = env["bn.running"]
            rm, rv = running_.index_select(-1, rm_i), running_.index_select(-1, rv_i)
            return segment_sum(torch.stack([(mu - rm).abs() / (rv + eps).sqrt(), var / rv], -2), lid, m) / cnt

        at = out.later(("bn", key, lay.key, running.numel()), 2 * m, finish)
        for j, (p, _, _, _) in enumerate(todo):
            for name in p.bn_q:
                out.add(p, name, at + ("bn.mean_gap", "bn.var_ratio").index(name) * m + j)


class _DecGeometry:
    """dec.* layout of a set of layers and input sizes.

    The kernels are copied into one float64 buffer (:meth:`gather`), layer by layer with the
    layers of the same number of taps T together (``taps`` order), each kernel laid out filter by
    filter, tap by tap, its input channels innermost, so the sums over input channels of every
    (filter, tap) are one ``segment_reduce`` (:meth:`reduce`) whatever the number of layers.
    ``entry``: for each entry, the index among the moments' channels of the input channel it reads
    (where a layer's input does not have the channels its kernel reads, ``in_ok`` False, its
    input's first channel: no per-channel prediction is recorded for it). ``diag``: C[t, t] of each
    (filter, tap), ``taps_lengths`` the taps of each filter (4 rows, for the sums over taps);
    ``taps``: per T, (start, end of its (filter, tap) slots, T, the overlap C of each of its
    filters (F_T, T, T)). ``filter_order`` gives each filter's index among the layers' output
    channels laid end to end, ``layer_of_filter`` its layer. Per-layer and per-filter tensors live
    on ``acc_device`` (where the moments are), kernel-side ones on ``device``.
    """

    def __init__(self, layers: list[LayerPlan], kernels: list[Tensor], device, acc_device,
                 in_channels: list[int], in_offsets: list[int], biases: list) -> None:
        by_taps: dict[int, list[int]] = {}
        overlaps, cins = [], []
        for j, (p, k) in enumerate(zip(layers, kernels)):
            c = tap_overlap_of(p.module, p.in_size)
            cin = k.shape[1] if k.ndim > 1 else 1
            if k[0].numel() != cin * c.shape[0]:
                raise ValueError(f"Probe: layer {p.name!r}: kernel {tuple(k.shape)} does not fit an "
                                 f"overlap of {c.shape[0]} taps")
            overlaps.append(c)
            cins.append(cin)
            by_taps.setdefault(c.shape[0], []).append(j)
        o = [k.shape[0] for k in kernels]
        out_at = [sum(o[:j]) for j in range(len(kernels))]
        groups = [getattr(p.module, "groups", 1) for p in layers]
        self.in_ok = [in_channels[j] == cins[j] * groups[j] for j in range(len(kernels))]
        self._buffer = torch.empty(sum(k.numel() for k in kernels), dtype=_F64, device=device)
        self._views: list[Tensor | None] = [None] * len(kernels)
        entry, lengths, diag, taps_lengths, layer_of, order = [], [], [], [], [], []
        self.taps = []
        at = ft = 0
        for t, members in by_taps.items():
            lo = ft
            for j in members:
                k, cin = kernels[j], cins[j]
                # filter, input channel, taps... strides of a (filter, tap, channel) layout
                strides = (t * cin,) + ((1,) + tuple(cin * math.prod(k.shape[d + 1:]) for d in range(2, k.ndim))
                                        if k.ndim > 1 else ())
                self._views[j] = self._buffer.as_strided(tuple(k.shape), strides, at)
                at += k.numel()
                ch = (torch.arange(o[j])[:, None] // (o[j] // groups[j])) * cin + torch.arange(cin)
                ch = in_offsets[j] + (ch if self.in_ok[j] else torch.zeros_like(ch))
                entry.append(ch[:, None, :].expand(o[j], t, cin).reshape(-1))
                lengths += [cin] * (o[j] * t)
                diag.append(overlaps[j].diagonal().to(_F64).repeat(o[j]))
                taps_lengths += [t] * o[j]
                layer_of += [j] * o[j]
                order += [out_at[j] + i for i in range(o[j])]
                ft += o[j] * t
            full = torch.cat([overlaps[j].expand(o[j], t, t) for j in members])
            self.taps.append((lo, ft, t, full.to(device, _F64).contiguous()))
        self.entry = torch.cat(entry).to(torch.int32).to(device)
        self.lengths = torch.tensor([lengths] * 4, dtype=torch.long).to(device)  # one row per product
        self.diag = torch.cat(diag).to(device)
        self.taps_lengths = torch.tensor([taps_lengths] * 4, dtype=torch.long).to(device)
        self.filter_order = torch.tensor(order, dtype=torch.long).to(acc_device)
        self.layer_of_filter = torch.tensor(layer_of, dtype=torch.long).to(acc_device)
        self.layer_of_channel = torch.repeat_interleave(torch.arange(len(kernels)), torch.tensor(o)).to(acc_device)
        self.layer_o = torch.tensor([float(c) for c in o], dtype=_F64).to(acc_device)
        # the biases, laid end to end in one float64 buffer (zero where a layer has none)
        self._bias = torch.zeros(sum(o), dtype=_F64, device=acc_device)
        self._bias_views = [self._bias[out_at[j]:out_at[j] + o[j]] for j, b in enumerate(biases)
                            if isinstance(b, Tensor)]
        self._bias_layers = [j for j, b in enumerate(biases) if isinstance(b, Tensor)]
        self._modules = [p.module for p in layers]

    def gather(self, kernels: list[Tensor]) -> Tensor:
        """The kernels copied into the float64 buffer (one ``_foreach_copy_``), returned whole."""
        if torch.is_grad_enabled():
            kernels = [k.detach() for k in kernels]
        torch._foreach_copy_(self._views, kernels)
        return self._buffer

    def products(self, k: Tensor, var_c: Tensor, mu_c: Tensor) -> Tensor:
        """(4, entries) float64: K^2, K, var_c K^2 and mu_c K of every entry of the gathered kernels
        ``k``, c the input channel the entry reads (``entry``); each row written once, in place."""
        rows = k.new_empty((4, k.numel()))
        k2, k1, vk2, mk = rows.unbind(0)
        torch.mul(k, k, out=k2)
        k1.copy_(k)
        torch.index_select(var_c, 0, self.entry, out=vk2).mul_(k2)
        torch.index_select(mu_c, 0, self.entry, out=mk).mul_(k)
        return rows

    def reduce(self, values: Tensor) -> Tensor:
        """Sums of the rows of ``values`` (4, entries) over the input channels of each (filter,
        tap): (4, filter taps), one run sum."""
        return run_sums(values, self.lengths, axis=1)

    def bias_values(self) -> Tensor:
        """The layers' biases now, laid end to end (float64, one copy)."""
        if self._bias_views:
            torch._foreach_copy_(self._bias_views, [self._modules[j].bias.detach() for j in self._bias_layers])
        return self._bias
