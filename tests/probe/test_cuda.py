"""On CUDA, the hot path (forward and backward with a probe attached) never syncs with the host."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varprobe.probe import Probe

from .nets import make_net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_hot_path_is_sync_free_on_cuda():
    net = make_net(0, torch.float32).cuda()
    probe = Probe(net, flush_every=1000)
    x, y = torch.randn(5, 3, 11, 9, device="cuda"), torch.randint(0, 4, (5,), device="cuda")
    with probe:
        for step in range(3):
            if step == 1:  # step 0 allocates buffers and caches its layout tensors
                torch.cuda.set_sync_debug_mode("error")
            try:
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                probe.step(loss=loss.detach())  # closing a step stays on the device as well
            finally:
                torch.cuda.set_sync_debug_mode("default")
            net.zero_grad()
    frame = probe.frame()  # the one transfer
    assert set(frame.step) == {0, 1, 2}
