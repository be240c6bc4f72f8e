"""Worker of the distributed probe test (a module, so torch.multiprocessing can spawn it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from varprobe.layers import ResidualBlock, make_conv
from varprobe.probe import Probe

GLOBAL_BATCH, STEPS = 8, 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(make_conv("gn", 3, 4, 3, padding=1, gn_groups=2), nn.ReLU(),
                         ResidualBlock(make_conv("pws", 4, 4, 3, padding=1)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 7, 5, generator=g), torch.randint(0, 3, (GLOBAL_BATCH,), generator=g))
            for _ in range(STEPS)]


def train(model: nn.Module, probe: Probe, rank: int = 0, world: int = 1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    share = GLOBAL_BATCH // world
    with probe:
        for x, y in batches():
            x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
            loss = F.cross_entropy(model(x), y)  # mean over the local batch; DDP averages grads
            loss.backward()
            probe.step(loss=loss)
            opt.step()
            opt.zero_grad()


def run(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ddp = nn.parallel.DistributedDataParallel(make_model())
        probe = Probe(ddp, modes=("train",))
        train(ddp, probe, rank, world)
        probe.frame().to_pickle(os.path.join(out_dir, f"rank{rank}.pkl"))
    finally:
        dist.destroy_process_group()
