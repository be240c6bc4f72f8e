"""The vocabulary of varprobe, in one place: the table's columns, the normalization schemes,
and each recorded quantity's name, definition and preset.

Torch-free and import-free (nothing of the package, nothing but the standard library): the probe,
the run store, the plots, the experiments, the claims and the CLI import their names from here.

Conventions for every quantity of :data:`QUANTITIES`:

- Variances are biased (divide by the number of elements n, not n - 1).
- "Channel" is axis 1 of a module's input or output (N, C, ...) for convs, norms and blocks, and the
  last axis for ``nn.Linear`` and ``nn.LayerNorm`` (features). Whole-tensor statistics reduce over
  every axis; channel-wise ones reduce over every axis but the channel axis (batch and positions),
  then average over channels.
- Statistics of a step merge every forward of that step exactly (gradient accumulation), in float64:
  sums of squares never overflow for finite float16, bfloat16 or float32 tensors (see
  ``varprobe.stats.channel_sums``); a tensor that holds inf or NaN is counted in ``*.nonfinite``.
- Quantities that are non-negative by definition (variances, second moments, squared norms and
  sums, ``dec.measured``, ``dec.iid``, ``dec.shift``) are never negative: where they are computed
  as a difference (E[x^2] - E[x]^2, E[(y - b)^2] expanded), the difference is clamped at 0 against
  rounding. ``dec.rest`` is a signed difference and is not clamped.
- Gradients are those autograd computes for the loss the user backpropagates. With a mean-reduced
  loss over a batch of B samples, dL/dy of each activation scales as 1/B, so ``grad_out.var``,
  ``grad_out.sq_mean`` and ``grad_in.var`` scale as 1/B^2 and ``gw.avg_abs`` and ``gw.rms`` as 1/B
  relative to a sum-reduced loss; ratios (``gw.shift_ratio``, ``gw.bias_corr``,
  ``gw.sign_persistence``, backward transmission ratios) do not depend on the reduction. Under
  torch.distributed the gradient statistics refer to the global loss L = mean over ranks of the
  rank losses (DDP's gradient averaging): each rank's activation gradients are scaled by
  1 / world_size before the moments are summed across ranks.
"""
from __future__ import annotations

__all__ = ["COLUMNS", "INT_COLUMNS", "STRING_COLUMNS", "FLOAT_COLUMNS", "ROLES", "LEGACY_ROLES", "SCHEMES", "QUANTITIES",
           "OUT_SUFFIXES", "FORWARD_OUT", "PRESETS", "SHORT", "SCHEME_COLORS", "EXTRA_COLORS", "PLOT_KINDS",
           "QUANTITY_KINDS", "FIGURE_EXTENSIONS", "TRAINED"]

# -- the long table --------------------------------------------------------------------------------
#: Columns of every probe table and run chunk, in this order (``varprobe.record.schema`` gives
#: their Arrow types).
COLUMNS: tuple[str, ...] = ("step", "layer", "depth", "mode", "module_type", "role", "quantity", "value")
INT_COLUMNS: tuple[str, ...] = ("step", "depth")
STRING_COLUMNS: tuple[str, ...] = ("layer", "mode", "module_type", "role", "quantity")
FLOAT_COLUMNS: tuple[str, ...] = ("value",)

#: The ``role`` of a probed layer, decided once by the probe's plan (``varprobe.layouts``) and
#: stored in every row of the layer: a convolution, a transposed convolution, a linear layer, an
#: attention projection or attention module (``nn.MultiheadAttention`` and its Q, K, V and out_proj
#: rows), an embedding, a normalization layer, a residual block (``block.out.*`` and ``branch.out.*``
#: rows), or any other module. Rows that belong to no layer (``loss``, ``lr``, ``amp.skipped``; layer
#: ``""``) have role ``""``. Plots, analyses and sinks select layers by role, never by type name.
ROLES: tuple[str, ...] = ("conv", "conv_transpose", "linear", "attention", "embedding", "norm", "block", "other")

#: Runs written before the ``role`` column (run format 1) get it on read from this exact table of
#: ``module_type`` names (never a substring); rows of ``block.out.*`` / ``branch.out.*`` are "block",
#: rows of layer ``""`` get ``""``, any other type "other" (format 1 probed subclasses of these types
#: under their own names, which this table cannot know).
LEGACY_ROLES: dict[str, str] = {
    **dict.fromkeys(("Conv1d", "Conv2d", "Conv3d", "ReparamConv2d", "PWSConv2d", "WSConv2d", "WNConv2d",
                     "CenteredConv2d"), "conv"),
    **dict.fromkeys(("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"), "conv_transpose"),
    "Linear": "linear", "NonDynamicallyQuantizableLinear": "linear",
    "MultiheadAttention": "attention",
    "Embedding": "embedding",
    **dict.fromkeys(("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "GroupNorm", "LayerNorm",
                     "RMSNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"), "norm"),
    "ResidualBlock": "block",
}

# -- normalization schemes -------------------------------------------------------------------------
#: The schemes varprobe builds convs under (``varprobe.layers.make_conv``), in the order figures,
#: tables and reports list them: the unnormalized baselines, then activation, weight and
#: parametric weight normalization.
SCHEMES: tuple[str, ...] = ("plain", "plain+gn", "bn", "gn", "wn", "ws", "centered", "pws")

#: Fixed colours per normalization scheme, so that a scheme looks the same in every figure.
SCHEME_COLORS: dict[str, str] = {
    "plain": "#4d4d4d",   # dark grey: the unnormalized baseline
    "plain+gn": "#999999",  # light grey: the baseline with PWS's two GroupNorms
    "bn": "#1f77b4",
    "wn": "#d62728",
    "pws": "#2ca02c",
    "gn": "#9467bd",
    "ws": "#ff7f0e",
    "centered": "#8c564b",
}
#: Colours of hue levels that are not schemes, in order.
EXTRA_COLORS: tuple[str, ...] = ("#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a",
                 "#ff9896", "#c5b0d5", "#c49c94")

# -- quantities ------------------------------------------------------------------------------------
_OUT_DOCS = {
    "mean": "mean of all elements of {t}",
    "var": "biased variance of all elements of {t}: E[x^2] - E[x]^2 over batch, channels, positions",
    "sq_mean": "second moment E[x^2] of all elements of {t}",
    "ch_var": "mean over channels c of the biased variance of channel c of {t} over batch and positions",
    "ch_sq_mean": "mean over channels c of the squared channel mean mu_c^2 of {t} (mu_c over batch and "
                  "positions): the signal-propagation-plot (SPP) quantity",
    "dead_frac": "fraction of channels of {t} that are never positive over the step's batch(es): "
                 "max_c <= 0, i.e. all zero after a ReLU",
    "nonfinite": "count of non-finite (inf or NaN) elements of {t} over the step's batch(es)",
}
#: Suffixes recorded for ``out.``, ``block.out.`` and ``branch.out.``.
OUT_SUFFIXES = tuple(_OUT_DOCS)

QUANTITIES: dict[str, str] = {}
for _s in ("mean", "var", "sq_mean"):
    QUANTITIES[f"in.{_s}"] = _OUT_DOCS[_s].format(t="the module's input x (its first positional argument)")
_OUTPUTS = {
    "out": "the module's output y",
    "block.out": "a residual block's output (the residual stream after the add; ResidualBlock, a marked "
                 "block, or the input of a Tap(kind='block'))",
    "branch.out": "a residual block's branch output before the add (the block's branch child, or the input "
                  "of a Tap(kind='branch')); rows carry the block's name",
}
for _prefix, _t in _OUTPUTS.items():
    for _s, _d in _OUT_DOCS.items():
        QUANTITIES[f"{_prefix}.{_s}"] = _d.format(t=_t)
QUANTITIES.update({
    "grad_out.var": "biased variance of all elements of dL/dy, y the module's output (train forwards only)",
    "grad_out.sq_mean": "E[(dL/dy)^2] over all elements of dL/dy",
    "grad_in.var": "biased variance of all elements of dL/dx, x the module's input: the total gradient "
                   "reaching x, summed over all its consumers (e.g. a residual identity path and the "
                   "branch), not only through this module. Absent when x does not require grad (first layer)",
    "w.fan_var": "raw weight W (O, ...), n = W[0].numel(): mean_i n * Var(W_i), Var biased over filter i",
    "w.filter_mean_abs": "raw weight: mean_i |mean(W_i)|",
    "w.filter_sum_var": "raw weight: biased variance over filters of the filter sums 1^T W_i (the authors' shift)",
    "w.filter_sum_sq": "raw weight: mean_i (1^T W_i)^2, the squared filter sum of the shift term",
    "w.sq_norm": "raw weight: mean_i ||W_i||^2, the squared filter norm of the zero-mean term sigma^2 ||W_i||^2",
    "w.update_ratio": "raw weight (the tensor the optimizer updates): ||W_t - W_{t-1}||_F / ||W_{t-1}||_F, "
                      "Frobenius norms over the whole weight (not per filter), W_t the weight step t's forward "
                      "sees and W_{t-1} the previous step's, i.e. the relative size of the update of step t - 1; "
                      "for a layer whose output is invariant to the scale of W (BN after it, WN, WS, PWS) its "
                      "effective learning rate. The probe copies W_{t-1} on the device in step() of step t - 1 "
                      "when step t is recorded (varprobe.probe.updates). No row (absent) at step 0, or when step t - 1's "
                      "weight is unknown (its step() did not run attached, the weight was replaced or changed "
                      "shape, dtype or device); inf when W_{t-1} = 0 and W moved",
    "k.fan_var": "effective kernel K = kernel() of a reparametrized conv (WN/WS/PWS/centered) or "
                 "torch parametrization: mean_i n * Var(K_i)",
    "k.filter_mean_abs": "effective kernel: mean_i |mean(K_i)|",
    "k.filter_sum_var": "effective kernel: biased variance over filters of 1^T K_i",
    "k.filter_sum_sq": "effective kernel: mean_i (1^T K_i)^2",
    "k.sq_norm": "effective kernel: mean_i ||K_i||^2",
    "k.alpha_mean": "PWS: mean over filters of the learnable gain alpha_i",
    "k.shrink": "PWS: mean over filters of sqrt(s_i^2 / (s_i^2 + gamma')), s_i^2 the biased variance of "
                "raw filter i: how much gamma' shrinks the kernel (1 = not at all)",
    "dec.measured": "conv/linear: mean over filters i of E[(y_i - b_i)^2] over batch and positions: the "
                    "output second moment without the bias, which dec.iid + dec.shift + dec.rest split "
                    "(per filter computed as q/n - 2 b s/n + b^2 from the output sums, clamped at 0)",
    "dec.iid": "Var(x) * mean_i sum_t C[t, t] ||K_i[:, t]||^2, x the input (all entries), K the effective "
               "kernel: what inputs with i.i.d. entries give; padding-aware, C[t, t] the fraction of output "
               "positions at which tap t reads the input rather than padding (varprobe.stats.second_moment_parts)",
    "dec.shift": "mean(x)^2 * mean_i s_i^T C s_i, s_i[t] = sum over input channels of K_i[:, t]: the "
                 "filter-sum (shift) part for i.i.d. inputs, mean(x)^2 (1^T K_i)^2 without padding",
    "dec.rest": "dec.measured - dec.iid - dec.shift: what the i.i.d. model leaves out, filters aligned with "
                "correlated input entries and input channels whose means or variances differ (zero in "
                "expectation for i.i.d. inputs)",
    "dec.pred_ch_var": "conv/linear: the prediction of out.ch_var for inputs whose entries are independent, those "
                       "of input channel c with its own mean mu_c and biased variance var_c (measured over the "
                       "step): mean_i of sum_{c,t} var_c C[t, t] K_i[c, t]^2 + r_i^T C r_i - (diag(C)^T r_i)^2, "
                       "r_i[t] = sum_c mu_c K_i[c, t] (the last two terms: the spread of the mean over positions "
                       "that zero padding makes); padding-aware, C as in dec.iid (varprobe.theory.channel_moments)",
    "dec.pred_ch_sq_mean": "conv/linear: the prediction of out.ch_sq_mean for the same inputs: mean_i of "
                           "(b_i + diag(C)^T r_i)^2, b_i the bias (varprobe.theory.channel_moments)",
    "gw.avg_abs": "g_i = mean over filter i of dL/dW (raw weight): mean_i |g_i|",
    "gw.rms": "sqrt(mean of (dL/dW)^2 over all entries)",
    "gw.shift_ratio": "gw.avg_abs / (gw.rms / sqrt(n)): about 0.8 for zero-mean independent entries, "
                      ">> 1 when every filter's gradient is offset (the shift of the average gradient)",
    "gw.sign_persistence": "fraction of filters whose g_i has the same sign as at the previous recorded "
                           "step (absent at the first; NaN when every g_i is zero up to rounding, "
                           "|g_i| <= 1000 eps rms_i, as for PWS, whose average gradient is exactly zero)",
    "gw.bias_corr": "Pearson correlation over filters between g_i and mean(x) * sum over batch and "
                    "positions of dL/dy_i (= mu * dL/db_i whether or not the layer has a bias; mu the "
                    "mean of the input over the step): near 1 when the average gradient is the bias "
                    "gradient times the input mean, as the shift theory predicts. NaN when every "
                    "sum of dL/dy_i is zero up to rounding (|sum| <= 1000 eps sqrt(n sum (dL/dy_i)^2)), "
                    "e.g. a conv followed by BatchNorm in training mode, whose backward makes it "
                    "exactly zero, or when every g_i is (PWS)",
    "bn.mean_gap": "BatchNorm: mean over channels of |mu_B,c - mu_R,c| / sqrt(var_R,c + eps), mu_B, var_B "
                   "the batch statistics of the input over the step, mu_R, var_R the running "
                   "statistics before the step's first forward",
    "bn.var_ratio": "BatchNorm: mean over channels of var_B,c / var_R,c (var_B biased)",
    "norm.weight_mean": "BatchNorm/GroupNorm/LayerNorm with affine weight: mean of gamma",
    "norm.bias_mean": "BatchNorm/GroupNorm/LayerNorm with affine bias: mean of beta",
    "loss": "step level (layer ''): the loss passed to Probe.step (a number or a one-element tensor)",
    "lr": "step level (layer ''): the learning rate passed to Probe.step (a finite number)",
    "amp.skipped": "step level (layer ''), only with Probe.step(scaler=...): 1 if a gradient of the model holds "
                   "an inf or NaN (the GradScaler skips that optimizer step; its gradient rows are dropped), "
                   "else 0",
})

FORWARD_OUT = tuple(q for q in QUANTITIES if q.split(".")[0] in ("out", "block", "branch"))
PRESETS: dict[str, tuple[str, ...]] = {
    "all": tuple(QUANTITIES),
    # Output statistics only: one read of each probed output, no gradients or weights.
    "forward": FORWARD_OUT + ("loss", "lr"),
    # What the competing causes of collapse need (varprobe.claims E rows), without the gradient
    # hooks of "all": outputs, the shift of the average gradient (weight gradients only), the
    # variance decomposition (adds one read of each conv input) and the relative update size.
    "causes": FORWARD_OUT + ("loss", "lr", "gw.avg_abs", "gw.rms", "gw.shift_ratio", "dec.measured", "dec.iid",
                             "dec.shift", "dec.rest", "dec.pred_ch_var", "dec.pred_ch_sq_mean",
                             "w.update_ratio"),
}

# -- labels ----------------------------------------------------------------------------------------
#: One-line meaning of each recorded quantity (and of the ratios the plots derive), for axis labels
#: and legends; every quantity of :data:`QUANTITIES` has one (tests/test_vocabulary.py).
SHORT: dict[str, str] = {
    "in.mean": "mean of the layer input",
    "in.var": "variance of the layer input",
    "in.sq_mean": "E[x²] of the layer input",
    "grad_out.var": "variance of dL/d(output)",
    "grad_out.sq_mean": "E[(dL/d output)²]",
    "grad_in.var": "variance of dL/d(input), all consumers",
    "w.fan_var": "fan_in × filter variance, raw weight",
    "w.filter_mean_abs": "mean |filter mean|, raw weight",
    "w.filter_sum_var": "variance over filters of the filter sum (shift)",
    "w.filter_sum_sq": "mean squared filter sum, raw weight",
    "w.sq_norm": "mean squared filter norm, raw weight",
    "w.update_ratio": "‖W_t − W_t−1‖ / ‖W_t−1‖, raw weight",
    "k.fan_var": "fan_in × filter variance, effective kernel",
    "k.filter_mean_abs": "mean |filter mean|, effective kernel",
    "k.filter_sum_var": "variance over filters of the kernel sum",
    "k.filter_sum_sq": "mean squared kernel sum",
    "k.sq_norm": "mean squared kernel filter norm",
    "k.alpha_mean": "PWS gain alpha, mean over filters",
    "k.shrink": "PWS shrink by gamma' (1 = none)",
    "dec.measured": "E[(y − b)²] of the layer output",
    "dec.iid": "i.i.d.-input part Var(x)·‖K‖²",
    "dec.shift": "filter-sum part mean(x)²·(1ᵀK)²",
    "dec.rest": "rest: correlated or unequal input channels",
    "dec.pred_ch_var": "predicted out.ch_var, per-channel i.i.d.",
    "dec.pred_ch_sq_mean": "predicted out.ch_sq_mean, per-channel i.i.d.",
    "gw.avg_abs": "mean |average filter gradient|",
    "gw.rms": "rms of dL/dW",
    "gw.shift_ratio": "|avg. filter gradient| / (rms/√n); ≈0.8 unshifted",
    "gw.sign_persistence": "filters whose avg. gradient kept its sign",
    "gw.bias_corr": "corr(avg. filter gradient, input mean × dL/db)",
    "bn.mean_gap": "BN |batch mean − running mean| / running std",
    "bn.var_ratio": "BN batch var / running var",
    "norm.weight_mean": "mean norm gain gamma",
    "norm.bias_mean": "mean norm bias beta",
    "loss": "training loss",
    "lr": "learning rate",
}
_OUT = {
    "mean": "mean of {t}",
    "var": "variance of {t}",
    "sq_mean": "E[x²] of {t}",
    "ch_var": "mean channel variance of {t}",
    "ch_sq_mean": "mean squared channel mean of {t}",
    "dead_frac": "fraction of dead channels of {t}",
    "nonfinite": "non-finite elements of {t}",
}
for _s, _d in _OUT.items():
    SHORT[f"out.{_s}"] = _d.format(t="the layer output")
    SHORT[f"block.out.{_s}"] = _d.format(t="the block output (residual stream)")
    SHORT[f"branch.out.{_s}"] = _d.format(t="the residual branch")
# Derived by varprobe.analysis.ratios for the transmission figure.
SHORT["amp.skipped"] = "step skipped by the GradScaler (1) or not (0)"
SHORT["fwd.var_ratio"] = "Var(out) / Var(in), forward"
SHORT["bwd.var_ratio"] = "Var(dL/d in) / Var(dL/d out), backward"
# -- outcomes of a run -----------------------------------------------------------------------------
#: Final train accuracy at or above which a run "trained"; below it, the run did not train (chance
#: is 0.1 on ten classes). Fixed; the claims' outcome rows and the collapse figure read this one rule.
TRAINED: float = 0.5
# -- figures ---------------------------------------------------------------------------------------
#: The figures ``varprobe plot --kind`` draws (``varprobe.plot.KINDS``).
PLOT_KINDS: tuple[str, ...] = ("spp", "heatmap", "curves", "shift", "transmission", "theory", "collapse",
                               "decomposition")
#: The kinds that draw one quantity (``--quantity``).
QUANTITY_KINDS: tuple[str, ...] = ("heatmap", "curves")
#: The figure file formats, by extension.
FIGURE_EXTENSIONS: tuple[str, ...] = (".png", ".svg", ".pdf")
