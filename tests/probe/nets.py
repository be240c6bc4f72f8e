"""Small hand-built models for the probe tests, and a hook-free float64 reference of every quantity."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varprobe.layers import PWSConv2d, ResidualBlock

F64 = torch.float64


class Net(nn.Module):
    """Odd shapes; a grouped dilated conv followed by an in-place ReLU; a PWS conv; a residual add
    (ResidualBlock); BatchNorm; a strided dilated conv; GroupNorm; a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.block = ResidualBlock(nn.Sequential(
            nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3),
            nn.ReLU(inplace=True),
            PWSConv2d(6, 6, 3, padding=1, gamma=1e-3),
        ))
        self.down = nn.Conv2d(6, 5, 3, stride=2, padding=1, dilation=2)
        self.gn = nn.GroupNorm(1, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn(self.stem(x)))
        h = self.block(h)
        h = torch.relu(self.gn(self.down(h)))
        return self.head(h.mean((2, 3)))


def make_net(seed: int = 0, dtype: torch.dtype = F64) -> Net:
    torch.manual_seed(seed)
    net = Net().to(dtype)
    with torch.no_grad():  # break symmetries the defaults leave (zero biases, unit BN affine)
        for p in (net.stem.bias, net.bn.weight, net.bn.bias, net.gn.bias, net.block.branch[2].alpha):
            p.add_(0.1 * torch.randn_like(p))
    return net


def clone(net: Net) -> Net:
    """A hook-free float64 copy with the same parameters and buffers."""
    ref = Net().to(F64)
    ref.load_state_dict({k: v.to(F64) if v.is_floating_point() else v for k, v in net.state_dict().items()})
    for r, m in zip(ref.modules(), net.modules()):  # each module's mode (e.g. frozen BatchNorm)
        r.training = m.training
    return ref


# site -> (tensor key, channel dim) and which quantities the probe must record
LAYERS = {  # name: (module_type, depth, in key, out key, grad_out key, grad_in key, channel dim)
    "stem": ("Conv2d", 0, "x", "h0", "h0", None, 1),
    "bn": ("BatchNorm2d", 0, "h0", "b0", "b0", "h0", 1),
    "block.branch.0": ("Conv2d", 1, "ba", "c1", "c1", "ba", 1),
    "block.branch.2": ("PWSConv2d", 2, "r1", "c2", "c2", "r1", 1),
    "down": ("Conv2d", 3, "blk", "d", "d", "blk", 1),
    "gn": ("GroupNorm", 3, "d", "g", "g", "d", 1),
    "head": ("Linear", 4, "p", "out", "out", "p", -1),
}
WEIGHTED = ("stem", "block.branch.0", "block.branch.2", "down", "head")


def ref_forward(net: Net, x: Tensor) -> dict[str, Tensor]:
    """Every tensor the probe sees, computed op by op without hooks (no in-place ops)."""
    t = {"x": x}
    t["h0"] = net.stem(x)
    t["b0"] = net.bn(t["h0"])
    t["a0"] = torch.relu(t["b0"])
    t["ba"] = torch.relu(t["a0"])
    t["c1"] = net.block.branch[0](t["ba"])
    t["r1"] = torch.relu(t["c1"])
    t["c2"] = net.block.branch[2](t["r1"])
    t["blk"] = t["c2"] + t["a0"]
    t["d"] = net.down(t["blk"])
    t["g"] = net.gn(t["d"])
    t["p"] = torch.relu(t["g"]).mean((2, 3))
    t["out"] = net.head(t["p"])
    return t


GRAD_KEYS = ("h0", "b0", "ba", "c1", "r1", "c2", "blk", "d", "g", "p", "out")


def ref_step(net: Net, batches: list[tuple[Tensor, Tensor]], loss_scale: float = 1.0
             ) -> tuple[list[dict], list[dict], dict]:
    """Forward tensors and activation gradients of each batch (loss: ``loss_scale`` times the
    cross entropy), and the accumulated parameter grads (None for a parameter the loss does not
    reach, e.g. a PWS weight in eval mode, whose cached kernel is used)."""
    fwd, grads = [], []
    pgrads = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    names, params = zip(*net.named_parameters())
    for x, y in batches:
        t = ref_forward(net, x)
        loss = F.cross_entropy(t["out"], y) * loss_scale
        g = torch.autograd.grad(loss, [t[k] for k in GRAD_KEYS] + list(params), allow_unused=True)
        grads.append(dict(zip(GRAD_KEYS, g[:len(GRAD_KEYS)])))
        for n, gp in zip(names, g[len(GRAD_KEYS):]):
            pgrads[n] = None if gp is None else pgrads[n] + gp
        fwd.append({k: v.detach() for k, v in t.items()})
    return fwd, grads, pgrads


def moment_stats(ts: list[Tensor], cdim: int) -> dict[str, float]:
    """The out.* statistics of the union of tensors ``ts``, straight from the definitions."""
    rows = torch.cat([t.to(F64).movedim(cdim, -1).reshape(-1, t.shape[cdim]) for t in ts])
    flat = rows.flatten()
    ch_mean = rows.mean(0)
    return {"mean": flat.mean().item(), "var": flat.var(unbiased=False).item(),
            "sq_mean": flat.square().mean().item(), "ch_var": rows.var(0, unbiased=False).mean().item(),
            "ch_sq_mean": ch_mean.square().mean().item(),
            "dead_frac": (rows.amax(0) <= 0).to(F64).mean().item(),
            "nonfinite": float((~torch.isfinite(flat)).sum().item())}


def filter_ref(w: Tensor) -> dict[str, float]:
    f = w.detach().to(F64).flatten(1)
    n = f.shape[1]
    sums = f.sum(1)
    return {"fan_var": (n * f.var(1, unbiased=False)).mean().item(),
            "filter_mean_abs": f.mean(1).abs().mean().item(),
            "filter_sum_var": sums.var(unbiased=False).item(),
            "filter_sum_sq": sums.square().mean().item(),
            "sq_norm": f.square().sum(1).mean().item()}


def pws_kernel_ref(conv: PWSConv2d) -> Tensor:
    v = conv.weight.detach().to(F64)
    f = v.flatten(1)
    std = (f - f.mean(1, keepdim=True)) / (f.var(1, unbiased=False, keepdim=True) + conv.gamma_eff).sqrt()
    return (2.0 / conv.fan_value) ** 0.5 * conv.alpha.detach().to(F64).flatten()[:, None] * std


def decomposition_ref(mod: nn.Module, kernel: Tensor, xs: list[Tensor], ys: list[Tensor]) -> dict[str, float]:
    """dec.* of a conv or linear layer over the input and output tensors of a step, written out: the
    receptive field of every output position from an unfolded all-ones input (padding reads 0)."""
    x = torch.cat([t.to(F64).flatten() for t in xs])
    mu, var = x.mean(), x.var(unbiased=False)
    bias = mod.bias.detach().to(F64)
    cdim = -1 if isinstance(mod, nn.Linear) else 1
    y = torch.cat([t.to(F64).movedim(cdim, -1).reshape(-1, t.shape[cdim]) for t in ys])
    measured = (y - bias).square().mean(0).mean()
    w = kernel.detach().to(F64).flatten(1)  # (O, C_in/groups * taps)
    if isinstance(mod, nn.Linear):
        mask = torch.ones(w.shape[1], 1, dtype=F64)
    else:
        ones = torch.ones(1, mod.in_channels // mod.groups, *xs[0].shape[2:], dtype=F64)
        mask = F.unfold(ones, mod.kernel_size, mod.dilation, mod.padding, mod.stride)[0]  # (C*T, positions)
    iid = var * (w.square() @ mask).mean(1).mean()
    shift = mu * mu * (w @ mask).square().mean(1).mean()
    # pred_*: inputs with independent entries, channel c's with the step's mean mu_c and variance
    # var_c: E[y] at every output position is the layer applied to the image of the mu_c, Var[y]
    # the squared kernel applied to the image of the var_c (no bias); per output channel the
    # prediction is the mean over positions of E[y], and the mean of Var[y] plus the spread of E[y].
    xc = torch.cat([t.to(F64).movedim(cdim, -1).reshape(-1, t.shape[cdim]) for t in xs])
    mu_c, var_c = xc.mean(0), xc.var(0, unbiased=False)
    k = kernel.detach().to(F64)
    if isinstance(mod, nn.Linear):
        e_y, v_y = (mu_c @ k.T + bias)[:, None], (var_c @ k.square().T)[:, None]
    else:
        shape = (1, -1) + (1,) * (xs[0].ndim - 2)
        size = (1, mod.in_channels, *xs[0].shape[2:])
        geo = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups)
        e_y = F.conv2d(mu_c.reshape(shape).expand(size), k, bias, **geo)[0].flatten(1)  # (O, positions)
        v_y = F.conv2d(var_c.reshape(shape).expand(size), k.square(), None, **geo)[0].flatten(1)
    mean_i = e_y.mean(1)
    var_i = v_y.mean(1) + (e_y - mean_i[:, None]).square().mean(1)
    return {"measured": measured.item(), "iid": iid.item(), "shift": shift.item(),
            "rest": (measured - iid - shift).item(), "pred_ch_var": var_i.mean().item(),
            "pred_ch_sq_mean": mean_i.square().mean().item()}


def pearson(a: Tensor, b: Tensor) -> float:
    return torch.corrcoef(torch.stack([a.to(F64), b.to(F64)]))[0, 1].item()


def expected_train(net: Net, batches, prev_gi: dict | None, loss_scale: float = 1.0,
                   prev_net: Net | None = None) -> tuple[dict, dict]:
    """{(layer, quantity): value} of one training step of ``net`` (a clone taken before the step),
    and the per-filter average gradients for the next step's sign persistence. ``prev_net``: the
    clone taken before the previous step (None at the first step: w.update_ratio has no row)."""
    running = (net.bn.running_mean.clone().to(F64), net.bn.running_var.clone().to(F64))
    fwd, grads, pgrads = ref_step(net, batches, loss_scale)
    exp = forward_expected(net, fwd, running)
    for name, (_, _, _, _, k_go, k_gi, cdim) in LAYERS.items():
        go = moment_stats([g[k_go] for g in grads], cdim)
        exp[(name, "grad_out.var")], exp[(name, "grad_out.sq_mean")] = go["var"], go["sq_mean"]
        if k_gi is not None:
            exp[(name, "grad_in.var")] = moment_stats([g[k_gi] for g in grads], cdim)["var"]
    gis = {}
    for name in WEIGHTED:
        mod = net.get_submodule(name)
        for s, v in filter_ref(mod.weight).items():
            exp[(name, f"w.{s}")] = v
        if prev_net is not None:  # no row where the previous weight is unknown
            w0 = prev_net.get_submodule(name).weight.detach().to(F64)
            exp[(name, "w.update_ratio")] = ((mod.weight.detach().to(F64) - w0).norm() / w0.norm()).item()
        if pgrads[f"{name}.weight"] is None:
            continue  # no gradient: no gw.*
        g = pgrads[f"{name}.weight"].to(F64).flatten(1)
        gi = g.mean(1)
        gis[name] = gi
        rms = g.square().mean().sqrt()
        exp[(name, "gw.avg_abs")] = gi.abs().mean().item()
        exp[(name, "gw.rms")] = rms.item()
        exp[(name, "gw.shift_ratio")] = (gi.abs().mean() / (rms / g.shape[1] ** 0.5)).item()
        pws = name == "block.branch.2"  # its average gradient is zero up to rounding: no sign
        if prev_gi is not None:
            kept = (torch.sign(gi) == torch.sign(prev_gi[name])).to(F64).mean().item()
            exp[(name, "gw.sign_persistence")] = float("nan") if pws else kept
        _, _, k_in, _, k_go, _, cdim = LAYERS[name]
        mu = torch.cat([f[k_in].to(F64).flatten() for f in fwd]).mean()
        db = sum(g[k_go].to(F64).movedim(cdim, -1).reshape(-1, g[k_go].shape[cdim]).sum(0) for g in grads)
        # BatchNorm in training mode after the stem makes sum dL/dh0 zero per channel: the probe
        # reports NaN (a frozen, eval-mode BatchNorm does not).
        zero_db = name == "stem" and net.bn.training
        exp[(name, "gw.bias_corr")] = float("nan") if zero_db or pws else pearson(gi, mu * db)
    pws = net.block.branch[2]
    for name in WEIGHTED:
        mod = net.get_submodule(name)
        kernel = pws_kernel_ref(pws).reshape(pws.weight.shape) if mod is pws else mod.weight
        _, _, k_in, k_out, _, _, _ = LAYERS[name]
        for s, v in decomposition_ref(mod, kernel, [f[k_in] for f in fwd], [f[k_out] for f in fwd]).items():
            exp[(name, f"dec.{s}")] = v
    for s, v in filter_ref(pws_kernel_ref(pws).reshape(pws.weight.shape)).items():
        exp[("block.branch.2", f"k.{s}")] = v
    exp[("block.branch.2", "k.alpha_mean")] = pws.alpha.detach().to(F64).mean().item()
    s2 = pws.weight.detach().to(F64).flatten(1).var(1, unbiased=False)
    exp[("block.branch.2", "k.shrink")] = (s2 / (s2 + pws.gamma_eff)).sqrt().mean().item()
    for name in ("bn", "gn"):
        mod = net.get_submodule(name)
        exp[(name, "norm.weight_mean")] = mod.weight.detach().to(F64).mean().item()
        exp[(name, "norm.bias_mean")] = mod.bias.detach().to(F64).mean().item()
    return exp, gis


def expected_eval(net: Net, xs: list[Tensor]) -> dict:
    """Forward quantities of eval forwards (``net`` a clone in the mode of those forwards)."""
    running = (net.bn.running_mean.clone().to(F64), net.bn.running_var.clone().to(F64))
    with torch.no_grad():
        fwd = [ref_forward(net, x) for x in xs]
    return forward_expected(net, fwd, running)


def forward_expected(net: Net, fwd: list[dict], running: tuple[Tensor, Tensor]) -> dict:
    """Forward quantities (in.*, out.*, block.out.*, branch.out.*, bn.*) of the forwards ``fwd``
    of a step, ``running`` the BatchNorm running statistics before the step's first forward."""
    exp = {}
    for name, (_, _, k_in, k_out, _, _, cdim) in LAYERS.items():
        for s, v in moment_stats([f[k_in] for f in fwd], cdim).items():
            if s in ("mean", "var", "sq_mean"):
                exp[(name, f"in.{s}")] = v
        for s, v in moment_stats([f[k_out] for f in fwd], cdim).items():
            exp[(name, f"out.{s}")] = v
    for s, v in moment_stats([f["blk"] for f in fwd], 1).items():
        exp[("block", f"block.out.{s}")] = v
    for s, v in moment_stats([f["c2"] for f in fwd], 1).items():
        exp[("block", f"branch.out.{s}")] = v
    rows = torch.cat([f["h0"].to(F64).movedim(1, -1).reshape(-1, 6) for f in fwd])
    mu_b, var_b = rows.mean(0), rows.var(0, unbiased=False)
    exp[("bn", "bn.mean_gap")] = ((mu_b - running[0]).abs() / (running[1] + net.bn.eps).sqrt()).mean().item()
    exp[("bn", "bn.var_ratio")] = (var_b / running[1]).mean().item()
    return exp


class Chain(nn.Module):
    """conv -> BN -> ReLU -> conv -> Linear: no residual, for the simpler tests."""

    def __init__(self, c: int = 4, bn: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.head = nn.Linear(c, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm(self.conv1(x)))
        return self.head(torch.relu(self.conv2(h)).mean((2, 3)))
