"""torch.compile: a probe attached before compiling records what an eager probe records."""
from __future__ import annotations

import signal

import pytest
import torch
import torch.nn.functional as F

from varprobe.probe import Probe

from .nets import Chain


@pytest.fixture
def time_limit():
    """Fail instead of hanging if compiling takes more than 30 s (SIGALRM, main thread, POSIX)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError("torch.compile test exceeded 30 s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run(model, call, probe):
    g = torch.Generator().manual_seed(0)
    with probe:
        for _ in range(2):
            x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
            F.cross_entropy(call(x), y).backward()
            probe.step()
            model.zero_grad()
    return probe.frame()


def test_probe_attached_before_compile_records_eager_values(time_limit):
    torch._dynamo.reset()
    eager_model, model = Chain(c=3), Chain(c=3)
    model.load_state_dict(eager_model.state_dict())
    want = _run(eager_model, eager_model, Probe(eager_model))
    probe = Probe(model)
    probe.attach()
    compiled = torch.compile(model, backend="aot_eager")
    got = _run(model, compiled, probe)
    assert len(got) == len(want) and set(got.quantity) == set(want.quantity)
    torch.testing.assert_close(torch.tensor(got.value.values), torch.tensor(want.value.values),
                               rtol=1e-5, atol=1e-9, equal_nan=True)
