"""select: layer names never carry wrapper components (torch.compile's _orig_mod, FSDP's
_fsdp_wrapped_module), and the wrappers themselves are never selected."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.probe import Probe
from varprobe.probe.select import layer_name, named_modules, select

from .nets import Chain


class FakeFSDP(nn.Module):
    """Holds the module it wraps as ``_fsdp_wrapped_module``, as FullyShardedDataParallel does."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = module

    def forward(self, x):
        return self._fsdp_wrapped_module(x)


def _names(targets):
    return [(t.name, t.role) for t in targets]


def test_layer_name_drops_wrapper_components_only():
    assert layer_name("_orig_mod.layer1.0._fsdp_wrapped_module.conv1") == "layer1.0.conv1"
    assert layer_name("_orig_mod") == ""
    assert layer_name("module.conv") == "module.conv"  # DDP: unwrapped at the root, not by name
    assert layer_name("my_orig_mod.conv") == "my_orig_mod.conv"  # whole components only


def test_torch_compile_wrapper_gives_the_original_names():
    model = Chain()
    compiled = torch.compile(model, backend="eager")  # an OptimizedModule: the model is _orig_mod
    assert any(n.startswith("_orig_mod.") for n, _ in compiled.named_modules())  # what is stripped
    want, got = select(model), select(compiled)
    assert _names(got) == _names(want)
    assert all(g.module is w.module for g, w in zip(got, want))
    assert [n for n, _ in named_modules(compiled)] == [n for n, _ in model.named_modules()]
    first = want[0].name
    assert [t.module for t in select(compiled, first)] == [want[0].module]  # an exact name, through it
    assert [t.module for t in select(compiled, type(want[0].module))] == [
        t.module for t in want if type(t.module) is type(want[0].module) and t.role != "branch"]


def test_fsdp_wrapped_submodules_keep_their_names_and_are_probed():
    def build():
        return nn.Sequential(FakeFSDP(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4),
                             FakeFSDP(nn.Sequential(nn.Flatten(), FakeFSDP(nn.Linear(4 * 4 * 4, 2)))))

    torch.manual_seed(0)
    wrapped = build()
    plain = nn.Sequential(wrapped[0]._fsdp_wrapped_module, wrapped[1],
                          nn.Sequential(nn.Flatten(), wrapped[2]._fsdp_wrapped_module[1]._fsdp_wrapped_module))
    assert _names(select(wrapped)) == _names(select(plain)) == [("0", "conv"), ("1", "norm"), ("2.1", "linear")]
    # a callable sees the wrapped modules under the clean names, never a wrapper
    seen = []
    with pytest.raises(ValueError, match="matches no module"):
        select(wrapped, lambda n, m: seen.append((n, type(m).__name__)) or False)
    assert ("0", "Conv2d") in seen and not any(t == "FakeFSDP" for _, t in seen)
    assert not any("_fsdp_wrapped_module" in n for n, _ in seen)
    x, y = torch.randn(2, 3, 6, 6), torch.tensor([0, 1])
    probe = Probe(wrapped, quantities=["out.var"])
    with probe:
        F.cross_entropy(wrapped(x), y).backward()
        probe.step()
    frame = probe.frame()
    assert set(frame.layer) == {"0", "1", "2.1"}
    y2 = wrapped[2](wrapped[1](wrapped[0](x))).detach().double()
    got = frame.set_index("layer").value
    assert got["2.1"] == pytest.approx(y2.var(unbiased=False).item(), rel=1e-6)
