"""``Probe(start_step=)``: the step numbering the Lightning and Hugging Face callbacks resume with."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import varprobe


def test_steps_and_the_schedule_count_from_start_step():
    """every=2 from step 3: steps 4 and 6 are recorded (the schedule is on the step numbers, not
    on the steps since the start); eval forwards carry the current step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with varprobe.Probe(model, every=2, start_step=3) as probe:
        assert probe.current_step == 3
        for _ in range(4):
            model.train()
            loss = model(torch.randn(8, 3)).square().mean()
            loss.backward()
            probe.step(loss=loss)
            model.eval()
            with torch.no_grad():
                model(torch.randn(8, 3))
        frame = probe.frame()
    assert sorted(frame.loc[frame["mode"] == "train", "step"].unique()) == [4, 6]
    assert sorted(frame.loc[frame["mode"] == "eval", "step"].unique()) == [4, 5, 6, 7]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_bad_start_step_is_one_line_naming_it(bad):
    with pytest.raises(ValueError, match=rf"start_step must be a non-negative int, got {bad!r}"):
        varprobe.Probe(nn.Linear(2, 2), start_step=bad)
