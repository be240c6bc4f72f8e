"""``Probe.coverage``: where every trainable parameter of a probed model is accounted for.

Each trainable parameter (``requires_grad``; a tied parameter once, under its first name) is in
exactly one of three groups:

- recorded: it belongs to a probed module (a tied parameter: any module that holds it), or to a
  child module a probed module's layout owns (``nn.MultiheadAttention.out_proj``), or to a parametrized probed module's ``parametrizations``;
  ``Coverage.recorded`` names the layers whose ``w.*``/``gw.*`` rows describe it, or the layer whose
  output it acts in (a bias, a norm's affine parameters);
- whole: it belongs to a probed module whose type has no layout (:func:`varprobe.layouts.fallback`):
  the module's output and output gradient, and whole-tensor statistics of its weight;
- missing: it is not recorded, and why: the module that holds it was left out by ``layers=``, or
  holds it directly while having child modules and no layout (used in its own forward, which no
  hook of the probe sees: a class token, a position embedding, a layer scale).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from ..layouts import layout_of
from .select import Target, layer_name, owned, param_leaf

__all__ = ["Coverage", "coverage"]


@dataclass(frozen=True)
class Coverage:
    """Where each trainable parameter of a probed model is accounted for (module docstring).

    Attributes:
        model: The model's type name.
        sizes: parameter name -> number of elements, every trainable parameter.
        recorded: parameter name -> what records it (layer names).
        whole: parameter name -> why only whole-tensor weight statistics are recorded.
        missing: parameter name -> why it is not recorded.
        deselected: the names in ``missing`` left out by ``layers=`` (the user's choice: not warned).
    """

    model: str
    sizes: dict[str, int]
    recorded: dict[str, str]
    whole: dict[str, str]
    missing: dict[str, str]
    deselected: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        """Whether every trainable parameter is recorded with a layout (nothing whole or missing)."""
        return not self.whole and not self.missing

    def warning(self) -> str | None:
        """The attach warning: what is recorded without a layout or not at all (but left out by
        ``layers=``), and why; None when there is nothing to say."""
        lines = [f"  {n}: {why}" for n, why in self.whole.items()]
        lines += [f"  {n}: {why}" for n, why in self.missing.items() if n not in self.deselected]
        if not lines:
            return None
        return (f"Probe: {len(lines)} trainable parameter(s) of {self.model} are not fully recorded "
                "(probe.coverage lists every parameter; varprobe.register_layout(type, ...) records a type):\n"
                + "\n".join(lines))

    def __str__(self) -> str:
        """The report: counts, then each parameter recorded whole or not recorded, and why."""
        n = len(self.sizes)
        elements = sum(self.sizes.values())
        head = (f"coverage of {self.model}: {n} trainable parameters ({elements:,} elements): "
                f"{len(self.recorded)} recorded by a layout, {len(self.whole)} recorded whole (no layout), "
                f"{len(self.missing)} not recorded")
        parts = [head]  # the recorded ones: Coverage.recorded
        for title, group in (("recorded whole", self.whole), ("not recorded", self.missing)):
            if group:
                parts.append(f"{title}:")
                parts += [f"  {name} ({self.sizes[name]:,}): {what}" for name, what in group.items()]
        return "\n".join(parts)


def _holder(m: nn.Module, inner: dict[int, str], by_name: dict[str, nn.Module]) -> nn.Module:
    """The module that records the parameters ``m`` holds: the probed module owning ``m``
    (``varprobe.probe.select.owned``), or ``m``."""
    return by_name.get(inner[id(m)], m) if id(m) in inner else m


def coverage(model: nn.Module, targets: list[Target], layers=None) -> Coverage:
    """The :class:`Coverage` of ``model`` probed at ``targets`` (``select(model, layers, ...)``)."""
    probed: dict[int, Target] = {}
    for t in targets:
        if not t.part and t.role != "branch":
            probed.setdefault(id(t.module), t)
    weighed: dict[int, list[str]] = {}  # parameter -> layers with its w.*/gw.* rows
    for t in targets:
        if t.weight is not None:
            weighed.setdefault(id(t.weight.parameter()), []).append(t.name)
    inner = owned(model)
    by_name = {layer_name(n): m for n, m in model.named_modules()}
    sizes: dict[str, int] = {}
    recorded: dict[str, str] = {}
    whole: dict[str, str] = {}
    missing: dict[str, str] = {}
    deselected = set()
    holders: dict[int, list[tuple[str, str, nn.Module, Tensor]]] = {}  # parameter -> (name, module name, module, it)
    for raw_name, m in model.named_modules(remove_duplicate=False):
        n = layer_name(raw_name)
        for a, prm in m.named_parameters(recurse=False):
            if prm.requires_grad:
                holders.setdefault(id(prm), []).append((f"{n}.{a}" if n else a, n, m, prm))
    for held in holders.values():
        name, _, _, prm = held[0]
        sizes[name] = 0 if is_lazy(prm) else prm.numel()  # a lazy module's, before its first forward: 0
        # a tied parameter (a masked-LM head's bias, held by the head and by its decoder) is recorded
        # when any module that holds it is probed
        n, m = next(((n, m) for _, n, m, _ in held if id(_holder(m, inner, by_name)) in probed), held[0][1:3])
        holder = _holder(m, inner, by_name)
        target = probed.get(id(holder))
        kind = type(holder).__name__
        if target is not None:
            rows = weighed.get(id(prm))
            if target.layout is not None and target.layout.whole:
                whole[name] = (f"{kind} has no layout: {target.name or '<root>'} records its output and output "
                               "gradient, " + ("and whole-tensor w.*/gw.* of this weight (as one filter)"
                                               if rows else "and no statistics of this parameter"))
            else:
                recorded[name] = (f"w.*, gw.* of {', '.join(rows)}" if rows
                                  else f"in the output of {target.name or '<root>'}")
            continue
        where = inner.get(id(m), n)
        desc = f"{where!r} ({kind})" if where else f"the model ({kind})"
        if layers is not None:
            missing[name] = f"{desc} is not selected by layers={layers!r}"
            deselected.add(name)
        elif next(holder.children(), None) is not None and layout_of(holder) is None:
            missing[name] = (f"held directly by {desc}, which has child modules and no layout: used in "
                             "its own forward, which no probe hook sees")
        else:
            missing[name] = f"{desc} is not probed"
    return Coverage(type(model).__name__, sizes, recorded, whole, missing, frozenset(deselected))
