"""Layouts: what a Probe records of a module of each weight-bearing type, in one registry.

A :class:`Layout` says, for a module type, its ``role`` (``varprobe.vocabulary.ROLES``), which
parameter is its raw weight (the tensor the optimizer updates), which axis of that weight holds the
filters (one per output unit), how to get its effective kernel when the weight is reparametrized,
the channel axis of its outputs, the weights it holds as several parts (``nn.MultiheadAttention``:
Q, K, V and out_proj, each recorded under its own layer name), the child modules it records itself
(``out_proj``, which ``nn.MultiheadAttention`` never calls) and, for a residual block, its branch
child. The probe asks :func:`layout_of` and never tests a type itself; a type is looked up along its
MRO, so a subclass has its base's layout unless it has its own.

Built in: ``Conv1d/2d/3d`` (weight ``[out, in/groups, *k]``, filters on axis 0),
``ConvTranspose1d/2d/3d`` (weight ``[in, out/groups, *k]``: filter j of group g is
``weight[g*in/groups:(g+1)*in/groups, j]``), ``Linear`` (``[out, in]``), ``Embedding``
(``[num_embeddings, dim]``: output unit j reads column j, filters on axis 1), ``MultiheadAttention``
(rows ``[0:E]``, ``[E:2E]``, ``[2E:3E]`` of ``in_proj_weight``, or ``q_proj_weight``,
``k_proj_weight``, ``v_proj_weight`` when kdim or vdim differ from E, and ``out_proj.weight``), and
the norms ``BatchNorm*`` (``SyncBatchNorm`` too), ``GroupNorm``, ``LayerNorm``, ``RMSNorm``,
``InstanceNorm*`` (no weight statistics: their affine parameters give ``norm.*``), and Hugging Face's
``Conv1D`` of GPT-2 (a linear layer with weight ``[in, out]``; matched by name, transformers is not
imported), and a norm known by name and shape: a leaf module of a type without a layout whose class
name ends in ``RMSNorm`` or ``LayerNorm`` and whose parameters are a 1-d ``weight`` and optionally a
1-d ``bias`` of its length (Hugging Face's ``LlamaRMSNorm``, ``T5LayerNorm`` and the RMSNorm of every
model copied from them: role "norm", channels on the last axis, or on axis 1 where the module says
``data_format="channels_first"``). varprobe's own layers (``varprobe.layers``) register theirs where
they are defined, as a user would.

A leaf module of a type without a layout that owns trainable parameters gets :func:`fallback`:
role "other", its input, output and their gradients, and whole-tensor weight statistics (the
weight as one filter) of its parameter ``weight``, or else of its one parameter with the most
dimensions.

Register a layout for your own type with :func:`register_layout` (``varprobe.register_layout``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.utils import parametrize

from .vocabulary import ROLES

__all__ = ["Part", "Layout", "WeightView", "register_layout", "layout_of", "fallback", "weight_views",
           "raw_parameter"]


@dataclass(frozen=True)
class Part:
    """One weight of a module recorded under its own layer name ``<module name>.<name>``.

    ``param``: dotted path of the parameter under the module (``"in_proj_weight"``,
    ``"out_proj.weight"``); ``rows``: the part is rows ``[start, stop)`` of it (axis 0), or all of
    it; ``filter_axis``: the axis of the part that holds the filters."""

    name: str
    param: str
    rows: tuple[int, int] | None = None
    filter_axis: int = 0


@dataclass(frozen=True)
class Layout:
    """What a Probe records of a module type (see the module docstring).

    Attributes:
        role: One of ``varprobe.vocabulary.ROLES``.
        weight: Name of the raw weight parameter (``w.*``, ``gw.*``, ``w.update_ratio``), or None
            for no weight statistics. Under a torch parametrization (``parametrize``,
            ``weight_norm``) the raw weight is the original of the weight's shape.
        filter_axis: The axis of the weight that holds the filters (output units).
        filters: Instead of ``filter_axis``, a function ``(module, tensor) -> tensor`` whose result
            has the filters on axis 0 (the weight or its gradient), for layouts an axis cannot
            say (grouped transposed convs).
        kernel: ``module -> Tensor``: the effective kernel (``k.*``) of a reparametrized weight,
            shaped as the weight; None: the weight itself, or for a parametrized ``weight``, the
            computed one.
        channel_axis: The channel axis of the module's outputs (1, or -1 for features last); None:
            ``varprobe.probe.channel_axis`` decides (axis 1; ``LayerNorm`` subclasses per shape).
        parts: ``module -> [Part]``: weights recorded under layer names of their own, instead of
            ``weight``.
        owns: Child modules whose parameters the parts cover; they are not probed themselves.
        branch: For role "block": the name of the branch child recorded as ``branch.out.*``.
    """

    role: str
    weight: str | None = "weight"
    filter_axis: int = 0
    filters: Callable[[nn.Module, Tensor], Tensor] | None = None
    kernel: Callable[[nn.Module], Tensor] | None = None
    channel_axis: int | None = None
    parts: Callable[[nn.Module], Sequence[Part]] | None = None
    owns: tuple[str, ...] = ()
    branch: str | None = None
    whole: bool = field(default=False, repr=False)  # the fallback: the weight as one filter

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"layout role must be one of {ROLES}, got {self.role!r}")
        if self.channel_axis not in (None, 1, -1):
            raise ValueError(f"layout channel_axis must be 1, -1 or None, got {self.channel_axis!r}")
        if self.branch is not None and self.role != "block":
            raise ValueError(f"layout branch={self.branch!r} needs role 'block', got {self.role!r}")


_REGISTRY: dict[type, Layout] = {}
#: Layouts of other libraries' types, by ``module.QualName``: matched without importing the library.
_BY_NAME: dict[str, Layout] = {}


def register_layout(cls: type, role: str = "other", weight: str | None = "weight", filter_axis: int = 0, *,
                    filters: Callable[[nn.Module, Tensor], Tensor] | None = None,
                    kernel: Callable[[nn.Module], Tensor] | None = None, channel_axis: int | None = None,
                    parts: Callable[[nn.Module], Sequence[Part]] | None = None, owns: Sequence[str] = (),
                    branch: str | None = None) -> Layout:
    """Register (or replace) the layout of modules of type ``cls`` and its subclasses without a
    layout of their own; returns it. For example a layer whose weight is ``[in, out]``::

        varprobe.register_layout(MyDense, "linear", weight="w", filter_axis=1, channel_axis=-1)

    Probes created afterwards record every module of that type by default. Raises TypeError for a
    ``cls`` that is not an ``nn.Module`` subclass, ValueError for a role not in
    ``varprobe.vocabulary.ROLES`` (the message lists them)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_layout takes an nn.Module subclass, got {cls!r}")
    layout = Layout(role, weight, filter_axis, filters, kernel, channel_axis, parts, tuple(owns), branch)
    _REGISTRY[cls] = layout
    return layout


def layout_of(module: nn.Module) -> Layout | None:
    """The layout of ``module``'s type: the registered one of the first type of its MRO that has
    one; else the norm layout for a norm known by name and shape (:func:`_norm_like`); else None."""
    for cls in type(module).__mro__:
        hit = _REGISTRY.get(cls) or _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if hit is not None:
            return hit
    return _norm_like(module)


_NORM_NAME = re.compile(r"(RMS|Layer)Norm$")


def _norm_like(module: nn.Module) -> Layout | None:
    """The norm layout of a leaf module whose class name ends in ``RMSNorm`` or ``LayerNorm`` and
    whose parameters are a 1-d ``weight`` and optionally a 1-d ``bias`` of the same shape (the
    norms of Hugging Face models, each model's own class); its channel axis is the last one, or 1
    for ``data_format="channels_first"``. None for any other module."""
    if not _NORM_NAME.search(type(module).__name__) or next(module.children(), None) is not None:
        return None
    own = dict(module.named_parameters(recurse=False))
    w = own.get("weight")
    if w is None or w.ndim != 1 or set(own) - {"weight", "bias"} or own.get("bias", w).shape != w.shape:
        return None
    return _NORM_FIRST if getattr(module, "data_format", None) == "channels_first" else _NORM_LAST


def fallback(module: nn.Module) -> Layout:
    """The layout of a module whose type has none: role "other", and whole-tensor weight
    statistics of its weight: its trainable parameter ``weight``, else the one with the most
    dimensions if a single one has that many, else none."""
    own = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
    if "weight" in own:
        return Layout("other", "weight", whole=True)
    top = max((p.ndim for p in own.values()), default=0)
    widest = [n for n, p in own.items() if p.ndim == top]
    return Layout("other", widest[0] if len(widest) == 1 else None, whole=True)


def raw_parameter(module: nn.Module, name: str) -> Tensor:
    """The tensor the optimizer updates for ``module``'s weight ``name``: the attribute itself;
    under a torch parametrization of ``name``, the original of the weight's shape (``v`` of
    ``weight_norm``); for the legacy ``torch.nn.utils.weight_norm``, ``<name>_v``, and for the legacy
    ``torch.nn.utils.spectral_norm``, ``<name>_orig``."""
    if "parametrizations" in module._modules and parametrize.is_parametrized(module, name):
        plist = getattr(module.parametrizations, name)
        originals = [getattr(plist, n) for n in ("original", *(f"original{i}" for i in range(8)))
                     if hasattr(plist, n)]
        shape = getattr(module, name).shape
        return next((o for o in originals if o.shape == shape), originals[0])
    # the legacy torch.nn.utils.weight_norm registers <name>_v, torch.nn.utils.spectral_norm <name>_orig
    legacy = module._parameters.get(f"{name}_v")
    if legacy is None:
        legacy = module._parameters.get(f"{name}_orig")
    if legacy is not None:
        return legacy
    if "." in name:
        return module.get_parameter(name)
    own = module._parameters.get(name)  # no AttributeError raised and caught on every recorded step
    return own if own is not None else getattr(module, name)


def _reparametrized(module: nn.Module, name: str) -> bool:
    return parametrize.is_parametrized(module, name) or any(
        isinstance(module._parameters.get(f"{name}{s}"), Tensor) for s in ("_v", "_orig"))


@dataclass(frozen=True)
class WeightView:
    """One weight of one module as a probe reads it: ``suffix`` of the layer name (``""`` for the
    module's own), the module and parameter path, the rows of the part, and the function that puts
    the filters on axis 0."""

    suffix: str
    module: nn.Module
    param: str
    rows: tuple[int, int] | None
    to_filters: Callable[[Tensor], Tensor]
    kernel: Callable[[], Tensor] | None = None

    def parameter(self) -> Tensor:
        """The raw parameter (whole; the optimizer's tensor)."""
        return raw_parameter(self.module, self.param)

    def _part(self, t: Tensor) -> Tensor:
        return t if self.rows is None else t[self.rows[0]:self.rows[1]]

    def weight(self) -> Tensor:
        """The raw weight of the part, filters on axis 0 (a view where it can be)."""
        return self.to_filters(self._part(self.parameter()))

    def part(self) -> Tensor:
        """The raw weight of the part, as stored (``w.update_ratio``: a norm over all its entries)."""
        return self._part(self.parameter())

    def grad(self) -> Tensor | None:
        """The gradient of the part, filters on axis 0 (a sparse gradient made dense), or None."""
        g = self.parameter().grad
        if g is None:
            return None
        if g.is_sparse:
            g = g.to_dense()
        return self.to_filters(self._part(g))

    def effective(self) -> Tensor | None:
        """The effective kernel, filters on axis 0, or None when the weight is used as is."""
        return None if self.kernel is None else self.to_filters(self._part(self.kernel()))


def _axis(filter_axis: int) -> Callable[[Tensor], Tensor]:
    if filter_axis == 0:
        return lambda t: t
    return lambda t: t.movedim(filter_axis, 0)


def _whole(t: Tensor) -> Tensor:
    return t.reshape(1, -1)


def weight_views(module: nn.Module, layout: Layout) -> list[WeightView]:
    """The weights of ``module`` that get w.*/gw.* rows under ``layout``: its parts, or its
    ``weight`` (none if the layout has no weight or the module no such tensor)."""
    if layout.parts is not None:
        return [WeightView(p.name, module, p.param, p.rows, _axis(p.filter_axis)) for p in layout.parts(module)]
    name = layout.weight
    if name is None or not isinstance(getattr(module, name, None), Tensor):
        return []
    if layout.whole:
        to_filters = _whole
    elif layout.filters is not None:
        to_filters = lambda t, f=layout.filters: f(module, t)  # noqa: E731
    else:
        to_filters = _axis(layout.filter_axis)
    if layout.kernel is not None:
        kernel = lambda: layout.kernel(module)  # noqa: E731
    elif _reparametrized(module, name):
        kernel = lambda: getattr(module, name)  # noqa: E731  (computed once per call)
    else:
        kernel = None
    return [WeightView("", module, name, None, to_filters, kernel)]


# -- built-in layouts ------------------------------------------------------------------------------
def _transposed_filters(module: nn.Module, t: Tensor) -> Tensor:
    """A transposed conv's weight ``[in, out/groups, *k]`` as ``[out, in/groups, *k]``."""
    g = module.groups
    if g == 1:
        return t.transpose(0, 1)
    return t.unflatten(0, (g, t.shape[0] // g)).transpose(1, 2).flatten(0, 1)


def _attention_parts(module: nn.MultiheadAttention) -> list[Part]:
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        qkv = [Part(n, "in_proj_weight", (i * e, (i + 1) * e)) for i, n in enumerate("qkv")]
    else:
        qkv = [Part(n, f"{n}_proj_weight") for n in "qkv"]
    return qkv + [Part("out_proj", "out_proj.weight")]


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_layout(_cls, "conv")
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_layout(_cls, "conv_transpose", filters=_transposed_filters)
register_layout(nn.Linear, "linear", channel_axis=-1)
register_layout(nn.Embedding, "embedding", filter_axis=1, channel_axis=-1)
register_layout(nn.MultiheadAttention, "attention", weight=None, channel_axis=-1, parts=_attention_parts,
                owns=("out_proj",))
for _cls in (_BatchNorm, nn.GroupNorm, _InstanceNorm):
    register_layout(_cls, "norm", weight=None)
register_layout(nn.LayerNorm, "norm", weight=None)  # channel axis: varprobe.probe.channel_axis
if hasattr(nn, "RMSNorm"):
    register_layout(nn.RMSNorm, "norm", weight=None, channel_axis=-1)
# Hugging Face's Conv1D (GPT-2 c_attn, c_proj, c_fc): a linear layer whose weight is [in, out].
_BY_NAME["transformers.pytorch_utils.Conv1D"] = Layout("linear", filter_axis=1, channel_axis=-1)
# Norms known by name and shape (_norm_like): Hugging Face's LlamaRMSNorm, T5LayerNorm, ...
_NORM_LAST = Layout("norm", weight=None, channel_axis=-1)
_NORM_FIRST = Layout("norm", weight=None, channel_axis=1)
