"""Under torch.distributed (gloo, 2 CPU processes), recorded moments are those of the global batch."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from varprobe.probe import Probe

from . import dist_worker


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_ranks_equal_single_process_on_concatenated_batch(tmp_path):
    mp.spawn(dist_worker.run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [pd.read_pickle(tmp_path / f"rank{r}.pkl") for r in (0, 1)]
    model = dist_worker.make_model()
    single = Probe(model, modes=("train",))
    dist_worker.train(model, single)
    want = single.frame()
    key = ["step", "layer", "quantity"]
    for got in ranks:
        merged = want.merge(got, on=key, how="outer", suffixes=("_1", "_2"), indicator=True)
        assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][key]
        fwd = merged.quantity.str.startswith(("in.", "out.", "block.", "branch."))
        # PWS filter means (of the kernel and of the gradient) are zero up to rounding noise
        noise = (merged.module_type_1 == "PWSConv2d") & merged.quantity.isin(
            ["gw.avg_abs", "gw.shift_ratio", "k.filter_mean_abs", "k.filter_sum_sq", "k.filter_sum_var"])
        for part, rtol, atol in ((merged[fwd], 1e-5, 1e-12), (merged[~fwd & ~noise], 1e-4, 1e-12),
                                 (merged[noise], 1e-4, 1e-5)):
            a, b = torch.tensor(part.value_1.values), torch.tensor(part.value_2.values)
            torch.testing.assert_close(b, a, rtol=rtol, atol=atol, equal_nan=True)
        assert {"grad_out.var", "gw.shift_ratio", "loss", "block.out.var"} <= set(got.quantity)
