"""Device-side accumulators of a Probe: per-channel moments of many tensors in one flat buffer.

A *site* is one recorded tensor role of one layer (its input, output, output gradient, ...). Each
site owns a slice of C channels of a preallocated float64 buffer holding, per channel, the sum, the
sum of squares and the maximum of everything seen since the last reset, plus a non-finite count per
site. Element counts are host integers (known from shapes), so accumulating never syncs. At the end
of a step, :meth:`Moments.summary` turns every site into its statistics with a few vectorized ops,
whatever the number of sites, and :meth:`Moments.all_reduce_` sums the buffer across ranks in one
collective.
"""
from __future__ import annotations

import zlib
from collections.abc import Hashable

import torch
from torch import Tensor

__all__ = ["Moments", "MomentsLayout", "Pending", "SUMMARY_COLUMNS", "to_device", "on", "cached"]

#: Columns of :meth:`Moments.summary`, one row per site.
SUMMARY_COLUMNS = ("mean", "var", "sq_mean", "ch_var", "ch_sq_mean", "dead_frac", "nonfinite")
_F64 = torch.float64


def to_device(t: Tensor, device: torch.device | None) -> Tensor:
    """A host tensor (an index built when a layout changes) on ``device`` without a host sync: on
    CUDA from pinned memory, asynchronously (a pageable copy would synchronize the stream)."""
    if device is None or torch.device(device).type != "cuda":
        return t.to(device) if device is not None else t
    return t.pin_memory().to(device, non_blocking=True)


def on(t: Tensor, device: torch.device | None, dtype: torch.dtype | None = None) -> Tensor:
    """``t`` on ``device`` (None: where it is) as ``dtype`` (None: its own): ``t`` itself, with no
    op dispatched, when it already is."""
    if (device is None or t.device == device) and (dtype is None or t.dtype == dtype):
        return t
    return t.to(device if device is not None else t.device, dtype if dtype is not None else t.dtype)


class Pending:
    """Per-channel results launched by hooks since the last merge: site indices and the tensors
    (sums, root sums of squares, maxima, non-finite counts) to add to them. Appending is all a hook
    does; :meth:`Moments.merge` adds everything in a few kernels."""

    __slots__ = ("sites", "s", "r", "max_sites", "m", "nf_sites", "nf")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.sites: list[int] = []
        self.s: list[Tensor] = []
        self.r: list[Tensor] = []
        self.max_sites: list[int] = []
        self.m: list[Tensor] = []
        self.nf_sites: list[int] = []
        self.nf: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.sites)


class Moments:
    """Accumulators of per-channel (sum, sum of squares, max) and non-finite counts of many sites."""

    def __init__(self) -> None:
        self.index: dict[Hashable, int] = {}
        self.channels: list[int] = []
        self.offsets: list[int] = []
        self.counts: list[int] = []  # elements per channel since the last reset, per site (host)
        self.size = 0
        self.device: torch.device | None = None
        self.data: Tensor | None = None  # (3, capacity): sum, sum of squares, max
        self.nonfinite: Tensor | None = None  # (site capacity,)
        self.rows: tuple[Tensor, ...] = ()  # data[0], data[1], data[2]: views taken once per allocation
        self._live: tuple[int, int, tuple[Tensor, ...]] | None = None  # (size, sites, views of the used part)
        self._views: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self._n_c: tuple[Tensor, MomentsLayout, Tensor] | None = None  # (counts, layout, per channel)
        self._counts_dev: Tensor | None = None  # counts after a cross-rank reduction
        self._counts_cache: tuple[tuple, Tensor] | None = None  # (counts, the same on the device)
        self._index_cache: dict[tuple, Tensor] = {}
        self._step_layout: MomentsLayout | None = None

    def __len__(self) -> int:
        return len(self.channels)

    # -- allocation ------------------------------------------------------------------------------
    def site(self, key: Hashable, channels: int, device: torch.device) -> int:
        """Index of the site ``key``, allocating C = ``channels`` zeroed channels the first time."""
        i = self.index.get(key)
        if i is not None:
            return i
        if self.device is None:
            self.device = device
        i = len(self.channels)
        self.index[key] = i
        self.channels.append(channels)
        self.offsets.append(self.size)
        self.counts.append(0)
        self.size += channels
        self._grow()
        self._index_cache.clear()
        return i

    def _view(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        o, c = self.offsets[i], self.channels[i]
        return self.data[0, o:o + c], self.data[1, o:o + c], self.data[2, o:o + c], self.nonfinite[i:i + 1]

    def _grow(self) -> None:
        cap = 0 if self.data is None else self.data.shape[1]
        site_cap = 0 if self.nonfinite is None else self.nonfinite.shape[0]
        if self.size > cap or len(self.channels) > site_cap:  # reallocate (doubling), keep contents
            with torch.inference_mode(False):  # normal tensors even inside inference_mode: updated in place later
                data = torch.zeros(3, max(2 * cap, self.size, 256), dtype=_F64, device=self.device)
                nonfinite = torch.zeros(max(2 * site_cap, len(self.channels), 64), dtype=_F64,
                                        device=self.device)
            data[2].fill_(-torch.inf)
            if self.data is not None:
                data[:, :cap].copy_(self.data)
                nonfinite[:site_cap].copy_(self.nonfinite)
            self.data, self.nonfinite = data, nonfinite
            self.rows = tuple(data.unbind(0))
            self._live = None
            self._views = [self._view(i) for i in range(len(self.channels))]
        else:
            self._views.append(self._view(len(self.channels) - 1))

    def nbytes(self) -> int:
        """Bytes held by the accumulators (independent of the batch size)."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.nonfinite) if t is not None)

    # -- hot path --------------------------------------------------------------------------------
    def add(self, i: int, n: int, s: Tensor, q: Tensor, m: Tensor | None = None,
            nonfinite: Tensor | None = None) -> None:
        """Add per-channel sums ``s``, ``q`` of n elements per channel (and maxima ``m``) to site i."""
        sv, qv, mv, fv = self._views[i]
        if s.device != self.device:
            s, q = s.to(self.device), q.to(self.device)
            m = m.to(self.device) if m is not None else None
        sv.add_(s)
        qv.add_(q)
        if m is not None:
            torch.maximum(mv, m, out=mv)
        if nonfinite is not None:
            fv.add_(nonfinite.to(fv.device))
        self.counts[i] += n

    def _channel_index(self, sites: tuple[int, ...]) -> Tensor:
        hit = self._index_cache.get(sites)
        if hit is None:
            idx = torch.cat([torch.arange(self.offsets[i], self.offsets[i] + self.channels[i]) for i in sites])
            hit = self._index_cache[sites] = to_device(idx, self.device)
            if len(self._index_cache) > 64:
                self._index_cache.pop(next(iter(self._index_cache)))
        return hit

    def merge(self, p: Pending) -> None:
        """Add every pending result to its site (sums and squares by ``index_add_``, maxima by
        ``scatter_reduce_``): a fixed number of kernels whatever the number of sites. Clears ``p``."""
        if p.sites:
            idx = self._channel_index(tuple(p.sites))
            s = on(torch.cat(p.s), self.device, _F64)
            r = on(torch.cat(p.r), self.device, _F64)
            self.rows[0].index_add_(0, idx, s)
            self.rows[1].index_add_(0, idx, r * r)
        if p.max_sites:
            idx = self._channel_index(tuple(p.max_sites))
            self.rows[2].scatter_reduce_(0, idx, on(torch.cat(p.m), self.device, _F64), "amax")
        if p.nf_sites:
            key = ("nf",) + tuple(p.nf_sites)
            idx = self._index_cache.get(key)
            if idx is None:
                idx = self._index_cache[key] = to_device(torch.tensor(p.nf_sites, dtype=torch.long), self.device)
            self.nonfinite.index_add_(0, idx, torch.stack(p.nf).to(self.device, _F64))
        p.clear()

    def scale_(self, sites: tuple[int, ...], factor: Tensor | float) -> None:
        """Multiply the sums of ``sites`` by ``factor`` and their sums of squares by factor^2
        (maxima untouched): on the device, ``factor`` may be a device scalar."""
        if not sites:
            return
        idx = self._channel_index(sites)
        f = factor.to(_F64) if isinstance(factor, Tensor) else float(factor)
        self.data[0].index_copy_(0, idx, self.data[0].index_select(0, idx) * f)
        self.data[1].index_copy_(0, idx, self.data[1].index_select(0, idx) * (f * f))

    def add_site(self, i: int, other: "Moments", j: int) -> None:
        """Add site j of ``other`` (the same number of channels) to site i: sums, sums of squares,
        maxima, non-finite count and element count. Exact, as for two batches."""
        s, q, m, f = other._views[j]
        self.add(i, other.counts[j], s, q, m, f)

    def reset(self) -> None:
        """Zero every site (allocation is kept)."""
        if self.data is not None:
            self.data[:2].zero_()
            self.data[2].fill_(-torch.inf)
            self.nonfinite.zero_()
        self.counts = [0] * len(self.channels)
        self._counts_dev = None

    def fired(self, i: int) -> bool:
        return self.counts[i] > 0

    def channel_sums(self, i: int) -> tuple[Tensor, Tensor]:
        """Views of site i's per-channel sum and sum of squares (C,)."""
        return self._views[i][0], self._views[i][1]

    def count(self, i: int) -> Tensor | int:
        """Elements per channel of site i (a device scalar after ``all_reduce_``)."""
        return self._counts_dev[i] if self._counts_dev is not None else self.counts[i]

    # -- end of step -----------------------------------------------------------------------------
    def signature(self) -> tuple[int, int, int]:
        """(sites, channels, hash of the layout): equal on every rank when layouts agree."""
        layout = repr((list(self.index), self.channels)).encode()
        return len(self.channels), self.size, zlib.crc32(layout) % (2 ** 31)

    def all_reduce_(self, group=None) -> None:
        """Sum sums, sums of squares, non-finite counts and counts, and max the maxima, across ranks.

        Every rank must have allocated the same sites in the same order (the same layers fired)."""
        import torch.distributed as dist

        k, t = len(self.channels), self.size
        if k == 0:
            return
        counts = torch.tensor(self.counts, dtype=_F64).to(self.device)
        flat = torch.cat([self.data[:2, :t].reshape(-1), self.nonfinite[:k], counts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        self.data[:2, :t].copy_(flat[:2 * t].view(2, t))
        self.nonfinite[:k].copy_(flat[2 * t:2 * t + k])
        self._counts_dev = flat[2 * t + k:]
        maxima = self.data[2, :t].contiguous()
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=group)
        self.data[2, :t].copy_(maxima)

    def live(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Views of the used part: per-channel sums, sums of squares, maxima (t,) and the
        non-finite counts (k,) (taken once per allocation and layout)."""
        k, t = len(self.channels), self.size
        if self._live is None or self._live[:2] != (t, k):
            self._live = (t, k, tuple(r[:t] for r in self.rows) + (self.nonfinite[:k],))
        return self._live[2]

    def counts_tensor(self) -> Tensor:
        """Elements per channel of every site (k,) float64 on the device: the reduced counts after
        ``all_reduce_``, otherwise the host counts, copied once per distinct value."""
        if self._counts_dev is not None:
            return self._counts_dev
        key = tuple(self.counts)
        if self._counts_cache is None or self._counts_cache[0] != key:
            self._counts_cache = (key, to_device(torch.tensor(self.counts, dtype=_F64), self.device))
        return self._counts_cache[1]

    def channel_counts(self) -> Tensor:
        """Elements of each used channel (t,) float64 on the device: :meth:`counts_tensor` spread
        over each site's channels, recomputed only when the counts or the layout change."""
        counts, lay = self.counts_tensor(), self.step_layout()
        if self._n_c is None or self._n_c[0] is not counts or self._n_c[1] is not lay:
            self._n_c = (counts, lay, counts.index_select(0, lay.seg))
        return self._n_c[2]

    def step_layout(self) -> "MomentsLayout":
        """The layout of the used part as a step's record keeps it (cached per number of sites)."""
        lay = self._step_layout
        if lay is None or lay.k != len(self.channels) or lay.t != self.size:
            lay = self._step_layout = MomentsLayout(self)
        return lay

    def summary(self) -> Tensor | None:
        """Statistics of every site, shape (sites, 7), columns ``SUMMARY_COLUMNS``, float64
        (:meth:`MomentsLayout.summary_of` of the accumulators now)."""
        if not self.channels:
            return None
        lay = self.step_layout()
        return lay.summary_of(*self.live(), self.counts_tensor())


class MomentsLayout:
    """The used part of a :class:`Moments` (t channels of k sites) as a step's record keeps it, laid
    end to end: per-channel sums, sums of squares and maxima (t each), then per site the non-finite
    and the element counts (k each). What follows from it (the summary, per-channel moments of
    some sites) is computed at the flush with any leading axes (the buffered steps).

    ``key`` identifies the layout within a probe (sites are only ever appended)."""

    def __init__(self, acc: Moments) -> None:
        self.k, self.t = len(acc.channels), acc.size
        self.key = ("moments", id(acc), self.k, self.t)
        channels = torch.tensor(acc.channels, dtype=torch.long)
        self.seg = to_device(torch.repeat_interleave(torch.arange(self.k), channels), acc.device)
        self.c = to_device(channels.to(_F64), acc.device)

    def parts(self, acc: Moments) -> list[Tensor]:
        """The tensors to keep, in order (views and a cached tensor: no op)."""
        return [*acc.live(), acc.counts_tensor()]

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(s, q, m (..., t), nonfinite, counts (..., k)) of a kept layout ``raw`` (..., 3t + 2k)."""
        t, k = self.t, self.k
        return raw[..., :t], raw[..., t:2 * t], raw[..., 2 * t:3 * t], raw[..., 3 * t:3 * t + k], raw[..., 3 * t + k:]

    def _parts(self, env: dict) -> tuple[Tensor, ...]:
        """:meth:`split` of ``env["acc"]`` and the per-channel counts, computed once per ``env``."""
        hit = env.get("acc.parts")
        if hit is None:
            parts = self.split(env["acc"])
            hit = env["acc.parts"] = parts + (parts[4].index_select(-1, self.seg),)
        return hit

    def per_channel(self, env: dict, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(n, s, q) of the channels ``index`` (as ``Moments._channel_index``) of the kept layout
        ``env["acc"]``, (..., len(index))."""
        s, q, _, _, _, n_c = self._parts(env)
        return n_c.index_select(-1, index), s.index_select(-1, index), q.index_select(-1, index)

    def summary_of(self, s: Tensor, q: Tensor, m: Tensor, nonfinite: Tensor, counts: Tensor,
                   n_c: Tensor | None = None) -> Tensor:
        """Statistics of every site, (..., sites, 7), columns ``SUMMARY_COLUMNS``, float64.

        Site with C channels, n elements per channel, per-channel sums s_c, q_c and maxima m_c:
        mean = sum_c s_c / (nC), sq_mean = sum_c q_c / (nC), var = sq_mean - mean^2;
        ch_var = mean_c (q_c / n - (s_c / n)^2), ch_sq_mean = mean_c (s_c / n)^2,
        dead_frac = mean_c [m_c <= 0]. Sites with n = 0 give NaN. ``n_c``: counts per channel,
        if already known.
        """
        if n_c is None:
            n_c = counts.index_select(-1, self.seg)
        n_site = counts * self.c
        mean_c = s / n_c
        var_c = (q / n_c - mean_c * mean_c).clamp_min(0.0)
        per_channel = torch.stack([s, q, var_c, mean_c * mean_c, (m <= 0).to(_F64)], -2)
        tot = per_channel.new_zeros(per_channel.shape[:-1] + (self.k,)).index_add_(-1, self.seg, per_channel)
        tot_s, tot_q, tot_v, tot_m2, tot_dead = tot.unbind(-2)
        mean = tot_s / n_site
        sq_mean = tot_q / n_site
        var = (sq_mean - mean * mean).clamp_min(0.0)
        return torch.stack([mean, var, sq_mean, tot_v / self.c, tot_m2 / self.c, tot_dead / self.c, nonfinite], -1)

    def summary(self, env: dict) -> Tensor:
        """The summary of the kept layout ``env["acc"]``, computed once per ``env``."""
        hit = env.get("summary")
        if hit is None:
            hit = env["summary"] = self.summary_of(*self._parts(env))
        return hit


def cached(cache: dict, key: Hashable, build, limit: int):
    """``cache[key]``, built by ``build()`` on a miss; the oldest entry goes once there are more
    than ``limit`` (layouts, index tensors and schemas that repeat from step to step)."""
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = build()
        if len(cache) > limit:
            cache.pop(next(iter(cache)))
    return hit
