"""The Hugging Face ProbeCallback in a real transformers.Trainer (CPU, a tiny ResNet built from a
config with random weights: no download)."""
from __future__ import annotations

import copy

import pytest

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")
pytest.importorskip("accelerate", reason="needs the hf extra (accelerate): pip install 'varprobe[hf]'")
import torch  # noqa: E402
from torch import nn  # noqa: E402

import varprobe  # noqa: E402
from varprobe.integrations.huggingface import ProbeCallback  # noqa: E402
from varprobe.record.lock import writer_alive  # noqa: E402

from .reference import assert_same_records, capture_batches, plain_loop_first_step  # noqa: E402

LR = 0.05


def tiny_resnet():
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type="basic", num_labels=3)
    return transformers.ResNetForImageClassification(cfg)


class Images(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(2)
        self.x, self.y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def loss_fn(model, x, y):
    return model(pixel_values=x, labels=y).loss


def train(tmp_path, model, steps, accumulate, callbacks, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulate, learning_rate=LR, lr_scheduler_type="constant",
        optim="sgd", max_grad_norm=0.0, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True, **kw)
    data = Images()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))
    trainer.train()
    return data, trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_one_record_per_optimizer_step_equal_to_the_plain_loop(tmp_path, accumulate):
    torch.manual_seed(0)
    model = tiny_resnet()
    reference = copy.deepcopy(model)
    seen, handle = capture_batches(model)
    cb = ProbeCallback(tmp_path / "run", flush_every=1)
    data, trainer = train(tmp_path, model, 2, accumulate, [cb])
    handle.remove()
    run = varprobe.load_run(tmp_path / "run")
    assert run.meta["status"] == "finished"
    train_rows = run.frame[run.frame["mode"] == "train"]
    assert sorted(train_rows["step"].unique()) == [0, 1]
    assert len(seen) == 2 * accumulate
    names = {n for n, _ in reference.named_modules()}
    assert set(train_rows["layer"]) - {""} <= names
    # replay the trainer's micro-batches: find each one's labels in the dataset
    index = {tuple(x.flatten()[:4].tolist()): i for i, x in enumerate(data.x)}
    micro = []
    for x in seen[:accumulate]:
        rows = [index[tuple(r.flatten()[:4].tolist())] for r in x]
        micro.append((x, data.y[rows]))
    # transformers 5 divides each micro-batch loss by the accumulation steps unless the model takes
    # loss kwargs (ResNetForImageClassification has **kwargs, and ignores num_items_in_batch): the
    # gradient it backpropagates is then that of the SUM of the micro-batch mean losses.
    scale = 1.0 if trainer.model_accepts_loss_kwargs else 1.0 / accumulate
    want = plain_loop_first_step(reference, micro, loss_fn, LR, tmp_path, backward_scale=scale, flush_every=1)
    got = train_rows[train_rows["step"] == 0]
    assert "loss" in set(got["quantity"])
    assert_same_records(got, want)


def arguments(tmp_path, steps, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=4, learning_rate=LR,
        lr_scheduler_type="constant", optim="sgd", max_grad_norm=0.0, report_to=[], use_cpu=True,
        logging_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True, **kw)


class Losses(transformers.TrainerCallback):
    """state.global_step at each training forward, with the model output's loss there."""

    def __init__(self, model):
        self.step, self.loss = None, {}
        model.register_forward_hook(self._on_output)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step

    def _on_output(self, module, args, output):
        if module.training:
            self.loss[self.step] = float(output.loss.detach())


def test_a_resumed_train_records_global_steps_on_the_global_schedule(tmp_path):
    """train(resume_from_checkpoint=...) at global step 3 to max_steps=7 with every=2: recorded
    steps 4 and 6, each with the loss of the forward at that global step."""
    torch.manual_seed(0)
    first = ProbeCallback(tmp_path / "first", every=2, flush_every=1)
    transformers.Trainer(model=tiny_resnet(), args=arguments(tmp_path, 3, save_strategy="steps", save_steps=3),
                         train_dataset=Images(12), callbacks=[first]).train()
    model = tiny_resnet()
    spy = Losses(model)
    cb = ProbeCallback(tmp_path / "resumed", every=2, flush_every=1)
    transformers.Trainer(model=model, args=arguments(tmp_path, 7, save_strategy="no"), train_dataset=Images(12),
                         callbacks=[spy, cb]).train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-3"))
    assert sorted(spy.loss) == [3, 4, 5, 6]
    frame = varprobe.load_run(tmp_path / "resumed").frame
    train_rows = frame[frame["mode"] == "train"]
    assert sorted(train_rows["step"].unique()) == [4, 6]
    loss = train_rows[train_rows["quantity"] == "loss"].set_index("step")["value"]
    assert loss.to_dict() == pytest.approx({s: spy.loss[s] for s in (4, 6)}, rel=1e-6)
    assert sorted(varprobe.load_run(tmp_path / "first").frame["step"].unique()) == [0, 2]


def raise_at(model: nn.Module, forward: int) -> dict:
    """Make ``model`` raise at its training forward number ``forward`` (set ``state["at"]`` to None
    to stop it)."""
    state = {"n": 0, "at": forward}

    def hook(module, args, kwargs):
        if module.training:
            state["n"] += 1
            if state["n"] == state["at"]:
                raise RuntimeError(f"boom at training forward {state['at']}")
    model.register_forward_pre_hook(hook, with_kwargs=True)
    return state


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("added_after_init", [False, True])
def test_an_exception_closes_the_run_as_failed_and_a_retried_train_works(tmp_path, added_after_init):
    """The model raises at step 2: the run is closed "failed" with the error, steps 0 and 1 are
    kept, no hook of the probe is left on the model, the lock is released, and train() again
    (the model fixed) records a finished run. A callback added after the Trainer was created does
    not see the error: the retried train() closes the left-over run as failed, with a warning."""
    torch.manual_seed(0)
    model = tiny_resnet()
    boom = raise_at(model, 3)
    before = hooks(model)
    out = tmp_path / "run"
    cb = ProbeCallback(out, flush_every=1, overwrite=True)
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path, 4, save_strategy="no"),
                                   train_dataset=Images(), callbacks=[] if added_after_init else [cb])
    if added_after_init:
        trainer.add_callback(cb)
    with pytest.raises(RuntimeError, match="boom at training forward 3"):
        trainer.train()
    if not added_after_init:
        run = varprobe.load_run(out)
        assert run.meta["status"] == "failed" and "boom" in run.meta["error"]["message"]
        assert sorted(run.frame.loc[run.frame["mode"] == "train", "step"].unique()) == [0, 1]
        assert hooks(model) == before and writer_alive(out) is False
    boom["at"] = None
    if added_after_init:
        with pytest.warns(RuntimeWarning, match="previous train.*closed now as failed"):
            trainer.train()
    else:
        trainer.train()
    run = varprobe.load_run(out)
    assert run.meta["status"] == "finished"
    assert sorted(run.frame.loc[run.frame["mode"] == "train", "step"].unique()) == [0, 1, 2, 3]
    assert hooks(model) == before
